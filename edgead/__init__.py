"""edgead: train anomaly detectors on good images, export them to engines, run them on the line."""

from edgead.errors import ArtifactError, BackendError, ConfigError, DataError, DependencyError, EdgeADError

__version__ = "0.1.0"

__all__ = [
    "ArtifactError",
    "BackendError",
    "ConfigError",
    "DataError",
    "DependencyError",
    "EdgeADError",
    "__version__",
]
