"""The science, as a benchmark (not CI): on the phantom, in the AALS paper's low-sensitivity regime (the `science`
preset, calibrated to the paper's operating point in issue 13; `--preset science_2026_12_02` is the weaker one the
README's science section ran on), does AALS beat supervised pre-training
and Mean Teacher on the pixel FROC (AALS paper, Table 1), over several seeds? Do the t and a0 ablations peak near
t = 0.4, a0 = 4?

    .venv/bin/python tests/benchmarks/bench_science.py --out runs/science --seeds 0 1 2 --ablation [--preset science_2026_12_02]

Each seed is one `demo()` with the preset (phantom drawn with that seed, one stage-1 model, then supervised / Mean
Teacher / AALS / dynamic stage 2 from it). With `--preset demo`, seed 0 reuses `make demo`'s runs when --demo-out holds
them. The ablations start AALS's stage 2 from seed 0's stage-1 model, varying t at a0 = 4 and a0 at t = 0.4.
Prints and writes (OUT/science_*.csv): per-seed results with each run's 95% bootstrap interval (test images
resampled), mean ± sd over seeds, paired differences with a 95% t-interval over seeds, DeLong tests of AUROC, the
supervised model's sensitivity (the regime), and the ablation tables with their bootstrap intervals.
"""
import argparse, json, sys, time
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats

from cxr_fracture.experiments import demo, run_experiment, collect_runs, comparison_table
from cxr_fracture.metrics import delong_test
import torch
from _report import report


def main():
    "The benchmark (a function, so that the preprocessing cache's spawned workers can import this file)."

    ap = argparse.ArgumentParser()
    ap.add_argument('--out', default='runs/science')
    ap.add_argument('--demo-out', default='demo_out', help="`make demo`'s output, reused as seed 0 when present")
    ap.add_argument('--seeds', type=int, nargs='+', default=[0, 1, 2])
    ap.add_argument('--preset', default='science', help='`science` (the low-sensitivity regime) or `demo`')
    ap.add_argument('--ablation', action='store_true', help='also run the t and a0 ablations')
    ap.add_argument('--t-values', type=float, nargs='+', default=[0.2, 0.3, 0.4, 0.5])
    ap.add_argument('--a0-values', type=float, nargs='+', default=[1, 4, 8, 16])
    args = ap.parse_args()
    out = Path(args.out); out.mkdir(parents=True, exist_ok=True)
    print('command:', ' '.join(['python', *sys.argv]), flush=True)

    t0 = time.time()
    seed_dirs = {}
    for s in args.seeds:
        d = (Path(args.demo_out) if args.preset == 'demo' and s == 0 and (Path(args.demo_out) / 'aals' / 'metrics.json').exists()
             else out / f'seed{s}')
        seed_dirs[s] = d
        demo(d, preset=args.preset, overrides={'seed': s}, reuse=True)

    runs = pd.concat([collect_runs(d).assign(seed=s) for s, d in seed_dirs.items()], ignore_index=True)
    runs = runs[runs.method.isin(['supervised', 'mean_teacher', 'aals', 'dynamic'])]
    runs.to_csv(out / 'science_runs.csv', index=False)
    metrics = ['auroc', 'pixel_froc', 'component_froc', 'recall_at_fp_0_1']
    def _with_ci(r, key='pixel_froc'):
        v, ci = r.get(key), r.get(f'{key}_ci')
        if v is None or (isinstance(v, float) and np.isnan(v)): return ''
        ok = isinstance(ci, (list, tuple)) and len(ci) == 2 and None not in ci
        return f'{v:.3f} ({ci[0]:.2f}-{ci[1]:.2f})' if ok else f'{v:.3f}'

    def _results(d):
        """metrics.json results per (method, class) of one demo folder, with the bootstrap intervals."""
        rows = []
        for m in ('supervised', 'mean_teacher', 'aals', 'dynamic'):
            f = d / m / 'metrics.json'
            if not f.exists(): continue
            for cls, r in json.loads(f.read_text())['results'].items(): rows.append(dict(method=m, cls=cls, **r))
        return rows

    res = pd.DataFrame([dict(seed=s, **r) for s, d in seed_dirs.items() for r in _results(d)])
    res['pixel_froc (95% CI)'] = [_with_ci(r) for r in res.to_dict('records')]
    per_seed = res.pivot_table(index=['cls', 'seed'], columns='method', values='pixel_froc (95% CI)', aggfunc='first')
    per_seed = per_seed[[m for m in ('supervised', 'mean_teacher', 'aals', 'dynamic') if m in per_seed]]
    per_seed.to_csv(out / 'science_per_seed.csv')
    print('\nPixel FROC per seed, with 95% bootstrap intervals over test images:\n' + per_seed.to_string())
    sens = res[res.method == 'supervised'].assign(recall_at_fp_1pct=lambda x: [r.get('0.01') if isinstance(r, dict) else None for r in x.pixel_recall_at])
    print('\nThe regime: the supervised model\'s pixel recall at 1% FP pixels, per seed (test positives / boxes):\n' +
          sens[['cls', 'seed', 'recall_at_fp_1pct', 'n_test_pos', 'n_froc_boxes']].to_string(index=False))
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
                sd = d.std(ddof=1) if len(d) > 1 else np.nan
                half = stats.t.ppf(0.975, len(d) - 1) * sd / np.sqrt(len(d)) if len(d) > 1 else np.nan
                rows.append(dict(cls=cls, metric=m, comparison=f'aals - {base}', mean=d.mean(), sd=sd,
                                 ci95=f'{d.mean() - half:+.3f} to {d.mean() + half:+.3f}',
                                 wins=f'{int((d > 0).sum())}/{len(d)}', per_seed=' '.join(f'{v:+.3f}' for v in d)))
    diff = pd.DataFrame(rows)
    diff.to_csv(out / 'science_differences.csv', index=False)
    print('\nPaired differences over seeds (AALS minus baseline; ci95: t-interval over seeds):\n' + diff.round(3).to_string(index=False))

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
        grid = [(t, 4.0) for t in args.t_values] + [(0.4, a0) for a0 in args.a0_values]
        for t, a0 in dict.fromkeys(grid):
            ro = out / 'ablation' / f't-{t:g}_a0-{a0:g}'
            if (ro / 'metrics.json').exists(): continue
            if (t, a0) == (0.4, 4.0) and (d0 / 'aals' / 'metrics.json').exists():
                ro.mkdir(parents=True, exist_ok=True)
                (ro / 'metrics.json').write_text((d0 / 'aals' / 'metrics.json').read_text()); continue
            print(f'ablation: t={t:g} a0={a0:g}', flush=True)
            run_experiment(args.preset, {'method': 'aals', 't': t, 'a0': a0, 'seed': args.seeds[0],   # the seed's shared stage 1
                                         'stage1_dir': str((d0 / 'stage1').resolve()), 'root': str((d0 / 'phantom').resolve())}, out=ro)
        rows = []
        for f in sorted((out / 'ablation').glob('*/metrics.json')):
            j = json.loads(f.read_text()); c = j['config']
            for cls, r in j['results'].items():
                rows.append(dict(t=float(c['t']), a0=float(c['a0']), cls=cls, auroc=r.get('auroc'), pixel_froc=r.get('pixel_froc'),
                                 pixel_froc_ci=r.get('pixel_froc_ci'), pixel_froc_with_ci=_with_ci(r)))
        ab = pd.DataFrame(rows)
        ab.to_csv(out / 'science_ablation_runs.csv', index=False)
        for name, key, sel in (('t (a0 = 4)', 't', ab.a0 == 4.0), ('a0 (t = 0.4)', 'a0', ab.t == 0.4)):
            tb = ab[sel].pivot_table(index=key, columns='cls', values=['pixel_froc_with_ci', 'auroc'], aggfunc='first')
            tb.to_csv(out / f"science_ablation_{key}.csv")
            print(f'\nAblation over {name}, seed {args.seeds[0]} (pixel FROC with its 95% bootstrap interval):\n' + tb.to_string())
    print(f'\ntotal {time.time() - t0:.0f} s')
    report('total', round(time.time() - t0), 's',
           f'the science comparison ({args.preset} preset, seeds {" ".join(map(str, args.seeds))}'
           + (', with the ablations' if args.ablation else '') + '), wall time', threads=torch.get_num_threads(),
           note='runs already present in --out are reused, so a rerun can be much shorter')


if __name__ == '__main__':
    main()
