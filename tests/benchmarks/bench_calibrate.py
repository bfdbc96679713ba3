"""Calibrating the phantom to the AALS paper's operating point (issue 13), blind to the semi-supervised arms: the
supervised arm alone (stage 1: R and N images with the pixel BCE), trained and scored on a calibration phantom that
no experiment uses (phantom seed 100 + seed; scored on its validation and test splits, both held out from its
training), never on the experiments' data, for each candidate setting of the phantom's difficulty, the data set's size and proportions, and the schedule.

    .venv/bin/python tests/benchmarks/bench_calibrate.py --out runs/calibrate            # the built-in candidates
    .venv/bin/python tests/benchmarks/bench_calibrate.py --out runs/calibrate --only m4_n2400

The AALS paper's supervised pre-training (its Table 1, "Baseline"): rib AUROC 0.9025, pixel FROC 0.7267; clavicle
0.9174 and 0.7967, with "low sensitivity" at fracture sites (probabilities well below 0.5). Each candidate prints and
appends to OUT/calibration.csv: held-out AUROC and pixel FROC per class, and the sensitivity: the median over
held-out fracture boxes of the map's peak inside the box, and the fraction of boxes whose peak reaches 0.5.
A candidate already in OUT is not run again. The chosen one becomes the `science` preset, with this table beside it,
before any semi-supervised arm runs on it.
"""
import argparse, json, sys, time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from cxr_fracture.experiments import resolve_params
from cxr_fracture.train import TrainConfig, train, load_trained, load_data, make_dataset, evaluate, TEMPLATE_ONLY
from _report import report

PAPER = {'rib_fracture': (0.9025, 0.7267), 'clavicle_fracture': (0.9174, 0.7967)}   # AALS Table 1, "Supervised pre-training"
# the paper's proportions, kept: about 1 image in 10 positive; R a small part of the positives (AALS 808 of 6,792 = 12%).
# What varies: the fractures' size (magnitude) and visibility (vis_beta), the share of clavicle fractures, the data
# set's size, R's share (raised only as far as a CPU-sized set needs to hold a few dozen boxes), and the epochs.
BASE = dict(phantom_positive_rate=0.1032, phantom_size=256, size=160, model='demo', method='supervised', epochs_stage2=0)
CALIBRATION_SEED = 100   # the calibration phantom's seed: a drawing no experiment uses (they draw with their own seeds 0, 1, ...)
CANDIDATES = {   # name: overrides of BASE and the preset; run in this order
    # the science preset of stop 17 (the demo's fractures at the paper's proportions): the reference point
    'm2.5_n1200':       dict(phantom_n=1200, phantom_r_fraction=0.119, phantom_options={'magnitude': 2.5}, epochs_stage1=12),
    # larger fractures, R 20% of the positives (R : P = 1 : 4), clavicle 30% of the fractures (else a 1,200-image set holds ~10)
    'm4_n1200_r20':     dict(phantom_n=1200, phantom_r_fraction=0.2, phantom_options={'magnitude': 4.0, 'clavicle_prob': 0.3}, epochs_stage1=12),
    'm6_n1200_r20':     dict(phantom_n=1200, phantom_r_fraction=0.2, phantom_options={'magnitude': 6.0, 'clavicle_prob': 0.3}, epochs_stage1=12),
    # and twice the images (twice the boxes), more visible fractures
    'm4_n2400_r20':     dict(phantom_n=2400, phantom_r_fraction=0.2, phantom_options={'magnitude': 4.0, 'clavicle_prob': 0.3}, epochs_stage1=12),
    'm6v_n2400_r20':    dict(phantom_n=2400, phantom_r_fraction=0.2, phantom_options={'magnitude': 6.0, 'clavicle_prob': 0.3, 'vis_beta': [4.0, 1.0]},
                             epochs_stage1=12),
    # and a longer schedule on them
    'm6v_n2400_r20_e24': dict(phantom_n=2400, phantom_r_fraction=0.2, phantom_options={'magnitude': 6.0, 'clavicle_prob': 0.3, 'vis_beta': [4.0, 1.0]},
                              epochs_stage1=24),
}


def site_peaks(res, k, c):
    "Peak probability of class k's map inside each of its fracture boxes (map pixels) over the evaluated images."
    out = []
    for i, b in enumerate(res['boxes']):
        for x0, y0, x1, y1 in b[c]:
            m = res['maps'][i, k][int(np.floor(y0)):max(int(np.ceil(y1)), int(np.floor(y0)) + 1),
                                  int(np.floor(x0)):max(int(np.ceil(x1)), int(np.floor(x0)) + 1)]
            if m.size: out.append(float(m.max()))
    return np.array(out)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--out', default='runs/calibrate')
    ap.add_argument('--preset', default='science', help='the preset the candidates override (its network, batch, lr, loss)')
    ap.add_argument('--only', nargs='+', default=None, help='candidate names (default: all)')
    ap.add_argument('--seed', type=int, default=0)
    ap.add_argument('--smoke', action='store_true', help='each candidate at toy size (seconds): checks the script, measures nothing')
    args = ap.parse_args()
    out = Path(args.out).resolve(); out.mkdir(parents=True, exist_ok=True)
    print('command:', ' '.join(['.venv/bin/python', *sys.argv]), flush=True)
    csv = out/'calibration.csv'
    done = set(pd.read_csv(csv).candidate) if csv.exists() else set()
    for name in args.only or CANDIDATES:
        if name in done: print(f'{name}: in {csv}, not run again'); continue
        smoke = dict(phantom_n=60, phantom_size=96, size=64, epochs_stage1=1, limit_batches=2, n_bootstrap=20, phantom_positive_rate=0.5,
                     phantom_r_fraction=0.5) if args.smoke else {}
        params = resolve_params(args.preset, {**BASE, **CANDIDATES[name], 'seed': args.seed, 'phantom_seed': CALIBRATION_SEED + args.seed, **smoke})
        params = {k: v for k, v in params.items() if k not in TEMPLATE_ONLY}
        cfg = TrainConfig.from_dict({**params, 'out': str(out/name)})
        t0 = time.time()
        r = train(cfg)
        net = load_trained(r['model'])
        df, classes, cache = load_data(cfg)   # the calibration phantom: its validation and test splits together, both held out
        df = df.assign(split=df['split'].astype(str).replace({'test': 'val'}))
        res = evaluate(net, make_dataset(cfg, 'val', df, classes, cache), froc=True, return_maps=True)
        row = dict(candidate=name, seed=args.seed, settings=json.dumps(CANDIDATES[name]), n_val=res['n_images'],
                   seconds=round(time.time() - t0))
        for k, c in enumerate(res['classes']):
            pk = site_peaks(res, k, c)
            froc = res['pixel_froc'][c]
            row.update({f'{c}_auroc': res['auroc'][c], f'{c}_pixel_froc': float('nan') if froc is None else float(froc.score), f'{c}_n_pos': res['n_pos'][c],
                        f'{c}_n_boxes': len(pk), f'{c}_median_peak': float(np.median(pk)) if len(pk) else np.nan,
                        f'{c}_peaks_ge_0.5': float((pk >= 0.5).mean()) if len(pk) else np.nan})
        pd.DataFrame([row]).to_csv(csv, mode='a', header=not csv.exists(), index=False)
        print(json.dumps(row, indent=1), flush=True)
        for c in PAPER:   # the figures of this run (a candidate read back from the CSV was measured before: not reported again)
            for k, unit in (('auroc', 'AUROC'), ('pixel_froc', 'pixel FROC')):
                v = row[f'{c}_{k}']
                if v == v and v is not None:
                    report(f'calibrate {name} {c} {k}', round(float(v), 4), unit,
                           f'supervised stage 1 of candidate {name} ({CANDIDATES[name]}), {c} on the calibration phantom\'s held-out '
                           f'splits (paper: {PAPER[c][0 if k == "auroc" else 1]})', threads=torch.get_num_threads(),
                           note=f"seed {args.seed}; {row['seconds']} s" + ('; --smoke: toy size, measures nothing' if args.smoke else ''))
    tab = pd.read_csv(csv)
    cols = ['candidate', 'seconds'] + [f'{c}_{m}' for c in PAPER for m in ('auroc', 'pixel_froc', 'median_peak', 'peaks_ge_0.5', 'n_pos')]
    print('\nheld-out splits of the calibration phantom, supervised stage 1 (paper: ' + ', '.join(f'{c} AUROC {a}, pixel FROC {f}' for c, (a, f) in PAPER.items())
          + '):\n' + tab[[c for c in cols if c in tab]].round(3).to_string(index=False))


if __name__ == '__main__':
    main()
