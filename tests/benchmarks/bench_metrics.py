"""Benchmark: both FROCs and the image AUROC on the AALS test-set size (13,000 maps of 256 x 256).

    .venv/bin/python tests/benchmarks/bench_metrics.py [--n 13000] [--size 256] [--tracemalloc]

The maps are made on the fly, a fresh float32 array per image (nothing is cached or shared between images, so a
metric that kept references to maps would show in the peak memory, and no map is cache-hot from a previous image).
Each map is realistic enough that the score is not trivial: a smooth low background (two scales of interpolated
noise), a Gaussian blob at about 75% of the boxes (the rest are missed), and false-positive blobs (Poisson, mean 0.6
per image) in positive and negative images alike; about 30% of the images are positive with 1-3 boxes of 8-40 pixels.
Image i is a pure function of (seed, i), so every metric sees the same maps.

Each metric streams through the maps once. The script first times one pass that only makes the maps, and reports each
metric's wall time with and without that generation time (the maps are made in the main thread while the metric's
worker threads run, so "net" is an estimate). It prints the peak resident memory of the process (ru_maxrss: the
interpreter, numpy, scipy and numba's compiler included) and, with --tracemalloc, the peak of Python/numpy allocations.
The first run on a machine includes numba's compile time; later runs load the kernels from numba's cache (cache=True).
BLAS is limited to one thread (the metrics use their own worker threads; the tiny matrix products of the map maker
only lose from BLAS threads).
"""
import os
for _v in ('OMP_NUM_THREADS', 'OPENBLAS_NUM_THREADS', 'MKL_NUM_THREADS'): os.environ.setdefault(_v, '1')
import argparse, resource, sys, time, tracemalloc
from pathlib import Path

import numpy as np
from _report import report


def _interp_matrix(n_out, n_in):
    "(n_out, n_in) linear interpolation from n_in control points: A @ G @ A.T is a smooth field."
    x = np.linspace(0, n_in - 1, n_out)
    i0 = np.minimum(np.floor(x).astype(int), n_in - 2)
    A = np.zeros((n_out, n_in), np.float32)
    A[np.arange(n_out), i0] = 1 - (x - i0); A[np.arange(n_out), i0 + 1] = x - i0
    return A


class MapMaker:
    "Synthetic probability maps and boxes; image i depends on (seed, i) only."
    def __init__(self, size=256, seed=0):
        self.size, self.seed = size, seed
        self.A9, self.A33 = _interp_matrix(size, 9), _interp_matrix(size, 33)
        r = np.arange(-24, 25, dtype=np.float32)
        self.r2 = r[:, None] ** 2 + r[None] ** 2

    def _boxes(self, rng):
        S, b = self.size, []
        if rng.random() < 0.3:
            for _ in range(rng.integers(1, 4)):
                w, h = rng.uniform(8, 40, 2)
                x, y = rng.uniform(0, S - w), rng.uniform(0, S - h)
                b.append([x, y, x + w, y + h])
        return np.array(b, np.float64).reshape(-1, 4)

    def boxes(self, i): return self._boxes(np.random.default_rng([self.seed, i]))

    def map(self, i):
        rng = np.random.default_rng([self.seed, i])
        b, S = self._boxes(rng), self.size
        m = self.A9 @ rng.random((9, 9), dtype=np.float32) @ self.A9.T * np.float32(rng.uniform(0.1, 0.35))
        m += self.A33 @ rng.random((33, 33), dtype=np.float32) @ self.A33.T * np.float32(0.15)
        m -= np.float32(0.1)
        def blob(r, c, amp, sig):
            h, r, c = int(min(24, 3 * sig)), int(min(max(r, 0), S - 1)), int(min(max(c, 0), S - 1))
            r0, r1, c0, c1 = max(r - h, 0), min(r + h + 1, S), max(c - h, 0), min(c + h + 1, S)
            g = np.float32(amp) * np.exp(-self.r2[24 - (r - r0):24 + (r1 - r), 24 - (c - c0):24 + (c1 - c)] / np.float32(2 * sig * sig))
            np.maximum(m[r0:r1, c0:c1], g, out=m[r0:r1, c0:c1])
        for x1, y1, x2, y2 in b:
            if rng.random() < 0.75:  # found; the other boxes are missed
                blob((y1 + y2) / 2 + rng.normal(0, 2), (x1 + x2) / 2 + rng.normal(0, 2), rng.uniform(0.45, 1.0),
                     rng.uniform(0.15, 0.3) * min(x2 - x1, y2 - y1) + 1)
        for _ in range(rng.poisson(0.6)):  # false-positive blobs
            blob(rng.integers(0, S), rng.integers(0, S), rng.uniform(0.3, 0.9), rng.uniform(2, 8))
        return np.clip(m, 0, 1, out=m)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--n', type=int, default=13000)
    ap.add_argument('--size', type=int, default=256)
    ap.add_argument('--seed', type=int, default=0)
    ap.add_argument('--tracemalloc', action='store_true', help='also trace the peak of Python/numpy allocations (slower)')
    a = ap.parse_args(argv)
    print('command:', ' '.join([Path(sys.executable).name, *sys.argv]))
    print(f'cpus: {os.cpu_count()} (affinity {len(os.sched_getaffinity(0))}), load average at start: '
          + ' '.join(f'{x:.2f}' for x in os.getloadavg()))
    mk = MapMaker(a.size, a.seed)
    maps = lambda: (mk.map(i) for i in range(a.n))  # a fresh array per image
    boxes = lambda: (mk.boxes(i) for i in range(a.n))
    labels = np.fromiter((len(b) > 0 for b in boxes()), bool, a.n)
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    t = time.perf_counter()
    for m in maps(): pass
    t_gen = time.perf_counter() - t
    if a.tracemalloc: tracemalloc.start()
    ru = resource.getrusage(resource.RUSAGE_SELF); cpu0 = ru.ru_utime + ru.ru_stime
    t0 = time.perf_counter()
    from cxr_fracture import metrics as M
    t_import = time.perf_counter() - t0
    t = time.perf_counter(); p = M.pixel_froc(maps(), boxes()); t_pix = time.perf_counter() - t
    t = time.perf_counter(); c = M.component_froc(maps(), boxes()); t_comp = time.perf_counter() - t
    t = time.perf_counter()
    scores = np.fromiter((m.max() for m in maps()), np.float64, a.n)
    auc = M.image_auroc(scores, labels); ci = M.delong_ci(scores, labels)
    t_auc = time.perf_counter() - t
    total = time.perf_counter() - t0
    ru = resource.getrusage(resource.RUSAGE_SELF)
    cpu = ru.ru_utime + ru.ru_stime - cpu0
    traced = tracemalloc.get_traced_memory()[1] / 2**20 if a.tracemalloc else None
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    net = total - 3 * t_gen
    print(f'{a.n} maps of {a.size}x{a.size} float32 made on the fly, {int(labels.sum())} positive, {p.n_boxes} boxes, '
          f'{len(p.thresholds)} thresholds')
    print(f'making the maps alone (one pass): {t_gen:6.2f} s ({1e3 * t_gen / a.n:.2f} ms per map); each metric below makes them again')
    print(f'import metrics (numba kernels compile or load lazily at first use): {t_import:.2f} s')
    print(f'pixel FROC:     {t_pix:6.2f} s (net of making the maps ~{t_pix - t_gen:6.2f} s)  score {p.score:.4f}')
    print(f'component FROC: {t_comp:6.2f} s (net ~{t_comp - t_gen:6.2f} s)  score {c.score:.4f}  Recall@FP=0.1 {c.recall_at_fp_0_1:.4f}')
    print(f'AUROC + DeLong: {t_auc:6.2f} s (net ~{t_auc - t_gen:6.2f} s)  {auc:.4f} {ci}')
    print(f'total:          {total:6.2f} s wall incl. making the maps 3 times, ~{net:.2f} s net; {cpu:.2f} s CPU '
          f'(incl. numba compile/cache load; {M._default_workers()} worker threads)')
    print(f'peak RSS: {rss:.0f} MiB (before the evaluation: {rss0:.0f} MiB)')
    if traced is not None: print(f'peak traced allocations during the evaluation: {traced:.1f} MiB')
    print('load average at end: ' + ' '.join(f'{x:.2f}' for x in os.getloadavg()))
    w, size = M._default_workers(), f'{a.n:,} maps of {a.size} x {a.size}'
    R = lambda name, v, unit, what, note=None: report(name, v, unit, what, threads=w, note=note, argv=argv)
    R('make_maps', round(t_gen, 2), 's', f'making {size} on the fly, alone (one pass; each metric below makes them again)',
      note=f'{1e3 * t_gen / a.n:.2f} ms per map')
    R('pixel_froc', round(t_pix, 2), 's', f'pixel FROC of {size} made on the fly', note=f'net of making the maps ~{t_pix - t_gen:.2f} s')
    R('component_froc', round(t_comp, 2), 's', f'component FROC of {size} made on the fly', note=f'net ~{t_comp - t_gen:.2f} s')
    R('auroc_delong', round(t_auc, 2), 's', f'image AUROC + DeLong interval of {size} made on the fly', note=f'net ~{t_auc - t_gen:.2f} s')
    R('total', round(total, 2), 's', f'both FROCs and the AUROC of {size} (wall, making the maps 3 times included)',
      note=f'~{net:.2f} s net; {cpu:.2f} s CPU incl. numba compile/cache load; target <= 60 s')
    R('peak_rss', round(rss), 'MiB', 'peak resident memory of the process (interpreter, numpy, scipy, numba included)',
      note=f'{rss0:.0f} MiB before the evaluation; target <= 1 GB')
    if traced is not None: R('peak_traced', round(traced, 1), 'MiB', 'peak traced (Python/numpy) allocations during the evaluation')
    return 0


if __name__ == '__main__':
    sys.exit(main())
