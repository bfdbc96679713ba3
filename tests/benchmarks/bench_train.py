"""Training speed of the demo's light configuration on the CPU, per method (whole step: data loading, teacher, update).

    python tests/benchmarks/bench_train.py [--methods aals dynamic ...] [--steps 20] [--threads 2] [--size 160]

Prints images/s per method (stage 2, after 2 warm-up steps; the trainer's own per-epoch figure) and the command line.
Target (issue 4): >= 20 images/s on the 2-core CPU machine with model='demo' at DEMO_SIZE px.
"""
import argparse, json, shlex, sys, tempfile, time
from pathlib import Path
import torch
from cxr_fracture.model import DEMO_SIZE
from cxr_fracture.train import METHODS, TrainConfig, train, load_data, read_log


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--methods', nargs='*', default=list(METHODS))
    ap.add_argument('--steps', type=int, default=20, help='timed steps per method')
    ap.add_argument('--threads', type=int, default=2)
    ap.add_argument('--size', type=int, default=DEMO_SIZE)
    ap.add_argument('--batch-size', type=int, default=8)
    ap.add_argument('--num-workers', type=int, default=0)
    ap.add_argument('--root', default=None, help='phantom folder to reuse (default: a temporary one)')
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    tmp = Path(tempfile.mkdtemp(prefix='bench_train_'))
    root = a.root or str(tmp/'phantom')
    base = dict(data='phantom', root=root, phantom_n=200, phantom_size=2 * a.size, size=a.size, model='demo',
                batch_size=a.batch_size, num_workers=a.num_workers, epochs_stage1=0, epochs_stage2=1,
                checkpoint_every=0, limit_val=8, device='cpu')
    t0 = time.time(); load_data(TrainConfig.from_dict({**base, 'out': str(tmp/'x')}))
    print(f'phantom + cache: {time.time() - t0:.1f} s')
    rows = []
    for m in a.methods:
        # warm-up run (2 steps), then the timed run: the log's images/s covers the training steps only
        train({**base, 'method': m, 'limit_batches': 2, 'out': str(tmp/f'w_{m}')})
        train({**base, 'method': m, 'limit_batches': a.steps, 'out': str(tmp/m)})
        log = read_log(tmp/m).iloc[-1]
        rows.append((m, int(log['images']), float(log['time_s']), float(log['images_per_s'])))
        print(f'{m:<18} {rows[-1][1]:>5} images {rows[-1][2]:7.2f} s {rows[-1][3]:7.1f} images/s', flush=True)
    print('command: python ' + ' '.join(shlex.quote(x) for x in [sys.argv[0], *(argv or sys.argv[1:])]))
    print(f'threads={a.threads} size={a.size} batch_size={a.batch_size} model=demo torch={torch.__version__}')
    return rows


if __name__ == '__main__':
    main()
