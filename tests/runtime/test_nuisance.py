"""Nuisance copies: deterministic, shape-keeping, each nuisance on its own switch, and what a camera does (not a defect)."""

import dataclasses

import cv2
import numpy as np
import pytest

from edgead.config import NuisanceConfig, PatchCoreConfig, SmallAEConfig
from edgead.errors import ConfigError
from edgead.runtime.nuisance import augment, copies, copy_rng, with_copies

NONE_ON = dict(jpeg=0, light=0, blur=0, noise=0, shift=0, turns=False)


@pytest.fixture(scope="module")
def texture():
    rng = np.random.default_rng(0)
    base = cv2.GaussianBlur(rng.integers(0, 256, (96, 128, 3)).astype(np.uint8), (0, 0), 2)
    return cv2.normalize(base, None, 20, 235, cv2.NORM_MINMAX)


def test_copies_are_deterministic_in_seed_and_index_and_keep_shape(texture):
    config = NuisanceConfig(copies=3)
    first, again, other = copies(texture, config, 0, 5), copies(texture, config, 0, 5), copies(texture, config, 1, 5)
    assert len(first) == 3 and all(c.shape == texture.shape and c.dtype == np.uint8 for c in first)
    assert all(np.array_equal(a, b) for a, b in zip(first, again))
    assert not np.array_equal(first[0], other[0])
    assert not np.array_equal(first[0], first[1])


def test_with_copies_yields_the_image_first_then_its_copies(texture):
    items = list(with_copies([texture, texture[::-1]], NuisanceConfig(copies=2), 0))
    assert [(i, v) for i, v, _ in items] == [(0, 0), (0, 1), (0, 2), (1, 0), (1, 1), (1, 2)]
    assert items[0][2] is texture
    assert list(with_copies([texture], NuisanceConfig(copies=0), 0))[0][2] is texture


def test_all_nuisances_off_is_the_identity(texture):
    assert np.array_equal(augment(texture, NuisanceConfig(**NONE_ON), copy_rng(0, 0, 0)), texture)


@pytest.mark.parametrize("key, value", [("jpeg", 40), ("light", 0.1), ("blur", 1.0), ("noise", 4.0), ("shift", 6), ("turns", True)])
def test_each_nuisance_changes_the_image_by_itself_and_only_a_little(texture, key, value):
    config = NuisanceConfig(**{**NONE_ON, key: value})
    changed = [augment(texture, config, copy_rng(0, 0, c)) for c in range(8)]
    assert any(not np.array_equal(c, texture) for c in changed)
    if key not in ("shift", "turns"):  # photometric: the same scene, a few grey levels off on average
        mean_diff = np.mean([np.abs(c.astype(int) - texture).mean() for c in changed])
        assert 0 < mean_diff < 20


def test_jpeg_copies_carry_the_codecs_block_artefacts(texture):
    config = NuisanceConfig(**{**NONE_ON, "jpeg": 10})
    copy = augment(texture, config, copy_rng(0, 0, 0)).astype(np.float32)
    # 8x8 block edges: differences across block boundaries exceed those inside blocks
    across = np.abs(np.diff(copy, axis=1))[:, 7::8].mean()
    inside = np.abs(np.diff(copy, axis=1))[:, 3::8].mean()
    assert across > inside


def test_non_square_frames_keep_their_shape_when_turned(texture):
    config = NuisanceConfig(**{**NONE_ON, "turns": True})
    assert all(augment(texture, config, copy_rng(0, 0, c)).shape == texture.shape for c in range(8))


@pytest.mark.parametrize("spec, expected", [
    ("off", NuisanceConfig(copies=0)),
    ("on", NuisanceConfig()),
    ("copies=4,jpeg=30,turns=1", NuisanceConfig(copies=4, jpeg=30, turns=True)),
    ("blur=0, noise=0", NuisanceConfig(blur=0, noise=0)),
    ("bank=0,share=0.05", NuisanceConfig(bank=0, share=0.05)),
])
def test_parse(spec, expected):
    assert NuisanceConfig.parse(spec) == expected


def test_parse_changes_the_methods_own_defaults_where_they_are_on():
    from edgead.config import FIRST_NUISANCE

    first = NuisanceConfig(**FIRST_NUISANCE)  # vq-restore's
    assert NuisanceConfig.parse("jpeg=30", first) == dataclasses.replace(first, jpeg=30)  # still 2 copies, share 0
    assert NuisanceConfig.parse("on", first) == first
    assert NuisanceConfig.parse("off", first) == NuisanceConfig(copies=0)
    off = SmallAEConfig().nuisance  # small-ae's: off, so a change starts from the general defaults
    assert NuisanceConfig.parse("jpeg=30", off) == NuisanceConfig(jpeg=30)
    assert NuisanceConfig.parse("on", off) == NuisanceConfig()


@pytest.mark.parametrize("spec, match", [
    ("copies", "KEY=VALUE"), ("colour=1", "keys copies"), ("copies=two", "whole number"), ("jpeg=99", "5..95"),
    ("light=2", "0..0.5"), ("turns=maybe", "turns"), ("copies=-1", "copies"), ("bank=-1", "calibration only"),
    ("share=2", "coreset fraction"),
])
def test_parse_refuses_with_what_to_do(spec, match):
    with pytest.raises(ConfigError, match=match):
        NuisanceConfig.parse(spec)


def test_configs_store_and_restore_the_nuisance_and_older_models_had_none():
    config = PatchCoreConfig(nuisance=NuisanceConfig(copies=3, turns=True))
    assert PatchCoreConfig.from_dict(config.to_dict()) == config
    stored = config.to_dict()
    del stored["nuisance"]
    assert PatchCoreConfig.from_dict(stored).nuisance.copies == 0  # trained before copies existed: none
    assert not SmallAEConfig().nuisance.active  # off by default for small-ae (README: they cost it detection)
    small = SmallAEConfig(nuisance=NuisanceConfig.parse("on"))
    assert small.nuisance.active and SmallAEConfig.from_dict(small.to_dict()) == small
    with pytest.raises(ConfigError, match="nuisance"):
        PatchCoreConfig(nuisance={"copies": 1, "hue": 3})


def test_small_ae_cuts_its_training_patches_from_the_copies_too(texture, tmp_path):
    from edgead.kit.small_ae_detector import load_frames
    from edgead.runtime.images import write_image

    paths = []
    for i in range(2):
        paths.append(tmp_path / f"{i}.png")
        write_image(paths[-1], np.ascontiguousarray(np.roll(texture, 9 * i, axis=1)))
    plain = load_frames(paths, 64)
    frames = load_frames(paths, 64, NuisanceConfig(copies=2), seed=0)
    assert plain.shape == (2, 64, 64, 3) and frames.shape == (6, 64, 64, 3)
    assert np.array_equal(frames[0], plain[0]) and np.array_equal(frames[3], plain[1])  # each image, then its copies
    assert not np.array_equal(frames[1], plain[0])


def test_patchwise_ae_epochs_see_one_version_of_each_image():
    from edgead.config import PatchwiseAEConfig
    from edgead.kit.patchwise_ae import _version

    image = np.full((32, 32, 3), 128, np.uint8)
    off = PatchwiseAEConfig(nuisance=NuisanceConfig(copies=0))
    rng = np.random.default_rng(0)
    assert _version(image, 0, off, rng) is image and rng.random() == np.random.default_rng(0).random()  # no draw without copies
    first = PatchwiseAEConfig(nuisance=NuisanceConfig(copies=2, bank=2, share=0))
    seen = {_version(image, 3, first, np.random.default_rng(s)).tobytes() for s in range(12)}
    assert len(seen) == 3  # the image and its two copies
    seen = {_version(image, 3, PatchwiseAEConfig(), np.random.default_rng(s)).tobytes() for s in range(40)}
    assert len(seen) == 5  # the image and its four copies: the bank's two and the calibration's two


def test_bank_copies_are_a_share_of_the_copies_and_models_before_them_banked_every_copy():
    config = NuisanceConfig()
    assert (config.copies, config.bank_copies, config.share, config.jpeg) == (4, 2, 0.01, 40)  # 2 of 4 copies in the bank
    assert NuisanceConfig(copies=1).bank_copies == 1 and NuisanceConfig(copies=0).bank_copies == 0
    assert "2 in the bank at coreset share 0.01, all in the calibration" in config.describe()
    stored = {"copies": 2, "jpeg": 40, "light": 0.2, "blur": 0.8, "noise": 3.0, "shift": 6, "turns": False}  # before bank, share
    old = PatchCoreConfig.from_dict({**PatchCoreConfig().to_dict(), "nuisance": stored}).nuisance
    assert (old.bank_copies, old.share) == (2, 0.0) and "all in the bank" in old.describe()
    assert PatchCoreConfig.from_dict(PatchCoreConfig().to_dict()) == PatchCoreConfig()


def test_the_patchwise_autoencoder_has_patchcores_copies_and_vq_restore_keeps_the_ones_it_was_measured_with():
    from edgead.config import FIRST_NUISANCE, PatchwiseAEConfig

    # patch-wise AE: PatchCore's scheme (README "The patch-wise auto-encoder beside PatchCore", issue 17 round 2)
    assert PatchwiseAEConfig().nuisance == NuisanceConfig() == PatchCoreConfig().nuisance
    assert PatchwiseAEConfig().nuisance.bank_copies == 2 and PatchwiseAEConfig().nuisance.share == 0.01
    # a patch-wise model stored with the first defaults keeps them: its stored dict says so
    stored = {**PatchwiseAEConfig().to_dict(), "nuisance": dict(FIRST_NUISANCE)}
    assert PatchwiseAEConfig.from_dict(stored).nuisance == NuisanceConfig(**FIRST_NUISANCE)
    from edgead.kit.vq_config import VQRestoreConfig

    assert VQRestoreConfig().nuisance == NuisanceConfig(**FIRST_NUISANCE)  # vq-restore: measured with them
