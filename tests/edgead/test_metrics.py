"""Metrics against hand-worked cases and slow, obviously-correct references."""

from collections import deque

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from edgead.errors import ConfigError, DataError
from edgead.metrics import aupro, average_precision, f1_at, f1_max, label_components, roc_auc

# ---------------------------------------------------------------- slow references


def brute_roc_auc(labels, scores):
    """Mann-Whitney U over every (defective, good) pair, ties 1/2."""
    pos = [s for y, s in zip(labels, scores) if y]
    neg = [s for y, s in zip(labels, scores) if not y]
    wins = sum(1.0 if p > n else 0.5 if p == n else 0.0 for p in pos for n in neg)
    return wins / (len(pos) * len(neg))


def brute_pr(labels, scores, t):
    """True positives, false positives of `score >= t`."""
    tp = sum(1 for y, s in zip(labels, scores) if y and s >= t)
    fp = sum(1 for y, s in zip(labels, scores) if not y and s >= t)
    return tp, fp


def brute_average_precision(labels, scores):
    """sum over thresholds, descending, of (recall - previous recall) * precision."""
    n_pos, ap, prev_recall = sum(labels), 0.0, 0.0
    for t in sorted(set(scores), reverse=True):
        tp, fp = brute_pr(labels, scores, t)
        ap += (tp / n_pos - prev_recall) * tp / (tp + fp)
        prev_recall = tp / n_pos
    return ap


def brute_f1s(labels, scores):
    """{threshold: F1 of score >= threshold} over every distinct score."""
    out = {}
    for t in set(scores):
        tp, fp = brute_pr(labels, scores, t)
        fn = sum(labels) - tp
        out[t] = 2 * tp / (2 * tp + fp + fn)
    return out


def flood_labels(mask):
    """8-connected components by breadth-first flood fill, numbered in raster order."""
    height, width = mask.shape
    labels, n = np.zeros(mask.shape, dtype=np.int64), 0
    for y in range(height):
        for x in range(width):
            if mask[y, x] and not labels[y, x]:
                n += 1
                labels[y, x] = n
                queue = deque([(y, x)])
                while queue:
                    cy, cx = queue.popleft()
                    for ny in (cy - 1, cy, cy + 1):
                        for nx in (cx - 1, cx, cx + 1):
                            if 0 <= ny < height and 0 <= nx < width and mask[ny, nx] and not labels[ny, nx]:
                                labels[ny, nx] = n
                                queue.append((ny, nx))
    return labels, n


def brute_aupro(masks, maps, fpr_limit):
    """Loop over every distinct threshold, then integrate segment by segment."""
    regions = []  # (image index, region mask (H, W))
    for i, mask in enumerate(masks):
        labels, n = flood_labels(mask)
        regions += [(i, labels == k) for k in range(1, n + 1)]
    good = ~masks
    curve = [(0.0, 0.0)]
    for t in sorted(set(maps.ravel().tolist()), reverse=True):
        hit = maps >= t
        pro = np.mean([np.sum(region & hit[i]) / np.sum(region) for i, region in regions])
        curve.append((np.sum(good & hit) / np.sum(good), pro))
    area = 0.0
    for (x0, y0), (x1, y1) in zip(curve, curve[1:]):
        if x0 >= fpr_limit or x1 == x0:
            continue
        x_end = min(x1, fpr_limit)
        y_end = y0 + (y1 - y0) * (x_end - x0) / (x1 - x0)
        area += (x_end - x0) * (y0 + y_end) / 2
    return area / fpr_limit


def spiral(n):
    """A one-pixel-wide square spiral in an (n, n) image, walls one pixel apart."""
    mask = np.zeros((n, n), dtype=bool)
    y = x = 0
    mask[y, x] = True
    steps, k = [n - 1] * 3, n - 3
    while k > 0:
        steps, k = steps + [k, k], k - 2
    for i, length in enumerate(steps):
        dy, dx = [(0, 1), (1, 0), (0, -1), (-1, 0)][i % 4]
        for _ in range(length):
            y, x = y + dy, x + dx
            mask[y, x] = True
    return mask


def random_case(rng, n):
    """Labels with both classes and scores with many ties."""
    labels = rng.integers(0, 2, n)
    labels[:2] = [0, 1]
    scores = np.round(rng.random(n), int(rng.integers(0, 3)))
    return labels, scores


# ---------------------------------------------------------------- AUROC


def test_roc_auc_hand_case():
    # pairs (defective, good): (0.35, 0.1) win, (0.35, 0.4) loss, (0.8, 0.1) win, (0.8, 0.4) win -> 3/4
    assert roc_auc([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8]) == 0.75


def test_roc_auc_ties_count_half():
    # defective {0.5, 0.9}, good {0.5, 0.2}: (0.5, 0.5) tie 1/2, the other three pairs win -> 3.5/4
    assert roc_auc([0, 1, 0, 1], [0.5, 0.5, 0.2, 0.9]) == 0.875
    assert roc_auc([0, 1, 1, 0], [0.3, 0.3, 0.3, 0.3]) == 0.5


def test_roc_auc_perfect_inverted_and_shapes():
    labels = np.array([[False, True], [False, True]])
    scores = np.array([[0.1, 0.9], [0.2, 0.8]], dtype=np.float32)
    assert roc_auc(labels, scores) == 1.0
    assert roc_auc(labels, -scores) == 0.0
    assert roc_auc(labels.astype(np.uint8), scores.astype(int) + labels) == 1.0


@pytest.mark.parametrize("seed", range(20))
def test_roc_auc_matches_pairwise_count(seed):
    rng = np.random.default_rng(seed)
    labels, scores = random_case(rng, int(rng.integers(2, 80)))
    assert roc_auc(labels, scores) == pytest.approx(brute_roc_auc(labels, scores), abs=1e-12)


def test_roc_auc_rejects_bad_input():
    with pytest.raises(DataError, match="both good and defective"):
        roc_auc([1, 1, 1], [0.1, 0.2, 0.3])
    with pytest.raises(DataError, match="both good and defective"):
        roc_auc([], [])
    with pytest.raises(DataError, match="found 2"):
        roc_auc([0, 1, 2], [0.1, 0.2, 0.3])
    with pytest.raises(DataError, match="one shape"):
        roc_auc([0, 1, 1], [0.1, 0.2])
    with pytest.raises(DataError, match="NaN"):
        roc_auc([0, 1, 1], [0.1, np.nan, 0.3])


# ---------------------------------------------------------------- average precision


def test_average_precision_hand_case():
    # descending: 0.9 D (P 1, R 1/3), 0.8 G, 0.7 D (P 2/3, R 2/3), 0.6 G, 0.2 D (P 3/5, R 1)
    # AP = 1/3 * (1 + 2/3 + 3/5) = 34/45
    labels, scores = [1, 0, 1, 0, 1], [0.9, 0.8, 0.7, 0.6, 0.2]
    assert average_precision(labels, scores) == pytest.approx(34 / 45, abs=1e-15)


def test_average_precision_ties_form_one_threshold():
    # t = 0.8 takes one defective and one good together: P 1/2, R 1/2; t = 0.5: P 2/3, R 1
    # AP = 1/2 * 1/2 + 1/2 * 2/3 = 7/12 (not 3/4, which breaking the tie defective-first would give)
    assert average_precision([1, 0, 1, 0], [0.8, 0.8, 0.5, 0.1]) == pytest.approx(7 / 12, abs=1e-15)
    assert average_precision([1, 1, 0], [0.9, 0.8, 0.1]) == 1.0
    assert average_precision([1, 1], [0.2, 0.1]) == 1.0  # no good samples: every prediction right


@pytest.mark.parametrize("seed", range(20))
def test_average_precision_matches_threshold_loop(seed):
    rng = np.random.default_rng(100 + seed)
    labels, scores = random_case(rng, int(rng.integers(2, 80)))
    assert average_precision(labels, scores) == pytest.approx(brute_average_precision(labels, scores), abs=1e-12)


def test_average_precision_needs_defects():
    with pytest.raises(DataError, match="at least one defective"):
        average_precision([0, 0], [0.1, 0.2])


# ---------------------------------------------------------------- F1


def test_f1_max_hand_case():
    # descending: 0.9 D, 0.8 D, 0.7 G, 0.6 D, 0.5 G, 0.4 G, 0.3 D; 4 defective; F1 = 2TP / (TP + FP + 4)
    # t=0.9: 2/5   t=0.8: 4/6   t=0.6: 6/8 = 0.75 (best)   t=0.3: 8/11
    labels = [1, 1, 0, 1, 0, 0, 1]
    scores = [0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3]
    assert f1_max(labels, scores) == (0.75, 0.6)
    assert f1_at(labels, scores, 0.6) == 0.75  # >= threshold: 0.6 itself is flagged
    assert f1_at(labels, scores, 0.55) == 0.75
    assert f1_at(labels, scores, 0.65) == pytest.approx(4 / 7)  # TP 2, FP 1
    assert f1_at(labels, scores, 2.0) == 0.0


def test_f1_max_tie_takes_highest_threshold():
    # t=0.9: TP 1 FP 0 -> 2/3; t=0.1: TP 2 FP 2 -> 4/6 = 2/3
    threshold = f1_max([1, 0, 0, 1], [0.9, 0.5, 0.4, 0.1])[1]
    assert threshold == 0.9


@pytest.mark.parametrize("seed", range(20))
def test_f1_max_matches_every_threshold(seed):
    rng = np.random.default_rng(200 + seed)
    labels, scores = random_case(rng, int(rng.integers(2, 80)))
    f1s = brute_f1s(labels.tolist(), scores.tolist())
    best, threshold = f1_max(labels, scores)
    assert best == pytest.approx(max(f1s.values()), abs=1e-12)
    assert f1s[threshold] == pytest.approx(best, abs=1e-12)
    assert f1_at(labels, scores, threshold) == best
    for t in rng.choice(scores, 5):
        assert f1_at(labels, scores, t) == pytest.approx(f1s[t], abs=1e-12)


def test_f1_rejects_bad_input():
    with pytest.raises(DataError, match="at least one defective"):
        f1_max([0, 0], [0.1, 0.2])
    with pytest.raises(ConfigError, match="NaN"):
        f1_at([0, 1], [0.1, 0.2], float("nan"))
    with pytest.raises(ConfigError, match="must be a number"):
        f1_at([0, 1], [0.1, 0.2], "high")


# ---------------------------------------------------------------- connected components


def test_label_components_tricky_shapes():
    u_shape = np.array([[1, 0, 0, 1],
                        [1, 0, 0, 1],
                        [1, 1, 1, 1]], dtype=bool)  # arms meet only in the last row
    assert label_components(u_shape)[1] == 1
    diagonal = np.eye(6, dtype=bool) | np.eye(6, dtype=bool)[::-1]
    assert label_components(diagonal)[1] == 1
    checkerboard = (np.indices((7, 9)).sum(axis=0) % 2).astype(bool)
    assert label_components(checkerboard)[1] == 1
    gap = np.array([[1, 0, 1]], dtype=bool)
    labels, n = label_components(gap)
    assert n == 2 and labels.tolist() == [[1, 0, 2]]
    assert label_components(np.zeros((3, 4), bool))[1] == 0
    assert label_components(np.ones((3, 4), bool))[1] == 1
    # numbering follows the raster order of each component's first pixel
    later_first = np.array([[0, 0, 1],
                            [1, 0, 1],
                            [1, 0, 1]], dtype=bool)
    assert label_components(later_first)[0].tolist() == [[0, 0, 1], [2, 0, 1], [2, 0, 1]]


@pytest.mark.parametrize("n", [5, 9, 21, 63])
def test_label_components_spiral_and_its_corridor(n):
    wall = spiral(n)
    for mask in (wall, ~wall):
        labels, count = label_components(mask)
        expected, expected_count = flood_labels(mask)
        assert count == expected_count and np.array_equal(labels, expected)
    assert label_components(wall)[1] == 1


def test_label_components_keeps_images_of_a_stack_apart():
    stack = np.zeros((3, 2, 2), dtype=bool)
    stack[0, 1, 0] = stack[1, 0, 1] = stack[1, 1, 1] = stack[2] = True  # would touch across images
    labels, n = label_components(stack)
    assert n == 3
    assert labels.shape == (3, 2, 2) and labels.dtype == np.int32
    assert labels[0].tolist() == [[0, 0], [1, 0]]
    assert labels[1].tolist() == [[0, 2], [0, 2]]
    assert labels[2].tolist() == [[3, 3], [3, 3]]


@settings(max_examples=150, deadline=None, database=None)
@given(hnp.arrays(bool, hnp.array_shapes(min_dims=2, max_dims=2, min_side=1, max_side=14)))
def test_label_components_matches_flood_fill(mask):
    labels, n = label_components(mask)
    expected, expected_n = flood_labels(mask)
    assert n == expected_n
    assert np.array_equal(labels, expected)


@pytest.mark.parametrize("density", [0.3, 0.5, 0.6, 0.8])
def test_label_components_matches_flood_fill_on_noise(density):
    mask = np.random.default_rng(int(density * 10)).random((40, 50)) < density
    labels, n = label_components(mask)
    expected, expected_n = flood_labels(mask)
    assert n == expected_n and np.array_equal(labels, expected)


# ---------------------------------------------------------------- AUPRO


def one_row_case():
    """One image, one row of 8 pixels: region A = pixels 0-1, region B = pixel 7, good = pixels 2-6."""
    mask = np.array([[[1, 1, 0, 0, 0, 0, 0, 1]]], dtype=bool)
    amap = np.array([[[0.9, 0.3, 0.8, 0.6, 0.2, 0.1, 0.05, 0.7]]])
    return mask, amap


def test_aupro_hand_case_with_explicit_thresholds():
    # threshold  new pixel     FPR   PRO = mean(A, B)
    #   0.9      A (1 of 2)    0     (1/2 + 0) / 2 = 0.25
    #   0.8      good          0.2   0.25
    #   0.7      B             0.2   (1/2 + 1) / 2 = 0.75
    #   0.6      good          0.4   0.75
    #   0.3      A (2 of 2)    0.4   1
    #   0.2 .. 0.05 good       0.6, 0.8, 1.0
    # up to FPR 0.3: 0.2 * 0.25 + 0.1 * 0.75 = 0.125 -> / 0.3 = 5/12
    # up to FPR 1.0: 0.2 * 0.25 + 0.2 * 0.75 + 0.6 * 1 = 0.8
    mask, amap = one_row_case()
    assert aupro(mask, amap) == pytest.approx(5 / 12, abs=1e-12)
    assert aupro(mask, amap, fpr_limit=1.0) == pytest.approx(0.8, abs=1e-12)
    assert aupro(mask, amap, fpr_limit=0.2) == pytest.approx(0.25, abs=1e-12)  # limit on a vertex


def test_aupro_tie_between_good_and_region_pixel_is_a_diagonal():
    # as above but the good pixel at 0.6 now scores 0.7, with B: (0.2, 0.25) -> (0.4, 0.75) in one step
    # up to 0.3: 0.2 * 0.25 + 0.1 * (0.25 + 0.5) / 2 = 0.0875 -> / 0.3 = 7/24
    # up to 1.0: 0.05 + 0.2 * (0.25 + 0.75) / 2 + 0.6 * 1 = 0.75
    mask, amap = one_row_case()
    amap[0, 0, 3] = 0.7
    assert aupro(mask, amap) == pytest.approx(7 / 24, abs=1e-12)
    assert aupro(mask, amap, fpr_limit=1.0) == pytest.approx(0.75, abs=1e-12)


def test_aupro_perfect_and_inverted_maps():
    mask = np.zeros((2, 16, 16), dtype=bool)
    mask[0, 2:5, 3:9] = mask[1, 10:12, 10:15] = True
    assert aupro(mask, mask.astype(np.float32)) == 1.0
    assert aupro(mask, -mask.astype(np.float32)) == 0.0
    # many regions of many sizes: the PRO weights must still add up to exactly 1
    noise = np.random.default_rng(1).random((3, 40, 40)) < 0.3
    assert aupro(noise, noise + np.random.default_rng(2).random(noise.shape).astype(np.float16) / 2) == 1.0


def test_aupro_half_detected_region_at_every_fpr():
    # half the region scores above every good pixel and half below: PRO = 1/2 at every FPR < 1
    rng = np.random.default_rng(0)
    mask = np.zeros((1, 10, 10), dtype=bool)
    mask[0, 2:4, 2:6] = True
    amap = rng.random((1, 10, 10))
    amap[0, 2, 2:6], amap[0, 3, 2:6] = 2.0, -1.0
    assert aupro(mask, amap) == pytest.approx(0.5, abs=1e-12)
    assert aupro(mask, amap, fpr_limit=1.0) == pytest.approx(0.5, abs=1e-12)


def test_aupro_weights_regions_equally_not_by_area():
    # a 1-pixel region found, a 9-pixel region missed, in two images: PRO = (1 + 0) / 2 = 0.5,
    # where a pixel-weighted overlap would say 1/10
    mask = np.zeros((2, 6, 6), dtype=bool)
    mask[0, 1, 1] = True
    mask[1, 2:5, 2:5] = True
    amap = np.full((2, 6, 6), 0.5)
    amap[0, 1, 1], amap[1, 2:5, 2:5] = 1.0, 0.0
    assert aupro(mask, amap) == pytest.approx(0.5, abs=1e-12)


def test_aupro_regions_are_8_connected():
    # two diagonal pixels are one region: finding one of them is PRO 1/2, not (1 + 0) / 2 over two regions
    mask = np.zeros((1, 4, 4), dtype=bool)
    mask[0, 1, 1] = mask[0, 2, 2] = True
    amap = np.zeros((1, 4, 4))
    amap[0, 1, 1], amap[0, 2, 2] = 1.0, -1.0
    labels, n = label_components(mask)
    assert n == 1
    assert aupro(mask, amap) == pytest.approx(0.5, abs=1e-12)


@pytest.mark.parametrize("seed", range(12))
def test_aupro_matches_threshold_loop(seed):
    rng = np.random.default_rng(300 + seed)
    n, h, w = int(rng.integers(1, 4)), int(rng.integers(3, 9)), int(rng.integers(3, 9))
    masks = rng.random((n, h, w)) < rng.uniform(0.1, 0.6)
    masks[0, 0, 0], masks[-1, -1, -1] = True, False
    maps = np.round(rng.random((n, h, w)) + 0.3 * masks, int(rng.integers(1, 3)))
    for fpr_limit in (0.3, 0.05, 1.0):
        assert aupro(masks, maps, fpr_limit) == pytest.approx(brute_aupro(masks, maps, fpr_limit), abs=1e-12)


def test_aupro_rejects_bad_input():
    good_only = np.zeros((1, 4, 4), dtype=bool)
    with pytest.raises(DataError, match="0 regions"):
        aupro(good_only, np.zeros((1, 4, 4)))
    with pytest.raises(DataError, match="0 good"):
        aupro(~good_only, np.zeros((1, 4, 4)))
    with pytest.raises(DataError, match="one shape"):
        aupro(good_only, np.zeros((1, 4, 5)))
    with pytest.raises(ConfigError, match="fpr_limit"):
        aupro(good_only, np.zeros((1, 4, 4)), fpr_limit=0.0)
    mask = good_only.copy()
    mask[0, 0, 0] = True
    with pytest.raises(DataError, match="NaN"):
        aupro(mask, np.full((1, 4, 4), np.nan))
