"""One hierarchy for every error a user can cause; the CLI prints these without a traceback."""


class EdgeADError(Exception):
    """Base of every user-facing edgead error: the message says what failed and what to do."""


class DataError(EdgeADError):
    """A dataset, image or mask that cannot be used as given."""


class ArtifactError(EdgeADError):
    """A .edgead file that is missing, corrupt, of another version or incomplete."""


class ConfigError(EdgeADError):
    """An option or combination of options that cannot work."""


class BackendError(EdgeADError):
    """No inference backend could open or run the model."""


class DependencyError(EdgeADError):
    """An optional dependency needed for the requested feature is not installed."""


class BackendUnavailable(BackendError):
    """A backend that cannot be tried here: not installed, no engine for it in the model, or not trusted to run its code.

    The default ladder moves past these only; an engine that is there and fails to load is a BackendError.
    """
