"""The archived science runs' arm means and paired differences over seeds, read straight from the archive's
metrics.json (the arm of a run is `science.ipynb`'s own `arm_label`, taken from its source). For checking a rerun
against the claims the notebook printed, before enough runs are back to re-execute it.

    .venv/bin/python tools/archive_claims.py [ARCHIVE]     # default: nbs/experiments/results/science
"""
import ast, json, sys
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
SCIENCE = ROOT / 'nbs' / 'experiments' / 'science.ipynb'
ARMS = ['supervised', 'pi_model', 'temporal_ensemble', 'mean_teacher', 'aals', 'mean_teacher λ=0']
PAIRS = [('aals', 'mean_teacher'), ('aals', 'supervised'), ('mean_teacher', 'supervised'), ('pi_model', 'supervised'),
         ('temporal_ensemble', 'supervised'), ('mean_teacher λ=0', 'supervised'), ('mean_teacher', 'mean_teacher λ=0'),
         ('aals', 'mean_teacher λ=0')]
METRICS = [(c, k) for c in ('rib_fracture', 'clavicle_fracture') for k in ('pixel_froc', 'auroc')]


def notebook_arm_label():
    "science.ipynb's `arm_label`, from its source (one rule, not a copy)."
    nb = json.loads(SCIENCE.read_text())
    src = next(''.join(c['source']) for c in nb['cells'] if 'def arm_label' in ''.join(c['source']))
    fn = next(n for n in ast.parse(src).body if isinstance(n, ast.FunctionDef) and n.name == 'arm_label')
    ns = {}; exec(compile(ast.Module([fn], []), 'arm_label', 'exec'), ns)
    return ns['arm_label']


def archive_claims(archive=ROOT / 'nbs' / 'experiments' / 'results' / 'science') -> tuple:
    "(arms, pairs): each arm's mean [95% t interval] over its seeds, and each pair's paired difference over shared seeds."
    from cxr_fracture.experiments import collect_runs, t_interval, fmt_interval
    runs, label = collect_runs(archive), notebook_arm_label()
    runs['arm'] = [label(json.loads((Path(r) / 'metrics.json').read_text())['config']) for r in runs['run']]
    val = lambda arm, c, k: pd.to_numeric(runs[(runs.arm == arm) & (runs.cls == c)].set_index('seed')[k], errors='coerce')
    fmt = lambda x, signed=False: (lambda t: (fmt_interval(t['mean'], t['lo'], t['hi'], signed=signed), t['n']))(t_interval(x.dropna()))
    arms = pd.DataFrame([{'arm': a, 'metric': f'{c} {k}', 'value': v, 'seeds': n}
                         for a in ARMS if (runs.arm == a).any() for c, k in METRICS for v, n in [fmt(val(a, c, k))]])
    pairs = pd.DataFrame([{'A': a, 'B': b, 'metric': f'{c} {k}', 'A - B': v, 'seeds': n}
                          for a, b in PAIRS if (runs.arm == a).any() and (runs.arm == b).any()
                          for c, k in METRICS for v, n in [fmt(val(a, c, k) - val(b, c, k), signed=True)]])
    return arms, pairs


if __name__ == '__main__':
    arms, pairs = archive_claims(*sys.argv[1:2])
    with pd.option_context('display.width', 200, 'display.max_rows', 500):
        print(arms.to_string(index=False)); print(); print(pairs.to_string(index=False))
