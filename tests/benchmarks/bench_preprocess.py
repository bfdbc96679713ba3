"""Preprocessing speed: images/s on ONE core (one worker does read_xray + letterbox + quantize, exactly
what `cxr-fracture preprocess` does per image) for JPEG, uncompressed DICOM and JPEG 2000 DICOM inputs.

    .venv/bin/python tests/benchmarks/bench_preprocess.py [--size 1024] [--repeat 3] [--n-jpeg 60]

img/s/core is wall-clock; img/CPU-s divides by this process's CPU time (less sensitive to other load).
A pool of W workers runs about W times faster on W free cores (the work is per image, no shared state).
"""
import argparse, os, sys, time
from pathlib import Path
import numpy as np

os.environ.setdefault('OMP_NUM_THREADS', '1')
from cxr_fracture.io import _cache_one, read_xray, shared_data_dir
from _report import report


def inputs(n_jpeg):
    sd = shared_data_dir()
    if sd is None: sys.exit('bench_preprocess: the real data (../shared/data) is not found; set CXR_FRACTURE_SHARED')
    from pydicom.data import get_testdata_file
    import deid_data
    cat = next(Path(deid_data.__file__).parent.rglob('animals/cat.dcm'))
    jpegs = sorted((sd / 'fracatlas' / 'images' / 'Fractured').glob('*.jpg'))[:n_jpeg]
    return {'JPEG (FracAtlas, 8-bit)': jpegs,
            'DICOM uncompressed (RG1_UNCR, cat.dcm)': [Path(get_testdata_file('RG1_UNCR.dcm')), cat],
            'DICOM JPEG 2000 (RG1_J2KI, RG3_J2KR)': [sd / 'dicom' / 'RG1_J2KI.dcm', sd / 'dicom' / 'RG3_J2KR.dcm']}


def bench(files, size, repeat):
    mpx = np.mean([np.prod(read_xray(f)[1]['orig_shape']) / 1e6 for f in files])
    for f in files: _cache_one((0, str(f), size, np.uint8, False))          # warm-up (imports, disk cache)
    n, t0, c0 = 0, time.perf_counter(), time.process_time()
    for _ in range(repeat):
        for f in files:
            row, buf, rec = _cache_one((0, str(f), size, np.uint8, False))
            assert rec['status'] == 'ok', rec
            n += 1
    dt, dc = time.perf_counter() - t0, time.process_time() - c0
    return n, mpx, n / dt, 1000 * dt / n, n / dc


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--size', type=int, default=1024)
    p.add_argument('--repeat', type=int, default=3)
    p.add_argument('--n-jpeg', type=int, default=60)
    a = p.parse_args(argv)
    print('command:', 'python tests/benchmarks/bench_preprocess.py ' + ' '.join(sys.argv[1:] if argv is None else argv))
    print(f'load average before: {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores (figures are only meaningful on an idle machine)')
    print(f"{'input':42s} {'images':>6s} {'Mpx/img':>8s} {'img/s/core':>10s} {'ms/img':>8s} {'img/CPU-s':>9s}")
    for name, files in inputs(a.n_jpeg).items():
        n, mpx, ips, ms, ipc = bench(files, a.size, a.repeat if len(files) > 2 else 3 * a.repeat)
        print(f'{name:42s} {n:6d} {mpx:8.2f} {ips:10.1f} {ms:8.1f} {ipc:9.1f}')
        what = f'preprocessing (read_xray + letterbox to {a.size} px + uint8) of {name}, {mpx:.2f} Mpx/image, one worker'
        report(f'{name} wall', round(ips, 1), 'images/s', what, threads=1, note=f'{ms:.1f} ms/image, {n} images', argv=argv)
        report(f'{name} cpu', round(ipc, 1), 'images per CPU-s', what + ' (per CPU second: less sensitive to other load)',
               threads=1, argv=argv)
    print(f'(size {a.size}, uint8, one worker; load average after: {os.getloadavg()[0]:.2f})')


if __name__ == '__main__':
    main()
