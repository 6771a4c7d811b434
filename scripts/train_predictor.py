#!/usr/bin/env python
"""Train the Latent Regularizer (stage 1) and the Latent Predictor jointly with it (stage 2).

Stage 1 (no trajectories needed): the regularizer learns to denoise W rows. Clean rows are
mapping samples with a random truncation psi in [0.4, 1]; inputs are those plus Gaussian noise
of a random size and sparse outliers (``regularizer.perturb_latents``); MSE to the clean rows in
units of the per-dimension W std.

Stage 2: predictor and regularizer together on teacher trajectories (scripts/make_trajectories.py).
A training pair is (w_t, h_t, targets, h_{t+k} - h_t) -> w_{t+k}: k is the first step at which
the teacher's fastest handle has moved a random 0.5-1.5 sub-steps from h_t (10% of pairs take
the whole drag, t = 0 to the end, for the single-shot mode). The requested sub-step given to the
predictor is the teacher's own handle displacement (hindsight: the label is the latent that
produced exactly that motion); at inference it is ``min(substep, remaining)`` toward the target.
Loss (each term relative, about 1 for the identity map):

    latent   |w_{t+1} - w_{t+k}|^2 / |w_t - w_{t+k}|^2, in units of the W std, first n_rows rows,
             where w_{t+1} is the regularized prediction
    feature  |F(w_{t+1}) - F(w_{t+k})|_1 / |F(w_t) - F(w_{t+k})|_1, F = DragGAN's feature block
    motion   DragGAN's motion supervision made one-shot: for pixels q within r1 of each handle,
             |F(w_{t+1})(q + s) - sg(F(w_t)(q))|_1, relative to the same with F(w_t)
    local    (off by default, --local-weight) change away from the handles: |F(w_{t+1}) - F(w_t)|_1
             over the pixels farther than res / 8 from every handle, relative to the teacher's
             |F(w_{t+k}) - F(w_t)|_1 there (1 = as much as DragGAN changed them)
    template (off by default, --template-weight) the motion term against the drag's start:
             |F(w_{t+1})(q + s) - sg(F(w_0)(q0))|_1 for q0 around the handle where the drag began
             and q around it now, relative to the same with F(w_t): is the template that point
             tracking looks for found where the handle was asked to go?
    track    (off by default, --track-weight) soft point tracking: a softmax over the pixels
             around the handle of -|F(w_{t+1})(q) - F(w_0)(h_0)|^2 (scaled by the template's
             spread), cross-entropy against h_t + s, relative to the same with F(w_t): would
             the tracker's argmin land where the handle was asked to go, not at its old place?
    denoise  the stage-1 loss on fresh mapping samples, so R stays a regularizer

On-policy samples (off by default, --rollout-batch): teacher pairs start every prediction on the
optimiser's path, while inference starts from the predictor's own earlier predictions and the
handles point tracking found after them. With --rollout-batch N, N drags of each batch are run
by the predictor itself, exactly as inference runs them, for 1..--rollout-steps steps
(server/training/predictor_rollout.py, no gradients); the motion, template and track terms
(which need no teacher label) are then taken at the state reached, times --rollout-weight.

The feature and motion terms put the generator in the loop (one forward and backward pass on
--feat-batch samples of each batch). Why: W+ is redundant (many latents draw nearly the same
image) and Adam's per-coordinate steps put much of the teacher's latent motion into directions
that change nothing visible, so latent MSE alone is a weak, noisy signal (on a first test it
learned no handle motion at all); the feature term measures the error where the drag and point
tracking look, the motion term asks directly for the requested move, and the latent term keeps
the prediction near the teacher's path, inside the region the generator was trained on.

The loops are in server/training/predictor_train.py and the losses in
server/training/predictor_losses.py (``livedrag train`` runs them too); this is their command line.
Runs resume from <out>/stage{1,2}.pt (torch.save of tensors and plain containers only, read back
with weights_only=True); randomness is a function of (--seed, stage, iteration), so a resumed
run draws the same batches. The whole pipeline on the shipped model (docs/predictor.md):

    .venv/bin/python scripts/train_predictor.py --stage 1 --out runs/predictor
    .venv/bin/python scripts/train_predictor.py --stage 2 --out runs/predictor --traj runs/trajectories
    .venv/bin/python scripts/train_predictor.py --out runs/predictor \\
        --export server/assets/synthfaces_predictor.safetensors
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from server.training.predictor_losses import (  # noqa: E402, F401 - re-exported for tests and callers
    Pairs,
    clean_rows,
    denoise_loss,
    far_from_handles,
    motion_loss,
    stage2_losses,
)
from server.training.predictor_train import (  # noqa: E402, F401
    PredictorTrainConfig,
    export_predictor,
    lr_at,
    parse_defaults,
    train_stage1,
    train_stage2,
)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--stage", type=int, choices=(1, 2), default=None, help="train stage 1 or 2")
    p.add_argument("--out", type=Path, default=Path("runs/predictor"), help="run directory")
    p.add_argument("--checkpoint", default=None, help="generator .safetensors (default: embedded model)")
    p.add_argument("--traj", type=Path, default=Path("runs/trajectories"), help="trajectory shards (stage 2)")
    p.add_argument("--iters", type=int, default=None, help="iterations (default: 3000 stage 1, 8000 stage 2)")
    p.add_argument("--batch", type=int, default=None, help="batch (default: 256 stage 1, 32 stage 2)")
    p.add_argument("--lr", type=float, default=None, help="AdamW lr (default: 1e-3 stage 1, 3e-4 stage 2)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default=None, help="cpu, cuda (default: cuda if available)")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    p.add_argument("--restart", action="store_true", help="ignore an existing checkpoint of this stage")
    p.add_argument(
        "--minutes", type=float, default=None, help="stop cleanly (checkpoint) after this wall time"
    )
    p.add_argument(
        "--stop-at",
        type=int,
        default=None,
        help="stop cleanly (checkpoint) at this iteration; the schedule stays --iters'",
    )
    p.add_argument("--ckpt-every", type=int, default=250)
    p.add_argument("--eval-every", type=int, default=250)
    # model shapes (stage 1 fixes the regularizer's, stage 2 the predictor's)
    p.add_argument("--n-rows", type=int, default=6, help="W+ rows predicted and regularized")
    p.add_argument("--reg-hidden", type=int, default=256)
    p.add_argument("--reg-blocks", type=int, default=3)
    p.add_argument("--alpha", type=float, default=0.5, help="regularizer strength (training and default)")
    p.add_argument("--d-model", type=int, default=128)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--enc-layers", type=int, default=3)
    p.add_argument("--dec-layers", type=int, default=3)
    p.add_argument("--grid", type=int, default=4)
    p.add_argument(
        "--feature-blocks", type=int, nargs="+", default=None, help="default: DragGAN block + one below"
    )
    # stage-2 data and loss
    p.add_argument("--substep", type=float, default=None, help="training sub-step, px (default res / 32)")
    p.add_argument("--p-single", type=float, default=0.1, help="share of whole-drag (single-shot) pairs")
    p.add_argument(
        "--span",
        type=float,
        nargs=2,
        default=(0.5, 1.5),
        metavar=("LOW", "HIGH"),
        help="the fastest handle's move over a training pair, in sub-steps, uniform in "
        "[LOW, HIGH] (default 0.5 1.5)",
    )
    p.add_argument(
        "--zero-arrived",
        action="store_true",
        help="ask handles within 1 px of their targets for no move, as inference does (default: "
        "their own incidental motion)",
    )
    p.add_argument("--feat-weight", type=float, default=0.5, help="generator-in-the-loop feature term weight")
    p.add_argument(
        "--motion-weight", type=float, default=0.5, help="generator-in-the-loop motion term weight"
    )
    p.add_argument(
        "--local-weight",
        type=float,
        default=0.0,
        help="weight of the locality term (change away from the handles; 0: off)",
    )
    p.add_argument(
        "--template-weight",
        type=float,
        default=0.0,
        help="weight of the template term (the handle's start feature found where it was asked to "
        "go, what point tracking looks for; 0: off)",
    )
    p.add_argument(
        "--template-input",
        action="store_true",
        help="the predictor also reads each handle's tracking template and how the feature under "
        "the handle differs from it (given to a run trained without it, the input is added at zero "
        "and training goes on). Templates are read at each shard drag's first latent and handles: "
        "for a DAgger continuation (make_dagger.py) that is the predictor's state, not the drag's "
        "start, as for the template and track terms",
    )
    p.add_argument(
        "--track-weight",
        type=float,
        default=0.0,
        help="weight of the soft point-tracking term (the template's best match, as a softmax over "
        "the search window, where the handle was asked to go and not at its old place; 0: off)",
    )
    p.add_argument(
        "--rollout-batch",
        type=int,
        default=0,
        help="on-policy samples per iteration: drags of the batch run by the predictor itself (as "
        "inference, point tracking included) for 1..--rollout-steps steps, then the motion, "
        "template and track terms at the state reached (0: off)",
    )
    p.add_argument("--rollout-steps", type=int, default=8, help="longest rollout, in predictor steps")
    p.add_argument("--rollout-weight", type=float, default=1.0, help="weight of the on-policy terms")
    p.add_argument(
        "--rollout-substep",
        type=float,
        default=None,
        help="px asked per step in rollouts (default: 3/4 of the training sub-step, the shipped ratio)",
    )
    p.add_argument("--rollout-drift", type=float, default=0.1, help="reg_drift in rollouts")
    p.add_argument(
        "--feat-batch", type=int, default=8, help="samples per batch given the feature/motion terms"
    )
    p.add_argument("--reg-weight", type=float, default=0.1, help="weight of the denoising term in stage 2")
    p.add_argument("--val-frac", type=float, default=0.05, help="trajectories held out for validation")
    p.add_argument("--export", type=Path, default=None, help="write the predictor file from <out>/stage2.pt")
    p.add_argument(
        "--default",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="export: a recommended PredictOptions value stored in the file (e.g. max_steps=12, "
        "substep=4), chosen on validation seeds with bench_drag.py; repeatable",
    )
    p.add_argument("--no-progress", action="store_true")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.stage is None and args.export is None:
        raise SystemExit("give --stage 1, --stage 2 or --export PATH")
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    from server.cli.common import pick_device, progress
    from server.engine.checkpoint import load_generator

    device = pick_device(args.device)
    G = load_generator(args.checkpoint, device=device)
    args.out.mkdir(parents=True, exist_ok=True)
    cfg = PredictorTrainConfig.from_namespace(args)

    def bar_factory(total: int, initial: int, desc: str):
        b = progress(total=total, desc=desc, disable=True if args.no_progress else None)
        b.update(initial)
        return b

    try:
        if args.stage == 1:
            print(json.dumps(train_stage1(G, cfg, device, bar_factory)))
        elif args.stage == 2:
            print(json.dumps(train_stage2(G, cfg, device, bar_factory)))
        if args.export is not None:
            export_predictor(G, args.out, args.export, args.default)
    except ValueError as e:
        raise SystemExit(str(e)) from None
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
