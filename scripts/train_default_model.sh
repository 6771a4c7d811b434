#!/usr/bin/env bash
# The shipped default generator, server/assets/synthfaces_g.safetensors, in one command: the CPU
# run runs/sf128 (docs/distillation.md) replayed phase by phase, each phase ending at the kimg where
# the run's loss weights changed (train_distill.py --stop-kimg), then the export.
#
#   bash scripts/train_default_model.sh            # resumable: run it again after a stop or Ctrl-C
#   MINUTES=120 bash scripts/train_default_model.sh  # stop after about two hours; run again to go on
#   RUN=runs/other THREADS=2 bash scripts/train_default_model.sh
#
# Seed 0 (the trainer's default). The run resumes bit for bit on the same machine, so a replay in
# other chunks gives the same weights as one long run. Phases (kimg; the lr's cosine schedule
# ends at --kimg):
#   0 - 378          L1 + edges + perceptual + read-out, --kimg 600
#   378 - 391.792    + adversarial 0.05
#   391.792 - 475.008  + flat areas 10
#   475.008 - 501.28   schedule to 550, flat areas 30, adversarial 0.08
#   501.28 - 550       flat areas 40, adversarial 0.12
#   550 - 600          schedule to 600, flat areas 80 with a 2 px margin round the render's edges
#   600 - 610          schedule to 625, flat areas 160 (margin 2)
# The shipped run took about 9.5 hours of step time to 550 kimg on one thread of a shared 2-core
# machine, then 0.7 hours on two threads (550-600, as runs/sf128m) and 0.2 hours on one (600-610,
# as runs/sf128n): the runs forked from each other's checkpoints, which this script does in one run.
set -euo pipefail
RUN=${RUN:-runs/sf128}
THREADS=${THREADS:-1}
OUTFILE=${OUTFILE:-server/assets/synthfaces_g.safetensors}
PY=${PY:-.venv/bin/python}
DEADLINE=$(( $(date +%s) + ${MINUTES:-0} * 60 ))

phase() {  # phase STOP_KIMG ARGS...: train until STOP_KIMG; exit 0 when the time is up first
  local stop=$1; shift
  local left=""
  if [ "${MINUTES:-0}" != "0" ]; then
    left=$(( DEADLINE - $(date +%s) ))
    if [ "$left" -le 0 ]; then echo "time is up; run the script again to go on"; exit 0; fi
    left="--minutes $(awk "BEGIN { print $left / 60 }")"
  fi
  local resume=""
  [ -f "$RUN/checkpoint.pt" ] && resume="--resume"
  # shellcheck disable=SC2086
  out=$($PY scripts/train_distill.py --out "$RUN" --threads "$THREADS" $resume $left \
    --stop-kimg "$stop" "$@" | tee /dev/stderr | tail -1)
  case "$out" in
    *'"stopped": "kimg"'*|*'"stopped": "done"'*|*"nothing to do"*) ;;
    *) echo "stopped before $stop kimg; run the script again to go on"; exit 0 ;;
  esac
}

phase 378 --kimg 600 --lr 0.01 --mapping-lr-multiplier 1.0 --adv-weight 0 --flat-weight 0
phase 391.792 --kimg 600 --adv-weight 0.05 --flat-weight 0
phase 475.008 --kimg 600 --adv-weight 0.05 --flat-weight 10
phase 501.28 --kimg 550 --adv-weight 0.08 --flat-weight 30
phase 550 --kimg 550 --adv-weight 0.12 --flat-weight 40
phase 600 --kimg 600 --adv-weight 0.12 --flat-weight 80 --flat-margin 2
phase 610 --kimg 625 --adv-weight 0.12 --flat-weight 160 --flat-margin 2
$PY scripts/train_distill.py --out "$RUN" --export-only --export "$OUTFILE"
echo "exported $OUTFILE"
