"""The synthetic chest phantom: determinism, manifest, roles, boxes, file formats, gallery, CLI."""
import hashlib, json, subprocess, sys
from pathlib import Path
import numpy as np, pandas as pd
import pytest
from cxr_fracture.phantom import (CLASSES, KINDS, POSITIVE_RATE, R_FRACTION, make_phantom, phantom_item, phantom_role,
                                  fracture_masks, render_chest, sample_spec, render_spec, gallery)
from cxr_fracture.manifest import validate_manifest, parse_boxes

CLI = str(Path(sys.executable).parent / 'cxr-fracture')


def _digests(d):
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(Path(d).rglob('*')) if p.is_file()}


@pytest.fixture(scope='module')
def ds(tmp_path_factory):
    "A small data set with many positives (written once for several tests)."
    out = tmp_path_factory.mktemp('ph')
    df = make_phantom(24, size=128, seed=3, out=out, positive_rate=0.5, r_fraction=0.5)
    return out, df


def test_same_seed_same_bytes_any_workers(tmp_path, ds):
    out, _ = ds
    make_phantom(24, size=128, seed=3, out=tmp_path/'w2', positive_rate=0.5, r_fraction=0.5, workers=2)
    assert _digests(out) == _digests(tmp_path/'w2')


def test_images_do_not_depend_on_n(tmp_path, ds):
    out, df = ds
    small = make_phantom(5, size=128, seed=3, out=tmp_path/'n5', positive_rate=0.5, r_fraction=0.5)
    for p in small['path']:
        assert (tmp_path/'n5'/p).read_bytes() == (out/p).read_bytes()
    other = make_phantom(3, size=128, seed=4, out=tmp_path/'s4', positive_rate=0.5, r_fraction=0.5)
    assert (tmp_path/'s4'/other['path'][0]).read_bytes() != (out/df['path'][0]).read_bytes()


def test_manifest_validates_and_follows_schema(ds):
    out, df = ds
    assert validate_manifest(out/'manifest.csv') == []
    m = pd.read_csv(out/'manifest.csv')
    for c in ['image_id', 'path', 'patient_id', *CLASSES, 'boxes', 'role', 'fold', 'split', 'width', 'height']:
        assert c in m.columns, c
    assert set(m['split']) <= {'train', 'val', 'test'} and set(m['fold']) <= set(range(5))
    assert not m['path'].str.startswith('/').any()
    for _, r in m.iterrows():
        bs = parse_boxes(r['boxes'])
        if r['role'] == 'N':
            assert bs == [] and r['rib_fracture'] == 0 and r['clavicle_fracture'] == 0
        else:   # the phantom knows the truth: R and P both carry every box
            assert bs and {b['label'] for b in bs} == {c for c in CLASSES if r[c] == 1}


def test_roles_and_imbalance_follow_the_settings():
    roles = pd.Series([phantom_role(i, seed=0) for i in range(5000)]).value_counts()
    assert abs((roles['R'] + roles['P'])/5000 - POSITIVE_RATE) < 0.003
    assert abs(roles['R']/(roles['R'] + roles['P']) - R_FRACTION) < 0.01
    roles = pd.Series([phantom_role(i, 1, positive_rate=0.3, r_fraction=0.5) for i in range(1000)]).value_counts()
    assert abs(roles['R'] - 150) <= 3 and abs(roles['P'] - 150) <= 3
    # prefixes hold the mix too (the demo uses small n)
    assert sum(phantom_role(i) != 'N' for i in range(100)) in range(9, 12)


def test_ribs_far_more_common_than_clavicles():
    labs = [phantom_item(i, seed=5, size=96, positive_rate=1.0)[1]['labels'] for i in range(60)]
    rib, clav = sum(l['rib_fracture'] for l in labs), sum(l['clavicle_fracture'] for l in labs)
    assert rib > 3*clav and rib >= 50


def test_boxes_inside_the_image_and_on_the_bone():
    for i in range(12):
        img, ann = render_chest(np.random.default_rng([9, i]), 192, n_fractures=2, masks=True)
        assert ann['boxes']
        for b, f in zip(ann['boxes'], ann['fractures']):
            assert 0 <= b['x1'] < b['x2'] <= 192 and 0 <= b['y1'] < b['y2'] <= 192
            assert b['label'] in CLASSES and f['kind'] in KINDS
            sl = np.s_[int(b['y1']):int(b['y2']), int(b['x1']):int(b['x2'])]
            bone = ann['bone_masks']['rib' if b['label'] == 'rib_fracture' else 'clavicle'][sl]
            m = ann['masks'][b['label']][sl]
            assert (m & bone).mean() > 0.2, (i, b)          # the box sits on its rib / clavicle
            # tight: the mask touches all four sides of the box
            assert m[0].any() and m[-1].any() and m[:, 0].any() and m[:, -1].any()


def test_fracture_masks_match_written_boxes(ds):
    out, df = ds
    r = df[df.role != 'N'].iloc[0]; i = int(r['image_id'].rsplit('-', 1)[1])
    m = fracture_masks(i, seed=3, size=128, positive_rate=0.5, r_fraction=0.5)
    for b in parse_boxes(r['boxes']):
        sl = np.s_[int(b['y1']):int(b['y2']), int(b['x1']):int(b['x2'])]
        assert m[b['label']][sl].any()


def test_fracture_changes_only_near_its_box():
    spec = sample_spec(np.random.default_rng(11), 192, n_fractures=1, distractors=0)
    a, ann = render_spec(spec); b, _ = render_spec(spec, fractures=False)
    diff = np.abs(a - b) > 1e-3
    bx = ann['boxes'][0]
    rows, cols = np.nonzero(diff)
    assert diff.any()
    # step-off fragments fade away along the bone; the bulk of the change is in the box
    inside = (cols >= bx['x1'] - 3) & (cols < bx['x2'] + 3) & (rows >= bx['y1'] - 3) & (rows < bx['y2'] + 3)
    assert inside.mean() > 0.3


def test_png_reads_back_16bit_in_unit_range(ds):
    from PIL import Image
    out, df = ds
    p = out/df['path'][0]
    raw = np.asarray(Image.open(p))
    assert raw.dtype == np.uint16 and raw.shape == (128, 128) and raw.max() > 255
    from cxr_fracture.io import read_xray
    img, meta = read_xray(p)
    assert img.dtype == np.float32 and 0 <= img.min() and img.max() <= 1
    np.testing.assert_allclose(img, raw/65535, atol=1e-6)
    np.testing.assert_allclose(img, phantom_item(0, seed=3, size=128, positive_rate=0.5, r_fraction=0.5)[0], atol=1/65535)


def test_dicom_flag_reads_back(tmp_path):
    pytest.importorskip('pydicom', reason='pydicom is not installed (DICOM output needs it)')
    from cxr_fracture.io import read_xray
    df = make_phantom(3, size=96, seed=0, out=tmp_path/'d', dicom=True, positive_rate=1.0)
    assert validate_manifest(tmp_path/'d'/'manifest.csv') == []
    img, meta = read_xray(tmp_path/'d'/df['path'][0])
    assert img.shape == (96, 96) and 0 <= img.min() and img.max() <= 1
    np.testing.assert_allclose(img, phantom_item(0, seed=0, size=96, positive_rate=1.0)[0], atol=1/65535)
    b1 = (tmp_path/'d'/df['path'][0]).read_bytes()
    make_phantom(1, size=96, seed=0, out=tmp_path/'e', dicom=True, positive_rate=1.0)
    assert (tmp_path/'e'/df['path'][0]).read_bytes() == b1


def test_gallery_renders_headless(ds):
    import matplotlib; matplotlib.use('Agg')
    from matplotlib.figure import Figure
    out, df = ds
    fig = gallery(out, n=6, cols=3)
    assert isinstance(fig, Figure) and len([a for a in fig.axes if a.images]) == 6
    titles = ' '.join(a.get_title() for a in fig.axes)
    assert 'role R' in titles or 'role P' in titles
    assert any(a.patches for a in fig.axes)
    fig2 = gallery(df, root=out, n=2)
    assert isinstance(fig2, Figure)


def test_cli_end_to_end(tmp_path):
    out = tmp_path/'cli'
    r = subprocess.run([CLI, 'phantom', '--n', '6', '--size', '96', '--seed', '2', '--out', str(out),
                        '--positive-rate', '0.5', '--r-fraction', '0.5', '--quiet'], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert 'manifest valid' in r.stdout
    assert len(list((out/'images').glob('*.png'))) == 6
    v = subprocess.run([CLI, 'validate', str(out/'manifest.csv')], capture_output=True, text=True)
    assert v.returncode == 0, v.stdout + v.stderr


def test_failed_items_are_reported_and_fail_the_command(tmp_path, monkeypatch, capsys):
    "One image failing: left out, listed in report.csv, counted in the summary, exit 1; a stale report is removed first."
    import cxr_fracture.phantom as ph
    from cxr_fracture.cli import main
    out = tmp_path / 'ph'; out.mkdir()
    (out / 'report.csv').write_text('image_id,path,reason\nold,images/old.png,stale\n')   # from an earlier run
    real = ph.phantom_item
    def flaky(index, *a, **k):
        if index == 2: raise RuntimeError('drawing failed on purpose')
        return real(index, *a, **k)
    monkeypatch.setattr(ph, 'phantom_item', flaky)
    args = ['phantom', '--n', '5', '--size', '64', '--seed', '1', '--out', str(out), '--quiet']
    assert main(args) == 1
    cap = capsys.readouterr()
    assert 'wrote 4 of 5 images' in cap.out and '1 FAILED' in cap.out and str(out / 'report.csv') in cap.out, cap.out
    assert '1 of 5 images failed' in cap.err and str(out / 'report.csv') in cap.err, cap.err
    rep = pd.read_csv(out / 'report.csv')
    assert rep.image_id.tolist() == ['phantom-1-000002'] and 'drawing failed on purpose' in rep.reason[0]
    m = pd.read_csv(out / 'manifest.csv')
    assert len(m) == 4 and 'phantom-1-000002' not in set(m.image_id)
    assert validate_manifest(out / 'manifest.csv') == []
    # every item failing: an empty (valid) manifest, no crash in the folds, exit 1
    monkeypatch.setattr(ph, 'phantom_item', lambda *a, **k: 1 / 0)
    assert main(args) == 1
    cap = capsys.readouterr()
    assert 'wrote 0 of 5 images' in cap.out and '5 FAILED' in cap.out, cap.out
    assert len(pd.read_csv(out / 'report.csv')) == 5 and len(pd.read_csv(out / 'manifest.csv')) == 0
    # a clean run in the same folder: the stale report is gone, exit 0
    monkeypatch.setattr(ph, 'phantom_item', real)
    assert main(args) == 0
    assert not (out / 'report.csv').exists() and 'FAILED' not in capsys.readouterr().out
    with pytest.raises(ValueError, match='at least 1'): make_phantom(0, out=tmp_path / 'zero')
