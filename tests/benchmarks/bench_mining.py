"""Speed of `cxr_fracture.mining.mine_labels` on real reports, one core.

    python tests/benchmarks/bench_mining.py [--n 20000] [--repeat 3]

Mines the Open-i reports (../shared/data/openi_reports, FINDINGS + IMPRESSION) repeated to N records,
and prints records/s (best of --repeat runs) with the command that produced it. Target: >= 5,000 records/s.
"""
import argparse, os, sys, time
from pathlib import Path
os.environ.setdefault('OMP_NUM_THREADS', '1')
import pandas as pd
from cxr_fracture.mining import load_openi, mine_labels, Policy
from _report import report

REPO = Path(__file__).resolve().parents[2]
SHARED = Path(os.environ.get('CXR_FRACTURE_SHARED', REPO.parent / 'shared' / 'data'))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--n', type=int, default=20000, help='records to mine')
    ap.add_argument('--repeat', type=int, default=3, help='runs; the best is reported')
    a = ap.parse_args()
    tgz = SHARED / 'openi_reports' / 'ecgen-radiology-even.tgz'
    if not tgz.exists(): sys.exit(f'skipped: {tgz} not found')
    oi = load_openi(tgz)
    df = pd.concat([oi] * (a.n // len(oi) + 1), ignore_index=True).iloc[:a.n]
    df['id'] = [f'r{i}' for i in range(len(df))]
    best = float('inf')
    for _ in range(a.repeat):
        t = time.perf_counter()
        lab = mine_labels(df, 'id', ['findings', 'impression'], policy=Policy(healed='positive'))
        best = min(best, time.perf_counter() - t)
    rate = len(df) / best
    print(f'mine_labels: {len(df)} records in {best:.2f} s = {rate:,.0f} records/s (best of {a.repeat}; '
          f'{int((lab.rib_fracture == 1).sum())} rib positives)  [target >= 5,000/s: {"ok" if rate >= 5000 else "MISSED"}]')
    print('command: python tests/benchmarks/bench_mining.py ' + ' '.join(sys.argv[1:]))
    report('mine_labels', round(rate), 'records/s',
           f'label mining (mine_labels, FINDINGS + IMPRESSION) of the Open-i reports repeated to {len(df):,} records, one core',
           threads=1, note=f'best of {a.repeat}; target >= 5,000')


if __name__ == '__main__':
    main()
