"""Phantom speed (images/s on one core at 512 x 512) and fracture visibility at the demo's input size.

Run: .venv/bin/python tests/benchmarks/bench_phantom.py [--n 60] [--size 512] [--vis-n 200] [--small 160]
"""
import argparse, os, sys, tempfile, time
os.environ.setdefault('OMP_NUM_THREADS', '1')
import numpy as np
from pathlib import Path
from cxr_fracture.phantom import phantom_item, write_png16, visibility_stats
from _report import report


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--n', type=int, default=60)
    ap.add_argument('--size', type=int, default=512)
    ap.add_argument('--vis-n', type=int, default=200)
    ap.add_argument('--small', type=int, default=160)
    a = ap.parse_args()
    print('command:', ' '.join([Path(sys.executable).name, *sys.argv]))
    phantom_item(0, size=a.size)  # warm up
    t = time.perf_counter()
    for i in range(a.n): phantom_item(i, size=a.size)
    dt = time.perf_counter() - t
    print(f'render: {a.n/dt:.1f} images/s at {a.size}x{a.size} on one core ({1000*dt/a.n:.1f} ms/image)')
    report('render', round(a.n / dt, 1), 'images/s', f'phantom drawing (phantom_item) at {a.size} x {a.size}, one core',
           threads=1, note=f'{1000*dt/a.n:.1f} ms/image, {a.n} images')
    with tempfile.TemporaryDirectory() as d:
        t = time.perf_counter()
        for i in range(a.n): write_png16(Path(d)/f'{i}.png', phantom_item(i, size=a.size)[0])
        dt = time.perf_counter() - t
    print(f'render + 16-bit PNG: {a.n/dt:.1f} images/s at {a.size}x{a.size} on one core')
    report('render_png', round(a.n / dt, 1), 'images/s',
           f'phantom drawing plus the 16-bit PNG write at {a.size} x {a.size}, one core', threads=1, note=f'{a.n} images')
    if a.vis_n:
        vs = visibility_stats(n=a.vis_n, size=a.size, small=a.small)
        print(f'visibility at {a.small} px over {len(vs)} fractures: delta = max |with - without| after downsizing')
        print(vs.groupby('kind')['delta'].describe()[['count', '10%' if False else 'min', '25%', '50%', '75%']].round(3).to_string())
        for th in (0.02, 0.05):
            print(f'  fraction with delta > {th}: {(vs["delta"] > th).mean():.2f}')
        report('visible_0.05', round(float((vs['delta'] > 0.05).mean()), 2), '(fraction)',
               f'fractures that change the {a.small} px image by more than 0.05 (of {len(vs)} fractures)', threads=1)
        report('subtle', round(float((vs['vis'] < 0.35).mean()), 2), '(fraction)',
               f'fractures with vis < 0.35, the subtle tail (of {len(vs)} fractures)', threads=1)
        print(f'  fraction with vis < 0.35 (the subtle tail): {(vs["vis"] < 0.35).mean():.2f}; '
              f'noise sd at {a.small} px about {vs["noise"].mean():.4f}')


if __name__ == '__main__':
    main()
