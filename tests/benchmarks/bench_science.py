"""The science, as a benchmark (not CI): on the phantom, does AALS beat supervised pre-training and Mean Teacher on
the pixel FROC (AALS paper, Table 1), over several seeds? Do the t and a0 ablations peak near t = 0.4, a0 = 4?

    .venv/bin/python tests/benchmarks/bench_science.py --out runs/science --demo-out demo_out --seeds 0 1 2 --ablation

Each seed is one `demo()` (the `demo` preset: phantom drawn with that seed, one stage-1 model, then supervised /
Mean Teacher / AALS / dynamic stage 2 from it); seed 0 reuses `make demo`'s runs when --demo-out holds them. The
ablations start AALS's stage 2 from seed 0's stage-1 model, varying t at a0 = 4 and a0 at t = 0.4. Prints and writes
(OUT/science_*.csv): per-seed results, mean ± sd over seeds, paired differences, and the ablation tables.
"""
import argparse, json, sys, time
from pathlib import Path

import numpy as np
import pandas as pd

from cxr_fracture.experiments import demo, run_experiment, collect_runs, comparison_table
from cxr_fracture.metrics import delong_test

ap = argparse.ArgumentParser()
ap.add_argument('--out', default='runs/science')
ap.add_argument('--demo-out', default='demo_out', help="`make demo`'s output, reused as seed 0 when present")
ap.add_argument('--seeds', type=int, nargs='+', default=[0, 1, 2])
ap.add_argument('--preset', default='demo')
ap.add_argument('--ablation', action='store_true', help='also run the t and a0 ablations')
ap.add_argument('--t-values', type=float, nargs='+', default=[0.2, 0.3, 0.4, 0.5])
ap.add_argument('--a0-values', type=float, nargs='+', default=[1, 4, 8, 16])
args = ap.parse_args()
out = Path(args.out); out.mkdir(parents=True, exist_ok=True)
print('command:', ' '.join(['python', *sys.argv]), flush=True)

t0 = time.time()
seed_dirs = {}
for s in args.seeds:
    d = Path(args.demo_out) if s == 0 and (Path(args.demo_out) / 'aals' / 'metrics.json').exists() else out / f'seed{s}'
    seed_dirs[s] = d
    demo(d, preset=args.preset, overrides={'seed': s}, reuse=True)

runs = pd.concat([collect_runs(d).assign(seed=s) for s, d in seed_dirs.items()], ignore_index=True)
runs = runs[runs.method.isin(['supervised', 'mean_teacher', 'aals', 'dynamic'])]
runs.to_csv(out / 'science_runs.csv', index=False)
metrics = ['auroc', 'pixel_froc', 'component_froc', 'recall_at_fp_0_1']
per_seed = runs.pivot_table(index=['cls', 'seed'], columns='method', values='pixel_froc')
print('\nPixel FROC per seed (rows) and method (columns):\n' + per_seed.round(3).to_string())
tab = comparison_table(runs, order=['supervised', 'mean_teacher', 'aals', 'dynamic'])
tab.to_csv(out / 'science_table.csv')
print(f'\nMean ± sd over seeds {args.seeds}:\n' + tab.to_string())

rows = []
for cls, g in runs.groupby('cls'):
    w = g.pivot_table(index='seed', columns='method', values=metrics)
    for m in metrics:
        for base in ('supervised', 'mean_teacher'):
            if (m, 'aals') not in w or (m, base) not in w: continue
            d = (w[(m, 'aals')] - w[(m, base)]).dropna()
            if d.empty: continue
            rows.append(dict(cls=cls, metric=m, comparison=f'aals - {base}', mean=d.mean(), sd=d.std(ddof=1) if len(d) > 1 else np.nan,
                             wins=f'{int((d > 0).sum())}/{len(d)}', per_seed=' '.join(f'{v:+.3f}' for v in d)))
diff = pd.DataFrame(rows)
diff.to_csv(out / 'science_differences.csv', index=False)
print('\nPaired differences over seeds (AALS minus baseline):\n' + diff.round(3).to_string(index=False))

pv = []
for s, d in seed_dirs.items():
    P = {m: pd.read_csv(d / m / 'predictions.csv') for m in ('supervised', 'mean_teacher', 'aals') if (d / m / 'predictions.csv').exists()}
    if 'aals' not in P: continue
    for cls in ('rib_fracture', 'clavicle_fracture'):
        for base in ('supervised', 'mean_teacher'):
            if base not in P: continue
            j = P['aals'].merge(P[base], on='image_id', suffixes=('', '_b'))
            ok = j[cls].isin([0, 1])
            if j.loc[ok, cls].nunique() < 2: continue
            r = delong_test(j.loc[ok, f'{cls}_score'], j.loc[ok, f'{cls}_score_b'], j.loc[ok, cls].astype(int))
            pv.append(dict(seed=s, cls=cls, comparison=f'aals vs {base}', auroc_aals=r.auc_a, auroc_base=r.auc_b, p=r.p))
if pv:
    pv = pd.DataFrame(pv); pv.to_csv(out / 'science_delong.csv', index=False)
    print('\nDeLong tests of test-set AUROC, per seed:\n' + pv.round(4).to_string(index=False))

if args.ablation:
    d0 = seed_dirs[args.seeds[0]]
    stage1 = d0 / 'supervised' / 'stage1' / 'model.pt'
    grid = [(t, 4.0) for t in args.t_values] + [(0.4, a0) for a0 in args.a0_values]
    for t, a0 in dict.fromkeys(grid):
        ro = out / 'ablation' / f't-{t:g}_a0-{a0:g}'
        if (ro / 'metrics.json').exists(): continue
        if (t, a0) == (0.4, 4.0) and (d0 / 'aals' / 'metrics.json').exists():
            ro.mkdir(parents=True, exist_ok=True)
            (ro / 'metrics.json').write_text((d0 / 'aals' / 'metrics.json').read_text()); continue
        print(f'ablation: t={t:g} a0={a0:g}', flush=True)
        run_experiment(args.preset, {'method': 'aals', 't': t, 'a0': a0, 'seed': args.seeds[0], 'init': str(stage1.resolve()),
                                     'data_root': str((d0 / 'phantom').resolve())}, out=ro)
    ab = collect_runs(out / 'ablation')
    ab.to_csv(out / 'science_ablation_runs.csv', index=False)
    for name, sel, key in (('t (a0 = 4)', ab.a0 == 4, 't'), ('a0 (t = 0.4)', ab.t == 0.4, 'a0')):
        tb = ab[sel].pivot_table(index=key, columns='cls', values=['pixel_froc', 'auroc'])
        tb.to_csv(out / f"science_ablation_{key}.csv")
        print(f'\nAblation over {name}, seed {args.seeds[0]}:\n' + tb.round(3).to_string())
print(f'\ntotal {time.time() - t0:.0f} s')
