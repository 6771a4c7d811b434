#!/usr/bin/env bash
# The shipped predictor, server/assets/synthfaces_predictor.safetensors, for the shipped 128 px
# generator, in one command: the teacher drags (scripts/make_trajectories.py, seed 11, 48 shards of
# 64 drags, long ones included), stage 1 (the regularizer) and stage 2 (predictor + regularizer),
# then the export with the inference settings chosen on validation seeds (docs/predictor.md).
#
#   bash scripts/train_default_predictor.sh          # on two cores: WORKERS=2 (the default)
#
# Stage 2 ran while the teacher drags were still being made, on the shards that existed, so it is
# replayed here in the same phases: each phase links the shards it saw into its own folder and
# stops at the iteration it reached (--stop-at); the cosine schedule is the whole run's (--iters
# 4800), and batches are a function of (seed, iteration), so the phases give the shipped weights
# (up to floating-point differences between machines). Everything resumes when run again:
# finished shards are kept and a stage continues from its checkpoint.
#
# Compute (2 shared CPU cores, one thread per process, 2026-12-06): the shards about 4.5-6 minutes
# each per worker (about 2.5 hours on two workers); stage 1 5.5 minutes; stage 2 35 + 15 + 11 +
# 12 minutes.
set -euo pipefail
PY=${PY:-.venv/bin/python}
OUT=${OUT:-runs/pred128}
TRAJ=${TRAJ:-runs/traj128b}
WORKERS=${WORKERS:-2}
export MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=68719476736 MALLOC_TOP_PAD_=1073741824 OMP_WAIT_POLICY=PASSIVE

# 1. teacher drags: the optimiser at the room's settings (lr 2e-3, 300-step cap), landmark drags
#    (half of them the benchmark's long groups or shifts), high-contrast points, long drags
for w in $(seq 0 $((WORKERS - 1))); do
  $PY scripts/make_trajectories.py --out "$TRAJ" --seed 11 --shards 48 --per-shard 64 --batch 32 \
    --max-steps 300 --landmark-frac 0.5 --landmark-long-frac 0.3 --shift-frac 0.5 --contrast-frac 0.3 \
    --long-frac 0.3 --workers "$WORKERS" --worker "$w" --threads 1 --no-progress &
done
wait

# 2. stage 1: the regularizer alone (3000 iterations)
$PY scripts/train_predictor.py --stage 1 --out "$OUT" --threads 1 --no-progress

# 3. stage 2 in the phases it ran: the shards each phase saw, and where it stopped
link() {  # link <folder> <shard index>...: a folder of links to those shards
  local dir=$1
  shift
  mkdir -p "$dir"
  for i in "$@"; do
    local name
    name=shard_$(printf %05d "$i").safetensors
    ln -sf "$(realpath "$TRAJ/$name")" "$dir/$name"
  done
}
EVEN=$(seq 0 2 46)
link "${TRAJ}_p1" $(seq 0 2 26)                               # 14 shards
link "${TRAJ}_p2a" $EVEN $(seq 1 2 33)                        # 41 shards
link "${TRAJ}_p2b" $EVEN $(seq 1 2 41)                        # 45 shards
link "${TRAJ}_all" $(seq 0 47)                                # 48 shards
S2=(--stage 2 --out "$OUT" --lr 5e-4 --threads 1 --no-progress)
$PY scripts/train_predictor.py "${S2[@]}" --traj "${TRAJ}_p1" --iters 2400
$PY scripts/train_predictor.py "${S2[@]}" --traj "${TRAJ}_p2a" --iters 4800 --stop-at 3218
$PY scripts/train_predictor.py "${S2[@]}" --traj "${TRAJ}_p2b" --iters 4800 --stop-at 4013
$PY scripts/train_predictor.py "${S2[@]}" --traj "${TRAJ}_all" --iters 4800

# 4. the shipped file, with the inference settings chosen on validation seeds (docs/predictor.md)
$PY scripts/train_predictor.py --out "$OUT" --export server/assets/synthfaces_predictor.safetensors \
  --default substep=3 --default reg_alpha=0.5
