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

from cxr_fracture.experiments import demo, collect_runs, experiments_dir, over_seeds, fmt_interval, method_title
from _report import report

TABLE1 = ('chexnet', 'retinanet', 'fcos', 'pi_model', 'temporal_ensemble', 'mean_teacher', 'supervised', 'aals')
OXNET_ABLATION = ('retinanet', 'sfl', 'daa', 'daa_gpa', 'oxnet')
REDUCED = dict(phantom_n=600, epochs_stage1=8, epochs_stage2=2, n_bootstrap=100)
# (class, metric, header) columns of the markdown tables, and the paired differences shown: (class, metric, reference)
COLUMNS = {'table1': [('rib_fracture', 'auroc', 'rib AUROC'), ('rib_fracture', 'pixel_froc', 'rib pixel FROC'),
                      ('clavicle_fracture', 'auroc', 'clavicle AUROC'), ('clavicle_fracture', 'pixel_froc', 'clavicle pixel FROC'),
                      ('rib_fracture', 'component_froc', 'rib component FROC'), ('rib_fracture', 'coco_ap40', 'rib COCO AP40')],
           'oxnet': [('rib_fracture', 'coco_ap', 'rib AP40-75'), ('rib_fracture', 'coco_ap40', 'rib AP40'), ('rib_fracture', 'coco_ap75', 'rib AP75'),
                     ('clavicle_fracture', 'coco_ap', 'clavicle AP40-75'), ('rib_fracture', 'auroc', 'rib AUROC')]}
PAIRED = {'table1': [('rib_fracture', 'pixel_froc', 'supervised'), ('rib_fracture', 'pixel_froc', 'mean_teacher')],
          'oxnet': [('rib_fracture', 'coco_ap', 'retinanet'), ('rib_fracture', 'coco_ap40', 'retinanet')]}


def seeds_markdown(runs, methods, table):
    "The table as markdown: each cell the mean over seeds and its 95% t interval; then the paired differences against the references."
    refs = tuple(dict.fromkeys(r for _, _, r in PAIRED[table]))
    o = over_seeds(runs, metrics=('auroc', 'pixel_froc', 'component_froc', 'recall_at_fp_0_1', 'coco_ap', 'coco_ap40', 'coco_ap75'),
                   against=refs).set_index(['method', 'cls', 'metric'])
    def cell(m, c, k, ref=None):
        if (m, c, k) not in o.index: return ''
        r = o.loc[(m, c, k)]
        if ref is None: return fmt_interval(r['mean'], r['lo'], r['hi'])
        if ref == m or f'vs_{ref}' not in r: return ''
        return fmt_interval(r[f'vs_{ref}'], r[f'vs_{ref}_lo'], r[f'vs_{ref}_hi'], signed=True)
    head = [h for _, _, h in COLUMNS[table]] + [f"{c.split('_')[0]} {k.replace('_', ' ').replace('coco ap', 'AP').replace('pixel froc', 'pixel FROC')} − {method_title(r)} (paired)"
                                               for c, k, r in PAIRED[table]]
    lines = ['| method | ' + ' | '.join(head) + ' |', '|---' * (len(head) + 1) + '|']
    for m in methods:
        cells = [cell(m, c, k) for c, k, _ in COLUMNS[table]] + [cell(m, c, k, r) for c, k, r in PAIRED[table]]
        lines.append(f'| {method_title(m)} | ' + ' | '.join(cells) + ' |')
    return '\n'.join(lines) + '\n', o


def main():
    "The benchmark (a function, so that the preprocessing cache's spawned workers can import this file)."
    ap = argparse.ArgumentParser()
    ap.add_argument('--out', default='runs/table1_cpu')
    ap.add_argument('--seeds', type=int, nargs='+', default=[0, 1, 2])
    ap.add_argument('--methods', nargs='+', default=list(TABLE1))
    ap.add_argument('--full', action='store_true', help='the demo preset unchanged (1,200 images, 12 + 2 epochs)')
    ap.add_argument('--table', choices=sorted(COLUMNS), default=None,
                    help="the markdown table's columns: table1 (AALS Table 1) or oxnet (OXnet's ablation); default: oxnet when "
                         "--methods are the ablation's, else table1. Its files are OUT/{table}_seeds.md, _summary.csv, _report.ipynb")
    args = ap.parse_args()
    table = args.table or ('oxnet' if set(args.methods) <= set(OXNET_ABLATION) else 'table1')
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
    summ.to_csv(out/f'{table}_summary.csv')
    print(f'\n{table}: mean ± sd over seeds {args.seeds}:\n' + summ.to_string())
    md, o = seeds_markdown(runs, args.methods, table)
    (out/f'{table}_seeds.md').write_text(md); o.to_csv(out/f'{table}_seeds.csv')
    print(f'\nmean [95% t interval] over seeds {args.seeds}, and paired differences (written to {out}/{table}_seeds.md):\n' + md)
    nb = experiments_dir()/'report.ipynb'
    rep = out/('report.ipynb' if table == 'table1' else f'{table}_report.ipynb')
    r = subprocess.run([sys.executable, '-m', 'papermill', str(nb), str(rep), '-p', 'runs_dir', str(out),
                        '-p', 'baseline', 'supervised' if table == 'table1' else 'retinanet', '--cwd', str(out)], capture_output=True, text=True)
    print('report notebook:', rep, 'ok' if r.returncode == 0 else f'FAILED:\n{r.stderr[-3000:]}')
    report(f'{table}_wall', round(wall), 's', f"{'AALS Table 1' if table == 'table1' else 'OXnet Table 1 ablation'} on the phantom ({len(args.methods)} methods x {len(args.seeds)} seeds), training and "
           f"evaluation wall time" + ('' if args.full else ' at reduced size (demo preset, 600 images, 8 + 2 epochs)'),
           threads=torch.get_num_threads())


if __name__ == '__main__':
    main()
