"""The claims notebook (nbs/experiments/science.ipynb) through papermill on a made-up runs folder whose answers are known."""
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

SCIENCE = Path(__file__).resolve().parents[1] / 'nbs' / 'experiments' / 'science.ipynb'
CHEST = ('rib_fracture', 'clavicle_fracture')


def fake_run(d: Path, method, seed, values, classes=CHEST, coco=None, coco_ci=None, **cfg):
    "A run folder with the metrics.json the training template writes; `values` maps metric -> value for every class."
    d.mkdir(parents=True)
    res = {c: {'n_test_pos': 30, 'n_test_neg': 90, 'auroc_ci': [0.5, 0.9], 'pixel_froc_ci': [0.1, 0.9], 'component_froc_ci': [0.0, 0.5],
               'pixel_froc': values.get('pixel_froc', 0.5), 'component_froc': values.get('component_froc', 0.2),
               'auroc': values.get('auroc', 0.8), 'recall_at_fp_0.1': 0.1} for c in classes}
    for c in classes:   # a detector: COCO AP, and its bootstrap interval where the template wrote one
        if coco is not None: res[c]['coco'] = {'AP': coco, 'AP40': 2 * coco, 'AP75': 0.0, 'AP_S': coco, 'AP_M': None, 'AP_L': None}
        if coco_ci is not None: res[c]['coco_ci'] = {'AP': coco_ci, 'AP40': [0.0, 0.2], 'AP75': [0.0, 0.0]}
    config = {**dict(data='phantom', method=method, seed=seed, fold=0, t=0.4, a0=4.0, a=4.0), **cfg}
    (d / 'metrics.json').write_text(json.dumps({'config': config, 'results': res, 'timing': {'train_seconds': 60.0}}))


@pytest.fixture(scope='module')
def science(tmp_path_factory):
    import papermill as pm
    root = tmp_path_factory.mktemp('science'); runs, out = root / 'runs', root / 'out'
    for s in range(4):
        fake_run(runs / f'sup{s}', 'supervised', s, {'pixel_froc': 0.60 + 0.01 * s})
        fake_run(runs / f'mt{s}', 'mean_teacher', s, {'pixel_froc': 0.70 + 0.02 * s, 'auroc': 0.85 - 0.01 * s})
        # AALS: clearly above Mean Teacher on FROC in every seed; below it on AUROC in every seed
        fake_run(runs / f'aals{s}', 'aals', s, {'pixel_froc': 0.78 + 0.015 * s, 'auroc': 0.80 - 0.012 * s})
        fake_run(runs / f'aals_t2_{s}', 'aals', s, {'pixel_froc': 0.78 + 0.03 * (-1) ** s}, **{'t': 0.2})   # t = 0.2: a coin flip
        # the control (Mean Teacher at lambda = 0): below supervised on pixel FROC in every seed, a coin flip on AUROC
        fake_run(runs / f'ctl{s}', 'mean_teacher', s, {'pixel_froc': 0.55 + 0.01 * s, 'auroc': 0.80 + 0.01 * (-1) ** s}, distill_weight=0.0)
        # stage 2 at the paper's rate: AALS 0.10 above supervised in every seed, 0.02 above itself at 1e-3 in every seed
        fake_run(runs / f'aals_lr{s}', 'aals', s, {'pixel_froc': 0.80 + 0.015 * s}, lr_stage2=4e-5)
    fake_run(runs / 'dyn0', 'dynamic', 0, {'component_froc': 0.5})   # one seed only
    for s in range(2): fake_run(runs / f'rn{s}', 'retinanet', s, {}, coco=0.03 - 0.01 * s, coco_ci=[0.01 - 0.005 * s, 0.06])
    for s in range(2):   # RetinaNet keeping its best validation-mAP epoch: 0.02 above the AUROC-kept run at both seeds
        fake_run(runs / f'rn_map{s}', 'retinanet', s, {}, coco=0.05 - 0.0095 * s, coco_ci=[0.02, 0.08], select_by='map')
    y = [1, 0, 0, 1, 0, 0, 1, 0]   # seed 0's two RetinaNet runs on the same test images (seed 1's have no predictions.csv)
    for name, sc in (('rn0', [.9, .2, .3, .4, .5, .1, .8, .6]), ('rn_map0', [.9, .2, .3, .8, .5, .1, .8, .6])):
        pd.DataFrame({'image_id': [f'i{i}' for i in range(8)], **{c: y for c in CHEST}, **{f'{c}_score': sc for c in CHEST}}).to_csv(
            runs / name / 'predictions.csv', index=False)
    fake_run(runs / 'ox0', 'oxnet', 0, {}, coco=0.04)   # from before the template wrote coco_ci, and its boxes are gone
    fa = root / 'fracatlas'   # FracAtlas: one class; AALS below supervised on pixel FROC in every seed, Mean Teacher a coin flip
    for s in range(3):
        fake_run(fa / f'sup{s}', 'supervised', s, {'pixel_froc': 0.50 + 0.01 * s}, classes=('fracture',), data='data_manifests/fracatlas.csv')
        fake_run(fa / f'aals{s}', 'aals', s, {'pixel_froc': 0.40 + 0.02 * s}, classes=('fracture',), data='data_manifests/fracatlas.csv')
        fake_run(fa / f'mt{s}', 'mean_teacher', s, {'pixel_froc': 0.45 + 0.1 * (-1) ** s}, classes=('fracture',), data='data_manifests/fracatlas.csv')
        fake_run(fa / f'rn{s}', 'retinanet', s, {}, classes=('fracture',), data='data_manifests/fracatlas.csv', coco=0.001 * (s + 1) if s else 0.0004,
                 coco_ci=[0.0, 0.01])
    cal = root / 'calibration.csv'
    pd.DataFrame([dict(candidate='m4', seconds=10, rib_fracture_auroc=0.88, rib_fracture_pixel_froc=0.7)]).to_csv(cal, index=False)
    nb = pm.execute_notebook(str(SCIENCE), str(root / 'science.ipynb'), kernel_name='python3', progress_bar=False, cwd=str(root),
                             parameters={'runs_dir': str(runs), 'out_dir': str(out), 'calibration_csv': str(cal),
                                         'fracatlas_dir': str(fa)})
    return out, nb


def verdicts(out):
    c = pd.read_csv(out / 'science_claims.csv')
    return {(r.A, r.B, r.metric): r.verdict for r in c.itertuples()}


def test_verdicts_follow_the_intervals(science):
    out, _ = science
    v = verdicts(out)
    assert v[('aals', 'mean_teacher', 'rib pixel_froc')] == 'reproduced'
    assert v[('aals', 'supervised', 'rib pixel_froc')] == 'reproduced'
    assert v[('aals', 'mean_teacher', 'rib auroc')].startswith('not reproduced: the opposite')
    assert v[('aals', 'aals t=0.2 a0=4', 'rib pixel_froc')].startswith('inconclusive at this power (4 seeds)')
    assert v[('dynamic', 'mean_teacher', 'rib component_froc')] == 'inconclusive: one seed, no interval'
    assert v[('oxnet', 'retinanet', 'rib coco_ap')] == 'inconclusive: one seed, no interval'
    assert v[('sfl', 'retinanet', 'rib coco_ap')] == 'not run'
    c = pd.read_csv(out / 'science_claims.csv')
    row = c[(c.A == 'aals') & (c.B == 'mean_teacher') & (c.metric == 'rib pixel_froc')].iloc[0]
    assert row['paper: A / B'] == '0.8914 / 0.854' and row['seeds'] == 4
    assert row['A − B (paired)'].startswith('+0.0')     # 0.08 + 0.005 s - 0.02 s: +0.0725 on average
    # the arms' means are over the seeds of the pair: dynamic ran at seed 0 only, so Mean Teacher's is its seed-0 value
    row = c[(c.A == 'dynamic') & (c.B == 'mean_teacher') & (c.metric == 'rib component_froc')].iloc[0]
    assert row['ours: A'] == '0.500' and row['ours: B'] == '0.200', (row['ours: A'], row['ours: B'])


def test_outputs_and_figure(science):
    out, nb = science
    for f in ('science_claims.csv', 'science_claims.md', 'science_claims.png', 'science_per_run.csv',
              'science_arms.md', 'science_compute.md', 'fracatlas_arms.md', 'fracatlas_claims.csv', 'fracatlas_claims.md', 'fracatlas_claims.png'):
        assert (out / f).stat().st_size > 0, f
    assert (out / 'science_claims.md').read_text().startswith('| paper | claim |')
    figs = [o for c in nb.cells if c.cell_type == 'code' for o in c.get('outputs', []) if 'image/png' in o.get('data', {})]
    assert len(figs) == 2     # the claims, then FracAtlas's claims


def test_fracatlas_claims_are_the_chest_claims_on_its_one_class(science):
    out, _ = science
    c = pd.read_csv(out / 'fracatlas_claims.csv')
    v = {(r.A, r.B, r.metric): r.verdict for r in c.itertuples()}
    assert v[('aals', 'supervised', 'fracture pixel_froc')].startswith('not reproduced: the opposite')
    assert v[('aals', 'mean_teacher', 'fracture pixel_froc')].startswith('inconclusive at this power (3 seeds)')
    assert v[('mean_teacher', 'supervised', 'fracture pixel_froc')].startswith('inconclusive')
    assert not any('oxnet' in k[0] or 'dynamic' in k[0] for k in v)     # only claims whose two arms both ran there
    arms = (out / 'fracatlas_arms.md').read_text()
    assert '| AALS | 3 | ' in arms and '0.420 [' in arms             # AALS pixel FROC: mean 0.42 over 3 seeds
    coco = (out / 'fracatlas_per_run_coco.md').read_text().splitlines()    # the detector's AP per seed, with its interval
    assert coco[0] == '| seed | RetinaNet |' and coco[2:] == ['| 0 | 4.0e-04 [0.0e+00, 1.0e-02] |', '| 1 | 0.002 [0.000, 0.010] |', '| 2 | 0.003 [0.000, 0.010] |'], coco   # below 0.001: not '0.000'


def test_arms_and_compute_tables(science):
    out, _ = science
    arms = (out / 'science_arms.md').read_text().splitlines()
    assert arms[0] == ('| arm | seeds | rib AUROC | rib pixel FROC | clavicle AUROC | clavicle pixel FROC | rib component FROC | rib Recall@FP=0.1 '
                       '| rib COCO AP40-75 | rib AP40 | rib AP75 |')
    names = [l.split(' | ')[0].lstrip('| ') for l in arms[2:]]
    assert names == ['supervised pre-training', 'Mean Teacher', 'AALS', 'RetinaNet', 'dynamic sharpening', 'aals t=0.2 a0=4', 'OXnet',
                     'mean_teacher λ=0', 'aals lr2=4e-05', 'retinanet by map'], names   # the papers' order, the control and the sensitivity run last
    mt = next(l for l in arms if l.startswith('| Mean Teacher |'))
    assert mt.startswith('| Mean Teacher | 4 | ') and mt.split(' | ')[3].startswith('0.730 [')   # rib pixel FROC 0.70-0.76
    dyn = next(l for l in arms if l.startswith('| dynamic sharpening |'))
    assert dyn.split(' | ')[6] == '0.500'                               # one seed: a mean, no interval
    comp = (out / 'science_compute.md').read_text().splitlines()
    assert comp[2:] == ['| AALS Table 1 | 14 | 14 |', '| dynamic sharpening Table 1 | 1 | 1 |', '| AALS Table 2 (t) | 4 | 4 |',
                        '| OXnet Table 1 (ablation) | 1 | 1 |', '| control: stage 2 without distillation | 4 | 4 |',
                        "| sensitivity: stage 2 at the papers' learning rate | 4 | 4 |", '| sensitivity: the epoch kept (select_by) | 2 | 2 |'], comp


def test_detector_runs_carry_their_coco_interval(science):
    "Per detector run, COCO AP with its bootstrap interval; a run without one (and without its boxes) says why, and keeps its AP."
    out, nb = science
    tab = pd.read_csv(out / 'science_per_run_coco.csv', index_col='seed', keep_default_na=False)
    assert list(tab.columns) == ['retinanet', 'oxnet', 'retinanet by map'], list(tab.columns)
    assert tab.loc[0, 'retinanet'] == '0.030 [0.010, 0.060]' and tab.loc[1, 'retinanet'] == '0.020 [0.005, 0.060]'
    assert tab.loc[0, 'oxnet'] == '0.040' and tab.loc[1, 'oxnet'] == ''
    md = (out / 'science_per_run_coco.md').read_text().splitlines()
    assert md[0] == '| seed | RetinaNet | OXnet | retinanet by map |' and md[2] == '| 0 | 0.030 [0.010, 0.060] | 0.040 | 0.050 [0.020, 0.080] |', md
    text = ''.join(o.get('text', '') for c in nb.cells if c.cell_type == 'code' for o in c.get('outputs', []))
    assert 'ox0: no interval of COCO AP' in text and 'detections.json: missing' in text, text[-2000:]


def test_several_runs_of_one_arm_is_an_error(tmp_path):
    import papermill as pm
    fake_run(tmp_path / 'runs' / 'a', 'aals', 0, {}); fake_run(tmp_path / 'runs' / 'b', 'aals', 0, {})
    with pytest.raises(pm.PapermillExecutionError, match='several runs of one arm'):
        pm.execute_notebook(str(SCIENCE), str(tmp_path / 'o.ipynb'), kernel_name='python3', progress_bar=False, cwd=str(tmp_path),
                            parameters={'runs_dir': str(tmp_path / 'runs'), 'out_dir': str(tmp_path / 'out')})


def readings(md: Path) -> dict:
    "(A, B, metric) -> reading, from a readings table the notebook writes (control, learning rate)."
    rows = md.read_text().splitlines()
    assert rows[0] == '| A | B | metric | ours: A | ours: B | A − B (paired) | seeds | reading |', rows[0]
    return {tuple(c.strip() for c in l.strip('|').split(' | ')[:3]): l.strip('|').split(' | ')[-1].strip() for l in rows[2:]}


def test_the_control_reads_where_its_interval_lies(science):
    "Mean Teacher at lambda = 0 is its own arm (not a second Mean Teacher run), paired against supervised, Mean Teacher and AALS."
    out, _ = science
    r = readings(out / 'science_controls.md')
    assert r[('mean_teacher λ=0', 'supervised', 'rib pixel_froc')] == 'A below B'          # -0.05 in every seed
    assert r[('mean_teacher', 'mean_teacher λ=0', 'rib pixel_froc')] == 'A above B'        # +0.15 + 0.01 s
    assert r[('aals', 'mean_teacher λ=0', 'rib pixel_froc')] == 'A above B'
    assert r[('mean_teacher λ=0', 'supervised', 'rib auroc')] == 'no difference shown (the interval holds 0)'
    assert len(r) == 15                                        # 3 pairs x 2 classes x 2 metrics, and 3 detector pairs
    assert r[('sfl λ=0', 'retinanet', 'rib coco_ap')] == 'not run'                         # listed, never dropped
    assert 'reproduced' not in (out / 'science_controls.md').read_text()                  # a control is no claim of the papers


def test_stage2_at_the_papers_rate_is_its_own_arm_and_read_like_the_control(science):
    "A run with lr_stage2 is the arm `aals lr2=4e-05`, paired against supervised and against itself at the preset's rate."
    out, _ = science
    r = readings(out / 'science_lr.md')
    assert r[('aals lr2=4e-05', 'supervised', 'rib pixel_froc')] == 'A above B'                 # +0.20 + 0.005 s
    assert r[('aals lr2=4e-05', 'aals', 'rib pixel_froc')] == 'A above B'                       # +0.02 in every seed
    assert r[('aals lr2=4e-05', 'mean_teacher lr2=4e-05', 'rib pixel_froc')] == 'not run'        # listed, never dropped
    assert r[('oxnet lr2=1e-05', 'retinanet', 'rib coco_ap')] == 'not run'
    assert len(r) == 2 * 2 * 8 + 2 + 4 and 'reproduced' not in (out / 'science_lr.md').read_text()


def test_the_epoch_kept_is_its_own_arm_and_read_against_the_same_detector(science):
    "A run with select_by 'map' is the arm `retinanet by map`, paired by seed with RetinaNet kept by validation AUROC."
    out, nb = science
    r = readings(out / 'science_select.md')
    assert r[('retinanet by map', 'retinanet', 'rib coco_ap')] == 'A above B'                 # +0.02 at both seeds
    assert r[('retinanet by map', 'retinanet', 'rib auroc')] == 'no difference shown (the interval holds 0)'
    assert r[('fcos by map', 'fcos', 'rib coco_ap')] == 'not run'                              # listed, never dropped
    assert len(r) == 10 and 'reproduced' not in (out / 'science_select.md').read_text()
    from cxr_fracture.metrics import delong_test
    t = delong_test(np.array([.9, .2, .3, .8, .5, .1, .8, .6]), np.array([.9, .2, .3, .4, .5, .1, .8, .6]), np.array([1, 0, 0, 1, 0, 0, 1, 0]))
    img = (out / 'science_select_images.md').read_text().splitlines()   # seed 0 paired image by image; seed 1 said, not dropped silently
    assert img[0] == '| A − B | seed | fold | class | AUROC A / B | A − B [DeLong interval] | p |' and len(img) == 4, img
    assert img[2] == (f'| retinanet by map − retinanet | 0 | 0 | rib_fracture | {t.auc_a:.3f} / {t.auc_b:.3f} | '
                      f'{t.diff:+.3f} [{t.ci[0]:+.3f}, {t.ci[1]:+.3f}] | {t.p:.3g} |'), img[2]
    text = ''.join(o.get('text', '') for c in nb.cells if c.cell_type == 'code' for o in c.get('outputs', []))
    assert 'retinanet by map − retinanet, seed 1: not paired on its test images' in text and 'predictions.csv: missing' in text


ARCHIVE = SCIENCE.parent / 'results' / 'science'


def committed_per_run_coco() -> dict:
    "The committed notebook's table of rib COCO AP per detector run: (arm, seed) -> 'AP [lo, hi]', as its HTML output shows it."
    import re
    nb = json.loads(SCIENCE.read_text())
    cell = next(c for c in nb['cells'] if 'def per_run_coco' in ''.join(c['source']))
    html = next(''.join(o['data']['text/html']) for o in cell['outputs'] if 'text/html' in o.get('data', {}))
    rows = [re.findall(r'<t[hd]>(.*?)</t[hd]>', r, re.S) for r in re.findall(r'<tr[^>]*>(.*?)</tr>', html, re.S)]
    arms = rows[0][1:]                                    # <th>arm</th><th>retinanet</th>...
    return {(a, int(r[0])): v for r in rows[2:] for a, v in zip(arms, r[1:]) if v}


def with_ci(v, ci):   # the notebook's format of a run's value [interval]
    f = '.1e' if 0 < v < 1e-3 else '.3f'
    return f'{v:{f}} [{ci[0]:{f}}, {ci[1]:{f}}]'


def test_the_committed_per_run_table_is_parsed():
    t = committed_per_run_coco()
    assert t[('retinanet', 0)] == '0.026 [0.003, 0.063]' and t[('oxnet', 1)] == '3.8e-05 [4.7e-06, 1.9e-04]'
    assert t[('sfl λ=0 lr2=1e-05', 2)] == '0.015 [0.004, 0.041]' and ('sfl', 2) not in t


def test_archived_reruns_reproduce_the_committed_record():
    """A detector run rerun into the archive (`archive:` in the science grids) against the committed notebook's output
    of the run it repeats, trained on another machine before the archive existed. The three reruns of 2026-12-07 ran on
    a processor that reproduced the lost runs, so their rib COCO AP and interval must agree to the digits shown. A run
    is deterministic on one processor, not across processors (README: the 2026-12-08 rerun), so a run that records
    another processor (`versions.cpu`, written since) is not held to them."""
    committed = committed_per_run_coco()
    checked = []
    for m in sorted(ARCHIVE.rglob('metrics.json')):
        j = json.loads(m.read_text()); cfg = j['config']
        if float(cfg.get('p_subset', 1.0)) != 1.0: continue   # no detector arm has a P subset
        arm = cfg['method'] + (f" λ={float(cfg['distill_weight']):g}" if float(cfg.get('distill_weight', 1.0)) != 1.0 else '') \
              + (f" lr2={float(cfg['lr_stage2']):g}" if cfg.get('lr_stage2') is not None else '')   # the notebook's arm label
        key = (arm, int(cfg['seed']))
        r = j['results']['rib_fracture']
        if key not in committed or not r.get('coco'): continue
        if 'cpu' in j.get('versions', {}): continue   # recorded since 2026-12-08: a run on another processor is another draw (README)
        assert with_ci(r['coco']['AP'], r['coco_ci']['AP']) == committed[key], (m, key)
        checked.append(key)
    if not checked: pytest.skip(f'no archived detector run under {ARCHIVE} repeats a run of the committed table')


def test_the_readme_rerun_numbers_are_the_archive_s():
    """The README's figures for the map arms rerun on another processor (2026-12-08) are what `tools/archive_claims.py`
    reads from the archive: no number without the command that gives it."""
    import importlib.util
    spec = importlib.util.spec_from_file_location('archive_claims', SCIENCE.parents[2] / 'tools' / 'archive_claims.py')
    mod = importlib.util.module_from_spec(spec); spec.loader.exec_module(mod)
    arms, pairs = mod.archive_claims(ARCHIVE)
    if (arms.seeds < 5).any() or len(arms) < 24: pytest.skip('the archive does not hold the five seeds of the rerun map arms')
    readme = (SCIENCE.parents[2] / 'README.md').read_text()
    v = lambda a, m: arms[(arms.arm == a) & (arms.metric == m)].value.item()
    d = lambda a, b, m: pairs[(pairs.A == a) & (pairs.B == b) & (pairs.metric == m)]['A - B'].item()
    quoted = [v('supervised', 'rib_fracture auroc'), v('supervised', 'rib_fracture pixel_froc'),
              d('aals', 'mean_teacher', 'rib_fracture pixel_froc'), d('aals', 'mean_teacher', 'clavicle_fracture pixel_froc'),
              d('aals', 'supervised', 'rib_fracture pixel_froc'), d('mean_teacher', 'supervised', 'rib_fracture pixel_froc'),
              d('mean_teacher', 'mean_teacher λ=0', 'rib_fracture pixel_froc'), d('aals', 'mean_teacher λ=0', 'rib_fracture pixel_froc')]
    for q in quoted: assert q in readme, q
