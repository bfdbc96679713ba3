#!/usr/bin/env bash
# The GPU measurements of the issue "Training and evaluation at GPU speed", in one call on a lent GPU machine, from the
# source tree with that machine's own Python (torch, torchvision, numpy, scipy, scikit-learn; no nbdev/papermill/pydicom):
#   bash tests/gpu/bench_gpu.sh            # writes $OUT/*.json (OUT: the device tool's folder, else ./gpu_out)
# Every figure it prints is a measurement; copy them to BENCHMARKS.md with this command, the date and the card.
set -euo pipefail
cd "$(dirname "$0")/../.."
export PYTHONPATH=. PYTHONUNBUFFERED=1
OUT=${OUT:-gpu_out}; mkdir -p "$OUT"
W=${TMPDIR:-/tmp}/cxr_bench_work; mkdir -p "$W"   # phantom and cache, shared by the calls (not under OUT: they would travel back)
B="python -m cxr_fracture.bench --out $W"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"
python -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda)" | tee -a "$OUT/gpu.txt"
python -c "import importlib.util as u; print('pandas', 'present' if u.find_spec('pandas') else 'absent (the trainer imports it: pip install pandas)')" | tee -a "$OUT/gpu.txt"
# 1. the fastest setting trains the same network as fp32 (bf16 tolerance)
$B parity --device cuda --size 256 --batch 4 --backbone resnet50 --json "$OUT/parity.json"
# 2. the stage-2 step of AALS at the paper's size, every variant (compile last but one: its first steps compile)
$B train --device cuda --size 1024 --batch 32 --backbone resnet50 --steps 20 --warmup 3 --json "$OUT/train.json"
# 3. the real path: phantom -> cache -> loader -> step, and the loader alone
$B train --device cuda --size 1024 --batch 32 --backbone resnet50 --steps 20 --data phantom --phantom-n 320 \
   --variants fp32 bf16 channels_last fused_adam foreach_ema --json "$OUT/train_loader.json"
$B loader --device cuda --size 1024 --batch 32 --steps 20 --num-workers 8 --phantom-n 320 --json "$OUT/loader.json"
# 4. evaluation of 13,000 images at 1024 px (target: under 2 minutes)
$B eval --device cuda --size 1024 --batch 64 --n 13000 --json "$OUT/eval.json"
