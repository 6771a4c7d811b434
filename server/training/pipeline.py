"""`livedrag train`: predict mode and the encoder for any StyleGAN2 generator, in one command.

``run_pipeline(TrainRequest(checkpoint, out))`` turns a generator checkpoint into a model folder
that ``server.models.ModelLibrary`` (and ``livedrag serve --models``) accepts::

    OUT/card.json, generator.safetensors         written first: the model offers optimize at once
    OUT/predictor.safetensors                    after stage 2 (the card then offers predict)
    OUT/encoder.safetensors                      after the encoder stage (the card offers encoder)
    OUT/report.json, OUT/report.md               each stage's time and throughput, the evaluation
    OUT/training/                                the stages' work: plan.json, trajectories/,
                                                 predictor/, encoder/, eval.json, stages.json, train.log

Stages, in order (``plan.STAGES``): landmark-free teacher trajectories (``trajectories``: random
points, high-contrast points, long group drags), predictor stage 1 and stage 2 (with the export),
the encoder, the evaluation (``evaluate``: bench_drag's shift and long protocols without
landmarks, the encoder's PSNR on held-out generated images). Resumable: each stage is skipped when
its output exists and otherwise continues from its own checkpoint (finished shards, stage1.pt,
stage2.pt, the encoder's ckpt.pt); the sizes are fixed in ``training/plan.json`` by the first run,
and a later run with other sizes is refused rather than mixing two plans.
"""

from __future__ import annotations

import json
import platform
import shutil
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch

from server.engine.checkpoint import load_generator
from server.engine.generator import Generator
from server.engine.predictor_io import GeneratorIdentity

from .plan import (
    BUDGET_SPLIT,
    PRESETS,
    STAGES,
    Plan,
    Rates,
    calibrate,
    expected_seconds,
    plan_for_budget,
    preset,
)
from .report import write_report

MODEL_FILES = {"generator": "generator.safetensors", "predictor": "predictor.safetensors"}
ENCODER_FILE = "encoder.safetensors"


@dataclass(frozen=True)
class TrainRequest:
    """What `livedrag train` was asked for (the command-line flags)."""

    checkpoint: Path  # the generator, a livedrag .safetensors
    out: Path  # the model folder; its name is the model's name
    preset: str = "full"  # tiny, small or full (plan.PRESETS)
    hours: float | None = None  # a time budget split among the stages (None: the preset's sizes)
    drags: int | None = None  # explicit sizes, on top of the preset or the budget
    teacher_steps: int | None = None
    stage1_iters: int | None = None
    stage2_iters: int | None = None
    encoder_steps: int | None = None
    eval_edits: int | None = None
    dtype: str = "float32"  # teacher synthesis dtype (float16/bfloat16 on a GPU)
    device: str | None = None  # cpu, cuda (None: cuda if available)
    threads: int = 0  # torch CPU threads (0: torch's default)
    licence: str = "unknown"  # for the card
    source: str | None = None  # for the card (None: the checkpoint's file name)
    until: str | None = None  # stop after this stage
    progress: bool | None = None  # progress bars (None: when stderr is a terminal)

    def sizing(self) -> dict:
        """The fields that decide the plan; a resumed run must repeat them."""
        keys = ("preset", "hours", "drags", "teacher_steps", "stage1_iters", "stage2_iters")
        keys += ("encoder_steps", "eval_edits", "dtype")
        return {k: getattr(self, k) for k in keys}


class Pipeline:
    """One run of the pipeline on one model folder (see the module docstring)."""

    def __init__(self, req: TrainRequest) -> None:
        from server.models.card import check_name

        self.req = req
        self.out = Path(req.out)
        self.name = check_name(self.out.name)
        if req.preset not in PRESETS:
            raise ValueError(f"unknown preset {req.preset!r} (known: {', '.join(PRESETS)})")
        if req.until is not None and req.until not in STAGES:
            raise ValueError(f"--until {req.until!r}: give one of {', '.join(STAGES)}")
        self.work = self.out / "training"
        if req.threads > 0:
            torch.set_num_threads(req.threads)
        name = req.device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.device = torch.device(name)
        self.G: Generator = load_generator(req.checkpoint, device=self.device)
        self.identity = GeneratorIdentity.of(self.G)
        self.show = sys.stderr.isatty() if req.progress is None else req.progress
        if req.hours is not None and not req.hours > 0:
            raise ValueError(f"--hours must be above 0, got {req.hours}")
        if self.out.exists() and any(self.out.iterdir()) and not (self.work / "request.json").is_file():
            raise ValueError(f"{self.out} exists and was not made by livedrag train; choose a new --out")

    # -- logging and bars --------------------------------------------------------------------------

    def say(self, msg: str) -> None:
        line = f"{time.strftime('%H:%M:%S')} {msg}"
        print(f"livedrag train: {msg}", file=sys.stderr, flush=True)
        if self.work.is_dir():  # the first lines, before prepare() made it, go to stderr only
            with open(self.work / "train.log", "a") as f:
                f.write(line + "\n")

    def bar(self, total: int, initial: int = 0, desc: str = "") -> Any:
        from tqdm import tqdm

        return tqdm(total=total, initial=initial, desc=desc, disable=not self.show, dynamic_ncols=True)

    # -- setup -------------------------------------------------------------------------------------

    def prepare(self) -> Plan:
        """Check the folder is ours (or new), copy the generator, write the card, fix the plan."""
        marker = self.work / "request.json"
        self.work.mkdir(parents=True, exist_ok=True)
        if not marker.is_file():
            marker.write_text(json.dumps({"sizing": self.req.sizing()}, indent=2) + "\n")
        gen = self.out / MODEL_FILES["generator"]
        if gen.is_file():
            held = GeneratorIdentity.of(load_generator(gen))
            if (held.config_hash, held.weights_hash) != (
                self.identity.config_hash,
                self.identity.weights_hash,
            ):
                raise ValueError(
                    f"{self.out} holds another generator than {self.req.checkpoint}; use another --out"
                )
        else:
            tmp = gen.with_name(gen.name + ".tmp")
            shutil.copyfile(self.req.checkpoint, tmp)
            tmp.replace(gen)
        self.write_card()
        return self.load_plan()

    def load_plan(self) -> Plan:
        path = self.work / "plan.json"
        if path.is_file():
            stored = json.loads(path.read_text())
            if stored["sizing"] != self.req.sizing():
                raise ValueError(
                    f"{self.out} was started with {_flags(stored['sizing'])}; run the same command to resume "
                    "or choose another --out"
                )
            self.say(f"resuming with the plan of the first run ({path})")
            return Plan.from_dict(stored["plan"])
        plan = preset(self.req.preset, self.G.img_resolution)
        plan = replace(plan, trajectories=replace(plan.trajectories, dtype=self.req.dtype))
        budget = None
        if self.req.hours is not None:
            total = self.req.hours * 3600
            self.say(f"calibrating: a few steps of every stage for a budget of {self.req.hours:g} h")
            t0 = time.perf_counter()
            rates = calibrate(self.G, plan, self.work / "calibration", self.device, log=self.say)
            spent = time.perf_counter() - t0
            plan = plan_for_budget(plan, max(0.0, total - spent), rates)
            budget = {
                "hours": self.req.hours,
                "split": BUDGET_SPLIT,
                "calibration_seconds": spent,
                "rates": rates.to_dict(),
            }
        s = self.req
        plan = plan.with_sizes(
            s.drags, s.teacher_steps, s.stage1_iters, s.stage2_iters, s.encoder_steps, s.eval_edits
        )
        if budget is not None:
            budget["expected_seconds"] = expected_seconds(plan, Rates(**budget["rates"]))
            split = ", ".join(
                f"{k} {100 * v:.0f}% (~{budget['expected_seconds'][k] / 60:.1f} min)"
                for k, v in BUDGET_SPLIT.items()
            )
            self.say(f"budget split: {split}")
        self.say(f"plan: {_flags(plan.sizes())}")
        tmp = path.with_name("plan.json.tmp")
        tmp.write_text(
            json.dumps({"sizing": self.req.sizing(), "plan": plan.to_dict(), "budget": budget}, indent=2)
        )
        tmp.replace(path)
        return plan

    def write_card(self) -> None:
        from server.models.card import FILE_NAMES, ModelCard

        files, modes = {"generator": FILE_NAMES["generator"]}, ["optimize"]
        for role, mode in (("predictor", "predict"), ("encoder", "encoder")):
            if (self.out / FILE_NAMES[role]).is_file():
                files[role] = FILE_NAMES[role]
                modes.append(mode)
        source = self.req.source if self.req.source is not None else Path(self.req.checkpoint).name
        card = ModelCard(
            name=self.name,
            resolution=self.G.img_resolution,
            licence=self.req.licence,
            source=source,
            modes=tuple(modes),
            files=files,
        )
        try:
            if ModelCard.load(self.out) == card:
                return  # unchanged: a resumed run rewrites nothing
        except ValueError:
            pass
        card.save(self.out)

    # -- stages ------------------------------------------------------------------------------------

    def done(self, stage: str, plan: Plan) -> str | None:
        """Why ``stage`` need not run (its output exists), or None."""
        from .predictor_train import checkpoint_iter
        from .trajectories import pending_shards

        if stage == "trajectories":
            n = plan.trajectories.shards
            todo = pending_shards(self.work / "trajectories", range(n), self.identity)
            return None if todo else f"all {n} shards are in {self.work / 'trajectories'}"
        if stage == "stage1":
            it = checkpoint_iter(self.work / "predictor" / "stage1.pt")
            return f"stage1.pt reached iteration {it}" if it is not None and it >= plan.stage1.iters else None
        files = {"stage2": self.out / MODEL_FILES["predictor"], "encoder": self.out / ENCODER_FILE}
        files["evaluate"] = self.work / "eval.json"
        return f"{files[stage]} exists" if files[stage].is_file() else None

    def run_stage(self, stage: str, plan: Plan) -> dict:
        """Run (or continue) one stage; returns what it did: seconds, work units and rate."""
        pred = self.work / "predictor"
        if stage == "trajectories":
            from .trajectories import make_trajectories

            r = make_trajectories(
                self.G,
                self.work / "trajectories",
                plan.trajectories,
                bar_factory=lambda n: self.bar(n, 0, stage),
            )
            return {
                "units": r["steps"],
                "unit": "teacher steps",
                "drags": r["drags"],
                **_rate(r["steps"], r["seconds"]),
            }
        if stage in ("stage1", "stage2"):
            from .predictor_train import export_predictor, train_stage1, train_stage2

            cfg = replace(getattr(plan, stage), out=pred, traj=self.work / "trajectories")
            train = train_stage1 if stage == "stage1" else train_stage2
            r = train(self.G, cfg, self.device, self.bar)
            if r["iter"] < (cfg.iters or 0):
                raise RuntimeError(f"{stage} stopped at iteration {r['iter']} of {cfg.iters}")
            if stage == "stage2":
                export_predictor(self.G, pred, self.out / MODEL_FILES["predictor"])
                self.write_card()
            return {
                "units": r["iters_run"],
                "unit": "iterations",
                "batch": cfg.batch,
                **_rate(r["iters_run"], r["seconds"]),
            }
        if stage == "encoder":
            from .encoder_train import train_encoder

            cfg = replace(plan.encoder, out=self.work / "encoder")
            r = train_encoder(self.G, cfg, self.device, export=self.out / ENCODER_FILE, progress=self.show)
            self.write_card()
            return {
                "units": r["steps_run"],
                "unit": "iterations",
                "batch": cfg.batch,
                "held_out_psnr_db": r["held_out_psnr_db"],
                **_rate(r["steps_run"], r["seconds"]),
            }
        return self.evaluate(plan)

    def evaluate(self, plan: Plan) -> dict:
        from server.engine.encoder import load_encoder
        from server.engine.predictor_io import load_predictor

        from .evaluate import evaluate_drags, evaluate_encoder

        t0 = time.perf_counter()
        model = load_predictor(self.out / MODEL_FILES["predictor"], G=self.G)
        drags = evaluate_drags(self.G, model, plan.evaluate, bar_factory=lambda n: self.bar(n, 0, "evaluate"))
        enc = load_encoder(self.out / ENCODER_FILE, self.G)
        result = {"drags": drags, "encoder": evaluate_encoder(self.G, enc, plan.evaluate.encoder_images)}
        path = self.work / "eval.json"
        tmp = path.with_name("eval.json.tmp")
        tmp.write_text(json.dumps(result, indent=2) + "\n")
        tmp.replace(path)
        edits = sum(r["edits"] for r in drags["rows"])
        return {"units": edits, "unit": "edits", **_rate(edits, time.perf_counter() - t0)}

    # -- the whole run -----------------------------------------------------------------------------

    def run(self) -> dict:
        started = time.time()
        self.say(
            f"model {self.name} from {self.req.checkpoint}: {self.G.img_resolution} px, "
            f"device {self.device}, CPU threads {torch.get_num_threads()}, into {self.out}"
        )
        plan = self.prepare()
        stages = self._read_stages()
        ran, skipped = [], []
        for i, stage in enumerate(STAGES, 1):
            why = self.done(stage, plan)
            if why is not None:
                self.say(f"[{i}/{len(STAGES)}] {stage}: skipped ({why})")
                skipped.append(stage)
            else:
                self.say(f"[{i}/{len(STAGES)}] {stage}: running ({_what(stage, plan)})")
                t0 = time.perf_counter()
                rec = self.run_stage(stage, plan)
                rec["wall_seconds"] = time.perf_counter() - t0
                stages.setdefault(stage, []).append(rec)
                self._write_stages(stages)
                self.say(f"[{i}/{len(STAGES)}] {stage}: done in {rec['wall_seconds']:.1f} s{_rate_text(rec)}")
                ran.append(stage)
            if stage == self.req.until:
                self.say(f"stopping after {stage} (--until); run the same command without --until to go on")
                break
        from server.models import ModelLibrary

        check = ModelLibrary(self.out.parent).check(self.name)
        run = {"started": started, "seconds": time.time() - started, "ran": ran, "skipped": skipped}
        report = write_report(self, plan, stages, run, check)
        status = "ok" if check.ok else "FAILED: " + "; ".join(check.errors)
        self.say(
            f"model {self.name}: {status}; modes {', '.join(check.modes)}; report {self.out / 'report.md'}"
        )
        return report

    def _read_stages(self) -> dict:
        path = self.work / "stages.json"
        return json.loads(path.read_text()) if path.is_file() else {}

    def _write_stages(self, stages: dict) -> None:
        path = self.work / "stages.json"
        tmp = path.with_name("stages.json.tmp")
        tmp.write_text(json.dumps(stages, indent=2) + "\n")
        tmp.replace(path)

    def machine(self) -> dict:
        dev = self.device
        return {
            "device": str(dev),
            "device_name": torch.cuda.get_device_name(dev)
            if dev.type == "cuda"
            else platform.processor() or platform.machine(),
            "threads": torch.get_num_threads(),
            "platform": platform.platform(),
            "torch": torch.__version__,
        }


def run_pipeline(req: TrainRequest) -> dict:
    """Run (or resume) the pipeline; returns the report (also in OUT/report.json)."""
    return Pipeline(req).run()


def _rate(units: int, seconds: float) -> dict:
    return {"seconds": seconds, "per_s": units / seconds if units and seconds > 0 else None}


def _rate_text(rec: dict) -> str:
    return f", {rec['per_s']:.2f} {rec['unit']}/s" if rec.get("per_s") else ""


def _flags(d: dict) -> str:
    return ", ".join(f"{k} {v}" for k, v in d.items() if v is not None)


def _what(stage: str, plan: Plan) -> str:
    t, e = plan.trajectories, plan.evaluate
    return {
        "trajectories": f"{t.shards * t.per_shard} drags of <= {t.max_steps} steps, shards {t.shards}",
        "stage1": f"regularizer, {plan.stage1.iters} iterations of {plan.stage1.batch}",
        "stage2": f"predictor, {plan.stage2.iters} iterations of {plan.stage2.batch} pairs, then the export",
        "encoder": f"{plan.encoder.steps} iterations of {plan.encoder.batch}",
        "evaluate": f"{e.edits} edits per row, protocols shift and long, {e.encoder_images} encoder images",
    }[stage]
