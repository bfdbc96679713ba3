"""Manifests: a corpus of bad manifests (one fault each) through `cxr-fracture validate`, folds, and the builders."""
import subprocess, sys, json
from pathlib import Path
import numpy as np, pandas as pd
import pytest
from cxr_fracture.cli import main
from cxr_fracture.manifest import (validate_manifest, read_manifest, write_manifest, assign_folds, with_split, split_for_fold,
                                   build_fracatlas, build_dicom_folder, merge_labels, derive_roles, boxes_array, pseudonym)

CLI = str(Path(sys.executable).parent / 'cxr-fracture')
BOX = lambda x1, y1, x2, y2, label='rib_fracture': dict(x1=x1, y1=y1, x2=x2, y2=y2, label=label)


def clean_rows():
    "A small valid chest manifest (6 images, 6 patients)."
    j = lambda *bs: json.dumps(list(bs))
    return pd.DataFrame({
        'image_id': ['a0', 'a1', 'a2', 'a3', 'a4', 'a5'],
        'path': [f'img/a{i}.png' for i in range(6)],
        'patient_id': [f'p{i}' for i in range(6)],
        'rib_fracture': ['1', '1', '0', '0', '-1', '0'],
        'clavicle_fracture': ['0', '', '0', '0', '0', '0'],
        'boxes': [j(BOX(10, 10, 20, 30)), '[]', '[]', '', '[]', '[]'],
        'role': ['R', 'P', 'N', 'N', 'U', 'N'],
        'fold': ['0', '1', '2', '3', '4', '0'],
        'split': ['test', 'val', 'train', 'train', 'train', 'test'],
        'width': ['100'] * 6, 'height': ['80'] * 6,
        'study_year': ['2004'] * 6,
    })


def setv(col, row, val):
    def f(df): df.loc[row, col] = val; return df
    return f

def add_col(col, vals):
    def f(df): df[col] = vals; return df
    return f

# fault name -> (mutation, code expected in the line, row named in the line or None for a column-level fault, extra text)
FAULTS = {
    'missing_column':    (lambda d: d.drop(columns='patient_id'), 'missing-column', None, "'patient_id'"),
    'no_label_column':   (lambda d: d.drop(columns=['rib_fracture', 'clavicle_fracture']), 'missing-column', None, 'no label column'),
    'unknown_label':     (setv('rib_fracture', 2, 'yes'), 'bad-label', 2, "'yes'"),
    'label_out_of_range':(setv('clavicle_fracture', 3, '2'), 'bad-label', 3, "'2'"),
    'bad_role':          (setv('role', 5, 'X'), 'bad-role', 5, "'X'"),
    'r_without_boxes':   (setv('boxes', 0, '[]'), 'role-mismatch', 0, 'no boxes'),
    'n_with_positive':   (setv('rib_fracture', 2, '1'), 'role-mismatch', 2, 'role N'),
    'p_without_positive':(setv('rib_fracture', 1, '0'), 'role-mismatch', 1, 'role P'),
    'malformed_json':    (setv('boxes', 1, '[{"x1": 1, "y1": 2'), 'bad-boxes', 1, 'not valid JSON'),
    'box_missing_key':   (setv('boxes', 1, '[{"x1":1,"y1":2,"x2":3,"label":"rib_fracture"}]'), 'bad-boxes', 1, 'lacks y2'),
    'inverted_box':      (setv('boxes', 0, json.dumps([BOX(30, 10, 20, 30)])), 'inverted-box', 0, 'inverted'),
    'box_outside':       (setv('boxes', 0, json.dumps([BOX(10, 10, 20, 90)])), 'box-outside', 0, '100x80'),
    'box_negative_coord':(setv('boxes', 1, json.dumps([BOX(-5, 10, 20, 30)])), 'box-outside', 1, 'outside'),
    'box_on_negative':   (setv('boxes', 2, json.dumps([BOX(1, 1, 5, 5)])), 'box-on-negative', 2, 'label is 0'),
    'box_label_unknown': (setv('boxes', 0, json.dumps([BOX(1, 1, 5, 5, 'nodule')])), 'box-label', 0, "'nodule'"),
    'duplicate_id':      (setv('image_id', 3, 'a2'), 'duplicate-id', 3, "'a2'"),
    'empty_patient':     (setv('patient_id', 4, ''), 'empty-id', 4, 'patient_id'),
    'patient_two_folds': (setv('patient_id', 3, 'p2'), 'patient-leak', 3, 'fold'),
    'patient_two_splits':(lambda d: setv('split', 5, 'train')(setv('patient_id', 5, 'p0')(setv('fold', 5, '0')(d))), 'patient-leak', 5, 'split'),
    'bad_fold':          (setv('fold', 4, '7'), 'bad-fold', 4, 'outside'),
    'bad_split':         (setv('split', 4, 'training'), 'bad-split', 4, "'training'"),
    'absolute_path':     (setv('path', 3, '/data/img/a3.png'), 'bad-path', 3, 'absolute'),
    'windows_path':      (setv('path', 3, 'C:/data/a3.png'), 'bad-path', 3, 'absolute'),
    'escaping_path':     (setv('path', 4, 'img/../../a4.png'), 'bad-path', 4, 'escapes'),
    'col_patient_name':  (add_col('patient_name', ['x'] * 6), 'identifier', None, "'patient_name'"),
    'col_name':          (add_col('Name', ['x'] * 6), 'identifier', None, "'Name'"),
    'col_birth_date':    (add_col('BirthDate', ['x'] * 6), 'identifier', None, 'birth date'),
    'col_dob':           (add_col('dob', ['x'] * 6), 'identifier', None, 'birth date'),
    'col_mrn':           (add_col('MRN', ['x'] * 6), 'identifier', None, 'medical record'),
    'col_accession':     (add_col('accession_number', ['x'] * 6), 'identifier', None, 'accession'),
    'col_ssn':           (add_col('ssn', ['x'] * 6), 'identifier', None, 'social security'),
    'col_address':       (add_col('address', ['x'] * 6), 'identifier', None, 'address'),
    'col_phone':         (add_col('phone', ['x'] * 6), 'identifier', None, 'phone'),
    'value_birth_date':  (add_col('note', ['', '', '', 'born 1950-03-04', '', '']), 'identifier', None, 'row 3'),
    'value_us_date':     (add_col('note', ['', '', '03/04/1950', '', '', '']), 'identifier', None, 'row 2'),
    'value_long_digits': (add_col('ref', ['', '', '', '', '12345678', '']), 'identifier', None, 'row 4'),
    'value_ssn':         (add_col('ref', ['', '123-45-6789', '', '', '', '']), 'identifier', None, 'social security'),
    # a negative has every class label 0 and no box
    'n_with_empty_label':(setv('clavicle_fracture', 2, ''), 'role-mismatch', 2, 'clavicle_fracture is empty (unknown)'),
    'n_with_uncertain':  (setv('rib_fracture', 3, '-1'), 'role-mismatch', 3, 'rib_fracture is -1 (uncertain)'),
    'box_on_n_unknown':  (lambda d: setv('boxes', 5, json.dumps([BOX(1, 1, 5, 5, 'clavicle_fracture')]))(setv('clavicle_fracture', 5, '')(d)),
                          'box-on-negative', 5, 'role N (negative) image (its clavicle_fracture label is empty'),
    'box_on_n_bad_label':(setv('boxes', 3, json.dumps([BOX(1, 1, 5, 5, 'nodule')])), 'box-on-negative', 3, 'role N'),
}

# variants of the clean manifest that are valid: (mutation, why)
NOT_FAULTS = {
    'no_fold_no_split':  (lambda d: d.drop(columns=['fold', 'split']), 'optional: assign_folds / with_split fill them'),
    'no_split':          (lambda d: d.drop(columns=['split']), 'optional'),
    'p_with_boxes':      (setv('boxes', 1, json.dumps([BOX(1, 1, 5, 5)])), 'boxes on P are evaluation truth (the phantom keeps them)'),
}


def test_clean_manifest_passes(tmp_path, capsys):
    p = tmp_path / 'clean.csv'; clean_rows().to_csv(p, index=False)
    assert validate_manifest(p) == []
    assert main(['validate', str(p)]) == 0
    out = capsys.readouterr().out
    assert 'valid' in out and 'R=1 P=1 N=3 U=1' in out and len(out.strip().splitlines()) == 1


@pytest.mark.parametrize('fault', list(FAULTS))
def test_bad_manifest_fails_with_a_line_naming_fault_and_row(fault, tmp_path, capsys):
    mutate, code, row, extra = FAULTS[fault]
    p = tmp_path / f'{fault}.csv'
    mutate(clean_rows()).to_csv(p, index=False)
    rc = main(['validate', str(p)])
    out = capsys.readouterr().out
    assert rc == 1, out
    lines = [l for l in out.splitlines() if f': {code}: ' in l]
    assert lines, f'no {code} line in:\n{out}'
    if row is not None: lines = [l for l in lines if f'row {row} (' in l]
    assert any(extra in l for l in lines), f'no line with {code}, row {row}, {extra!r} in:\n{out}'
    assert all(l.startswith(str(p)) for l in out.splitlines()[:-1])  # every problem line names the file


@pytest.mark.parametrize('variant', list(NOT_FAULTS))
def test_valid_variants_pass_silently(variant, tmp_path, capsys):
    p = tmp_path / f'{variant}.csv'
    NOT_FAULTS[variant][0](clean_rows()).to_csv(p, index=False)
    assert validate_manifest(p) == []
    assert main(['validate', str(p)]) == 0
    out = capsys.readouterr().out
    assert len(out.strip().splitlines()) == 1 and ': valid: ' in out, out


def test_phantom_style_p_boxes_are_not_flagged(tmp_path):
    "The phantom keeps every box on P images (documented): validate accepts them; boxes on N are flagged."
    from cxr_fracture.phantom import make_phantom
    df = make_phantom(12, size=96, seed=3, out=tmp_path, positive_rate=0.6, r_fraction=0.3)
    assert (df.role == 'P').any() and (df.boxes[df.role == 'P'] != '[]').all()
    assert validate_manifest(tmp_path / 'manifest.csv') == []


def test_box_bounds_without_sizes(tmp_path, capsys):
    "No width/height: with --root the image headers bound the boxes (PNG by Pillow, DICOM by pydicom), else one note line."
    from PIL import Image
    from pydicom.data import get_testdata_file
    d = clean_rows().drop(columns=['width', 'height'])
    d.loc[0, 'boxes'] = json.dumps([BOX(10, 10, 99999, 30)])
    d.loc[1, 'boxes'] = json.dumps([BOX(1, 1, 200, 5)]); d.loc[1, 'path'] = 'img/a1.dcm'
    p = tmp_path / 'm.csv'; d.to_csv(p, index=False)
    # no root: the bounds are not checked; one note (not a failure) says how to check them
    assert main(['validate', str(p)]) == 0
    out = capsys.readouterr().out
    notes = [l for l in out.splitlines() if ': note: box-bounds-unchecked: ' in l]
    assert len(notes) == 1 and '2 row(s)' in notes[0] and '--root DATA_ROOT' in notes[0] and notes[0].startswith(str(p)), out
    assert 'valid' in out.splitlines()[-1]
    nl = []; assert validate_manifest(p, notes=nl) == [] and [n.code for n in nl] == ['box-bounds-unchecked']
    # with --root: the sizes come from the image headers by default
    (tmp_path / 'img').mkdir()
    for i in (0, 2, 3, 4, 5): Image.new('L', (100, 25)).save(tmp_path / 'img' / f'a{i}.png')
    (tmp_path / 'img' / 'a1.dcm').symlink_to(get_testdata_file('CT_small.dcm'))   # 128 x 128
    assert main(['validate', str(p), '--root', str(tmp_path)]) == 1
    out = capsys.readouterr().out
    assert "row 0 (line 2, image_id 'a0'): box-outside" in out and '100x25' in out, out
    assert "row 1 (line 3, image_id 'a1'): box-outside" in out and '128x128' in out, out
    assert 'box-bounds-unchecked' not in out
    # --no-check-image-sizes: skipped again, with a note that says so
    assert main(['validate', str(p), '--root', str(tmp_path), '--no-check-image-sizes']) == 0
    out = capsys.readouterr().out
    assert 'note: box-bounds-unchecked' in out and '--no-check-image-sizes' in out
    # a root where an image is missing: those rows are noted, the others checked
    (tmp_path / 'img' / 'a0.png').unlink()
    assert main(['validate', str(p), '--root', str(tmp_path)]) == 1
    out = capsys.readouterr().out
    assert 'box-outside' in out and "row 1 (" in out and "row 0 (line 2, image_id 'a0'): box-outside" not in out
    assert "1 row(s) with boxes (first: row 0, image_id 'a0')" in out and 'could not be read' in out


def test_console_script_exit_status(tmp_path):
    p = tmp_path / 'bad.csv'; FAULTS['duplicate_id'][0](clean_rows()).to_csv(p, index=False)
    r = subprocess.run([CLI, 'validate', str(p)], capture_output=True, text=True)
    assert r.returncode == 1 and "duplicate-id" in r.stdout and "row 3 (line 5, image_id 'a2')" in r.stdout


def test_check_files_and_image_sizes(tmp_path, capsys):
    from PIL import Image
    d = clean_rows().drop(columns=['width', 'height'])
    (tmp_path / 'img').mkdir()
    for i in range(5): Image.new('L', (100, 25)).save(tmp_path / 'img' / f'a{i}.png')  # a5 missing; a0's box reaches y2=30 > 25
    p = tmp_path / 'm.csv'; d.to_csv(p, index=False)
    assert main(['validate', str(p), '--root', str(tmp_path), '--check-files', '--check-image-sizes']) == 1
    out = capsys.readouterr().out
    assert "row 5 (line 7, image_id 'a5'): missing-file" in out
    assert "row 0 (line 2, image_id 'a0'): box-outside" in out and '100x25' in out


def test_read_write_round_trip(tmp_path):
    d = clean_rows(); d.loc[0, 'image_id'] = '007'
    write_manifest(d, tmp_path / 'a.csv')
    m = read_manifest(tmp_path / 'a.csv')
    assert m.image_id[0] == '007' and str(m.rib_fracture.dtype) == 'Int8' and m.clavicle_fracture.isna().sum() == 1
    assert m.fold.tolist() == [0, 1, 2, 3, 4, 0]
    write_manifest(m, tmp_path / 'b.csv')
    assert (tmp_path / 'a.csv').read_bytes() == (tmp_path / 'b.csv').read_bytes()
    np.testing.assert_array_equal(boxes_array(m.iloc[0], 'rib_fracture'), [[10, 10, 20, 30]])
    bad = clean_rows(); bad.loc[2, 'rib_fracture'] = 'yes'; bad.to_csv(tmp_path / 'c.csv', index=False)
    with pytest.raises(ValueError, match=r"c\.csv.*'rib_fracture'.*row 2"): read_manifest(tmp_path / 'c.csv')


def toy(n_pat=600, seed=3):
    rng = np.random.default_rng(seed); rows = []
    for p in range(n_pat):
        pos = rng.random() < 0.1; boxed = pos and rng.random() < 0.2
        for j in range(int(rng.integers(1, 4))):
            rows.append(dict(image_id=f'i{p}_{j}', path=f'x/{p}_{j}.png', patient_id=f'p{p}', rib_fracture=int(pos), clavicle_fracture=0,
                             boxes=json.dumps([BOX(1, 1, 4, 4)]) if boxed else '[]', role='R' if boxed else 'P' if pos else 'N'))
    return pd.DataFrame(rows)


def test_folds_deterministic_stratified_and_leak_free():
    df = toy()
    a, b, c = assign_folds(df, seed=0), assign_folds(df, seed=0), assign_folds(df, seed=1)
    assert a.fold.tolist() == b.fold.tolist() and a.fold.tolist() != c.fold.tolist()
    assert a.groupby('patient_id').fold.nunique().max() == 1
    sizes = a.fold.value_counts(normalize=True)
    assert (abs(sizes - 0.2) < 0.02).all(), sizes
    for role in 'RPN':  # each role spread evenly over the folds
        cnt = a[a.role == role].fold.value_counts().reindex(range(5), fill_value=0)
        assert cnt.max() - cnt.min() <= max(3, 0.1 * cnt.mean()), (role, cnt.to_dict())
    for k in range(5):
        s = split_for_fold(a, k, seed=0)
        assert s.tolist() == split_for_fold(a, k, seed=0).tolist()
        w = with_split(a, k, seed=0)
        assert w.groupby('patient_id').split.nunique().max() == 1
        fr = w.split.value_counts(normalize=True)
        assert abs(fr['train'] - 0.7) < 0.03 and abs(fr['val'] - 0.1) < 0.03 and abs(fr['test'] - 0.2) < 0.03, fr
        pos = w[w.rib_fracture == 1].split.value_counts(normalize=True)
        assert abs(pos['val'] - 0.1) < 0.05 and abs(pos['test'] - 0.2) < 0.05, pos
        assert set(w.fold[w.split == 'test']) == {k} and set(w.fold[w.split == 'val']) == {(k + 1) % 5}
        assert validate_manifest(w) == []


def test_merge_labels_and_roles():
    man = pd.DataFrame({'image_id': ['i1', 'i2', 'i3'], 'path': ['1', '2', '3'], 'patient_id': ['a', 'b', 'c'], 'study_id': ['s1', 's2', 's3'],
                        'boxes': [json.dumps([BOX(1, 1, 3, 3)]), '[]', '[]']})
    lab = pd.DataFrame({'study_id': ['s1', 's2', 'zz'], 'rib_fracture': ['1', '1', '0'], 'clavicle_fracture': ['0', '0', '']})
    out, rep = merge_labels(man, lab)
    assert out.role.tolist() == ['R', 'P', 'U'] and rep['unmatched_label_ids'] == 1 and rep['images_without_labels'] == 1
    assert derive_roles(out, missing='negative').tolist() == ['R', 'P', 'N']
    # missing='negative': the empty labels are written as 0, so that the N row validates (a negative has every label 0)
    man['patient_id'] = ['a', 'b', 'c']
    neg, _ = merge_labels(man, lab, missing='negative')
    assert neg.role.tolist() == ['R', 'P', 'N'] and neg.rib_fracture.tolist() == [1, 1, 0] and neg.clavicle_fracture.tolist() == [0, 0, 0]
    assert validate_manifest(neg) == []
    assert [p.code for p in validate_manifest(out)] == []   # U with empty labels: fine


def test_folds_of_an_empty_manifest():
    empty = toy().iloc[:0]
    f = assign_folds(empty)
    assert len(f) == 0 and 'fold' in f and str(f.fold.dtype) == 'Int8'
    w = with_split(f)
    assert len(w) == 0 and 'split' in w


# --- FracAtlas ---------------------------------------------------------------------------------------------

def test_fracatlas_builder_on_shared_data(shared_data, tmp_path, capsys):
    root = shared_data / 'fracatlas'
    out = tmp_path / 'fa.csv'
    rc = main(['build-manifest', 'fracatlas', str(root), '--boxed-fraction', '0.15', '--seed', '0', '--out', str(out), '--quiet',
               '--report', str(tmp_path / 'rep.txt')])
    text = capsys.readouterr().out
    assert rc == 0, text
    n_present = sum(1 for d in ('Fractured', 'Non_fractured') for _ in (root / 'images' / d).iterdir())
    listed = pd.read_csv(root / 'dataset.csv')
    m = read_manifest(out)
    assert len(m) == n_present and m.image_id.is_unique
    assert f'missing: {len(listed) - n_present}' in text and f'present: {n_present}' in text
    assert len((tmp_path / 'rep.txt').read_text().splitlines()) > len(listed) - n_present  # the full list of absent images
    assert 'IMG0003298' in text and 'folder_disagreements: 1' in text  # folder Fractured, csv 0: reported, csv wins
    assert m.set_index('image_id').loc['IMG0003298', 'fracture'] == 0
    nf = int((m.fracture == 1).sum())
    assert nf == 567 and (m.role == 'R').sum() == round(0.15 * nf)
    assert ((m.role == 'R') == ((m.fracture == 1) & (m.boxes != '[]'))).all()
    assert (m.role[m.fracture == 1].isin(['R', 'P'])).all() and (m.role[m.fracture == 0] == 'N').all()
    assert (m.boxes[m.role != 'R'] == '[]').all()
    assert m.path.str.match(r'^images/(Fractured|Non_fractured)/IMG\d+\.jpg$').all()
    assert m.width.notna().all() and m.height.notna().all()
    assert {'hand', 'leg', 'hip', 'shoulder'} <= set(m.columns) and (m.patient_id == m.image_id).all()
    assert validate_manifest(out, root=root, check_files=True) == []
    # another seed, another boxed subset
    m2, _ = build_fracatlas(root, boxed_fraction=0.15, seed=1)
    assert set(m2.image_id[m2.role == 'R']) != set(m.image_id[m.role == 'R'])


def test_committed_fracatlas_manifest_is_a_fresh_build(shared_data, repo, tmp_path, capsys):
    committed = repo / 'data_manifests' / 'fracatlas.csv'
    assert committed.is_file(), 'data_manifests/fracatlas.csv is missing: build it with the command in data_manifests/README.md'
    out = tmp_path / 'fa.csv'
    assert main(['build-manifest', 'fracatlas', str(shared_data / 'fracatlas'), '--boxed-fraction', '0.15', '--seed', '0',
                 '--p-boxes', 'keep', '--out', str(out), '--quiet']) == 0
    assert out.read_bytes() == committed.read_bytes()


# --- DICOM folder ------------------------------------------------------------------------------------------

@pytest.fixture
def dicom_tree(shared_data, tmp_path):
    from pydicom.data import get_testdata_file
    root = tmp_path / 'scan'; root.mkdir()
    (root / 'shared').symlink_to((shared_data / 'dicom').resolve())
    (root / 'more').mkdir()
    for n in ('RG1_UNCI.dcm', 'RG3_UNCI.dcm'):
        f = get_testdata_file(n)
        if f: (root / 'more' / n).symlink_to(f)
    (root / 'more' / 'broken.dcm').write_bytes(b'\0' * 128 + b'DICM' + b'\x02\x00\x10\x00garbage')
    return root


def test_dicom_folder_never_emits_identifiers(dicom_tree, tmp_path, capsys):
    import pydicom
    salt = 'test-salt'
    out = tmp_path / 'd.csv'
    rc = main(['build-manifest', 'dicom-folder', str(dicom_tree), '--out', str(out), '--salt', salt, '--quiet'])
    printed = capsys.readouterr().out
    assert rc == 0, printed
    m = read_manifest(out, classes=['rib_fracture', 'clavicle_fracture'])
    assert len(m) >= 8 and m.image_id.is_unique
    assert 'not_dicom: 3' in printed  # the README and licence files
    assert 'broken.dcm' in printed and 'unreadable: 1' in printed
    raw = set()
    for p in m.path:
        ds = pydicom.dcmread(dicom_tree / p, stop_before_pixels=True)
        for t in ('PatientID', 'PatientName', 'PatientBirthDate', 'AccessionNumber', 'StudyInstanceUID', 'SOPInstanceUID', 'InstitutionName'):
            v = str(ds.get(t, '') or '')
            raw |= {v} | set(v.split('^'))
    raw = {v for v in raw if len(v) >= 4 and v not in {'RG1', 'RG2', 'RG3'}}  # name parts that are also file names are reported instead
    assert len(raw) > 5
    text = out.read_text() + printed
    leaked = [v for v in raw if v in text]
    assert leaked == [], leaked
    forbidden = {'PatientName', 'PatientID', 'PatientBirthDate', 'AccessionNumber', 'InstitutionName', 'StudyInstanceUID'}
    assert not forbidden & set(m.columns)
    assert m.patient_id.str.match(r'^pt_[0-9a-f]{16}$').all() and m.study_id.str.match(r'^st_[0-9a-f]{16}$').all()
    assert 'identifier_in_path' in printed
    assert validate_manifest(out) == []


def test_dicom_folder_needs_a_salt_and_joins_labels(dicom_tree, tmp_path, capsys, monkeypatch):
    import pydicom
    monkeypatch.delenv('CXR_FRACTURE_SALT', raising=False)
    assert main(['build-manifest', 'dicom-folder', str(dicom_tree), '--out', str(tmp_path / 'x.csv'), '--quiet']) == 2
    err = capsys.readouterr().err
    assert err.startswith('cxr-fracture build-manifest dicom-folder: ') and 'salt' in err and not (tmp_path / 'x.csv').exists()
    uid = str(pydicom.dcmread(dicom_tree / 'shared' / 'RG1_J2KI.dcm', stop_before_pixels=True).StudyInstanceUID)
    pd.DataFrame({'record': [uid, 'unknown-study'], 'rib_fracture': ['1', '0'], 'clavicle_fracture': ['0', '0']}).to_csv(tmp_path / 'lab.csv', index=False)
    out = tmp_path / 'd.csv'
    assert main(['build-manifest', 'dicom-folder', str(dicom_tree), '--out', str(out), '--salt', 's', '--quiet',
                 '--labels', str(tmp_path / 'lab.csv'), '--labels-id-col', 'record']) == 0
    printed = capsys.readouterr().out
    m = read_manifest(out)
    hit = m[m.study_id == pseudonym(uid, 's', 'study')]
    assert len(hit) >= 2 and (hit.rib_fracture == 1).all() and (hit.role == 'P').all()
    assert 'labels_unmatched_label_ids: 1' in printed and uid not in out.read_text() + printed
