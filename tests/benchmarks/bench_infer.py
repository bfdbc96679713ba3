"""Inference speed at 512 px on the CPU: the demo network and the papers' ResNet-50-FPN (random weights), PyTorch eager against onnxruntime, and `predict` end to end.

Run from the repository root:
    .venv/bin/python tests/benchmarks/bench_infer.py              # 2 threads, batch 4
Prints one line per figure (and BENCH lines for the benchmarks page). The networks have random weights (ImageNet
weights cannot be downloaded here); speed does not depend on the weights. Measure on an idle machine.
"""
import argparse, sys, tempfile, time
from pathlib import Path
import numpy as np
import torch
from cxr_fracture.model import MODEL_CONFIGS
from cxr_fracture.detectors import build_network
from cxr_fracture.train import TrainConfig, save_atomic
from cxr_fracture.infer import load_model, export_model, predict
from _report import report

SIZE = 512


def model_file(path, config):
    "A model.pt with the trainer's keys around a random-weight map network of `config` at 512 px."
    kw = {**MODEL_CONFIGS[config], 'classes': ['rib_fracture', 'clavicle_fracture'], 'arch': 'fpn'}
    torch.manual_seed(0)
    save_atomic(dict(model=build_network(kw).state_dict(), config=TrainConfig(size=SIZE, model=config).to_dict(), model_kwargs=kw,
                     classes=kw['classes'], stage=1, epoch=1, metrics={}), path)
    return path


def images_per_s(pred, batch, reps):
    "Forward passes (maps and scores) of `pred` on random 512 px batches: images/s after one warm-up batch."
    x = np.random.default_rng(0).random((batch, 1, SIZE, SIZE), dtype=np.float32)
    pred(x); pred(x)   # two warm-up batches: oneDNN picks and caches its kernels on the first calls
    t0 = time.perf_counter()
    for _ in range(reps): pred(x)
    return batch * reps / (time.perf_counter() - t0)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--threads', type=int, default=2)
    p.add_argument('--batch', type=int, default=4)
    p.add_argument('--reps', type=int, default=3, help='timed batches per figure')
    p.add_argument('--images', type=int, default=12, help='phantom PNGs for the end-to-end predict figure')
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    tmp = Path(tempfile.mkdtemp())
    print(f'torch {torch.__version__}, threads {a.threads}, batch {a.batch}, {a.reps} timed batches, {SIZE} px')
    for config, label in (('demo', 'demo network'), ('aals', 'ResNet-50-FPN (the AALS network)')):
        f = model_file(tmp / f'{config}.pt', config)
        onnx = export_model(f, tmp / f'{config}.onnx', 'onnx')
        for kind, path, fast in (('PyTorch eager, the trainer\'s network (fast=False)', f, False),
                                 ('PyTorch eager, the inference copy (BatchNorm folded, channels_last)', f, True),
                                 ('onnxruntime', onnx, True)):
            ips = images_per_s(load_model(path, fast=fast), a.batch, a.reps)
            print(f'{label}, {kind}: {ips:.2f} images/s', flush=True)
            report(f'{config} {kind} {SIZE}px', round(ips, 2), 'images/s',
                   f'forward pass (probability maps and scores) of the {label} at {SIZE} px, batch {a.batch}: {kind}',
                   threads=a.threads, note=f'{a.reps} timed batches after two warm-up batches; random weights', argv=argv)
    # end to end: read 512 px PNGs, letterbox, forward, regions, overlay PNGs, CSV and JSON
    from PIL import Image
    from cxr_fracture.phantom import render_chest
    src = tmp / 'png'; src.mkdir()
    for k in range(a.images):
        im, _ = render_chest(np.random.default_rng(k), size=SIZE, n_fractures=2)
        Image.fromarray((im * 65535).astype(np.uint16)).save(src / f'chest{k:03d}.png')
    for overlays in (True, False):
        t0 = time.perf_counter()
        predict(tmp / 'demo.pt', [src], tmp / f'out{overlays}', batch=a.batch, overlays=overlays, progress=False)
        ips = a.images / (time.perf_counter() - t0)
        what = 'with an overlay PNG per image' if overlays else 'without overlays (--no-overlays)'
        print(f'predict end to end, demo network, {what}: {ips:.2f} images/s', flush=True)
        report(f'predict demo {SIZE}px overlays={overlays}', round(ips, 2), 'images/s',
               f'`predict` end to end on {a.images} phantom PNGs of {SIZE} px with the demo network (PyTorch eager), {what}: '
               'read, letterbox, forward, regions, CSV and JSON', threads=a.threads, note=f'batch {a.batch}; target >= 2', argv=argv)
    print('command:', ' '.join(['.venv/bin/python', 'tests/benchmarks/bench_infer.py', *(argv or sys.argv[1:])]))


if __name__ == '__main__':
    main()
