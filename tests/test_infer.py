"""Using a trained model (nbs/11_infer): `cxr-fracture predict` on the real PNG and DICOM files of ../shared/data (the
corrupt RG2_JPLY.dcm among them), the model file the trainer writes (with its operating point), clear errors for files
that are not models, and the exports: ONNX and TorchScript equal to PyTorch on real radiographs, and `predict` giving
the same scores through onnxruntime."""
import json, subprocess, sys
from pathlib import Path
import numpy as np
import pandas as pd
import pytest
import torch

from cxr_fracture.train import train, load_checkpoint
from cxr_fracture.infer import load_model, predict, export_model, check_export, IMAGE_SUFFIXES

CLI = str(Path(sys.executable).parent / 'cxr-fracture')
CLASSES = ['rib_fracture', 'clavicle_fracture']


@pytest.fixture(scope='module')
def model_file(tmp_path_factory):
    "A model.pt as the trainer writes it: the supervised arm (stage 1 only) on a tiny phantom, a few steps."
    root = tmp_path_factory.mktemp('infer')
    torch.set_num_threads(1)
    r = train(dict(data='phantom', root=str(root / 'phantom'), phantom_n=32, phantom_size=96, size=64, batch_size=4, lr=1e-3,
                   epochs_stage1=1, epochs_stage2=0, limit_batches=2, method='supervised', out=str(root / 'run'), progress=False))
    return Path(r['model'])


@pytest.fixture(scope='module')
def real_inputs(shared_data):
    return [shared_data / 'png', shared_data / 'dicom']


def expected_files(shared_data):
    return [p for d in ('png', 'dicom') for p in sorted((shared_data / d).rglob('*')) if p.suffix.lower() in IMAGE_SUFFIXES]


def test_model_file_carries_what_inference_needs(model_file):
    ck = torch.load(model_file, map_location='cpu', weights_only=True)
    assert {'model', 'config', 'model_kwargs', 'classes', 'operating_point'} <= set(ck)
    assert set(ck['operating_point']) == set(ck['classes'])
    for c, o in ck['operating_point'].items():
        assert o['fp_per_image'] == 0.1 and (o['threshold'] is None) == bool(o['why']), (c, o)
    m = load_model(model_file)
    assert (m.size, m.classes, m.spec['arch']) == (64, CLASSES, 'fpn')
    for c in CLASSES:
        src = m.spec['threshold_source'][c]
        assert src.startswith('operating point of the validation split') or src.startswith('default 0.5: '), src


def test_predict_cli_on_the_real_files(model_file, real_inputs, shared_data, tmp_path):
    out = tmp_path / 'pred'
    r = subprocess.run([CLI, 'predict', str(model_file), *map(str, real_inputs), '--out', str(out), '--batch', '3', '--quiet'],
                       capture_output=True, text=True)
    assert r.returncode == 1, r.stderr[-2000:]          # done, with one unreadable input
    df = pd.read_csv(out / 'predictions.csv', keep_default_na=False)
    files = expected_files(shared_data)
    assert [Path(p) for p in df.path] == files           # a row for every input, in input order
    bad = df[df.error != '']
    assert list(bad.path.map(lambda p: Path(p).name)) == ['RG2_JPLY.dcm'], bad
    assert 'cannot decode the pixel data' in bad.error.iloc[0]
    ok = df[df.error == '']
    for c in CLASSES: assert ok[c].astype(float).between(0, 1).all()
    assert all((out / o).is_file() for o in ok.overlay) and len(list((out / 'overlays').iterdir())) == len(ok)
    doc = json.loads((out / 'components.json').read_text())
    assert set(doc['threshold']) == set(CLASSES) and set(doc['threshold_source']) == set(CLASSES)
    assert len(doc['images']) == len(files) and doc['images'][[Path(p).name for p in df.path].index('RG2_JPLY.dcm')]['error']
    for im in doc['images']:
        if 'error' in im: continue
        for c in CLASSES:
            for comp in im['classes'][c]['components']:
                x1, y1, x2, y2 = comp['box']
                assert 0 <= x1 < x2 <= im['width'] and 0 <= y1 < y2 <= im['height'] and comp['peak'] >= doc['threshold'][c]


def test_overlays_at_the_images_aspect(model_file, shared_data, tmp_path):
    from PIL import Image
    df = predict(model_file, [shared_data / 'dicom' / 'RG2_JPLL.dcm', shared_data / 'png' / 'nih_00000001_000.png'], tmp_path, progress=False)
    tall, square = (Image.open(tmp_path / o) for o in df.overlay)
    assert tall.size[1] > square.size[1] and tall.size[0] == square.size[0]   # a portrait film makes a taller figure


def test_errors_for_files_that_are_not_models(model_file, tmp_path):
    (tmp_path / 'x.onnx').write_bytes(b'garbage')
    (tmp_path / 'notes.txt').write_text('hello')
    torch.save({'weights': torch.zeros(2)}, tmp_path / 'other.pt')
    last = model_file.parent / 'checkpoints' / 'last.pt'
    if not last.exists(): last = next(model_file.parent.parent.rglob('last.pt'))
    for f, msg in [(tmp_path / 'x.onnx', 'not a readable ONNX file'), (tmp_path / 'notes.txt', 'not a cxr-fracture model file'),
                   (tmp_path / 'other.pt', 'another version of cxr-fracture'), (last, 'resumable checkpoint')]:
        r = subprocess.run([CLI, 'predict', str(f), str(tmp_path), '--out', str(tmp_path / 'o')], capture_output=True, text=True)
        assert r.returncode == 2 and 'Traceback' not in r.stderr, r.stderr
        assert r.stderr.startswith(f'cxr-fracture predict: {f}: ') and msg in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr


@pytest.mark.parametrize('fmt', ['onnx', 'torchscript'])
def test_export_parity_on_real_radiographs(model_file, real_inputs, tmp_path, fmt):
    out = tmp_path / ('m.onnx' if fmt == 'onnx' else 'm.ts')
    r = subprocess.run([CLI, 'export', str(model_file), '--format', fmt, '--out', str(out), '--check', *map(str, real_inputs)],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr[-2000:]
    assert 'equal within tolerance' in r.stdout and out.is_file(), r.stdout
    c = check_export(model_file, out, real_inputs, atol=1e-5)
    assert c['ok'] and c['n_images'] == 9 and len(c['skipped']) == 1 and 'RG2_JPLY' in c['skipped'][0], c


def test_predict_through_onnx_gives_the_same_scores(model_file, real_inputs, tmp_path):
    f = export_model(model_file, tmp_path / 'm.onnx', 'onnx')
    a = predict(model_file, real_inputs, tmp_path / 'torch', overlays=False, progress=False)
    b = predict(f, real_inputs, tmp_path / 'onnx', overlays=False, progress=False)
    assert list(a.path) == list(b.path) and list(a.error) == list(b.error)
    np.testing.assert_allclose(b[CLASSES].to_numpy(float), a[CLASSES].to_numpy(float), atol=1e-5)
    ja, jb = (json.loads((tmp_path / d / 'components.json').read_text()) for d in ('torch', 'onnx'))
    assert ja['threshold'] == jb['threshold'] and ja['threshold_source'] == jb['threshold_source']
    assert [len(i['classes'][c]['components']) for i in ja['images'] if 'classes' in i for c in CLASSES] == \
           [len(i['classes'][c]['components']) for i in jb['images'] if 'classes' in i for c in CLASSES]


def test_export_refuses_a_detector(tmp_path):
    from cxr_fracture.detectors import build_network
    from cxr_fracture.train import TrainConfig, save_atomic
    kw = dict(arch='retinanet', classes=CLASSES, backbone='resnet18', size=64, anchor_size=None, global_head=False)
    save_atomic(dict(model=build_network(kw).state_dict(), config=TrainConfig(size=64, method='retinanet').to_dict(),
                     model_kwargs=kw, classes=CLASSES, stage=1, epoch=1, metrics={}), tmp_path / 'det.pt')
    r = subprocess.run([CLI, 'export', str(tmp_path / 'det.pt'), '--out', str(tmp_path / 'det.onnx')], capture_output=True, text=True)
    assert r.returncode == 2 and 'export covers the map models and CheXNet' in r.stderr and not (tmp_path / 'det.onnx').exists()
