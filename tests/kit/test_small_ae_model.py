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
