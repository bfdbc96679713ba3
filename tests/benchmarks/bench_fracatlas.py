"""Real data, as a benchmark (not CI): the `fracatlas` preset comparing supervised, Mean Teacher, AALS and dynamic
sharpening from one stage-1 model. FracAtlas is musculoskeletal (hand, leg, hip, shoulder): the nearest real
stand-in for chest fractures, not chest data. On a GPU run it at the preset's size:

    python tests/benchmarks/bench_fracatlas.py --root ../shared/data/fracatlas --full

without --full (no GPU) it runs at reduced size on the CPU (the demo network at 160 px, few epochs).
"""
import argparse, sys, time
from pathlib import Path
import torch
from cxr_fracture.experiments import demo
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
    if not args.full:
        ov.update(model='demo', size=160, stride=4, batch_size=8, lr=1e-3, pos_fraction=0.5, pos_weight=20,
                  epochs_stage1=3, epochs_stage2=1, device='cpu', n_bootstrap=200)
    t0 = time.time()
    demo(out, preset='fracatlas', overrides=ov)
    report('total', round(time.time() - t0), 's', 'the FracAtlas comparison (supervised, Mean Teacher, AALS, dynamic), wall time'
           + ('' if args.full else ' at reduced size (demo network, 160 px, CPU)'), threads=torch.get_num_threads())


if __name__ == '__main__':
    main()
