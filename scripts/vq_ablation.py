"""vq-restore ablation proxy: train once per training setting (kit code), then sweep run-time map/score settings on cached outputs.

usage: python scripts/vq_ablation.py DATA_ROOT TAG [key=value config overrides...] [cats=brick,grass]
Writes $VQ_ABLATION_OUT/TAG/CATEGORY.json (default vq-ablation/TAG): image AUROC, pixel AUROC and AUPRO per map variant.
Run with OMP_NUM_THREADS=1 on a shared machine; each category trains once (a few minutes).
"""
import json
import os
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import torch

torch.set_num_threads(1)

from edgead import metrics
from edgead.kit.vq_config import VQRestoreConfig
from edgead.kit.vq_restore import encode_all, fit_vq_restore, load_training_images
from edgead.kit.vq_calibrate import defective_copies
from edgead.kit.vqvae import to_unit
from edgead.runtime.restoration import code_log_likelihood, restore_parallel

root, tag = Path(sys.argv[1]), sys.argv[2]
overrides = {}
cats = ["brick", "grass", "gravel", "tissue"]
for kv in sys.argv[3:]:
    k, v = kv.split("=")
    if k == "cats":
        cats = v.split(",")
        continue
    default = getattr(VQRestoreConfig(), k)
    overrides[k] = type(default)(v) if default is not None else (float(v) if "." in v or "e" in v else int(v))
out_dir = Path(os.environ.get("VQ_ABLATION_OUT", "vq-ablation")) / tag
out_dir.mkdir(parents=True, exist_ok=True)
ETAS = (1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2)


def load_test(cat_dir, size):
    paths, labels, masks = [], [], []
    for d in sorted((cat_dir / "test").iterdir()):
        for p in sorted(d.iterdir()):
            paths.append(p)
            labels.append(d.name != "good")
            if d.name == "good":
                masks.append(np.zeros((size, size), bool))
            else:
                m = cv2.imread(str(cat_dir / "ground_truth" / d.name / (p.stem + "_mask.png")), cv2.IMREAD_GRAYSCALE)
                masks.append(cv2.resize((m > 0).astype(np.uint8), (size, size), interpolation=cv2.INTER_NEAREST).astype(bool))
    return paths, np.array(labels), np.stack(masks)


@torch.inference_mode()
def outputs_of(vqvae, prior, images):
    x = np.stack(images)
    codes = encode_all(vqvae, x, torch.device("cpu"))
    lp = torch.log_softmax(prior(torch.from_numpy(codes)), dim=1).permute(0, 2, 3, 1).numpy()
    recon = vqvae.decode(torch.from_numpy(codes)).clamp(0, 1).numpy()
    return x, codes, lp, recon


def evaluate(name, scores, maps, labels, masks, res):
    maps = np.asarray(maps, np.float32)
    res[name] = {
        "image_auroc": metrics.roc_auc(labels, scores),
        "pixel_auroc": metrics.roc_auc(masks, maps),
        "aupro": metrics.aupro(masks, maps),
    }


def up(m16, size, blur):
    m = cv2.resize(m16.astype(np.float32), (size, size), interpolation=cv2.INTER_LINEAR)
    return cv2.GaussianBlur(m, (0, 0), blur) if blur > 0 else m


for cat in cats:
    cat_dir = root / cat
    cfg = VQRestoreConfig(eta=1e-3, **overrides)
    t0 = time.perf_counter()
    trained = fit_vq_restore(sorted((cat_dir / "train" / "good").iterdir()), cfg)
    train_s = time.perf_counter() - t0
    vqvae, prior = trained.vqvae.eval(), trained.prior.eval()
    size = cfg.input_px
    paths, labels, masks = load_test(cat_dir, size)
    test = load_training_images(paths, cfg)
    x, codes, lp, recon = outputs_of(vqvae, prior, test)
    nll = -code_log_likelihood(lp, codes)  # (N, h, w)
    # per-position statistics of the NLL over the fitted good images (and their turns)
    fit = load_training_images(trained.fit_images, cfg)
    _, fcodes, flp, _ = outputs_of(vqvae, prior, fit)
    fnll = -code_log_likelihood(flp, fcodes)
    pos_mean, pos_std = fnll.mean(0), fnll.std(0) + 1e-3
    hold = load_training_images(trained.holdout_images, cfg)
    _, hcodes, hlp, _ = outputs_of(vqvae, prior, hold)
    hnll = -code_log_likelihood(hlp, hcodes)
    res = {"train_s": train_s, "losses": trained.losses, "codebook": trained.codebook,
           "nll_test_good": float(nll[~labels].mean()), "nll_test_bad": float(nll[labels].mean()),
           "nll_fit": float(fnll.mean()), "nll_holdout": float(hnll.mean())}
    xf = to_unit(torch.from_numpy(x)).numpy()
    # A. restoration difference (parallel, argmax), bilateral 20/75/75, per eta
    @torch.inference_mode()
    def outputs_of_prior(c):
        return torch.log_softmax(prior(torch.from_numpy(c)), dim=1).permute(0, 2, 3, 1).numpy()

    fit_x = np.stack(fit)
    fit_nll8 = np.stack([up(m, size, 8) for m in fnll])
    nll8 = np.stack([up(m, size, 8) for m in nll])
    for eta in ETAS:
        rf = restore_parallel(fcodes, outputs_of_prior, eta, 1, 0, "argmax")
        with torch.inference_mode():
            ffix = vqvae.decode(torch.from_numpy(rf.codes)).clamp(0, 1).numpy()
            frec = vqvae.decode(torch.from_numpy(fcodes)).clamp(0, 1).numpy()
        fdiff = np.stack([cv2.bilateralFilter(d.astype(np.float32), 20, 75, 75, borderType=cv2.BORDER_REFLECT) for d in ((ffix - frec) ** 2).sum(1)])
        r = restore_parallel(codes, outputs_of_prior, eta, 1, 0, "argmax")
        with torch.inference_mode():
            fixed = vqvae.decode(torch.from_numpy(r.codes)).clamp(0, 1).numpy()
        diff = ((fixed - recon) ** 2).sum(1)
        maps = np.stack([cv2.bilateralFilter(d.astype(np.float32), 20, 75, 75, borderType=cv2.BORDER_REFLECT) for d in diff])
        evaluate(f"restore_eta{eta:g}", maps.reshape(len(maps), -1).max(1), maps, labels, masks, res)
        for wgt in (0.5, 1.0, 2.0):
            combo = nll8 / fit_nll8.std() + wgt * maps / (fdiff.std() + 1e-9)
            flat = combo.reshape(len(combo), -1)
            evaluate(f"combo_nll8_restore_eta{eta:g}_w{wgt}_q99", np.quantile(flat, 0.99, axis=1), combo, labels, masks, res)
        # the paper's ablation: input vs restored decoding
        d2 = ((fixed - xf) ** 2).sum(1)
        m2 = np.stack([cv2.GaussianBlur(d, (0, 0), 4) for d in d2])
        evaluate(f"input_vs_restored_eta{eta:g}_g4", m2.reshape(len(m2), -1).max(1), m2, labels, masks, res)
    # B. NLL map
    for blur in (0, 2, 4, 8):
        for kind, m16 in (("nll", nll), ("nll_pos", nll - pos_mean), ("nll_z", (nll - pos_mean) / pos_std)):
            maps = np.stack([up(m, size, blur) for m in m16])
            flat = maps.reshape(len(maps), -1)
            evaluate(f"{kind}_g{blur}_max", flat.max(1), maps, labels, masks, res)
            evaluate(f"{kind}_g{blur}_q99", np.quantile(flat, 0.99, axis=1), maps, labels, masks, res)
    # C. reconstruction residual
    d = ((recon - xf) ** 2).sum(1)
    for blur in (2, 4):
        m = np.stack([cv2.GaussianBlur(e, (0, 0), blur) for e in d])
        evaluate(f"recon_g{blur}", m.reshape(len(m), -1).max(1), m, labels, masks, res)
    # D. quantisation distance of the encoder output to its nearest code (feature-space novelty)
    @torch.inference_mode()
    def qdist(imgs):
        z = vqvae.encoder(to_unit(torch.from_numpy(np.stack(imgs))))
        e = vqvae.quantizer.embedding
        flat = z.permute(0, 2, 3, 1)
        d = ((flat[..., None, :] - e) ** 2).sum(-1).min(-1).values
        return d.numpy()
    qd, fqd = qdist(test), qdist(fit)
    for blur in (4, 8):
        maps = np.stack([up(m, size, blur) for m in qd])
        evaluate(f"qdist_g{blur}_max", maps.reshape(len(maps), -1).max(1), maps, labels, masks, res)
        fm = np.stack([up(m, size, blur) for m in fnll - pos_mean]); nm = np.stack([up(m, size, blur) for m in nll - pos_mean])
        fq = np.stack([up(m, size, blur) for m in fqd])
        combo = (nm - fm.mean()) / fm.std() + (maps - fq.mean()) / fq.std()
        evaluate(f"combo_nllpos_qdist_g{blur}_max", combo.reshape(len(combo), -1).max(1), combo, labels, masks, res)
    (out_dir / f"{cat}.json").write_text(json.dumps(res, indent=1))
    best = sorted(((v["image_auroc"] + v["aupro"], k) for k, v in res.items() if isinstance(v, dict) and "aupro" in v), reverse=True)[:5]
    print(cat, f"train {train_s:.0f}s", {k: round(v, 3) for k, v in trained.losses.items()}, "nll fit/hold/good/bad",
          round(res["nll_fit"], 2), round(res["nll_holdout"], 2), round(res["nll_test_good"], 2), round(res["nll_test_bad"], 2), flush=True)
    for k in ("restore_eta0.001", "nll_g4_max", "nll_z_g4_max"):
        print("  ", k, {a: round(b, 3) for a, b in res[k].items()})
    for s, k in best:
        print("   best", k, {a: round(b, 3) for a, b in res[k].items()}, flush=True)
