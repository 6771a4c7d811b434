"""How big each stage of `livedrag train` is: presets, explicit sizes, and a time budget.

A ``Plan`` holds the configs of the five stages (teacher trajectories, predictor stage 1 and
stage 2, the encoder, the evaluation). Three presets:

* ``tiny``: tiny networks and a handful of steps; the whole pipeline in seconds on a tiny
  generator (the tests), useless as a model;
* ``small``: the real networks, a few minutes per stage on one CPU core at 64 px (64 teacher
  drags, 500 + 400 predictor iterations, 400 encoder steps): checks the pipeline on a real model
  and measures its speed, far too short for a useful predictor;
* ``full``: the sizes the shipped SynthFaces predictor and encoder were trained with (2048 teacher
  drags, 3000 + 3600 predictor iterations, 3000 encoder steps; docs/predictor.md).

``--hours H`` keeps a preset's networks and sizes every stage to its share of the budget
(``BUDGET_SPLIT``: trajectories 40%, stage 1 5%, stage 2 30%, encoder 20%, evaluation 5%) from
throughputs measured on this machine at the start (``calibrate``: a few steps of every stage).
"""

from __future__ import annotations

import math
import shutil
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch

from server.engine.generator import Generator

from .encoder_train import EncoderTrainConfig
from .evaluate import EvalConfig
from .predictor_train import PredictorTrainConfig
from .trajectories import TrajectoryConfig

STAGES = ("trajectories", "stage1", "stage2", "encoder", "evaluate")
PRESETS = ("tiny", "small", "full")
# share of a --hours budget per stage; the shipped SynthFaces run spent most of its time on the
# teacher (128 of 190 CPU minutes), which bounds how many drags stage 2 can learn from
BUDGET_SPLIT = {"trajectories": 0.40, "stage1": 0.05, "stage2": 0.30, "encoder": 0.20, "evaluate": 0.05}
MEAN_DRAG_FRACTION = 0.75  # recorded steps of a teacher drag / its budget (shipped run: 146 of 200)
PREDICT_EDIT_FRACTION = 0.2  # a predict edit's time / an optimiser edit's, for sizing the evaluation
# the landmark-free edit mix: 25% random points, 50% high-contrast points, 25% long group drags
EDIT_MIX = {"landmark_frac": 0.0, "contrast_frac": 0.5, "long_frac": 0.25, "shift_frac": 0.5}


@dataclass(frozen=True)
class Plan:
    """The configs of all stages (run folders are filled in by the pipeline)."""

    trajectories: TrajectoryConfig
    stage1: PredictorTrainConfig
    stage2: PredictorTrainConfig
    encoder: EncoderTrainConfig
    evaluate: EvalConfig

    def to_dict(self) -> dict:
        d = {name: getattr(self, name).to_dict() for name in STAGES}
        for name in ("stage1", "stage2", "encoder"):
            d[name] = {k: v for k, v in d[name].items() if k not in ("out", "traj")}
        return d

    @classmethod
    def from_dict(cls, d: dict) -> Plan:
        def tup(cfg: dict, *keys: str) -> dict:
            return {k: (tuple(v) if k in keys and v is not None else v) for k, v in cfg.items()}

        return cls(
            trajectories=TrajectoryConfig(**tup(d["trajectories"], "trunc")),
            stage1=PredictorTrainConfig(**tup(d["stage1"], "feature_blocks")),
            stage2=PredictorTrainConfig(**tup(d["stage2"], "feature_blocks")),
            encoder=EncoderTrainConfig(**tup(d["encoder"], "channels")),
            evaluate=EvalConfig(**tup(d["evaluate"], "shift_points", "long_points", "methods")),
        )

    def sizes(self) -> dict:
        """The numbers a person sizes a run by."""
        t = self.trajectories
        return {
            "drags": t.shards * t.per_shard,
            "shards": t.shards,
            "teacher_steps": t.max_steps,
            "stage1_iters": self.stage1.iters,
            "stage2_iters": self.stage2.iters,
            "encoder_steps": self.encoder.steps,
            "eval_edits": self.evaluate.edits,
        }

    def with_sizes(
        self,
        drags: int | None = None,
        teacher_steps: int | None = None,
        stage1_iters: int | None = None,
        stage2_iters: int | None = None,
        encoder_steps: int | None = None,
        eval_edits: int | None = None,
    ) -> Plan:
        """This plan with the given sizes changed (None: kept)."""
        plan = self
        if drags is not None or teacher_steps is not None:
            t = plan.trajectories
            n = t.shards * t.per_shard if drags is None else max(1, drags)
            per_shard = min(t.per_shard, n) if drags is None else shard_size(n)
            t = replace(
                t, shards=math.ceil(n / per_shard), per_shard=per_shard, batch=min(t.batch, per_shard)
            )
            plan = replace(plan, trajectories=replace(t, max_steps=teacher_steps or t.max_steps))
        for stage, iters in (("stage1", stage1_iters), ("stage2", stage2_iters)):
            if iters is not None:
                iters = max(1, iters)
                every = max(1, min(250, iters // 8))  # checkpoints and validation: about 8 per run
                cfg = replace(getattr(plan, stage), iters=iters, ckpt_every=every, eval_every=every)
                plan = replace(plan, **{stage: cfg})
        if encoder_steps is not None:
            steps = max(1, encoder_steps)
            after = min(plan.encoder.image_after, steps // 3)
            plan = replace(plan, encoder=replace(plan.encoder, steps=steps, image_after=after))
        if eval_edits is not None:
            plan = replace(plan, evaluate=replace(plan.evaluate, edits=max(1, eval_edits)))
        return plan


def shard_size(drags: int) -> int:
    """Drags per shard: about 16 shards (the unit of resuming), 1 to 64 drags each."""
    return int(min(64, max(1, drags // 16)))


def encoder_channels(res: int) -> tuple[int, ...]:
    """Encoder stages down to a 4 x 4 map: (32, 64, 128, 160) at 64 px (the shipped encoder's)."""
    if res < 16:
        raise ValueError(f"the encoder needs images of 16 px or more; this generator makes {res} px")
    widths = (32, 64, 128, 160, 192, 256, 256, 256, 256)
    return widths[: max(2, int(math.log2(res)) - 2)]


def preset(name: str, res: int) -> Plan:
    """The plan of preset ``name`` for a generator of ``res`` px."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r} (known: {', '.join(PRESETS)})")
    if name == "tiny":
        return Plan(
            trajectories=TrajectoryConfig(shards=1, per_shard=4, batch=4, max_steps=4, **EDIT_MIX),
            stage1=PredictorTrainConfig(
                iters=8, batch=16, reg_hidden=16, reg_blocks=1, eval_every=4, ckpt_every=4
            ),
            stage2=PredictorTrainConfig(
                iters=6,
                batch=4,
                feat_batch=2,
                d_model=16,
                heads=2,
                enc_layers=1,
                dec_layers=1,
                grid=2,
                eval_every=3,
                ckpt_every=3,
            ),
            encoder=EncoderTrainConfig(
                steps=6,
                batch=4,
                image_batch=2,
                image_after=3,
                pool=16,
                refresh=2,
                held_out=4,
                log_every=3,
                ckpt_every=3,
                grids=False,
                channels=(8, 16, 16),
                feat_dim=32,
                row_dim=32,
            ),
            evaluate=EvalConfig(edits=2, max_steps=4, shift_points=(1,), long_points=(2,), encoder_images=4),
        )
    channels = encoder_channels(res)
    if name == "small":
        return Plan(
            trajectories=TrajectoryConfig(shards=4, per_shard=16, batch=16, **EDIT_MIX),
            stage1=PredictorTrainConfig(iters=500, batch=256, eval_every=100, ckpt_every=100),
            stage2=PredictorTrainConfig(iters=400, batch=32, eval_every=100, ckpt_every=100),
            encoder=EncoderTrainConfig(steps=400, image_after=200, pool=512, grid_every=0, channels=channels),
            evaluate=EvalConfig(edits=8, encoder_images=16),
        )
    return Plan(
        trajectories=TrajectoryConfig(shards=32, per_shard=64, batch=32, **EDIT_MIX),
        stage1=PredictorTrainConfig(iters=3000, batch=256),
        stage2=PredictorTrainConfig(iters=3600, batch=32),
        encoder=EncoderTrainConfig(steps=3000, image_after=1000, channels=channels),
        evaluate=EvalConfig(edits=50, encoder_images=32),
    )


# -- a time budget ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Rates:
    """Throughputs measured on this machine (``calibrate``)."""

    teacher_steps_per_s: float  # recorded drag steps per second, drags stepped in a batch
    single_steps_per_s: float  # the same for one drag alone (the evaluation's optimiser edits)
    stage1_iters_per_s: float
    stage2_iters_per_s: float
    encoder_steps_per_s: float

    def to_dict(self) -> dict:
        return asdict(self)


def eval_rows(cfg: EvalConfig) -> int:
    return len(cfg.shift_points) + len(cfg.long_points)


def expected_seconds(plan: Plan, rates: Rates) -> dict[str, float]:
    """How long each stage of ``plan`` should take at ``rates``."""
    t, ev = plan.trajectories, plan.evaluate
    drag_steps = t.shards * t.per_shard * MEAN_DRAG_FRACTION * t.max_steps
    opt_edit = MEAN_DRAG_FRACTION * ev.max_steps / rates.single_steps_per_s
    return {
        "trajectories": drag_steps / rates.teacher_steps_per_s,
        "stage1": plan.stage1.iters / rates.stage1_iters_per_s,
        "stage2": plan.stage2.iters / rates.stage2_iters_per_s,
        "encoder": plan.encoder.steps / rates.encoder_steps_per_s,
        "evaluate": eval_rows(ev) * ev.edits * opt_edit * (1 + PREDICT_EDIT_FRACTION),
    }


def plan_for_budget(base: Plan, seconds: float, rates: Rates, split: dict[str, float] = BUDGET_SPLIT) -> Plan:
    """``base`` (its networks and settings) with every stage sized to its share of ``seconds``."""
    share = {k: split[k] * seconds for k in STAGES}
    t, ev = base.trajectories, base.evaluate
    drags = int(share["trajectories"] * rates.teacher_steps_per_s / (MEAN_DRAG_FRACTION * t.max_steps))
    opt_edit = MEAN_DRAG_FRACTION * ev.max_steps / rates.single_steps_per_s
    edits = int(share["evaluate"] / (eval_rows(ev) * opt_edit * (1 + PREDICT_EDIT_FRACTION)))
    return base.with_sizes(
        drags=max(t.batch, drags),
        stage1_iters=max(10, int(share["stage1"] * rates.stage1_iters_per_s)),
        stage2_iters=max(10, int(share["stage2"] * rates.stage2_iters_per_s)),
        encoder_steps=max(10, int(share["encoder"] * rates.encoder_steps_per_s)),
        eval_edits=min(200, max(1, edits)),
    )


def calibrate(G: Generator, base: Plan, work: Path, device: torch.device, log=print) -> Rates:
    """A few steps of every stage with ``base``'s networks, in ``work`` (removed afterwards)."""
    from .encoder_train import train_encoder
    from .predictor_train import train_stage1, train_stage2
    from .trajectories import make_trajectories

    work = Path(work)
    shutil.rmtree(work, ignore_errors=True)

    def quiet(total: int, initial: int = 0, desc: str = ""):
        return _NoBar()

    try:
        t = replace(base.trajectories, shards=1, per_shard=base.trajectories.batch, max_steps=4)
        make_trajectories(G, work / "warm", replace(t, per_shard=1, batch=1, max_steps=2))  # first calls
        one = make_trajectories(G, work / "one", replace(t, per_shard=1, batch=1, seed=t.seed + 1))
        batched = make_trajectories(G, work / "traj", t)
        log(f"calibration: teacher {batched['steps_per_s']:.1f} drag steps/s in batches of {t.batch}")
        s1 = train_stage1(
            G, replace(base.stage1, out=work / "pred", iters=4, ckpt_every=4, eval_every=4), device, quiet
        )
        cfg2 = replace(
            base.stage2, out=work / "pred", traj=work / "traj", iters=6, ckpt_every=6, eval_every=6
        )
        s2 = train_stage2(G, cfg2, device, quiet)
        enc_cfg = replace(
            base.encoder,
            out=work / "enc",
            steps=4,
            image_after=0,
            pool=2 * base.encoder.batch,
            held_out=2,
            grids=False,
            log_every=10**9,
            ckpt_every=10**9,
        )
        enc = train_encoder(G, enc_cfg, device, progress=False)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return Rates(
        teacher_steps_per_s=batched["steps_per_s"],
        single_steps_per_s=one["steps_per_s"],
        stage1_iters_per_s=s1["iters_per_s"],
        stage2_iters_per_s=s2["iters_per_s"],
        encoder_steps_per_s=enc["steps_per_s"],
    )


class _NoBar:
    def update(self, n: int = 1) -> None: ...
    def set_postfix(self, *a, **kw) -> None: ...
    def close(self) -> None: ...
