"""Training speed of the demo's light configuration on the CPU, per method (whole step: data loading, teacher, update).

    python tests/benchmarks/bench_train.py [--methods aals dynamic ...] [--steps 20] [--repeats 5] [--threads 2] [--size 160]

Every method with a stage 2 (all but `supervised`, which is the stage-1 model) first runs 2 warm-up steps, from a random
network (epochs_stage1=0), P in the data's proportion of each batch; then `--repeats` rounds each time all methods for `--steps` timed steps
(stage 2, the trainer's own per-epoch images/s), the methods interleaved and their order rotated from round to
round, so that a load change on the machine hits every method alike. Prints each round's figures and, per
method, the median (and min-max) over the rounds: report the medians.
Target (issue 4): >= 20 images/s on the 2-core CPU machine with model='demo' at DEMO_SIZE px.
"""
import argparse, os, shlex, statistics, sys, tempfile, time
from pathlib import Path
import torch
from cxr_fracture.model import DEMO_SIZE
from cxr_fracture.train import METHODS, TrainConfig, train, load_data, read_log
from _report import report


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--methods', nargs='*', default=[m for m in METHODS if METHODS[m].distills])  # supervised has no stage 2
    ap.add_argument('--steps', type=int, default=20, help='timed steps per method and round')
    ap.add_argument('--repeats', type=int, default=5, help='rounds over all methods (interleaved); medians reported')
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
    for m in a.methods:  # warm-up (2 steps each): the log's images/s covers the training steps only
        train({**base, 'method': m, 'limit_batches': 2, 'out': str(tmp/f'w_{m}')})
    ips = {m: [] for m in a.methods}
    for r in range(a.repeats):
        k = r % len(a.methods)
        order = a.methods[k:] + a.methods[:k]  # rotated: no method always runs first or last
        for m in order:
            out = tmp/f'{m}_{r}'
            train({**base, 'method': m, 'limit_batches': a.steps, 'out': str(out)})
            ips[m].append(float(read_log(out).iloc[-1]['images_per_s']))
        load = os.getloadavg()[0] if hasattr(os, 'getloadavg') else float('nan')
        print(f'round {r + 1}/{a.repeats} (load average {load:.2f}): '
              + ', '.join(f'{m} {ips[m][-1]:.1f}' for m in order), flush=True)
    rows = []
    print(f'{"method":<18} {"median images/s":>16} {"min-max":>14}')
    for m in a.methods:
        v = ips[m]
        rows.append((m, statistics.median(v), min(v), max(v)))
        print(f'{m:<18} {rows[-1][1]:16.1f} {rows[-1][2]:6.1f}-{rows[-1][3]:<6.1f}', flush=True)
        report(m, round(rows[-1][1], 1), 'images/s',
               f'stage-2 training step of `{m}` (data, teacher, update, EMA), model demo at {a.size} px, batch {a.batch_size}',
               threads=a.threads, argv=argv,
               note=f'median of {a.repeats} interleaved rounds x {a.steps} steps, min-max {rows[-1][2]:.1f}-{rows[-1][3]:.1f}')
    print('command: python ' + ' '.join(shlex.quote(x) for x in [sys.argv[0], *(argv or sys.argv[1:])]))
    print(f'threads={a.threads} size={a.size} batch_size={a.batch_size} steps={a.steps} repeats={a.repeats} '
          f'model=demo torch={torch.__version__}')
    return rows


if __name__ == '__main__':
    main()
