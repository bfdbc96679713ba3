"""CPU training speed of FractureFPN configurations (forward + backward + Adam step), images/s.

Run from the repository root:
    .venv/bin/python tests/benchmarks/bench_model.py                 # all candidates, 2 threads
    .venv/bin/python tests/benchmarks/bench_model.py --only demo     # just the registered demo config
Prints one line per configuration and the command line that produced the figures.
Measure on an idle machine: other processes sharing the cores lower the figures.
"""
import argparse, sys, time
import torch
from cxr_fracture.model import build_model, MODEL_CONFIGS, DEMO_SIZE
from cxr_fracture.losses import pixel_bce
from _report import report

CANDIDATES = [  # (label, model config, input size)
    ('demo (registered)',            'demo', DEMO_SIZE),
    ('r18 w0.5 fpn32 s8',            dict(backbone='resnet18', width=0.5, fpn_channels=32, stride=8), 128),
    ('r18 w0.5 fpn32 s8',            dict(backbone='resnet18', width=0.5, fpn_channels=32, stride=8), 160),
    ('r18 w0.5 fpn32 s8',            dict(backbone='resnet18', width=0.5, fpn_channels=32, stride=8), 192),
    ('r18 w0.5 fpn64 s4',            dict(backbone='resnet18', width=0.5, fpn_channels=64, stride=4), 160),
    ('r18 w1 fpn64 s8',              dict(backbone='resnet18', width=1.0, fpn_channels=64, stride=8), 128),
    ('r18 w1 fpn64 s8',              dict(backbone='resnet18', width=1.0, fpn_channels=64, stride=8), 160),
    ('r18 w1 fpn64 s8',              dict(backbone='resnet18', width=1.0, fpn_channels=64, stride=8), 192),
    ('r18 w1 fpn256 s4 (reference)', dict(backbone='resnet18', width=1.0, fpn_channels=256, stride=4), 256),
]

def bench(cfg, size, batch=8, steps=5, warmup=2):
    "Training images/s of one configuration at `size` px."
    torch.manual_seed(0)
    m = build_model(cfg) if isinstance(cfg, str) else build_model(**cfg)
    m.train()
    opt = torch.optim.Adam(m.parameters(), lr=4e-5, weight_decay=1e-4)
    x = torch.rand(batch, 1, size, size)
    tgt = (torch.rand(batch, len(m.classes), size // m.stride, size // m.stride) > 0.95).float()
    def step():
        opt.zero_grad(set_to_none=True)
        loss = pixel_bce(m(x), tgt)
        loss.backward(); opt.step()
    for _ in range(warmup): step()
    t0 = time.perf_counter()
    for _ in range(steps): step()
    return batch * steps / (time.perf_counter() - t0)

def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--threads', type=int, default=2)
    p.add_argument('--batch', type=int, default=8)
    p.add_argument('--steps', type=int, default=5)
    p.add_argument('--only', default=None, help="'demo': only the registered demo configuration")
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    cands = CANDIDATES[:1] if a.only == 'demo' else CANDIDATES
    print(f'torch {torch.__version__}, threads {a.threads}, batch {a.batch}, steps {a.steps}; '
          f"demo = {MODEL_CONFIGS['demo']} at {DEMO_SIZE} px")
    for label, cfg, size in cands:
        ips = bench(cfg, size, a.batch, a.steps)
        print(f'{label:<30} {size:>4} px  {ips:7.1f} images/s', flush=True)
        report(f'{label} {size}px', round(ips, 1), 'images/s',
               f'training step (forward + backward + Adam) of FractureFPN {label} at {size} px, batch {a.batch}',
               threads=a.threads, note=f'{a.steps} timed steps', argv=argv)
    print('command:', ' '.join([sys.executable.rsplit('/', 1)[-1], 'tests/benchmarks/bench_model.py', *(argv or sys.argv[1:])]))

if __name__ == '__main__':
    main()
