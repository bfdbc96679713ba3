"""The results report (nbs/experiments/report.ipynb) through papermill on a fake runs folder."""
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

REPORT = Path(__file__).resolve().parents[1] / 'nbs' / 'experiments' / 'report.ipynb'
CHEST = ('rib_fracture', 'clavicle_fracture')


PIXEL_FPS, COMPONENT_FPS = (0.01, 0.05, 0.1), (0.1, 0.3, 0.5)


def fake_run(d: Path, method, seed, t=0.4, a0=4.0, fold=0, data='phantom', classes=CHEST, skill=1.0, predictions=True):
    "A run folder as train.ipynb writes it: metrics.json and predictions.csv (scores better with `skill`)."
    d.mkdir(parents=True)
    rng = np.random.default_rng(1000 * seed + fold)      # same test images and labels for every method of a fold/seed
    n = 60
    pred = pd.DataFrame({'image_id': [f'img-{fold}-{i:03d}' for i in range(n)]})
    noise = np.random.default_rng(hash((method, seed, t, a0)) % 2**32)
    results = {}
    for c in classes:
        y = (rng.random(n) < 0.3).astype(float)
        y[:3] = -1; y[3:5] = np.nan                      # uncertain and unknown labels stay out of the tests
        pred[c] = y
        pred[f'{c}_score'] = np.clip(0.5 + 0.3 * skill * np.nan_to_num(y) + 0.25 * noise.standard_normal(n), 0, 1)
        pf, cf = 0.2 + 0.5 * skill * noise.random(), 0.1 + 0.5 * skill * noise.random()
        results[c] = {'n_test_pos': int((y == 1).sum()), 'n_test_neg': int((y == 0).sum()),
                      'auroc': 0.6 + 0.3 * skill, 'auroc_ci': [0.5, 0.95],
                      'pixel_froc': pf, 'component_froc': cf, 'recall_at_fp_0.1': cf / 2,
                      'pixel_froc_ci': [pf - 0.1, pf + 0.1], 'component_froc_ci': [max(cf - 0.1, 0), cf + 0.1],
                      # points on the FROC curves, as the template stores them (recall rises with the FP target)
                      'pixel_recall_at': {str(f): min(1.0, pf * (0.6 + 4 * f)) for f in PIXEL_FPS},
                      'component_recall_at': {str(f): min(1.0, cf * (0.5 + 2 * f)) for f in COMPONENT_FPS}}
    cfg = dict(data=data, method=method, t=t, a0=a0, seed=seed, fold=fold, out_dir=str(d))
    (d / 'metrics.json').write_text(json.dumps({'config': cfg, 'results': results, 'timing': {'train_seconds': 1.0},
                                                'versions': {}, 'git_commit': None}))
    if predictions: pred.to_csv(d / 'predictions.csv', index=False)


@pytest.fixture(scope='module')
def report(tmp_path_factory):
    import papermill as pm
    root = tmp_path_factory.mktemp('report')
    runs, out = root / 'runs', root / 'out'
    skill = {'supervised': 0.5, 'mean_teacher': 0.7, 'aals': 1.0}
    for m, s in skill.items():
        for seed in (0, 1): fake_run(runs / 'cmp' / f'{m}_s{seed}', m, seed, skill=s)
    for t in (0.2, 0.3, 0.5): fake_run(runs / 'abl' / f't{t}', 'aals', 0, t=t)
    for a0 in (1.0, 8.0): fake_run(runs / 'abl' / f'a0{a0}', 'aals', 0, a0=a0)
    fake_run(runs / 'abl' / 'corner', 'aals', 0, t=0.2, a0=8.0)
    fake_run(runs / 'cmp' / 'mean_teacher_s2', 'mean_teacher', 2, skill=0.7)
    fake_run(runs / 'cmp' / 'supervised_s2', 'supervised', 2, skill=0.5, predictions=False)   # a pair skipped with a note
    for m, s in (('supervised', 0.5), ('aals', 1.0)):
        fake_run(runs / 'fa' / m, m, 0, data='/x/data_manifests/fracatlas.csv', classes=('fracture',), skill=s)
    nb = pm.execute_notebook(str(REPORT), str(root / 'report.ipynb'), parameters={'runs_dir': str(runs), 'out_dir': str(out)},
                             kernel_name='python3', progress_bar=False, cwd=str(root))
    return out, nb


def test_table1(report):
    out, _ = report
    tab = pd.read_csv(out / 'table1_phantom.csv', index_col=0)
    assert list(tab.index) == ['supervised', 'mean_teacher', 'aals']
    assert {f'{c} {m}' for c in CHEST for m in ('auroc', 'pixel_froc', 'component_froc', 'recall_at_fp_0_1')} <= set(tab.columns)
    assert tab.loc['aals', 'runs'] == 2 and tab.loc['mean_teacher', 'runs'] == 3   # ablation runs left out of Table 1
    assert '±' in tab.loc['aals', 'rib_fracture auroc']
    base = 'mean_teacher'   # best of the baselines by mean AUROC (skill 0.7 vs 0.5)
    for c in CHEST:
        p = tab[f'{c} p vs {base}']
        assert p.loc[['supervised', 'aals']].between(0, 1).all() and pd.isna(p.loc[base])
    assert tab.loc['aals', 'DeLong pairs'] == 2
    md = (out / 'table1_phantom.md').read_text()
    assert '| aals |' in md and 'median of 2' in md and 'supervised_s2/predictions.csv is missing' in md
    pairs = pd.read_csv(out / 'delong_pairs_phantom.csv')
    assert set(pairs.method) == {'supervised', 'aals'} and pairs.p.between(0, 1).all()
    assert (pairs.n_images <= 55).all()    # the -1 and unknown labels are left out


def test_ablations(report):
    out, _ = report
    t = pd.read_csv(out / 'ablation_t_phantom.csv', index_col=0)
    assert list(t.index) == [0.2, 0.3, 0.4, 0.5] and 'rib_fracture pixel_froc' in t.columns
    a0 = pd.read_csv(out / 'ablation_a0_phantom.csv', index_col=0)
    assert list(a0.index) == [1, 4, 8]
    grid = pd.read_csv(out / 'ablation_grid_phantom_pixel_froc.csv', index_col=0)
    assert 0.2 in grid.index and 'rib_fracture a0=8' in grid.columns


def test_figures_fracatlas_and_notes(report):
    out, nb = report
    for f in ('roc_phantom.png', 'froc_phantom.png', 'froc_bars_phantom.png', 'ablation_phantom.png', 'roc_fracatlas.png',
              'froc_fracatlas.png', 'froc_bars_fracatlas.png'):
        assert (out / f).stat().st_size > 1000, f
    fa = pd.read_csv(out / 'table1_fracatlas.csv', index_col=0)
    assert list(fa.index) == ['supervised', 'aals'] and fa.loc['aals', 'fracture p vs supervised'] <= 1
    text = ''.join(o.get('text', '') for c in nb.cells for o in c.get('outputs', []))
    assert 'note: supervised (fold 0, seed 2)' in text and 'note: 6 runs at other (t, a0) settings' in text


def test_froc_curves_one_line_per_method(tmp_path):
    "The report's FROC curves: per class and kind a line per method (mean recall over its runs at each FP target)."
    import matplotlib
    matplotlib.use('Agg')
    from cxr_fracture.experiments import collect_runs, froc_points, plot_froc_curves
    skill = {'supervised': 0.5, 'mean_teacher': 0.7, 'aals': 1.0}
    for m, sk in skill.items():
        for seed in (0, 1, 2): fake_run(tmp_path / f'{m}_s{seed}', m, seed, skill=sk, predictions=False)
    runs = collect_runs(tmp_path)
    pts = froc_points(runs)
    assert len(pts) == 3 * 3 * len(CHEST) * (len(PIXEL_FPS) + len(COMPONENT_FPS))
    fig = plot_froc_curves(pts, order=['supervised', 'mean_teacher', 'aals'])
    assert len(fig.axes) == 2 * len(CHEST)
    for ax, (c, kind) in zip(fig.axes, [(c, k) for c in CHEST for k in ('pixel', 'component')]):
        lines = ax.get_lines()
        assert len(lines) == 3 and [l.get_label().split(':')[0] for l in lines] == ['supervised', 'mean_teacher', 'aals']
        assert all(l.get_marker() == 'o' for l in lines) and len(ax.collections) == 3   # a band per method (3 runs each)
        fps = PIXEL_FPS if kind == 'pixel' else COMPONENT_FPS
        want = pts[(pts.method == 'aals') & (pts.cls == c) & (pts.kind == kind)].groupby('fp')['recall'].mean()
        assert list(lines[2].get_xdata()) == list(fps) and np.allclose(lines[2].get_ydata(), want.to_numpy())
    fig = plot_froc_curves(pts[pts['run'].str.endswith('_s0')])   # one run per method: lines, no band
    assert [len(ax.get_lines()) for ax in fig.axes] == [3] * 4 and all(not ax.collections for ax in fig.axes)


def test_no_runs(tmp_path):
    import papermill as pm
    with pytest.raises(pm.PapermillExecutionError, match='no metrics.json'):
        pm.execute_notebook(str(REPORT), str(tmp_path / 'r.ipynb'), parameters={'runs_dir': str(tmp_path / 'empty')},
                            kernel_name='python3', progress_bar=False, cwd=str(tmp_path))
