"""The AALS paper's Table 1 on the phantom, as a benchmark (not CI): every method of that table this project implements
(CheXNet, RetinaNet, FCOS, Pi-model, Temporal Ensembling, Mean Teacher, supervised pre-training, AALS; Li et al. is
not implemented) over several seeds, each seed one `demo()` with its own phantom and stage-1 models, then the report
notebook over all of them (mean ± sd over seeds, DeLong tests, COCO AP of the detectors).

    .venv/bin/python tests/benchmarks/bench_table1.py --out runs/table1_cpu --seeds 0 1 2

Without --full it runs at reduced size for a 2-core CPU (the `demo` preset, with fewer phantom images and epochs:
see REDUCED); with --full, the `demo` preset as `make demo` runs it. Prints the table and writes OUT/table1_summary.csv
and OUT/report.ipynb (with table1_phantom.md, coco_phantom.md, figures).
"""
import argparse, json, subprocess, sys, time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from cxr_fracture.experiments import demo, collect_runs, experiments_dir
from _report import report

TABLE1 = ('chexnet', 'retinanet', 'fcos', 'pi_model', 'temporal_ensemble', 'mean_teacher', 'supervised', 'aals')
REDUCED = dict(phantom_n=600, epochs_stage1=8, epochs_stage2=2, n_bootstrap=100)


def main():
    "The benchmark (a function, so that the preprocessing cache's spawned workers can import this file)."
    ap = argparse.ArgumentParser()
    ap.add_argument('--out', default='runs/table1_cpu')
    ap.add_argument('--seeds', type=int, nargs='+', default=[0, 1, 2])
    ap.add_argument('--methods', nargs='+', default=list(TABLE1))
    ap.add_argument('--full', action='store_true', help='the demo preset unchanged (1,200 images, 12 + 2 epochs)')
    args = ap.parse_args()
    out = Path(args.out).resolve(); out.mkdir(parents=True, exist_ok=True)
    print('command:', ' '.join(['python', *sys.argv]), flush=True)
    t0 = time.time()
    for s in args.seeds:
        demo(out/f'seed{s}', preset='demo', methods=tuple(args.methods), overrides={'seed': s, **({} if args.full else REDUCED)}, reuse=True)
    wall = time.time() - t0
    runs = pd.concat([collect_runs(out/f'seed{s}') for s in args.seeds], ignore_index=True)
    runs = runs[runs.method.isin(args.methods)]
    cols = ['auroc', 'pixel_froc', 'component_froc', 'coco_ap', 'coco_ap40']
    g = runs.groupby(['method', 'cls'])[cols]
    summ = g.mean().round(3).astype(str) + ' ± ' + g.std().round(3).astype(str)
    summ = summ.replace({'nan ± nan': '', 'None ± None': ''}).reindex([m for m in args.methods], level=0)
    summ.to_csv(out/'table1_summary.csv')
    print(f'\nAALS Table 1 on the phantom, mean ± sd over seeds {args.seeds}:\n' + summ.to_string())
    nb = experiments_dir()/'report.ipynb'
    r = subprocess.run([sys.executable, '-m', 'papermill', str(nb), str(out/'report.ipynb'), '-p', 'runs_dir', str(out),
                        '-p', 'baseline', 'supervised', '--cwd', str(out)], capture_output=True, text=True)
    print('report notebook:', out/'report.ipynb', 'ok' if r.returncode == 0 else f'FAILED:\n{r.stderr[-3000:]}')
    report('table1_wall', round(wall), 's', f"AALS Table 1 on the phantom ({len(args.methods)} methods x {len(args.seeds)} seeds), training and "
           f"evaluation wall time" + ('' if args.full else ' at reduced size (demo preset, 600 images, 8 + 2 epochs)'),
           threads=torch.get_num_threads())


if __name__ == '__main__':
    main()
