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
