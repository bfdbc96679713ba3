"""Real data, as a benchmark (not CI): the `fracatlas` preset comparing supervised, Mean Teacher, AALS and dynamic
sharpening from one stage-1 model. FracAtlas is musculoskeletal (hand, leg, hip, shoulder): the nearest real
stand-in for chest fractures, not chest data. On a GPU run it at the preset's size:

    python tests/benchmarks/bench_fracatlas.py --root ../shared/data/fracatlas --full

without --full (no GPU) it runs at reduced size on the CPU: the overrides of `nbs/experiments/grids/fracatlas.yaml`
(the demo network at 160 px, few epochs), so this benchmark's seed 0 is that grid's.
"""
import argparse, sys, time
from pathlib import Path
import torch, yaml
from cxr_fracture.experiments import demo, experiments_dir
from _report import report


def main():
    "The benchmark (a function, so that the preprocessing cache's spawned workers can import this file)."

    ap = argparse.ArgumentParser()
    ap.add_argument('--root', default='../shared/data/fracatlas', help='the FracAtlas folder (images/, dataset.csv)')
    ap.add_argument('--out', default='runs/fracatlas_cpu')
    ap.add_argument('--full', action='store_true', help="the preset's own size (ResNet-18 at 256 px; for a GPU)")
    args = ap.parse_args()
    print('command:', ' '.join(['python', *sys.argv]), flush=True)
    out = Path(args.out).resolve()
    ov = {'root': str(Path(args.root).resolve()), 'cache': str(out/'cache')}
    if not args.full:   # the CPU size of the FracAtlas grid (its params less the paths)
        grid = yaml.safe_load((experiments_dir()/'grids'/'fracatlas.yaml').read_text())
        ov.update({k: v for k, v in grid['params'].items() if k not in ('root', 'cache')})
    t0 = time.time()
    demo(out, preset='fracatlas', overrides=ov)
    report('total', round(time.time() - t0), 's', 'the FracAtlas comparison (supervised, Mean Teacher, AALS, dynamic), wall time'
           + ('' if args.full else ' at reduced size (demo network, 160 px, CPU)'), threads=torch.get_num_threads())


if __name__ == '__main__':
    main()
