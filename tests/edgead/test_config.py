import pytest

from edgead.config import PatchCoreConfig, parse_coreset
from edgead.errors import ConfigError


@pytest.mark.parametrize(
    "text, expected",
    [("0.1", {"coreset_fraction": 0.1, "coreset_count": None}), ("1.0", {"coreset_fraction": 1.0, "coreset_count": None}),
     ("5000", {"coreset_fraction": None, "coreset_count": 5000}), ("1", {"coreset_fraction": None, "coreset_count": 1})],
)
def test_parse_coreset(text, expected):
    assert parse_coreset(text) == expected


@pytest.mark.parametrize("text", ["abc", "-1", "0", "2.5", ""])
def test_parse_coreset_rejects(text):
    with pytest.raises(ConfigError, match="--coreset"):
        parse_coreset(text)


def test_coreset_target():
    assert PatchCoreConfig(coreset_fraction=0.1).coreset_target(1000) == 100
    assert PatchCoreConfig(coreset_fraction=None, coreset_count=5000).coreset_target(1000) == 1000
    assert PatchCoreConfig(coreset_fraction=0.0001).coreset_target(100) == 1


@pytest.mark.parametrize(
    "kwargs",
    [{"image_size_px": 100}, {"image_size_px": 16}, {"patch_cells": 2}, {"k": 0}, {"holdout_fraction": 1.0},
     {"blur_sigma_px": -1}, {"coreset_fraction": None}, {"coreset_fraction": 1.5}, {"batch_size": 0}],
)
def test_invalid_config(kwargs):
    with pytest.raises(ConfigError):
        PatchCoreConfig(**kwargs)


def test_round_trip_and_unknown_keys():
    config = PatchCoreConfig(backbone="wide_resnet50_2", feature_dim=1024)
    assert PatchCoreConfig.from_dict(config.to_dict()) == config
    with pytest.raises(ConfigError, match="unknown"):
        PatchCoreConfig.from_dict({"backbone": "x", "colour": 1})


def test_a_config_written_before_pool_zero_pad_keeps_excluding_the_border():
    old = PatchCoreConfig().to_dict()
    del old["pool_zero_pad"]
    assert PatchCoreConfig.from_dict(old).pool_zero_pad is False
    assert PatchCoreConfig().pool_zero_pad is True and PatchCoreConfig().reflect_pad_px == 0
