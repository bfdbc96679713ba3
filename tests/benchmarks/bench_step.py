"""The trainer's stage-2 step against its floor, per speed variant, and the loader and the evaluation (`cxr_fracture.bench`),
on this machine's CPU. The GPU targets of the issue "Training and evaluation at GPU speed" (1024 px, ResNet-50-FPN, batch 32)
are measured with the same functions on a GPU: `cxr-fracture bench train --device cuda --size 1024 --batch 32 --backbone resnet50`.

    python tests/benchmarks/bench_step.py [--size 256] [--batch 4] [--backbone resnet18] [--steps 5] [--threads 2]

Figures: images/s of the whole AALS step per variant; the overhead (step time over the student's forward+backward plus
the teacher's forward, measured in the same process; target <= 1.15); the loader's images/s against the step's; the
evaluation's images/s.
"""
import argparse, sys
import torch
from cxr_fracture.bench import bench_train, bench_loader, bench_eval, CPU_VARIANTS
from _report import report


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--size', type=int, default=256)
    ap.add_argument('--batch', type=int, default=4)
    ap.add_argument('--backbone', default='resnet18')
    ap.add_argument('--steps', type=int, default=5)
    ap.add_argument('--threads', type=int, default=2)
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    where = f'AALS stage-2 step, ResNet-FPN ({a.backbone}) at {a.size} px, batch {a.batch}, CPU'
    rows = bench_train(a.size, a.batch, a.backbone, 'aals', 'cpu', a.steps, 2, CPU_VARIANTS)
    for r in rows:
        report(f"step_{r['variant']}", round(r['images_per_s'], 2), 'images/s', f"{where}, variant `{r['variant']}` (cumulative: {', '.join(CPU_VARIANTS)})",
               threads=a.threads, argv=argv, note=f"median of {a.steps} steps; {r['tflop_per_image']:.4f} TFLOP per image")
        report(f"overhead_{r['variant']}", round(r['overhead'], 3), 'x', f"{where}, variant `{r['variant']}`: step time over (student forward+backward "
               f"+ teacher forward), same process; target <= 1.15", threads=a.threads, argv=argv,
               note=f"student {r['student_ms']:.0f} ms + teacher {r['teacher_ms']:.0f} ms, step {r['step_ms']:.0f} ms")
    ld = bench_loader(a.size, a.batch, a.steps * 4, 0, 'cpu', phantom_n=max(32, 8 * a.batch))
    report('loader', round(ld['images_per_s'], 1), 'images/s', f'the trainer\'s loader alone (cache, augmentation, collate), {a.size} px, batch {a.batch}, 0 workers',
           threads=a.threads, argv=argv, note=f"the step consumed {rows[-1]['images_per_s']:.1f} images/s in its fastest CPU variant")
    ev = bench_eval(64, a.size, 2 * a.batch, a.backbone, 'cpu')
    report('eval', round(ev['images_per_s'], 2), 'images/s', f'evaluation (maps, AUROC, both FROCs) of 64 images at {a.size} px, ResNet-FPN ({a.backbone}), CPU',
           threads=a.threads, argv=argv, note=f"maps {ev['maps_s']:.1f} s, metrics {ev['metrics_s']:.1f} s")


if __name__ == '__main__':
    main()
