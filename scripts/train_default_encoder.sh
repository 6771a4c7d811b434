#!/usr/bin/env bash
# The shipped encoder, server/assets/synthfaces_encoder.safetensors, in one command: four runs of
# scripts/train_encoder.py, each warm-started from the last (--init), on the generator snapshots of
# runs/sf128 that the encoder was trained on while the generator was finishing (475, 500 and 550
# kimg: 550 was the default before the flat-area phases), then on the shipped generator itself.
# Seed 0 (train_encoder's default) in each run.
#
#   bash scripts/train_default_encoder.sh     # needs runs/sf128/snapshots (scripts/train_default_model.sh)
#
# Each run resumes from its own ckpt.pt when interrupted: run the script again. The shipped file took
# 41 + 32 + 8 + 8 minutes on one thread of a shared 2-core machine; held-out PSNR 27.5, 27.9, 28.2
# and 28.3 dB after each run (docs/real-images.md). The third run was made on the fp16 export of the
# 550 kimg G_ema (then server/assets/synthfaces_g.safetensors); the snapshot holds the same weights.
set -euo pipefail
SNAP=${SNAP:-runs/sf128/snapshots}
PY=${PY:-.venv/bin/python}
T=(--threads "${THREADS:-1}" --log-every 100 --no-progress)
$PY scripts/train_encoder.py --out runs/enc128 --checkpoint "$SNAP/g_ema_000475.safetensors" \
  --steps 4000 --image-after 700 "${T[@]}"
$PY scripts/train_encoder.py --out runs/enc128b --init runs/enc128/ckpt.pt \
  --checkpoint "$SNAP/g_ema_000500.safetensors" --steps 3000 --image-after 0 --lr 5e-4 "${T[@]}"
$PY scripts/train_encoder.py --out runs/enc128c --init runs/enc128b/ckpt.pt \
  --checkpoint "$SNAP/g_ema_000550.safetensors" --steps 800 --image-after 0 --lr 2e-4 "${T[@]}"
$PY scripts/train_encoder.py --out runs/enc128d --init runs/enc128c/ckpt.pt \
  --checkpoint server/assets/synthfaces_g.safetensors --steps 800 --image-after 0 --lr 2e-4 "${T[@]}" \
  --export server/assets/synthfaces_encoder.safetensors
