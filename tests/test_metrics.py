"""Cross-checks of cxr_fracture.metrics against brute-force references, scikit-learn, pycocotools and MONAI."""
import functools, io, math, os, subprocess, sys, textwrap, tracemalloc, warnings
from collections.abc import Sequence
import numpy as np
import pytest
from scipy import ndimage

from cxr_fracture import metrics as M


# ---------------------------------------------------------------- brute-force references (test-only)
# Written from the definitions alone, with no use of the package's helpers (box_centers, inside_boxes, _pixel_span):
# own floor/clip for the center pixels, a loop over pixel centers for the inside mask, and scipy.ndimage.label
# (8-connectivity) relabelling at every threshold.
def ref_centers(b, H, W):
    "Center pixel (floor((y1+y2)/2), floor((x1+x2)/2)) of each box, clipped to the map."
    out = []
    for x1, y1, x2, y2 in b:
        r = min(max(math.floor((y1 + y2) / 2), 0), H - 1)
        c = min(max(math.floor((x1 + x2) / 2), 0), W - 1)
        out.append((r, c))
    return out

def ref_inside(b, H, W):
    "Pixels whose center (r+0.5, c+0.5) satisfies x1 <= c+0.5 < x2 and y1 <= r+0.5 < y2 for some box."
    mask = np.zeros((H, W), bool)
    for r in range(H):
        for c in range(W):
            for x1, y1, x2, y2 in b:
                if x1 <= c + 0.5 < x2 and y1 <= r + 0.5 < y2: mask[r, c] = True
    return mask

def ref_fp_components(a, b):
    "Number of 8-connected components of the bool map `a` whose bounding-rect center lies in no box (closed intervals)."
    lab, k = ndimage.label(a, structure=np.ones((3, 3), int))
    nfp = 0
    for q in range(1, k + 1):
        rr, cc = np.nonzero(lab == q)
        cy, cx = (rr.min() + rr.max() + 1) / 2, (cc.min() + cc.max() + 1) / 2
        nfp += not any(x1 <= cx <= x2 and y1 <= cy <= y2 for x1, y1, x2, y2 in b)
    return nfp

def _as_boxes(b): return [tuple(map(float, row)) for row in np.asarray(b, dtype=np.float64).reshape(-1, 4)]

def brute_pixel_curve(maps, boxes, T):
    "Recall and FP ratio at each threshold, by thresholding every map at every threshold."
    boxes = [_as_boxes(b) for b in boxes]
    nbox = sum(len(b) for b in boxes)
    ins = [ref_inside(b, *np.shape(m)) for m, b in zip(maps, boxes)]
    ctr = [ref_centers(b, *np.shape(m)) for m, b in zip(maps, boxes)]
    rec, fp = [], []
    for t in T:
        found, ratio = 0, 0.0
        for m, mk, cc in zip(maps, ins, ctr):
            a = np.asarray(m, dtype=np.float64) >= t
            found += sum(bool(a[r, c]) for r, c in cc)
            ratio += (a & ~mk).sum() / a.size
        rec.append(found / nbox); fp.append(ratio / len(maps))
    return np.array(rec), np.array(fp)

def brute_component_curve(maps, boxes, T):
    "Recall and FP components per image, relabelling with scipy.ndimage.label (8-connectivity) at every threshold."
    boxes = [_as_boxes(b) for b in boxes]
    nbox = sum(len(b) for b in boxes)
    ctr = [ref_centers(b, *np.shape(m)) for m, b in zip(maps, boxes)]
    rec, fp = [], []
    for t in T:
        found = nfp = 0
        for m, b, cc in zip(maps, boxes, ctr):
            a = np.asarray(m, dtype=np.float64) >= t
            found += sum(bool(a[r, c]) for r, c in cc)
            nfp += ref_fp_components(a, b)
        rec.append(found / nbox); fp.append(nfp / len(maps))
    return np.array(rec), np.array(fp)

def ref_recall_at(fp, rec, targets):
    "Largest recall with fp <= f for each target f (0 if none)."
    return np.array([max([r for x, r in zip(fp, rec) if x <= f], default=0.0) for f in targets])

def random_case(seed, n=7, dtype=np.float64, quantize=None):
    rng = np.random.default_rng(seed)
    maps, boxes = [], []
    for i in range(n):
        H, W = rng.integers(5, 14, 2)
        m = ndimage.gaussian_filter(rng.random((H, W)), 1.0)
        m = (m - m.min()) / (np.ptp(m) + 1e-9)
        m = m ** 2
        if quantize: m = np.round(m * quantize) / quantize
        maps.append(m.astype(dtype))
        k = rng.integers(0, 3) if i else 1
        b = []
        for _ in range(k):
            x1, y1 = rng.uniform(0, W - 1), rng.uniform(0, H - 1)
            b.append([x1, y1, rng.uniform(x1, W), rng.uniform(y1, H)])
        for _ in range(rng.integers(0, 3)):  # half-integer corners: pixel centers and component centers on the edges
            x1, y1 = rng.integers(0, 2 * W) / 2, rng.integers(0, 2 * H) / 2
            b.append([x1, y1, rng.integers(2 * x1, 2 * W + 1) / 2, rng.integers(2 * y1, 2 * H + 1) / 2])
        if i == 2: b.append([0, 0, W, H])  # a box covering the whole map
        if i == 3: b.append([W, H, W, H])  # a degenerate box on the far corner: center clipped to (H-1, W-1)
        boxes.append(np.array(b).reshape(-1, 4))
    return maps, boxes


# ---------------------------------------------------------------- the definitions' edge cases, explicitly
def test_reference_and_package_agree_on_the_edge_cases():
    # center clipping: a degenerate box on the far edge of a (4, 5) map -> pixel (3, 4)
    assert ref_centers([(5, 4, 5, 4)], 4, 5) == [(3, 4)]
    np.testing.assert_array_equal(M.box_centers([[5, 4, 5, 4]], (4, 5)), [[3, 4]])
    m = np.zeros((4, 5)); m[3, 4] = 0.9
    for f in (M.pixel_froc, M.component_froc):
        assert f([m], [[[5, 4, 5, 4]]], thresholds=[0.9]).recall.tolist() == [1.0]
    # half-open upper edge: [0.5, 0.5, 1.5, 1.5] contains pixel (0, 0) only (center 1.5 is not < 1.5)
    want = np.zeros((3, 3), bool); want[0, 0] = True
    np.testing.assert_array_equal(ref_inside([(0.5, 0.5, 1.5, 1.5)], 3, 3), want)
    np.testing.assert_array_equal(M.inside_boxes([[0.5, 0.5, 1.5, 1.5]], (3, 3)), want)
    for px, fp in (((0, 0), 0.0), ((1, 1), 1 / 9)):  # (0, 0) is inside, (1, 1) is not: an FP pixel
        m = np.zeros((3, 3)); m[px] = 0.9
        assert M.pixel_froc([m], [[[0.5, 0.5, 1.5, 1.5]]], thresholds=[0.9]).fp.tolist() == [fp]
        assert brute_pixel_curve([m], [[[0.5, 0.5, 1.5, 1.5]]], [0.9])[1].tolist() == [fp]
    # closed intervals for component centers: pixel (0, 0) alone has center (0.5, 0.5)
    a = np.zeros((3, 3)); a[0, 0] = 0.9
    for box, nfp in (([0, 0, 0.5, 0.5], 0), ([0.51, 0, 1, 1], 1)):
        assert ref_fp_components(a >= 0.9, [tuple(box)]) == nfp
        assert M.component_froc([a], [[box]], thresholds=[0.9]).fp.tolist() == [nfp]


# ---------------------------------------------------------------- FROCs against brute force
@pytest.mark.parametrize('seed,dtype', [(0, np.float64), (1, np.float32), (2, np.float64)])
def test_streaming_froc_equals_brute_force_exact(seed, dtype):
    maps, boxes = random_case(seed, dtype=dtype)
    for f, ref in ((M.pixel_froc, brute_pixel_curve), (M.component_froc, brute_component_curve)):
        r = f(maps, boxes, thresholds='exact')
        rec, fp = ref(maps, boxes, r.thresholds)
        np.testing.assert_array_equal(r.recall, rec)
        np.testing.assert_allclose(r.fp, fp, rtol=0, atol=1e-12)
        np.testing.assert_array_equal(r.recall_at, ref_recall_at(fp, rec, r.targets))


def test_component_froc_on_blob_maps_equals_brute_force():
    # smooth background plus blobs (as the benchmark's maps): new pixels mostly join a component without growing its
    # rectangle, the case where the sweep keeps a component's FP flag without re-testing its center
    rng = np.random.default_rng(11)
    maps, boxes = [], []
    rr, cc = np.mgrid[:40, :48]
    for i in range(6):
        m = ndimage.gaussian_filter(rng.random((40, 48)), 4) * 0.5
        b = []
        for _ in range(rng.integers(1, 5)):
            r, c, s = rng.uniform(3, 37), rng.uniform(3, 45), rng.uniform(1.5, 5)
            m = np.maximum(m, rng.uniform(0.4, 1) * np.exp(-((rr - r) ** 2 + (cc - c) ** 2) / (2 * s * s)))
            if rng.random() < 0.6:  # a box around the blob, sometimes off-center
                dx, dy = rng.uniform(-2, 2, 2)
                b.append([max(c + dx - s, 0), max(r + dy - s, 0), min(c + dx + s, 48), min(r + dy + s, 40)])
        maps.append(np.clip(m, 0, 1).astype(np.float32)); boxes.append(np.array(b).reshape(-1, 4))
    r = M.component_froc(maps, boxes)
    sub = np.arange(0, 1001, 13)
    rec, fp = brute_component_curve(maps, boxes, r.thresholds[sub])
    np.testing.assert_array_equal(r.recall[sub], rec); np.testing.assert_array_equal(r.fp[sub], fp)
    e = M.component_froc(maps, boxes, engine='numpy', thresholds=r.thresholds[sub])  # the plain-Python sweep too
    np.testing.assert_array_equal(e.fp, fp)


def test_streaming_froc_equals_brute_force_on_grid():
    maps, boxes = random_case(3, dtype=np.float32)
    T = np.arange(0, 1001, 7) / 1000
    for f, ref in ((M.pixel_froc, brute_pixel_curve), (M.component_froc, brute_component_curve)):
        r = f(maps, boxes, thresholds=T)
        rec, fp = ref(maps, boxes, T)
        np.testing.assert_array_equal(r.recall, rec)
        np.testing.assert_allclose(r.fp, fp, rtol=0, atol=1e-12)
    # the default grid, checked at a subset of its thresholds
    r = M.component_froc(maps, boxes)
    assert len(r.thresholds) == 1001 and r.thresholds[1] == 0.001
    sub = r.thresholds[::50]
    rec, fp = brute_component_curve(maps, boxes, sub)
    np.testing.assert_array_equal(r.recall[::50], rec); np.testing.assert_array_equal(r.fp[::50], fp)


def test_numba_and_numpy_engines_identical():
    pytest.importorskip('numba', reason='numba not installed (optional JIT engine)')
    maps, boxes = random_case(4, n=5, dtype=np.float32)
    for f in (M.pixel_froc, M.component_froc):
        for th in (None, 'exact', np.array([0.0, 0.2, 0.21, 0.5, 0.9])):
            a = f(maps, boxes, thresholds=th, engine='numba')
            b = f(maps, boxes, thresholds=th, engine='numpy')
            np.testing.assert_array_equal(a.recall, b.recall); np.testing.assert_array_equal(a.fp, b.fp)
            assert a.score == b.score
    for f in (M.pixel_froc, M.component_froc):  # worker threads: same counts as one thread
        a, b = f(maps * 3, boxes * 3, workers=1), f(maps * 3, boxes * 3, workers=3)
        np.testing.assert_array_equal(a.recall, b.recall); np.testing.assert_array_equal(a.fp, b.fp)


def test_bins_kernel_matches_searchsorted():
    rng = np.random.default_rng(0)
    v = np.concatenate([rng.random(5000), np.arange(1001) / 1000, [0.0, 1.0, np.nextafter(0.5, 0), np.nextafter(0.5, 1)]])
    for T in (np.arange(1001) / 1000, np.unique(rng.random(50)), np.array([0.3]), np.linspace(0.2, 0.8, 13)):
        for dt in (np.float32, np.float64):
            x = v.astype(dt)
            out = np.empty(len(x), np.int32)
            bins, _, _ = M._kernels('auto')
            assert bins(x, T, M._is_uniform(T), out) == -1
            np.testing.assert_array_equal(out, np.searchsorted(T, x.astype(np.float64), 'right'))


def test_generator_equals_list_and_grid_vs_exact():
    maps, boxes = random_case(5, quantize=1000)
    for f in (M.pixel_froc, M.component_froc):
        a = f(maps, boxes)
        b = f((m for m in maps), iter(boxes))
        np.testing.assert_array_equal(a.fp, b.fp); np.testing.assert_array_equal(a.recall, b.recall)
        e = f(iter(maps), boxes, thresholds='exact')
        np.testing.assert_array_equal(a.recall_at, e.recall_at)  # every value is on the grid: equal
        # the grid's curve at the exact thresholds equals the exact curve
        idx = np.searchsorted(a.thresholds, e.thresholds)
        assert np.allclose(a.thresholds[idx], e.thresholds, atol=1e-12)
        np.testing.assert_allclose(a.fp[idx], e.fp, atol=1e-12); np.testing.assert_array_equal(a.recall[idx], e.recall)
    maps, boxes = random_case(6)  # off-grid values: the grid can only be worse
    for f in (M.pixel_froc, M.component_froc):
        assert (f(maps, boxes).recall_at <= f(maps, boxes, thresholds='exact').recall_at + 1e-15).all()


def test_image_order_does_not_change_the_result():
    maps, boxes = random_case(7, n=9)
    p = np.random.default_rng(0).permutation(9)
    for f in (M.pixel_froc, M.component_froc):
        a, b = f(maps, boxes), f([maps[i] for i in p], [boxes[i] for i in p])
        np.testing.assert_array_equal(a.fp, b.fp); np.testing.assert_array_equal(a.recall, b.recall)


def _fresh_maps(n, size=64, seed=0, quantize=None):
    "A generator of n fresh float32 maps (a new array each time: nothing shared between images)."
    rng = np.random.default_rng(seed)
    for _ in range(n):
        m = rng.random((size, size), dtype=np.float32)
        yield np.round(m * quantize) / quantize if quantize else m

def _peak_bytes(run):
    tracemalloc.start()
    try: run(); return tracemalloc.get_traced_memory()[1]
    finally: tracemalloc.stop()

def test_memory_does_not_grow_with_images(monkeypatch):
    boxes = lambda n: ([[8, 8, 20, 20]] if i % 2 else [] for i in range(n))
    run = lambda n: lambda: (M.component_froc(_fresh_maps(n), boxes(n)), M.pixel_froc(_fresh_maps(n), boxes(n)))
    run(4)()  # warm up (numba compile or cache load)
    p50, p500 = _peak_bytes(run(50)), _peak_bytes(run(500))
    assert p500 < 1.2 * p50 + 100_000, (p50, p500)  # 450 more maps of 16 KiB would add 7 MiB
    # the measurement has teeth: keeping a reference to every map (the bug it guards against) is caught
    kept, check = [], M._check_map
    monkeypatch.setattr(M, '_check_map', lambda m, i: (kept.append(m), check(m, i))[1])
    q50, q500 = _peak_bytes(run(50)), _peak_bytes(run(500))
    assert q500 > 1.2 * q50 + 100_000 + 5_000_000, (q50, q500)


class _LazyMaps(Sequence):
    "A Sequence that makes its maps in __getitem__ (as a dataset reading from disk would): nothing is held."
    def __init__(self, n, size=64): self.n, self.size = n, size
    def __len__(self): return self.n
    def __getitem__(self, i):
        if not 0 <= i < self.n: raise IndexError(i)
        m = np.random.default_rng(i).random((self.size, self.size), dtype=np.float32)
        return np.round(m * 200) / 200  # 201 distinct values: the exact thresholds stay few


def test_exact_thresholds_read_a_sequence_twice_without_copying():
    boxes = lambda n: [[[8, 8, 20, 20]] if i % 2 else [] for i in range(n)]
    lazy = _LazyMaps(30)
    for f in (M.pixel_froc, M.component_froc):
        a = f(lazy, boxes(30), thresholds='exact')
        b = f([lazy[i] for i in range(30)], boxes(30), thresholds='exact')           # a list
        c = f((lazy[i] for i in range(30)), boxes(30), thresholds='exact')           # a generator (materialized)
        d = f(np.stack([lazy[i] for i in range(30)]), boxes(30), thresholds='exact') # a 3-D array
        for r in (b, c, d):
            np.testing.assert_array_equal(a.thresholds, r.thresholds)
            np.testing.assert_array_equal(a.recall, r.recall); np.testing.assert_array_equal(a.fp, r.fp)
    gboxes = lambda n: ([[8, 8, 20, 20]] if i % 2 else [] for i in range(n))
    f = lambda n: lambda: M.component_froc(_LazyMaps(n), gboxes(n), thresholds='exact')
    f(4)()
    p50, p500 = _peak_bytes(f(50)), _peak_bytes(f(500))
    assert p500 < 1.2 * p50 + 100_000, (p50, p500)  # list(maps) would hold 500 maps of 32 KiB


def test_component_froc_agrees_with_monai():
    froc = pytest.importorskip('monai.metrics.froc', reason='monai not installed (optional cross-check)')
    # maps of constant-valued blobs on a zero background: the components do not change between blob values,
    # so each blob is one detection point with its value as probability (MONAI's setting)
    rng = np.random.default_rng(0)
    vals = iter(rng.permutation(np.arange(1, 60)) / 64)
    maps, boxes, fp_probs, tp_probs = [], [], [], []
    for i in range(8):
        m = np.zeros((40, 40)); b = []
        for k in range(4):  # blobs at well separated places
            r0, c0 = 2 + 10 * k, 2 + 9 * (i % 4)
            v = next(vals)
            m[r0:r0 + 4, c0:c0 + 5] = v
            if (i + k) % 3 == 0:  # a box around the blob: a true positive detection
                b.append([c0 - 1, r0 - 1, c0 + 6, r0 + 5]); tp_probs.append(v)
            else: fp_probs.append(v)
        if i % 4 == 1:  # a box with nothing on it: a missed target
            b.append([35, 35, 39, 39]); tp_probs.append(0.0)
        maps.append(m); boxes.append(np.array(b).reshape(-1, 4))
    fp_probs, tp_probs = np.array(fp_probs), np.array(tp_probs)
    fps, sens = froc.compute_froc_curve_data(fp_probs, tp_probs, num_targets=len(tp_probs), num_images=len(maps))
    ours = M.component_froc(maps, boxes, thresholds='exact')
    thr = np.array(sorted(set(fp_probs) | set(tp_probs))[1:])  # MONAI's thresholds (its last point is (0, 0))
    idx = np.searchsorted(ours.thresholds, thr)
    np.testing.assert_array_equal(ours.thresholds[idx], thr)
    np.testing.assert_allclose(ours.fp[idx], fps[:-1], atol=1e-12)
    np.testing.assert_allclose(ours.recall[idx], sens[:-1], atol=1e-12)
    # MONAI's score interpolates; at FP targets reached by the curve it equals the best recall with FP <= target
    targets = np.unique(fps[(fps > 0) & (fps < 1.5)])[:5]
    r = M.component_froc(maps, boxes, fps_per_image=targets, thresholds='exact')
    assert np.isclose(froc.compute_froc_score(fps, sens, eval_thresholds=targets), r.score, atol=1e-12)
    assert np.isclose(froc.compute_froc_score(ours.fp[idx], ours.recall[idx], eval_thresholds=targets), r.score, atol=1e-12)


def test_paint_boxes_gives_detectors_the_pixel_froc():
    gt = [np.array([[2, 2, 6, 6]]), np.zeros((0, 4))]
    det = [(np.array([[1, 1, 7, 7], [8, 8, 10, 10]]), [0.9, 0.3]), (np.array([[0, 0, 3, 3]]), [0.5])]
    maps = [M.paint_boxes(b, s, (10, 10)) for b, s in det]
    r = M.pixel_froc(maps, gt, thresholds='exact')
    # tau = 0.9: box found, FP pixels = 36 - 16 = 20 in image 0 -> ratio 20/100/2 = 0.1
    assert r.recall_at_fp(0.1) == 1.0 and r.recall_at_fp(0.099) == 0.0
    with pytest.raises(ValueError, match='scores'): M.paint_boxes([[0, 0, 1, 1]], [1.5], (3, 3))


def test_paint_boxes_paints_the_center_pixel_of_a_box_with_no_pixel_center():
    thin = [0.6, 0, 1.4, 1]  # contains no pixel center; its center pixel is (0, 1)
    assert not ref_inside([tuple(thin)], 20, 20).any() and ref_centers([tuple(thin)], 20, 20) == [(0, 1)]
    m = M.paint_boxes([thin], [0.8], (20, 20))
    assert m[0, 1] == 0.8 and (m > 0).sum() == 1
    r = M.pixel_froc([m], [[thin]], thresholds='exact')
    assert r.recall_at_fp(0.0025) == 1.0 and r.score == 1.0  # the detection of the thin box is not lost
    # [0.5, 0.5, 1.5, 1.5] contains pixel (0, 0) only but has center pixel (1, 1): both are painted
    m = M.paint_boxes([[0.5, 0.5, 1.5, 1.5]], [0.6], (3, 3))
    assert sorted(zip(*np.nonzero(m))) == [(0, 0), (1, 1)]
    # a detection equal to the ground-truth box always activates the box's center pixel
    rng = np.random.default_rng(0)
    for _ in range(200):
        x1, y1 = rng.integers(0, 20, 2) / 2
        b = [x1, y1, x1 + rng.integers(0, 4) / 2, y1 + rng.integers(0, 4) / 2]
        (r_, c_), = ref_centers([tuple(b)], 12, 12)
        assert M.paint_boxes([b], [0.7], (12, 12))[r_, c_] == 0.7, b


# ---------------------------------------------------------------- AUROC, DeLong, bootstrap
def slow_delong(S, y):
    "DeLong (1988) with the explicit placement values psi(x, y) = [x > y] + [x == y]/2."
    X, Y = S[:, y], S[:, ~y]
    psi = lambda a, b: (a[:, None] > b[None]) + 0.5 * (a[:, None] == b[None])
    V10 = np.stack([psi(x, yy).mean(1) for x, yy in zip(X, Y)])
    V01 = np.stack([psi(x, yy).mean(0) for x, yy in zip(X, Y)])
    return V10.mean(1), np.cov(V10) / X.shape[1] + np.cov(V01) / Y.shape[1]


@pytest.mark.parametrize('seed', range(4))
def test_auroc_and_delong(seed):
    from sklearn.metrics import roc_auc_score
    rng = np.random.default_rng(seed)
    n = [30, 200, 57, 1000][seed]
    y = rng.random(n) < 0.35
    y[:2] = [True, False]
    a = np.round(y + rng.normal(size=n) * 1.5, 1 if seed % 2 else 6)
    b = a + rng.normal(size=n)
    assert abs(M.image_auroc(a, y) - roc_auc_score(y, a)) < 1e-12
    assert abs(M.image_auroc(a, y.astype(int)) - roc_auc_score(y, a)) < 1e-12
    aucs, cov = M._delong(np.stack([a, b]), y)
    aucs2, cov2 = slow_delong(np.stack([a, b]), y)
    np.testing.assert_allclose(aucs, aucs2, atol=1e-12); np.testing.assert_allclose(cov, cov2, atol=1e-12)
    t = M.delong_test(a, b, y)
    assert abs(t.diff - (aucs[0] - aucs[1])) < 1e-12 and 0 <= t.p <= 1


def test_delong_ci_agrees_with_bootstrap():
    rng = np.random.default_rng(0)
    y = rng.random(400) < 0.4
    s = y * 1.0 + rng.normal(size=400)
    d = M.delong_ci(s, y)
    b = M.bootstrap_ci(M.image_auroc, s, y, n=1000, seed=1)
    assert d.lower < d.estimate < d.upper and abs(b.estimate - d.estimate) < 1e-12
    assert abs(b.se - d.se) < 0.1 * d.se, (b.se, d.se)
    assert abs(b.lower - d.lower) < 0.01 and abs(b.upper - d.upper) < 0.01, (b, d)
    est, lo, hi = d  # unpacks like a tuple
    assert (est, lo, hi) == (d[0], d[1], d[2])


@pytest.mark.parametrize('level', [0, 1, 95, -0.5, np.nan, 'high'])
def test_level_must_lie_between_0_and_1(level):
    y = np.array([0, 1, 0, 1, 1]); s = np.array([0.1, 0.8, 0.3, 0.6, 0.2])
    with pytest.raises(ValueError, match='level must lie strictly between 0 and 1'): M.delong_ci(s, y, level=level)
    with pytest.raises(ValueError, match='level must lie strictly between 0 and 1'): M.delong_test(s, s[::-1], y, level=level)
    with pytest.raises(ValueError, match='level must lie strictly between 0 and 1'): M.bootstrap_ci(M.image_auroc, s, y, n=5, level=level)


def test_delong_test_size_under_null():
    # two exchangeable scorers with equal true AUROC: p < 0.05 in about 5% of trials
    rng = np.random.default_rng(0)
    rej = 0
    for _ in range(300):
        y = rng.random(150) < 0.5
        z = rng.normal(size=150)
        a, b = y + z + rng.normal(size=150), y + z + rng.normal(size=150)
        rej += M.delong_test(a, b, y).p < 0.05
    assert 5 <= rej <= 28, rej


def test_bootstrap_fast_froc_path_equals_rerunning():
    maps, boxes = random_case(8, n=10)
    for f in (M.pixel_froc, functools.partial(M.component_froc, fps_per_image=(0.5, 1.0))):
        fast = M.bootstrap_ci(f, maps, boxes, n=20, seed=5)
        with warnings.catch_warnings():
            warnings.simplefilter('ignore')
            slow = M.bootstrap_ci(lambda m, b: f(m, b).score, maps, boxes, n=20, seed=5)
        np.testing.assert_allclose(fast.samples, slow.samples, atol=1e-12)
        assert fast.n_skipped == slow.n_skipped and fast.estimate == f(maps, boxes).score


def test_bootstrap_counts_undefined_resamples():
    y = np.array([1, 0, 0, 0, 0, 0]); s = np.arange(6.0)
    with pytest.warns(UserWarning, match='undefined'):
        b = M.bootstrap_ci(M.image_auroc, s, y, n=50, seed=0)
    assert b.n_skipped > 0 and len(b.samples) == 50 - b.n_skipped


# ---------------------------------------------------------------- COCO mAP
def _coco_case():
    rng = np.random.default_rng(0)
    gts, dets = [], []
    for i in range(12):
        g = []
        for _ in range(rng.integers(0, 3)):
            x, y_, w, h = rng.uniform(0, 200), rng.uniform(0, 200), rng.uniform(5, 150), rng.uniform(5, 150)
            g.append([x, y_, x + w, y_ + h])
        g = np.array(g).reshape(-1, 4); gts.append(g)
        d = [np.r_[b + rng.normal(0, 0.12 * (b[2] - b[0]), 4), rng.random()] for b in g]
        d += [[*(xy := rng.uniform(0, 200, 2)), *(xy + rng.uniform(5, 80, 2)), rng.random() * 0.6] for _ in range(rng.integers(0, 3))]
        d = np.array(d).reshape(-1, 5); d[:, 2] = np.maximum(d[:, 2], d[:, 0]); d[:, 3] = np.maximum(d[:, 3], d[:, 1])
        dets.append(d)
    return dets, gts


def test_coco_map_equals_cocoeval_summarize():
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval
    dets, gts = _coco_case()
    ours = M.coco_map(dets, gts)
    with _quiet():
        gt = COCO()
        gt.dataset = dict(images=[dict(id=i + 1) for i in range(12)], categories=[dict(id=1)],
                          annotations=[dict(id=k + 1, image_id=i + 1, category_id=1, iscrowd=0, bbox=[a, b, c - a, d - b], area=(c - a) * (d - b))
                                       for k, (i, (a, b, c, d)) in enumerate((i, bb) for i, g in enumerate(gts) for bb in g)])
        gt.createIndex()
        dt = gt.loadRes(np.array([[i + 1, a, b, c - a, d - b, s, 1] for i, dd in enumerate(dets) for a, b, c, d, s in dd]))
        E = COCOeval(gt, dt, 'bbox')
        E.params.iouThrs = np.array([0.40, 0.45, 0.50, 0.55, 0.60, 0.65, 0.70, 0.75])
        E.evaluate(); E.accumulate(); E.summarize()
    st = [np.nan if v == -1 else v for v in E.stats]
    for k, v in zip(['AP', 'AP75', 'AP_S', 'AP_M', 'AP_L'], [st[0], st[2], st[3], st[4], st[5]]):
        assert np.isclose(ours[k], v, atol=1e-12, equal_nan=True), (k, ours[k], v)
    assert 0 < ours['AP75'] <= ours['AP'] <= ours['AP40'] <= 1


def test_coco_map_faster_coco_eval_gives_the_same_numbers():
    pytest.importorskip('faster_coco_eval', reason='faster-coco-eval not installed (optional cross-check)')
    import unittest.mock as um
    dets, gts = _coco_case()
    ours = M.coco_map(dets, gts)
    with um.patch.dict(sys.modules, {'pycocotools': None, 'pycocotools.coco': None, 'pycocotools.cocoeval': None}):
        fast = M.coco_map(dets, gts)
    for k in ours: assert np.isclose(ours[k], fast[k], atol=1e-9, equal_nan=True), (k, ours[k], fast[k])


class _quiet:
    def __enter__(self):
        import contextlib
        self._c = contextlib.redirect_stdout(io.StringIO()); self._c.__enter__()
    def __exit__(self, *a): self._c.__exit__(*a)


def test_coco_map_without_detections_and_errors():
    assert M.coco_map([[]], [np.array([[0, 0, 5, 5]])])['AP'] == 0.0
    with pytest.raises(ValueError, match='one of each per image'): M.coco_map([[]], [[], []])
    with pytest.raises(ValueError, match=r'detections\[0\]\[0\]'): M.coco_map([[[5, 0, 1, 1, 0.5]]], [[[0, 0, 1, 1]]])


@pytest.mark.parametrize('gt,nan', [([[0, 0, 5, 5]], {'AP_M', 'AP_L'}),                         # small only
                                    ([[0, 0, 50, 50]], {'AP_S', 'AP_L'}),                       # medium only
                                    ([[0, 0, 5, 5], [0, 0, 200, 200]], {'AP_M'}),              # small and large
                                    ([[0, 0, 32, 32], [0, 0, 96, 96]], set())])  # areas 32², 96²: both ends inclusive
def test_coco_map_nan_where_no_ground_truth_with_or_without_detections(gt, nan):
    gts = [np.array(gt, dtype=float), np.zeros((0, 4))]
    none = M.coco_map([[], []], gts)
    far = M.coco_map([[], np.array([[300, 300, 340, 340, 0.9]])], gts)  # a detection in an image with no ground truth
    assert {k for k, v in none.items() if np.isnan(v)} == nan, none
    assert {k for k, v in far.items() if np.isnan(v)} == nan, far
    for k in none:
        assert np.isclose(none[k], far[k], equal_nan=True), (k, none, far)
        if k not in nan: assert none[k] == 0.0
    # IoU thresholds without 0.40 or 0.75: AP40 / AP75 are NaN in both cases too
    a = M.coco_map([[], []], gts, iou_thresholds=(0.5, 0.6)); b = M.coco_map([[], np.array([[300, 300, 340, 340, 0.9]])], gts, iou_thresholds=(0.5, 0.6))
    assert np.isnan(a['AP40']) and np.isnan(a['AP75']) and np.isnan(b['AP40']) and np.isnan(b['AP75'])


@pytest.mark.parametrize('dets,gts,msg', [
    ([np.array([[0, 0, 10, 8]])], [[[0, 0, 10, 10]]], r'detections\[0\] has shape \(1, 4\), expected \(k, 5\) rows \[x1, y1, x2, y2, score\]'),
    ([[0, 0, 10, 8]], [[[0, 0, 10, 10]]], r'detections\[0\] has shape \(4,\), expected \(k, 5\)'),
    ([[], np.zeros((2, 6))], [[[0, 0, 10, 10]], []], r'detections\[1\] has shape \(2, 6\), expected \(k, 5\)'),
    ([[]], [np.array([[0, 0, 10]])], r'ground_truth\[0\] has shape \(1, 3\), expected \(m, 4\) rows \[x1, y1, x2, y2\]'),
    ([[]], [np.zeros((2, 2, 4))], r'ground_truth\[0\] has shape \(2, 2, 4\), expected \(m, 4\)'),
    ([[[0, 0, 1, 1, 0.5], [0, 0, 1, 1]]], [[[0, 0, 1, 1]]], r'detections\[0\] is not a numeric array'),
    ([[[0, 0, 1, 1, np.nan]]], [[[0, 0, 1, 1]]], r'detections\[0\]\[0\] .* is not finite'),
    ([[]], [[[0, 0, 1, 1], [0, 0, np.inf, 1]]], r'ground_truth\[0\]\[1\] .* is not finite'),
    ([[]], [[[0, 3, 1, 1]]], r'ground_truth\[0\]\[0\] .* is inverted'),
])
def test_coco_map_bad_shapes_are_clear_errors(dets, gts, msg):
    with pytest.raises(ValueError, match=msg): M.coco_map(dets, gts)
    assert M.coco_map([np.array([0, 0, 10, 10, 0.9])], [np.array([0, 0, 10, 10])])['AP'] > 0.999  # one flat row each is fine


# ---------------------------------------------------------------- bad input
@pytest.mark.parametrize('f', [M.pixel_froc, M.component_froc])
def test_bad_input_is_a_clear_error(f):
    good = np.zeros((4, 5)); box = [np.array([[0, 0, 2, 2]])]
    nan = good.copy(); nan[1, 3] = np.nan
    big = good.copy(); big[2, 0] = 1.5
    cases = [
        (([good, nan], box + [[]]), r'maps\[1\] pixel \(row 1, col 3\) is nan'),
        (([big], box), r'maps\[0\] pixel \(row 2, col 0\) is 1.5'),
        (([-good - 0.1], box), r'maps\[0\].*\[0, 1\]'),
        (([np.zeros((2, 4, 5))], box), r'maps\[0\] has shape \(2, 4, 5\).*2-D'),
        (([good, good], box), r'more maps than box arrays: maps\[1\]'),
        (([good], box + [[]]), 'more box arrays than maps'),
        (([good], [np.array([[0, 0, 6, 2]])]), r'boxes\[0\]\[0\].*outside map 0 of shape \(H=4, W=5\)'),
        (([good, good], [[], np.array([[1, 1, 2, 2], [3, 1, 2, 2]])]), r'boxes\[1\]\[1\].*inverted'),
        (([good], [np.array([[0, 0, 2]])]), r'boxes\[0\] has shape \(1, 3\)'),
        (([], []), 'maps is empty'),
        (([good], [[]]), 'no boxes in any'),
        (([np.zeros((0, 3))], [[]]), r'maps\[0\] is empty'),
    ]
    for args, msg in cases:
        with pytest.raises(ValueError, match=msg): f(*args)
    with pytest.raises(ValueError, match='engine'): f([good], box, engine='gpu')
    with pytest.raises(ValueError, match='exact'): f([good], box, thresholds='all')


@pytest.mark.parametrize('f,kw', [(M.pixel_froc, 'fp_ratios'), (M.component_froc, 'fps_per_image')])
@pytest.mark.parametrize('targets', [(), [], [0.1, np.nan], [np.inf], [-0.1, 0.2], [[]], 'high', None])
def test_froc_targets_are_validated(f, kw, targets):
    m = np.zeros((4, 5)); m[1, 1] = 0.9  # the center pixel of [0, 0, 2, 2]
    with pytest.raises(ValueError, match=f'{kw} must be a non-empty sequence of finite FP targets >= 0'):
        f([m], [[[0, 0, 2, 2]]], **{kw: targets})
    assert f([m], [[[0, 0, 2, 2]]], **{kw: [0, 0.1]}).score == 1.0  # 0 is a valid target


def test_bad_scores_are_clear_errors():
    with pytest.raises(ValueError, match='3 scores but 2 labels'): M.image_auroc([0.1, 0.2, 0.3], [0, 1])
    with pytest.raises(ValueError, match='only negatives'): M.image_auroc([0.1, 0.2], [0, 0])
    with pytest.raises(ValueError, match=r'scores\[1\] is not finite'): M.delong_ci([0.1, np.nan], [0, 1])
    with pytest.raises(ValueError, match='0/1'): M.image_auroc([0.1, 0.2, 0.3], [0, 1, -1])
    with pytest.raises(ValueError, match='empty'): M.image_auroc([], [])
    with pytest.raises(ValueError, match=r'arrays\[1\] has 2 items'): M.bootstrap_ci(M.image_auroc, [0.1, 0.2, 0.3], [0, 1])


# ---------------------------------------------------------------- figures and table (headless)
def test_figures_headless(monkeypatch, tmp_path):
    monkeypatch.setenv('MPLBACKEND', 'Agg')
    import matplotlib; matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    rng = np.random.default_rng(0)
    y = rng.random(100) < 0.4
    fig = M.plot_roc({'A': (y + rng.normal(size=100), y), 'B': (y * 0.5 + rng.normal(size=100), y)}, n_boot=30)
    ax = fig.axes[0]
    assert len(ax.lines) == 3 and len(ax.collections) == 2 and 'AUROC' in ax.get_legend().get_texts()[0].get_text()
    fig.savefig(tmp_path / 'roc.png')
    maps, boxes = random_case(9)
    fig = M.plot_froc({'a': M.pixel_froc(maps, boxes, per_image=True), 'b': M.pixel_froc(maps, boxes)}, n_boot=20)
    assert len(fig.axes[0].collections) == 1 and fig.axes[0].get_xlabel() == 'FP pixel ratio'
    fig.savefig(tmp_path / 'froc.png')
    with pytest.raises(ValueError, match='mix'):
        M.plot_froc({'a': M.pixel_froc(maps, boxes), 'b': M.component_froc(maps, boxes)})
    plt.close('all')


def test_results_table():
    rows = [dict(method=m, fold=k, AUROC=a + 0.02 * k, score=0.5) for m, a in [('MT', 0.9), ('AALS', 0.92)] for k in range(5)]
    t = M.results_table(rows, digits=2)
    assert list(t.columns) == ['AUROC', 'score', 'folds'] and list(t.index) == ['MT', 'AALS']
    assert t.loc['AALS', 'AUROC'] == f'0.96 ± {np.std([0.92 + 0.02 * k for k in range(5)], ddof=1):.2f}'
    assert M.results_table(rows[:1]).loc['MT', 'AUROC'] == '0.900'
    with pytest.raises(ValueError, match='no rows'): M.results_table([])


# ---------------------------------------------------------------- import rule
def test_imports_without_optional_packages():
    code = textwrap.dedent('''
        import sys, warnings
        class Block:
            def find_spec(self, name, path=None, target=None):
                if name.split('.')[0] in {'numba', 'matplotlib', 'seaborn', 'pycocotools', 'faster_coco_eval', 'fastcore', 'tqdm', 'monai', 'yaml'}:
                    raise ImportError('blocked ' + name)
        sys.meta_path.insert(0, Block())
        import numpy as np
        from cxr_fracture import metrics as M
        m = np.zeros((6, 6)); m[:2, :2] = 0.9; m[4, 4] = 0.7
        with warnings.catch_warnings(record=True) as w:
            warnings.simplefilter('always')
            r = M.component_froc([m], [[[0, 0, 3, 3]]])
        assert any('numba' in str(x.message) for x in w)
        print(r.score, M.pixel_froc([m], [[[0, 0, 3, 3]]]).score)
    ''')
    out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ['1.0', '1.0']
