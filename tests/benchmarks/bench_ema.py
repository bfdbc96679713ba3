"""EMA teacher update: multi-tensor `_foreach_lerp_` (ema_update) versus `_foreach_mul_`+`_foreach_add_` versus a per-parameter loop on a ResNet-18.

    python tests/benchmarks/bench_ema.py [--threads 1] [--repeats 50] [--device cpu]
"""
import argparse, copy, sys, time
import torch, torchvision
from cxr_fracture.teacher import ema_update
from _report import report


def loop_update(t, s, a):
    with torch.no_grad():
        for pt, ps in zip(t.parameters(), s.parameters()): pt.mul_(a).add_(ps, alpha=1 - a)
        for bt, bs in zip(t.buffers(), s.buffers()): bt.copy_(bs)


def muladd_update(t, s, a):
    with torch.no_grad():
        tp = list(t.parameters()); torch._foreach_mul_(tp, a); torch._foreach_add_(tp, list(s.parameters()), alpha=1 - a)
        for bt, bs in zip(t.buffers(), s.buffers()): bt.copy_(bs)


def main():
    ap = argparse.ArgumentParser(); ap.add_argument('--threads', type=int, default=1)
    ap.add_argument('--repeats', type=int, default=50); ap.add_argument('--device', default='cpu')
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    s = torchvision.models.resnet18().to(a.device); t = copy.deepcopy(s)
    n = sum(p.numel() for p in s.parameters())
    sync = torch.cuda.synchronize if a.device.startswith('cuda') else (lambda: None)
    print(f'# {" ".join(sys.argv)}  (torch {torch.__version__}, {a.device}, {a.threads} thread(s); '
          f'ResNet-18: {len(list(s.parameters()))} parameter tensors, {n/1e6:.1f} M weights)')
    for key, name, fn in [('foreach_lerp', 'foreach lerp (ema_update)', lambda: ema_update(t, s, 0.999)),
                          ('foreach_mul_add', 'foreach mul + foreach add', lambda: muladd_update(t, s, 0.999)),
                          ('loop', 'per-parameter loop', lambda: loop_update(t, s, 0.999))]:
        for _ in range(5): fn()
        sync(); best = []
        for _ in range(3):
            t0 = time.perf_counter()
            for _ in range(a.repeats): fn()
            sync(); best.append((time.perf_counter() - t0) / a.repeats * 1e3)
        print(f'{name:32s} {min(best):7.2f} ms per update (best of 3 x {a.repeats})')
        report(key, round(min(best), 2), 'ms per update',
               f'EMA update of a ResNet-18 ({n/1e6:.1f} M weights, float32, {a.device}): {name}', threads=a.threads,
               note=f'best of 3 x {a.repeats}')


if __name__ == '__main__': main()
