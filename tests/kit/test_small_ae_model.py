import pytest
import torch

from edgead.kit.small_ae import LATENT_SHAPE, PATCH_PX, PatchGraph, SmallAutoEncoder, parameter_count


def test_shapes_and_size_of_the_papers_auto_encoder():
    ae = SmallAutoEncoder().eval()
    x = torch.rand(2, 3, PATCH_PX, PATCH_PX)
    reconstruction, latent = ae(x)
    assert reconstruction.shape == x.shape and latent.shape == (2, *LATENT_SHAPE) == (2, 16, 17, 17)
    assert torch.equal(ae.decoder(ae.encoder(x)), reconstruction)  # the halves are usable on their own
    assert 1_000 < parameter_count(ae) < 50_000  # thousands, not millions


def test_patch_graph_returns_one_error_channel_per_pixel_and_the_codes():
    graph = PatchGraph(SmallAutoEncoder()).eval()
    patches = torch.randint(0, 256, (3, PATCH_PX, PATCH_PX, 3), dtype=torch.uint8)
    error, latent = graph(patches)
    assert error.shape == (3, PATCH_PX, PATCH_PX) and latent.shape == (3, *LATENT_SHAPE)
    x = patches.permute(0, 3, 1, 2).float() / 255
    reconstruction, _ = graph.autoencoder(x)
    torch.testing.assert_close(error, ((reconstruction - x) ** 2).mean(1))


def test_ssim_loss_variant_and_augmented_patches():
    import numpy as np

    from edgead.config import SmallAEConfig
    from edgead.kit.small_ae_detector import patch_loss, random_patches, ssim

    x = torch.rand(2, 3, PATCH_PX, PATCH_PX)
    y = (x + 0.2 * torch.rand_like(x)).clamp(0, 1)
    assert abs(float(ssim(x, x)) - 1.0) < 1e-5
    assert float(ssim(x, y)) < 0.99
    l2 = patch_loss(y, x, SmallAEConfig())
    both = patch_loss(y, x, SmallAEConfig(loss="ssim", ssim_weight=0.5))
    torch.testing.assert_close(both, l2 + 0.5 * (1 - ssim(y, x)))
    frames = np.random.default_rng(0).integers(0, 256, (2, 80, 90, 3), dtype=np.uint8)
    plain = random_patches(frames, 6, np.random.default_rng(1), augment=False)
    turned = random_patches(frames, 6, np.random.default_rng(1), augment=True)
    assert plain.shape == turned.shape == (6, PATCH_PX, PATCH_PX, 3) and plain.flags.c_contiguous and turned.flags.c_contiguous
    # the same crops, turned and flipped: the same pixels in another arrangement
    assert np.array_equal(np.sort(plain.reshape(6, -1), axis=1), np.sort(turned.reshape(6, -1), axis=1))


def test_low_pass_error_keeps_a_colour_offset_and_averages_out_fine_residue():
    import cv2
    import numpy as np

    from edgead.kit.small_ae import ErrorMap, ErrorSettings, gaussian_taps

    x = torch.full((1, 3, 40, 50), 0.5)
    offset = x + torch.tensor([0.1, 0.0, -0.1]).reshape(1, 3, 1, 1)  # a stain: the wrong colour, rebuilt smoothly
    checker = x + 0.1 * (torch.arange(50).remainder(2) * 2 - 1).float() * (torch.arange(40).remainder(2) * 2 - 1).float()[:, None]
    plain, low = ErrorMap(), ErrorMap(ErrorSettings(lowpass_sigma_px=2.0))
    torch.testing.assert_close(plain(offset, x), low(offset, x))  # a smooth difference passes the low pass whole
    assert float(plain(checker, x).mean()) == pytest.approx(0.01, rel=1e-5)
    assert float(low(checker, x).max()) < 1e-4  # zero-mean residue of fine texture averages out
    # the low pass is a Gaussian of the difference with reflected borders, 3 sigma on each side
    difference = torch.rand(1, 3, 40, 50)
    taps = gaussian_taps(2.0).numpy()
    assert len(taps) == 13
    want = np.mean([cv2.sepFilter2D(d, -1, taps, taps, borderType=cv2.BORDER_REFLECT_101) ** 2 for d in difference[0].numpy()], axis=0)
    np.testing.assert_allclose(low(difference, torch.zeros_like(difference))[0].numpy(), want, rtol=1e-4, atol=1e-7)


def test_texture_term_flags_error_energy_both_ways_from_the_good_level():
    from edgead.kit.small_ae import TEXTURE_EPS, ErrorMap, ErrorSettings

    ref = 0.01  # the good frames' squared error
    settings = ErrorSettings(lowpass_sigma_px=2.0, lowpass_scale=1.0, texture_sigma_px=3.0, texture_weight=2.0,
                             texture_log_ref=float(torch.log(torch.tensor(ref + TEXTURE_EPS))), texture_scale=0.5)
    error = ErrorMap(settings)
    x = torch.zeros(1, 3, 40, 40)
    sign = (torch.arange(40).remainder(2) * 2 - 1).float()
    residue = lambda level: x + level**0.5 * sign * sign[:, None]  # noqa: E731 - fine residue of a given energy
    assert float(error(residue(ref), x).abs().max()) < 1e-3  # energy at the good level, residue averaged out: 0
    smooth_region, rough_region = error(residue(ref / 100), x), error(residue(ref * 100), x)
    # log(100) / 0.5 * 2 = 18.4 both ways: rebuilt too well is as anomalous as rebuilt badly
    assert float(smooth_region.mean()) == pytest.approx(18.4, rel=0.01) and float(rough_region.mean()) == pytest.approx(18.4, rel=0.01)
