#!/usr/bin/env bash
# One device call: distil the default SynthFaces generator on a GPU, then run the CUDA tests and
# the engine benchmark (FFHQ-512 architecture included), all results under $OUT.
#
#   bash scripts/gpu_default_model.sh [MINUTES] [RESUME_DIR]
#
# MINUTES (default 7) of distillation at batch 64 with the renderer in 15 worker processes, from
# scratch or resuming RESUME_DIR (a run folder carried from this machine, e.g. runs/sf128, whose
# checkpoint.pt the GPU run continues: the run resumes on any device). Writes to $OUT:
#   g.safetensors (the exported G_ema), checkpoint.pt (to continue anywhere), log.jsonl,
#   grid.png (the newest sample grid), tests.log, bench_engine.json, summary.txt.
# Uses the device machine's own python3 (PyTorch with CUDA, numpy, Pillow, safetensors, tqdm and
# pytest are there; nothing can be installed), so no virtual environment is made.
set -uo pipefail
MIN=${1:-7}
RESUME=${2:-}
OUT=${OUT:-out/gpu}
DEVICE=${DEVICE:-cuda}  # DEVICE=cpu runs the same steps here, to try the script without a GPU
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
export PYTHONPATH=$PWD
PY=${PY:-python3}
$PY -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), torch.cuda.get_device_name(0) if torch.cuda.is_available() else '')" | tee "$OUT/summary.txt"
RUN=runs/sf128-gpu
if [ -n "$RESUME" ]; then
  mkdir -p "$RUN" && cp "$RESUME/checkpoint.pt" "$RESUME/distill_config.json" "$RUN/"
  ARGS=(--resume)
else
  # batch 64 at the CPU run's learning rate scaled by sqrt(64 / 16)
  ARGS=(--batch 64 --lr 0.02 --mapping-lr-multiplier 1.0 --kimg 3000 --grid-kimg 100 --snap-kimg 500 --ckpt-kimg 100 --log-kimg 10)
fi
$PY scripts/train_distill.py --out "$RUN" --device "$DEVICE" --render-workers 15 --minutes "$MIN" \
  "${ARGS[@]}" --export "$OUT/g.safetensors" --no-progress 2>&1 | tail -5 | tee -a "$OUT/summary.txt"
cp "$RUN/checkpoint.pt" "$RUN/log.jsonl" "$OUT/" 2>/dev/null
cp "$(ls "$RUN"/grids/grid_*.png | tail -1)" "$OUT/grid.png" 2>/dev/null
$PY -m pytest -q -p no:cacheprovider -k "cuda or CUDA" tests/engine tests/training 2>&1 | tail -15 > "$OUT/tests.log"
tail -1 "$OUT/tests.log" | tee -a "$OUT/summary.txt"
$PY scripts/bench_engine.py --devices "$DEVICE" --configs 128px-2048/128,ffhq-512 --json "$OUT/bench_engine.json" 2>&1 | tail -12 | tee -a "$OUT/summary.txt"
