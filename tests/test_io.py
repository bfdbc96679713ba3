"""Radiographs in: read_xray on real and broken files, letterbox + boxes, the preprocessing cache and its CLI."""
import json, os, signal, subprocess, sys, time
from pathlib import Path
import numpy as np
import pandas as pd
import pytest
from PIL import Image

from cxr_fracture.io import (UnreadableImage, read_xray, data_root, shared_data_dir, pad_to_square, resize,
                             letterbox, transform_boxes, untransform_boxes, build_cache, open_cache)

CLI = str(Path(sys.executable).parent / 'cxr-fracture')
CHEST = ['RG1_J2KI.dcm', 'RG1_JLSN.dcm', 'siim_cxr_jpeg_baseline.dcm']


def lungs_and_spine(img):
    "Mean of two lateral strips (lungs) and of a central vertical strip (spine) of a frontal chest film."
    h, w = img.shape
    r = slice(int(.25 * h), int(.6 * h))
    spine = img[r, int(.45 * w):int(.55 * w)].mean()
    lungs = (img[r, int(.2 * w):int(.3 * w)].mean() + img[r, int(.7 * w):int(.8 * w)].mean()) / 2
    return lungs, spine


def pdd_file(name):
    from pydicom.data import get_testdata_file
    p = get_testdata_file(name)
    if p is None: pytest.skip(f'{name} not found: install pydicom-data (a dev extra)')
    return Path(p)


def cat_dcm():
    try: import deid_data
    except ImportError: pytest.skip('deid-data (a dev extra) is not installed')
    return next(Path(deid_data.__file__).parent.rglob('animals/cat.dcm'))


def tiny_dicom(fn, arr, pixels=True, ts=None, encap=False, **kw):
    "A small uncompressed DICOM with file meta (arr: (rows, cols) or (frames, rows, cols) or (rows, cols, 3))."
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid
    fm = FileMetaDataset(); fm.TransferSyntaxUID = ts or ExplicitVRLittleEndian
    fm.MediaStorageSOPClassUID = '1.2.840.10008.5.1.4.1.1.1'; fm.MediaStorageSOPInstanceUID = generate_uid()
    ds = Dataset(); ds.file_meta = fm
    ds.SOPClassUID, ds.SOPInstanceUID, ds.Modality = fm.MediaStorageSOPClassUID, fm.MediaStorageSOPInstanceUID, 'CR'
    if pixels:
        arr = np.asarray(arr)
        rgb = arr.ndim == 3 and arr.shape[-1] == 3 and 'NumberOfFrames' not in kw
        ds.Rows, ds.Columns = arr.shape[-3:-1] if rgb else arr.shape[-2:]
        ds.SamplesPerPixel = 3 if rgb else 1
        if rgb: ds.PlanarConfiguration = 0
        ds.BitsAllocated = 8 if rgb else 16
        ds.BitsStored = kw.pop('BitsStored', 8 if rgb else 12); ds.HighBit = ds.BitsStored - 1
        ds.PixelRepresentation = 0
        ds.PhotometricInterpretation = 'RGB' if rgb else 'MONOCHROME2'
        for k, v in kw.items(): setattr(ds, k, v)
        ds.PixelData = arr.astype(np.uint8 if rgb else np.uint16).tobytes()
        if encap:
            from pydicom.encaps import encapsulate
            ds.PixelData = encapsulate([ds.PixelData]); ds['PixelData'].VR = 'OB'
    else:
        for k, v in kw.items(): setattr(ds, k, v)
    ds.save_as(fn, enforce_file_format=True)
    return fn


# ---------------------------------------------------------------- where the data lives
def test_data_root(monkeypatch, tmp_path):
    monkeypatch.delenv('CXR_FRACTURE_DATA', raising=False)
    assert data_root(tmp_path) == tmp_path
    with pytest.raises(ValueError, match='CXR_FRACTURE_DATA'): data_root()
    monkeypatch.setenv('CXR_FRACTURE_DATA', str(tmp_path))
    assert data_root() == tmp_path


def test_shared_data_dir(monkeypatch, tmp_path, shared_data):
    monkeypatch.delenv('CXR_FRACTURE_SHARED', raising=False)
    assert shared_data_dir().resolve() == shared_data.resolve()
    monkeypatch.chdir(tmp_path)                       # found from the module's file, not only the cwd
    assert shared_data_dir().resolve() == shared_data.resolve()
    monkeypatch.setenv('CXR_FRACTURE_SHARED', str(tmp_path / 'nope'))
    assert shared_data_dir() is None


# ---------------------------------------------------------------- the real files
def test_every_shared_dicom_reads(shared_data):
    files = sorted((shared_data / 'dicom').glob('*.dcm'))
    assert len(files) >= 8
    for f in files:
        if f.name == 'RG2_JPLY.dcm':
            with pytest.raises(UnreadableImage, match='RG2_JPLY.dcm.*cannot decode'): read_xray(f)
            continue
        img, meta = read_xray(f)
        assert img.dtype == np.float32 and img.ndim == 2, f
        assert 0 <= img.min() and img.max() <= 1 and img.std() > 0.05, f
        assert meta['format'] == 'dicom' and meta['orig_shape'] == img.shape and meta['bits_stored'] in (8, 10, 15)
        assert meta['transfer_syntax'] and meta['modality'] == 'CR'


def test_dicom_meta(shared_data):
    _, m = read_xray(shared_data / 'dicom' / 'siim_cxr_jpeg_baseline.dcm')
    assert (m['photometric'], m['bits_stored'], m['pixel_spacing'], m['orig_shape']) == ('MONOCHROME2', 8, (0.168, 0.168), (1024, 1024))
    _, m = read_xray(shared_data / 'dicom' / 'RG1_J2KI.dcm')
    assert (m['photometric'], m['bits_stored'], m['pixel_spacing'], m['orig_shape']) == ('MONOCHROME1', 15, None, (1955, 1841))
    assert 'JPEG 2000' in m['transfer_syntax']


@pytest.mark.parametrize('name', CHEST + ['RG1_UNCR', 'nih_00000001_000.png', 'nih_00027426_000.png'])
def test_lungs_darker_than_spine(shared_data, name):
    f = pdd_file('RG1_UNCR.dcm') if name == 'RG1_UNCR' else shared_data / ('png' if name.endswith('png') else 'dicom') / name
    img, meta = read_xray(f)
    lungs, spine = lungs_and_spine(img)
    assert lungs + 0.1 < spine, (name, lungs, spine)


def test_cat_reads_lungs_darker_than_spine():
    img, meta = read_xray(cat_dcm())
    assert img.shape == (2614, 3072) and meta['bits_stored'] == 12 and meta['modality'] == 'DX'
    assert meta['pixel_spacing'] == (0.14, 0.14) and meta['pixel_spacing_source'] == 'PixelSpacing'
    # a lateral film (head to the left): thoracic spine at rows ~950-1050, lungs just below it
    lungs, spine = img[1150:1400, 1250:1350].mean(), img[950:1050, 1250:1350].mean()
    assert lungs + 0.2 < spine, (lungs, spine)


def test_fake_monochrome1_is_the_inverse(shared_data):
    a, _ = read_xray(shared_data / 'dicom' / 'siim_cxr_jpeg_baseline.dcm')
    b, mb = read_xray(shared_data / 'dicom' / 'siim_cxr_fake_monochrome1.dcm')
    assert mb['photometric'] == 'MONOCHROME1'
    np.testing.assert_allclose(a, 1 - b, atol=1e-6)


def test_rg1_compressed_agree_with_uncompressed(shared_data):
    ref, _ = read_xray(pdd_file('RG1_UNCR.dcm'))
    for name, tol in [('RG1_J2KI.dcm', 0.005), ('RG1_JLSN.dcm', 0.0005)]:
        img, _ = read_xray(shared_data / 'dicom' / name)
        assert img.shape == ref.shape
        assert np.abs(img - ref).mean() < tol, name
        assert np.corrcoef(img.ravel(), ref.ravel())[0, 1] > 0.999, name
    # RG1_UNCI is the decoded lossy file: identical
    np.testing.assert_array_equal(read_xray(pdd_file('RG1_UNCI.dcm'))[0], read_xray(shared_data / 'dicom' / 'RG1_J2KI.dcm')[0])


def test_rg3(shared_data):
    a, ma = read_xray(pdd_file('RG3_UNCR.dcm'))
    b, _ = read_xray(shared_data / 'dicom' / 'RG3_J2KR.dcm')   # JPEG 2000 lossless
    assert ma['photometric'] == 'MONOCHROME1' and ma['bits_stored'] == 10
    np.testing.assert_array_equal(a, b)


def test_png_and_jpeg(shared_data):
    img, m = read_xray(shared_data / 'png' / 'nih_00000001_000.png')
    assert (m['format'], m['bits_stored'], img.shape) == ('png', 8, (512, 512))
    f = sorted((shared_data / 'fracatlas' / 'images' / 'Fractured').glob('*.jpg'))[0]
    img, m = read_xray(f)
    ref = np.asarray(Image.open(f).convert('L'), np.float32) / 255
    assert m['format'] == 'jpeg'
    np.testing.assert_array_equal(img, ref)


def test_truncated_fracatlas_jpegs_raise(shared_data):
    bad = []
    for f in sorted((shared_data / 'fracatlas' / 'images' / 'Non_fractured').glob('*.jpg')):
        try:
            with Image.open(f) as im: im.load()
        except OSError: bad.append(f)
    assert len(bad) >= 30, len(bad)
    for f in bad:
        with pytest.raises(UnreadableImage, match=f'{f.name}.*truncated'): read_xray(f)
    from PIL import ImageFile
    assert not ImageFile.LOAD_TRUNCATED_IMAGES


# ---------------------------------------------------------------- broken input made here
def test_bad_input_corpus(tmp_path):
    (tmp_path / 'empty.png').write_bytes(b'')
    (tmp_path / 'random.dcm').write_bytes(np.random.default_rng(1).bytes(10000))
    tiny_dicom(tmp_path / 'nopixels.dcm', None, pixels=False, PatientID='x')
    Image.fromarray(np.random.default_rng(2).integers(0, 255, (200, 200), dtype=np.uint8)).save(tmp_path / 'full.png')
    data = (tmp_path / 'full.png').read_bytes(); (tmp_path / 'half.png').write_bytes(data[:len(data) // 2])
    tiny_dicom(tmp_path / 'mpeg.dcm', np.zeros((4, 4)), ts='1.2.840.10008.1.2.4.100', encap=True)  # MPEG-2: no decoder
    (tmp_path / 'folder.dcm').mkdir()
    good = tiny_dicom(tmp_path / 'good.dcm', np.arange(64).reshape(8, 8)).read_bytes()
    (tmp_path / 'cut_pixels.dcm').write_bytes(good[:-40])                       # native pixel data cut short
    (tmp_path / 'cut_meta.dcm').write_bytes(good[:200])                         # cut inside the file meta
    (tmp_path / 'dicm_garbage.dcm').write_bytes(b'\0' * 128 + b'DICM' + bytes(range(256)) * 4)
    cases = {'empty.png': 'empty file', 'random.dcm': 'unknown format', 'nopixels.dcm': 'not an image DICOM (no PixelData',
             'half.png': 'corrupt or truncated', 'missing.dcm': 'missing file', 'mpeg.dcm': 'unsupported transfer syntax',
             'folder.dcm': 'folder', 'cut_pixels.dcm': 'truncated or corrupt DICOM: the pixel data holds 88 bytes',
             'cut_meta.dcm': 'truncated or corrupt DICOM', 'dicm_garbage.dcm': 'truncated or corrupt DICOM'}
    for name, why in cases.items():
        with pytest.raises(UnreadableImage) as e: read_xray(tmp_path / name)
        assert name in str(e.value) and why in str(e.value), (name, str(e.value))
        assert isinstance(e.value, ValueError) and e.value.path == str(tmp_path / name)


def test_truncated_real_dicom(shared_data, tmp_path):
    "RG2_JPLL.dcm cut to 300 bytes or in half, and DICM + garbage: pydicom only warns (or says nothing); the reason says truncated."
    data = (shared_data / 'dicom' / 'RG2_JPLL.dcm').read_bytes()
    (tmp_path / 'jpll_300.dcm').write_bytes(data[:300])
    (tmp_path / 'jpll_half.dcm').write_bytes(data[:len(data) // 2])
    (tmp_path / 'dicm_garbage.dcm').write_bytes(b'\0' * 128 + b'DICM' + np.random.default_rng(3).bytes(5000))
    for name, why in [('jpll_300.dcm', 'no data elements after the file meta header'), ('jpll_half.dcm', 'End of file'),
                      ('dicm_garbage.dcm', 'SOPClassUID')]:
        with pytest.raises(UnreadableImage) as e: read_xray(tmp_path / name)
        msg = str(e.value)
        assert msg.startswith(str(tmp_path / name)) and 'truncated or corrupt DICOM: ' in msg and why in msg, msg
        assert 'not an image DICOM' not in msg
    # a batch records them with that reason and goes on
    df = pd.DataFrame(dict(image_id=['cut', 'half', 'ok'], path=['jpll_300.dcm', 'jpll_half.dcm', 'ok.png']))
    Image.fromarray(np.full((4, 4), 9, np.uint8)).save(tmp_path / 'ok.png')
    r = build_cache(df, tmp_path, tmp_path / 'c', size=8, workers=1, progress=False)
    rep = pd.read_csv(tmp_path / 'c' / 'report.csv')
    assert (r['ok'], r['error']) == (1, 2) and rep.reason.str.contains('truncated or corrupt DICOM').all()


SMPTE = {0: (330, 130), 10: (280, 130), 20: (230, 130), 30: (180, 130),   # the grey patches of the SMPTE pattern: % -> (row, col)
         70: (180, 385), 80: (230, 385), 90: (280, 385), 100: (330, 385)}


@pytest.mark.parametrize('name,voi,done', [('mlut_18.dcm', False, ''), ('mlut_18.dcm', True, 'none in file'),
                                           ('vlut_04.dcm', False, ''), ('vlut_04.dcm', True, 'VOI LUT (file)'),
                                           ('vlut_04.dcm', 'lut', 'VOI LUT (file)')])
def test_modality_lut_and_voi_lut_sequence(name, voi, done):
    "A ModalityLUTSequence (mlut_18, signed 12-bit) and a VOILUTSequence (vlut_04): the SMPTE patches read as their percentages."
    import warnings
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter('always')
        img, m = read_xray(pdd_file(name), voi=voi)
    assert [str(x.message) for x in w] == []          # in particular no 'Applying a VOI LUT on a float input array'
    assert m['voi'] == done and img.dtype == np.float32 and img.shape == (512, 512)
    assert np.isfinite(img).all() and img.min() == 0 and img.max() == 1 and img.std() > 0.2
    patch = {k: img[r - 15:r + 15, c - 15:c + 15] for k, (r, c) in SMPTE.items()}
    means = [float(patch[k].mean()) for k in sorted(patch)]
    np.testing.assert_allclose(means, [k / 100 for k in sorted(patch)], atol=0.01)   # 0% dark ... 100% bright (MONOCHROME2)
    assert all(p.std() < 1e-3 for p in patch.values()) and np.all(np.diff(means) > 0.05)


def test_voi_lut_after_rescale(tmp_path):
    "The VOI LUT is indexed by the modality-LUT output (PS3.3 C.11): rescale first, then the table, on integers."
    import warnings
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence
    item = Dataset(); item.add_new(0x00283002, 'US', [2048, 100, 16])                     # LUTDescriptor
    item.add_new(0x00283006, 'US', np.round(np.linspace(0, 65535, 2048)).astype(int).tolist())   # LUTData
    tiny_dicom(tmp_path / 'rv.dcm', np.array([[0, 1000, 2047]]), BitsStored=12, RescaleSlope=1, RescaleIntercept=100,
               VOILUTSequence=Sequence([item]))
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter('always')
        img, m = read_xray(tmp_path / 'rv.dcm', voi=True)
    assert [str(x.message) for x in w] == [] and m['voi'] == 'VOI LUT (file)'
    np.testing.assert_allclose(img, [[0, 1000 / 2047, 1]], atol=1e-4)   # the LUT applied to the raw values would give 900/2047
    np.testing.assert_allclose(read_xray(tmp_path / 'rv.dcm')[0], [[0, 1000 / 4095, 2047 / 4095]], atol=1e-6)


def test_format_by_content_not_extension(tmp_path):
    Image.fromarray(np.full((5, 6), 51, np.uint8)).save(tmp_path / 'a.png')
    os.rename(tmp_path / 'a.png', tmp_path / 'looks_like.dcm')
    img, m = read_xray(tmp_path / 'looks_like.dcm')
    assert m['format'] == 'png' and np.allclose(img, 0.2)
    tiny_dicom(tmp_path / 'real.dcm', np.full((3, 3), 4095))
    os.rename(tmp_path / 'real.dcm', tmp_path / 'real.png')
    assert read_xray(tmp_path / 'real.png')[1]['format'] == 'dicom'
    raw = (tmp_path / 'real.png').read_bytes()[128 + 4:]          # no preamble: starts with group 0x0002
    (tmp_path / 'raw').write_bytes(raw)
    img, m = read_xray(tmp_path / 'raw')
    assert m['format'] == 'dicom' and np.allclose(img, 1)


def test_scaling_bits_not_minmax(tmp_path):
    a16 = np.array([[1000, 2000]], np.uint16)
    Image.fromarray(a16).save(tmp_path / 'p16.png')
    np.testing.assert_allclose(read_xray(tmp_path / 'p16.png')[0], a16 / 65535, rtol=1e-6)
    tiny_dicom(tmp_path / 'd10.dcm', np.array([[100, 200]]), BitsStored=10)
    np.testing.assert_allclose(read_xray(tmp_path / 'd10.dcm')[0], [[100 / 1023, 200 / 1023]], rtol=1e-6)
    # signed with a rescale: the theoretical range goes through the modality LUT
    from pydicom import dcmread
    tiny_dicom(tmp_path / 's.dcm', np.array([[0, 2047]]), BitsStored=12, RescaleSlope=1, RescaleIntercept=-1024)
    ds = dcmread(tmp_path / 's.dcm'); ds.PixelRepresentation = 1; ds.save_as(tmp_path / 's.dcm')
    np.testing.assert_allclose(read_xray(tmp_path / 's.dcm')[0], [[2048 / 4095, 1]], rtol=1e-6)


def test_voi(tmp_path):
    tiny_dicom(tmp_path / 'w.dcm', np.array([[0, 1000, 2000, 4095]]), WindowCenter=1000, WindowWidth=1001)
    img, m = read_xray(tmp_path / 'w.dcm', voi=True)
    np.testing.assert_allclose(img, [[0, 0.5, 1, 1]], atol=1e-3)
    assert 'window' in m['voi']
    assert np.allclose(read_xray(tmp_path / 'w.dcm', voi='window')[0], img)
    assert read_xray(tmp_path / 'w.dcm')[1]['voi'] == ''
    tiny_dicom(tmp_path / 'nw.dcm', np.array([[0, 4095]]))
    assert read_xray(tmp_path / 'nw.dcm', voi=True)[1]['voi'] == 'none in file'
    with pytest.raises(ValueError, match='voi must be'): read_xray(tmp_path / 'w.dcm', voi='bogus')


def test_voi_on_real_film(shared_data):
    img, m = read_xray(shared_data / 'dicom' / 'RG2_JPLL.dcm', voi=True)   # window 511/1024 on 10 bits
    assert m['voi'].startswith('window') and 0 <= img.min() and img.max() <= 1


def test_multiframe_and_colour(tmp_path):
    frames = np.stack([np.full((4, 5), 100), np.full((4, 5), 4000)])
    tiny_dicom(tmp_path / 'mf.dcm', frames, NumberOfFrames=2)
    img, m = read_xray(tmp_path / 'mf.dcm')
    assert img.shape == (4, 5) and np.allclose(img, 100 / 4095) and m['n_frames'] == 2 and 'frame 0 of 2' in m['note']
    assert np.allclose(read_xray(tmp_path / 'mf.dcm', frame=1)[0], 4000 / 4095)
    with pytest.raises(UnreadableImage, match='frame 5'): read_xray(tmp_path / 'mf.dcm', frame=5)
    rgb = np.zeros((3, 4, 3), np.uint8); rgb[..., 1] = 255
    tiny_dicom(tmp_path / 'rgb.dcm', rgb)
    img, m = read_xray(tmp_path / 'rgb.dcm')
    assert img.shape == (3, 4) and np.allclose(img, 0.587, atol=1e-3) and 'grey' in m['note']
    Image.fromarray(rgb).save(tmp_path / 'rgb.png')
    img, m = read_xray(tmp_path / 'rgb.png')
    assert img.shape == (3, 4) and np.allclose(img, 150 / 255, atol=2 / 255) and 'grey' in m['photometric']


# ---------------------------------------------------------------- geometry
def test_pad_resize():
    assert pad_to_square(np.ones((3, 5))).shape == (5, 5)
    assert pad_to_square(np.ones((4, 4))) .shape == (4, 4)
    checker = (np.indices((300, 300)).sum(0) % 2).astype(np.float32)
    small = resize(checker, 100)             # anti-aliased: a fine checkerboard becomes flat grey
    assert small.shape == (100, 100) and abs(small.mean() - 0.5) < 0.01 and small.std() < 0.02
    assert resize(np.ones((10, 20)), (5, 7)).shape == (5, 7)


@pytest.mark.parametrize('h,w,size', [(1955, 1841, 256), (373, 454, 512), (40, 90, 64), (90, 40, 333)])
def test_box_stays_on_drawn_pixels(h, w, size):
    rng = np.random.default_rng(h)
    for _ in range(3):
        x1, x2 = sorted(rng.integers(0, w, 2) + [0, max(8, w // 5)]); x2 = min(x2, w)
        y1, y2 = sorted(rng.integers(0, h, 2) + [0, max(8, h // 5)]); y2 = min(y2, h)
        img = np.zeros((h, w), np.float32); img[y1:y2, x1:x2] = 1
        out, t = letterbox(img, size)
        assert out.shape == (size, size) and set(t) == {'scale', 'pad_top', 'pad_left', 'orig_h', 'orig_w', 'size'}
        bx1, by1, bx2, by2 = transform_boxes([[x1, y1, x2, y2]], t)[0]
        # the mass of the drawn pixels is where the box says (centroid and extent)
        ys, xs = np.indices(out.shape) + 0.5
        m = out.sum()
        np.testing.assert_allclose(m, (x2 - x1) * (y2 - y1) * t['scale'] ** 2, rtol=0.02)
        np.testing.assert_allclose([(out * xs).sum() / m, (out * ys).sum() / m], [(bx1 + bx2) / 2, (by1 + by2) / 2], atol=0.6)
        lit = np.argwhere(out > 0.5)
        assert lit[:, 1].min() >= np.floor(bx1) - 1 and lit[:, 1].max() <= np.ceil(bx2) and lit[:, 0].min() >= np.floor(by1) - 1 and lit[:, 0].max() <= np.ceil(by2)
        np.testing.assert_allclose(untransform_boxes(transform_boxes([[x1, y1, x2, y2]], t), t), [[x1, y1, x2, y2]], atol=1e-9)


# ---------------------------------------------------------------- the cache and its command
@pytest.fixture(scope='module')
def mixed_manifest(tmp_path_factory, shared_data):
    d = tmp_path_factory.mktemp('man')
    nf = sorted((shared_data / 'fracatlas' / 'images' / 'Non_fractured').glob('*.jpg'))
    trunc = 'IMG0004076.jpg'        # truncated (Pillow refuses it)
    rows = [('siim', 'dicom/siim_cxr_jpeg_baseline.dcm'), ('rg1', 'dicom/RG1_J2KI.dcm'), ('jply', 'dicom/RG2_JPLY.dcm'),
            ('jpll', 'dicom/RG2_JPLL.dcm'), ('nih1', 'png/nih_00000001_000.png'), ('nih2', 'png/nih_00027426_000.png'),
            ('fa0', 'fracatlas/images/Non_fractured/' + nf[0].name), ('trunc', 'fracatlas/images/Non_fractured/' + trunc),
            ('fa1', 'fracatlas/images/Non_fractured/' + nf[1].name), ('gone', 'png/no_such_file.png'),
            ('rg3', 'dicom/RG3_J2KR.dcm'), ('uncr', 'ext/RG1_UNCR.dcm'), ('cat', 'ext/cat.dcm'),
            ('jlsn', 'dicom/RG1_JLSN.dcm')]
    # one data root for all (a manifest names files inside its root only): the shared folders and the two
    # PyPI files, linked in
    root = d / 'root'; (root / 'ext').mkdir(parents=True)
    for sub in ('dicom', 'png', 'fracatlas'): (root / sub).symlink_to(shared_data / sub)
    (root / 'ext' / 'RG1_UNCR.dcm').symlink_to(pdd_file('RG1_UNCR.dcm')); (root / 'ext' / 'cat.dcm').symlink_to(cat_dcm())
    df = pd.DataFrame(rows, columns=['image_id', 'path']); df['patient_id'] = 'p' + df.index.astype(str)
    df.to_csv(d / 'manifest.csv', index=False)
    return d / 'manifest.csv', {'jply', 'trunc', 'gone'}


SIZE = 192


def run_cli(*args, **kw):
    return subprocess.run([CLI, 'preprocess', *map(str, args)], capture_output=True, text=True, **kw)


@pytest.fixture(scope='module')
def reference_cache(mixed_manifest, shared_data, tmp_path_factory):
    "An uninterrupted run through the command, on 2 worker processes."
    man, bad = mixed_manifest
    out = tmp_path_factory.mktemp('ref') / 'cache'
    r = run_cli(man, '--root', man.parent / 'root', '--size', SIZE, '--out', out, '--workers', 2)
    assert r.returncode == 1, r.stderr   # complete, some files unreadable (listed in report.csv): the rest is usable
    return out, r


def test_preprocess_reports_bad_files(reference_cache, mixed_manifest):
    out, r = reference_cache
    man, bad = mixed_manifest
    assert '3 unreadable' in r.stdout and 'report.csv' in r.stdout
    rep = pd.read_csv(out / 'report.csv')
    assert set(rep.image_id) == bad
    reasons = dict(zip(rep.image_id, rep.reason))
    assert 'RG2_JPLY.dcm' in reasons['jply'] and 'truncated' in reasons['trunc'] and 'missing file' in reasons['gone']
    c = open_cache(out)
    assert len(c) == 14 and c.images.shape == (14, SIZE, SIZE) and c.images.dtype == np.uint8
    assert list(c.index.columns[:10]) == ['image_id', 'row', 'path', 'status', 'reason', 'orig_h', 'orig_w', 'scale', 'pad_top', 'pad_left']
    assert {'format', 'photometric', 'bits_stored', 'pixel_spacing_row', 'pixel_spacing_col'} <= set(c.index.columns)
    ix = c.index.set_index('image_id')
    assert ix.loc['siim', 'pixel_spacing_row'] == 0.168 and np.isnan(ix.loc['rg1', 'pixel_spacing_row'])
    assert ix.loc['rg1', 'photometric'] == 'MONOCHROME1' and ix.loc['cat', 'bits_stored'] == 12
    img, t = c.get('siim')
    assert img.dtype == np.float32 and img.shape == (SIZE, SIZE) and (t['orig_h'], t['orig_w']) == (1024, 1024)
    for bid in bad:
        assert not c.images[int(ix.loc[bid, 'row'])].any()
        with pytest.raises(UnreadableImage): c.get(bid)


def test_cache_matches_read_xray(reference_cache, shared_data):
    c = open_cache(reference_cache[0])
    img, t = c.get('rg1')
    ref, tr = letterbox(read_xray(shared_data / 'dicom' / 'RG1_J2KI.dcm')[0], SIZE)
    assert t == pytest.approx(tr)
    assert np.abs(img - ref).max() <= 0.5 / 255 + 1e-6


def test_resume_after_kill_is_identical(reference_cache, mixed_manifest, shared_data, tmp_path):
    man, _ = mixed_manifest
    out = tmp_path / 'killed'
    p = subprocess.Popen([CLI, 'preprocess', str(man), '--root', str(man.parent / 'root'), '--size', str(SIZE), '--out', str(out),
                          '--workers', '1', '--quiet'], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    log, t0 = out / 'progress.jsonl', time.time()
    while time.time() - t0 < 60 and p.poll() is None and not (log.exists() and log.stat().st_size > 0): time.sleep(0.01)
    p.send_signal(signal.SIGKILL); p.wait()
    assert p.returncode == -signal.SIGKILL, 'the run ended before it could be killed'
    n_done = len(log.read_bytes().splitlines())
    assert 0 < n_done < 14, n_done
    r = run_cli(man, '--root', man.parent / 'root', '--size', SIZE, '--out', out, '--workers', 1)
    assert r.returncode == 1, r.stderr   # complete, with the 3 unreadable files
    assert 'done before (resumed)' in r.stdout
    ref = reference_cache[0]
    for f in ['images.u8', 'index.csv', 'report.csv', 'meta.json']:
        assert (out / f).read_bytes() == (ref / f).read_bytes(), f


def test_max_items_resume_and_settings_guard(mixed_manifest, shared_data, reference_cache, tmp_path):
    man, _ = mixed_manifest
    df = pd.read_csv(man)
    out = tmp_path / 'c'
    r = build_cache(df, man.parent / 'root', out, size=SIZE, workers=1, progress=False, max_items=5)
    assert (r['complete'], r['ok'] + r['error']) == (False, 5)
    idx = pd.read_csv(out / 'index.csv')
    assert (idx.status == 'pending').sum() == 9
    with pytest.raises(ValueError, match='other settings.*size'): build_cache(df, man.parent / 'root', out, size=SIZE * 2, progress=False)
    with pytest.raises(ValueError, match='other settings.*dtype'): build_cache(df, man.parent / 'root', out, size=SIZE, dtype='uint16', progress=False)
    with pytest.raises(ValueError, match='manifest changed'): build_cache(df.iloc[::-1], man.parent / 'root', out, size=SIZE, progress=False)
    r = build_cache(df, man.parent / 'root', out, size=SIZE, workers=1, progress=False)
    assert r['complete'] and r['done_before'] == 4   # 4 read; the 5th (RG2_JPLY) failed and was tried again
    for f in ['images.u8', 'index.csv']: assert (out / f).read_bytes() == (reference_cache[0] / f).read_bytes()


def test_uint16_cache(tmp_path):
    a = (np.arange(64 * 48, dtype=np.uint32).reshape(64, 48) * 21).astype(np.uint16)
    Image.fromarray(a).save(tmp_path / 'a.png')
    df = pd.DataFrame(dict(image_id=['a'], path=['a.png']))
    build_cache(df, tmp_path, tmp_path / 'c', size=64, dtype='uint16', workers=1, progress=False)
    c = open_cache(tmp_path / 'c')
    assert c.images.dtype == np.uint16 and (tmp_path / 'c' / 'images.u16').exists()
    img, t = c.get('a')
    ref, _ = letterbox(read_xray(tmp_path / 'a.png')[0], 64)
    assert np.abs(img - ref).max() <= 0.5 / 65535 + 1e-6
    assert t['pad_left'] == 8 and t['scale'] == 1


def test_cli_bad_manifest(tmp_path, capsys):
    from cxr_fracture.cli import main
    def run(*a):
        rc = main(['preprocess', *map(str, a), '--root', str(tmp_path), '--out', str(tmp_path / 'o')])
        return rc, capsys.readouterr().err
    (tmp_path / 'm.csv').write_text('image_id,file\na,b.png\n')
    rc, err = run(tmp_path / 'm.csv')
    assert rc != 0 and 'lacks the column(s) path' in err and 'm.csv' in err
    rc, err = run(tmp_path / 'nope.csv')
    assert rc != 0 and 'not found' in err
    (tmp_path / 'd.csv').write_text('image_id,path\na,b.png\na,c.png\n')
    rc, err = run(tmp_path / 'd.csv')
    assert rc != 0 and 'duplicate image_id' in err
    with pytest.raises(SystemExit) as e: main(['preprocess', '--help'])
    out = capsys.readouterr().out
    assert e.value.code == 0 and '--uint16' in out and '--workers' in out


def test_resume_checks_rows_logged_after_last_sync(tmp_path):
    "A machine crash can lose pixels that the log already claims: rows after the last sync mark are CRC-checked."
    rng = np.random.default_rng(0)
    for i in range(4): Image.fromarray(rng.integers(0, 255, (20 + i, 30), dtype=np.uint8)).save(tmp_path / f'{i}.png')
    df = pd.DataFrame(dict(image_id=list('abcd'), path=[f'{i}.png' for i in range(4)]))
    build_cache(df, tmp_path, tmp_path / 'ref', size=16, workers=1, progress=False)
    build_cache(df, tmp_path, tmp_path / 'c', size=16, workers=1, progress=False)
    log = tmp_path / 'c' / 'progress.jsonl'
    log.write_text(''.join(l + '\n' for l in log.read_text().splitlines() if 'synced' not in l) + '{"row": 3, "tor')
    with open(tmp_path / 'c' / 'images.u8', 'r+b') as f: f.seek(2 * 256); f.write(bytes(256))   # row 2 lost
    r = build_cache(df, tmp_path, tmp_path / 'c', size=16, workers=1, progress=False)
    assert r['done_before'] == 3 and r['complete']
    for f in ['images.u8', 'index.csv']: assert (tmp_path / 'c' / f).read_bytes() == (tmp_path / 'ref' / f).read_bytes()


def _crashy(task):
    "A worker function that dies (like a segfaulting decoder) on row 1."
    from cxr_fracture.io import _cache_one
    if task[0] == 1: os._exit(11)
    return _cache_one(task)


def test_pool_survives_a_crashing_decoder(tmp_path):
    from cxr_fracture.io import _run_pool
    for i in range(4): Image.fromarray(np.full((6, 6), 40 * i, np.uint8)).save(tmp_path / f'{i}.png')
    tasks = [(i, str(tmp_path), f'{i}.png', 8, np.uint8, False, None) for i in range(4)]
    res = {row: rec for row, buf, rec in _run_pool(_crashy, tasks, 2)}
    assert sorted(res) == [0, 1, 2, 3]
    assert res[1]['status'] == 'error' and 'crashed' in res[1]['reason'] and '1.png' in res[1]['reason']
    assert all(res[r]['status'] == 'ok' for r in (0, 2, 3))
