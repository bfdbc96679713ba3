"""Benchmark: both FROCs and the image AUROC on the AALS test-set size (13,000 maps of 256 x 256).

    .venv/bin/python tests/benchmarks/bench_metrics.py [--n 13000] [--size 256] [--tracemalloc]

The maps come from a generator (a pool of `--pool` smooth float32 maps, cycled, so nothing is held but the pool);
each FROC streams through them once, the AUROC takes the max of each map. Prints the time of each step, the total,
the peak resident memory of the process (ru_maxrss, includes the interpreter, numpy, scipy and numba's compiler)
and, with --tracemalloc, the peak of Python/numpy allocations during the evaluation. The first run on a machine
includes numba's compile time; later runs load the compiled kernels from numba's cache (cache=True).
"""
import argparse, os, resource, sys, time, tracemalloc
from pathlib import Path

import numpy as np
from scipy import ndimage


def make_pool(k, size, seed=0):
    "k smooth probability maps (a low background with a few bright blobs) and their boxes."
    rng = np.random.default_rng(seed)
    maps, boxes = [], []
    for i in range(k):
        m = ndimage.gaussian_filter(rng.random((size, size)), 3) * 0.4
        b = []
        for _ in range(rng.integers(0, 3)):
            r, c = rng.integers(20, size - 20, 2)
            rr, cc = np.ogrid[:size, :size]
            m = np.maximum(m, rng.uniform(0.3, 1) * np.exp(-((rr - r) ** 2 + (cc - c) ** 2) / (2 * rng.uniform(3, 10) ** 2)))
            if i % 2 == 0: b.append([c - 10, r - 10, c + 10, r + 10])
        maps.append(np.clip(m, 0, 1).astype(np.float32))
        boxes.append(np.array(b, dtype=np.float64).reshape(-1, 4))
    return maps, boxes


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--n', type=int, default=13000)
    ap.add_argument('--size', type=int, default=256)
    ap.add_argument('--pool', type=int, default=64)
    ap.add_argument('--tracemalloc', action='store_true', help='also trace the peak of Python/numpy allocations (slower)')
    a = ap.parse_args(argv)
    print('command:', ' '.join([Path(sys.executable).name, *sys.argv]))
    print(f'cpus: {os.cpu_count()}, load average: {os.getloadavg()[0]:.2f}')
    pool, pboxes = make_pool(a.pool, a.size)
    maps = lambda: (pool[i % a.pool] for i in range(a.n))
    boxes = lambda: (pboxes[i % a.pool] for i in range(a.n))
    labels = np.array([len(pboxes[i % a.pool]) > 0 for i in range(a.n)])
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
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
    print(f'{a.n} maps of {a.size}x{a.size} float32, {int(labels.sum())} positive, {p.n_boxes} boxes, {len(p.thresholds)} thresholds')
    print(f'import metrics (numba kernels compile or load lazily at first use): {t_import:.2f} s')
    print(f'pixel FROC:     {t_pix:6.2f} s  score {p.score:.4f}')
    print(f'component FROC: {t_comp:6.2f} s  score {c.score:.4f}  Recall@FP=0.1 {c.recall_at_fp_0_1:.4f}')
    print(f'AUROC + DeLong: {t_auc:6.2f} s  {auc:.4f} {ci}')
    print(f'total:          {total:6.2f} s wall, {cpu:.2f} s CPU (incl. numba compile/cache load; {M._default_workers()} worker threads)')
    print(f'peak RSS: {rss:.0f} MiB (before the evaluation: {rss0:.0f} MiB, the pool of maps included)')
    if traced is not None: print(f'peak traced allocations during the evaluation: {traced:.1f} MiB')
    return 0


if __name__ == '__main__':
    sys.exit(main())
