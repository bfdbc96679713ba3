"""Cross-checks of cxr_fracture.metrics against brute-force references, scikit-learn, pycocotools and MONAI."""
import functools, io, os, subprocess, sys, textwrap, tracemalloc, warnings
import numpy as np
import pytest
from scipy import ndimage

from cxr_fracture import metrics as M


# ---------------------------------------------------------------- brute-force references (test-only)
def _activated(m, t):
    return np.asarray(m, dtype=np.float64) >= t

def brute_pixel_curve(maps, boxes, T):
    "Recall and FP ratio at each threshold, by thresholding every map at every threshold."
    nbox = sum(len(np.asarray(b).reshape(-1, 4)) for b in boxes)
    rec, fp = [], []
    for t in T:
        found, ratios = 0, []
        for m, b in zip(maps, boxes):
            b = np.asarray(b, dtype=np.float64).reshape(-1, 4)
            a = _activated(m, t)
            for r, c in M.box_centers(b, m.shape): found += a[r, c]
            ratios.append((a & ~M.inside_boxes(b, m.shape)).sum() / a.size)
        rec.append(found / nbox); fp.append(np.mean(ratios))
    return np.array(rec), np.array(fp)

def brute_component_curve(maps, boxes, T):
    "Recall and FP components per image, relabelling with scipy.ndimage.label (8-connectivity) at every threshold."
    nbox = sum(len(np.asarray(b).reshape(-1, 4)) for b in boxes)
    rec, fp = [], []
    for t in T:
        found = nfp = 0
        for m, b in zip(maps, boxes):
            b = np.asarray(b, dtype=np.float64).reshape(-1, 4)
            a = _activated(m, t)
            for r, c in M.box_centers(b, m.shape): found += a[r, c]
            lab, _ = ndimage.label(a, structure=np.ones((3, 3)))
            for sl in ndimage.find_objects(lab):
                cy = (sl[0].start + sl[0].stop) / 2  # (r0 + r1 + 1)/2 with r1 = stop - 1
                cx = (sl[1].start + sl[1].stop) / 2
                inside = ((b[:, 0] <= cx) & (cx <= b[:, 2]) & (b[:, 1] <= cy) & (cy <= b[:, 3])).any()
                nfp += not inside
        rec.append(found / nbox); fp.append(nfp / len(maps))
    return np.array(rec), np.array(fp)

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
        if i == 2: b.append([0, 0, W, H])  # a box covering the whole map
        boxes.append(np.array(b).reshape(-1, 4))
    return maps, boxes


# ---------------------------------------------------------------- FROCs against brute force
@pytest.mark.parametrize('seed,dtype', [(0, np.float64), (1, np.float32), (2, np.float64)])
def test_streaming_froc_equals_brute_force_exact(seed, dtype):
    maps, boxes = random_case(seed, dtype=dtype)
    for f, ref in ((M.pixel_froc, brute_pixel_curve), (M.component_froc, brute_component_curve)):
        r = f(maps, boxes, thresholds='exact')
        rec, fp = ref(maps, boxes, r.thresholds)
        np.testing.assert_array_equal(r.recall, rec)
        np.testing.assert_allclose(r.fp, fp, rtol=0, atol=1e-12)
        np.testing.assert_array_equal(r.recall_at, M._recall_at(fp, rec, r.targets))


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
    pytest.importorskip('numba')
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


def test_memory_does_not_grow_with_images():
    def gen(n):
        rng = np.random.default_rng(0)
        pool = [rng.random((64, 64)).astype(np.float32) for _ in range(4)]
        for i in range(n): yield pool[i % 4]
    boxes = lambda n: ([[8, 8, 20, 20]] if i % 2 else [] for i in range(n))
    peaks = []
    for n in (20, 200):
        M.component_froc(gen(2), boxes(2)); M.pixel_froc(gen(2), boxes(2))  # warm up
        tracemalloc.start()
        M.component_froc(gen(n), boxes(n)); M.pixel_froc(gen(n), boxes(n))
        peaks.append(tracemalloc.get_traced_memory()[1]); tracemalloc.stop()
    assert peaks[1] < 1.5 * peaks[0] + 200_000, peaks


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
def test_coco_map_equals_cocoeval_summarize():
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval
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
    # faster-coco-eval, when installed, gives the same numbers
    try: import faster_coco_eval  # noqa
    except ImportError: return
    import unittest.mock as um
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
