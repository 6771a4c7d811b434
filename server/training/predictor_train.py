"""Predictor training loops: stage 1 (the Latent Regularizer alone), stage 2 (the Latent Predictor
with it, on teacher trajectories) and the export of the predictor file.

``scripts/train_predictor.py`` is the command line (its docstring describes the losses);
``server/training/pipeline.py`` calls the same functions. Runs resume from ``<out>/stage{1,2}.pt``
(``torch.save`` of tensors and plain containers, read back with ``weights_only=True``);
randomness is a function of (seed, stage, iteration), so a resumed run draws the same batches.
Problems a user can fix (no stage 1 yet, a checkpoint of another generator) raise ``ValueError``
with one line that says what to do.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch

from server.engine.generator import Generator
from server.engine.predictor import LatentPredictor, PredictorConfig, count_parameters, latent_stats
from server.engine.predictor_io import GeneratorIdentity, PredictorBundle, save_predictor
from server.engine.regularizer import LatentRegularizer, RegularizerConfig

from .predictor_losses import Pairs, denoise_loss, stage2_losses, start_templates
from .predictor_rollout import rollout_batch
from .trajectories import read_shards

BarFactory = Callable[[int, int, str], Any]  # (total, initial, desc) -> a tqdm-like bar


@dataclass(frozen=True)
class PredictorTrainConfig:
    """Settings of both stages (the command-line flags of scripts/train_predictor.py)."""

    out: Path = Path("runs/predictor")  # run directory: stage1.pt, stage2.pt, log.jsonl
    traj: Path = Path("runs/trajectories")  # trajectory shards (stage 2)
    iters: int | None = None  # iterations (None: 3000 stage 1, 8000 stage 2)
    batch: int | None = None  # batch (None: 256 stage 1, 32 stage 2)
    lr: float | None = None  # AdamW lr (None: 1e-3 stage 1, 3e-4 stage 2)
    seed: int = 0
    restart: bool = False  # ignore an existing checkpoint of this stage
    minutes: float | None = None  # stop cleanly (checkpoint) after this wall time
    stop_at: int | None = None  # stop cleanly (checkpoint) at this iteration; the schedule is still --iters'
    ckpt_every: int = 250
    eval_every: int = 250
    # model shapes (stage 1 fixes the regularizer's, stage 2 the predictor's)
    n_rows: int = 6  # W+ rows predicted and regularized
    reg_hidden: int = 256
    reg_blocks: int = 3
    alpha: float = 0.5  # regularizer strength (training and default)
    d_model: int = 128
    heads: int = 4
    enc_layers: int = 3
    dec_layers: int = 3
    grid: int = 4
    feature_blocks: tuple[int, ...] | None = None  # None: DragGAN's block + one below
    # the point tokens also read the tracking templates (PredictorConfig.template_block); set on a
    # run trained without it, the input is added (starting at zero) and training goes on
    template_input: bool = False
    # stage-2 data and loss
    substep: float | None = None  # training sub-step, px (None: res / 32)
    p_single: float = 0.1  # share of whole-drag (single-shot) pairs
    span: tuple[float, float] = (0.5, 1.5)  # the fastest handle's move per pair, in sub-steps (uniform)
    zero_arrived: bool = False  # no move asked of handles within 1 px of their targets (as at inference)
    feat_weight: float = 0.5  # generator-in-the-loop feature term
    motion_weight: float = 0.5  # generator-in-the-loop motion term
    local_weight: float = 0.0  # locality term (0: off)
    template_weight: float = 0.0  # template term: the start feature findable where asked (0: off)
    track_weight: float = 0.0  # soft point tracking: the tracker's argmin where asked (0: off)
    # on-policy samples (predictor_rollout): per iteration, this many of the batch's drags run
    # by the predictor itself for 1..rollout_steps steps, then the motion / template / track terms
    # on the state reached, times rollout_weight (0: off)
    rollout_batch: int = 0
    rollout_steps: int = 8
    rollout_weight: float = 1.0
    rollout_substep: float | None = None  # the request per step in rollouts (None: 3/4 of substep)
    rollout_drift: float = 0.1  # reg_drift in rollouts (as PredictOptions)
    feat_batch: int = 8  # samples per batch given the feature/motion terms
    reg_weight: float = 0.1  # weight of the denoising term in stage 2
    val_frac: float = 0.05  # trajectories held out for validation

    @classmethod
    def from_namespace(cls, ns: Any) -> PredictorTrainConfig:
        """The fields of this config taken from an argparse namespace (others ignored)."""
        d = {f.name: getattr(ns, f.name) for f in fields(cls) if hasattr(ns, f.name)}
        if d.get("feature_blocks") is not None:
            d["feature_blocks"] = tuple(d["feature_blocks"])
        if d.get("span") is not None:
            d["span"] = tuple(d["span"])
        return cls(**d)

    def to_dict(self) -> dict:
        return {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(self).items()}


def _stop_early(cfg: PredictorTrainConfig, it: int, t0: float) -> str | None:
    """Why a run stops cleanly before ``--iters`` after iteration ``it`` (``--minutes`` of wall
    time since ``t0``, or ``--stop-at``), or None to go on."""
    if cfg.minutes is not None and time.perf_counter() - t0 > 60 * cfg.minutes:
        return f"stopped after {cfg.minutes} min at iteration {it}; run again to resume"
    if cfg.stop_at is not None and it >= cfg.stop_at:
        return f"stopped at iteration {it} (--stop-at); run again to resume"
    return None


# -- checkpoints -----------------------------------------------------------------------------------


def save_ckpt(path: Path, state: dict) -> None:
    from .chunks import save_atomically

    save_atomically(state, path)


def load_ckpt(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


def checkpoint_iter(path: Path) -> int | None:
    """The iteration a stage checkpoint reached (None: no readable checkpoint)."""
    if not Path(path).is_file():
        return None
    try:
        return int(load_ckpt(path)["iter"])
    except Exception:  # noqa: BLE001 - a damaged file counts as no checkpoint
        return None


def lr_at(it: int, iters: int, base: float, warmup: int = 200) -> float:
    if it < warmup:
        return base * (it + 1) / warmup
    frac = (it - warmup) / max(1, iters - warmup)
    return base * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, frac))))


def iteration_rngs(seed: int, stage: int, it: int) -> tuple[np.random.Generator, torch.Generator]:
    rng = np.random.default_rng([seed, stage, it])
    gen = torch.Generator().manual_seed(int(rng.integers(2**62)))
    return rng, gen


def log(out: Path, rec: dict) -> None:
    with open(out / "log.jsonl", "a") as f:
        f.write(json.dumps(rec) + "\n")


def check_identity(st: dict, identity: GeneratorIdentity, path: Path) -> None:
    got = st["identity"]
    if (got["config_hash"], got["weights_hash"]) != (identity.config_hash, identity.weights_hash):
        raise ValueError(f"{path} belongs to another generator ({got}); use another --out or --restart")


def _finish(it: int, start: int, t0: float) -> dict:
    seconds = time.perf_counter() - t0
    ran = it - start
    return {
        "iters_run": ran,
        "seconds": seconds,
        "iters_per_s": ran / seconds if ran and seconds > 0 else None,
    }


# -- stages ----------------------------------------------------------------------------------------


def train_stage1(
    G: Generator, cfg: PredictorTrainConfig, device: torch.device, bar_factory: BarFactory
) -> dict:
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "stage1.pt"
    iters, batch, lr = cfg.iters or 3000, cfg.batch or 256, cfg.lr or 1e-3
    identity = GeneratorIdentity.of(G)
    if path.is_file() and not cfg.restart:
        st = load_ckpt(path)
        check_identity(st, identity, path)
        rcfg = RegularizerConfig.from_dict(st["rcfg"])
    else:
        st = None
        rcfg = RegularizerConfig(
            w_dim=G.w_dim,
            n_rows=min(cfg.n_rows, G.num_ws),
            hidden=cfg.reg_hidden,
            blocks=cfg.reg_blocks,
            alpha=cfg.alpha,
        )
    R = LatentRegularizer(rcfg).to(device)
    opt = torch.optim.AdamW(R.parameters(), lr=lr, weight_decay=1e-4)
    start = 0
    if st is not None:
        R.load_state_dict(st["regularizer"])
        opt.load_state_dict(st["opt"])
        start = st["iter"]
    else:
        mean, std = latent_stats(G, n=8192, seed=cfg.seed)
        R.w_avg.copy_(mean)
        R.w_std.copy_(std)
    print(f"stage 1: regularizer {count_parameters(R) / 1e6:.2f} M parameters, iterations {start}..{iters}")

    def state(it: int) -> dict:
        return {
            "regularizer": R.state_dict(),
            "opt": opt.state_dict(),
            "iter": it,
            "rcfg": rcfg.to_dict(),
            "identity": identity.to_dict(),
            "args": cfg.to_dict(),
        }

    t0 = time.perf_counter()
    bar = bar_factory(iters, start, "stage 1")
    ema = None
    it = start
    while it < iters:
        _, gen = iteration_rngs(cfg.seed, 1, it)
        for g in opt.param_groups:
            g["lr"] = lr_at(it, iters, lr)
        loss, base = denoise_loss(R, G, batch, gen)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(R.parameters(), 1.0)
        opt.step()
        it += 1
        ratio = loss.item() / max(base, 1e-12)
        ema = ratio if ema is None else 0.98 * ema + 0.02 * ratio
        bar.update(1)
        bar.set_postfix(ratio=f"{ema:.3f}")
        if it % cfg.eval_every == 0 or it == iters:
            log(out, {"stage": 1, "iter": it, "loss": loss.item(), "noisy": base, "ratio_ema": ema})
        if it % cfg.ckpt_every == 0 or it == iters:
            save_ckpt(path, state(it))
        if (why := _stop_early(cfg, it, t0)) is not None:
            save_ckpt(path, state(it))
            print(why)
            break
    bar.close()
    return {"iter": it, "ratio_ema": ema, **_finish(it, start, t0)}


def split_trajectories(n_traj: int, seed: int, val_frac: float) -> tuple[np.ndarray, np.ndarray]:
    """Stage 2's split of ``n_traj`` teacher trajectories: (training ids, held-out ids), sorted;
    a function of (``seed``, ``val_frac``), so other steps (``scripts/make_dagger.py``) can keep
    to the training side."""
    order = np.random.default_rng([seed, 99]).permutation(n_traj)
    n_val = max(1, int(round(val_frac * n_traj))) if n_traj > 1 else 0
    return np.sort(order[n_val:]), np.sort(order[:n_val])


def train_stage2(
    G: Generator, cfg: PredictorTrainConfig, device: torch.device, bar_factory: BarFactory
) -> dict:
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    path, p1 = out / "stage2.pt", out / "stage1.pt"
    iters, batch, lr = cfg.iters or 8000, cfg.batch or 32, cfg.lr or 3e-4
    identity = GeneratorIdentity.of(G)
    substep = cfg.substep if cfg.substep is not None else G.img_resolution / 32
    shards = sorted(Path(cfg.traj).glob("shard_*.safetensors"))
    if not shards:
        raise ValueError(
            f"no trajectory shards in {cfg.traj}: make them first (scripts/make_trajectories.py)"
        )
    data = read_shards(shards, identity)
    n_traj = len(data["n_points"])
    train_ids, val_ids = split_trajectories(n_traj, cfg.seed, cfg.val_frac)
    n_val = len(val_ids)
    print(f"stage 2: {len(shards)} shards, {n_traj} trajectories ({n_val} held out), {len(data['dw'])} steps")

    if path.is_file() and not cfg.restart:
        st = load_ckpt(path)
        check_identity(st, identity, path)
        pcfg, rcfg = PredictorConfig.from_dict(st["pcfg"]), RegularizerConfig.from_dict(st["rcfg"])
    else:
        if not p1.is_file():
            raise ValueError(f"{p1} not found: run stage 1 first")
        st1 = load_ckpt(p1)
        check_identity(st1, identity, p1)
        rcfg = RegularizerConfig.from_dict(st1["rcfg"])
        pcfg = PredictorConfig.for_generator(
            G,
            feature_blocks=tuple(cfg.feature_blocks) if cfg.feature_blocks else None,
            n_rows=rcfg.n_rows,
            d_model=cfg.d_model,
            n_heads=cfg.heads,
            enc_layers=cfg.enc_layers,
            dec_layers=cfg.dec_layers,
            grid=cfg.grid,
            template_input=cfg.template_input,
        )
        st = None
    added_templates = False
    if cfg.template_input and not pcfg.template_block:
        pcfg = pcfg.with_template_input(G)
        added_templates = st is not None
    if data["dw"].shape[1] != pcfg.n_rows:
        raise ValueError(
            f"trajectories record {data['dw'].shape[1]} rows, the predictor predicts {pcfg.n_rows}"
        )
    templates = None
    if pcfg.template_block:
        templates = start_templates(G, data, pcfg.template_block)
        print(f"tracking templates of block {pcfg.template_block} for {n_traj} drags")
    pair_args = (substep, cfg.p_single, cfg.span, cfg.zero_arrived, templates)
    train_pairs = Pairs(data, train_ids, *pair_args)
    val_pairs = Pairs(data, val_ids, *pair_args) if n_val else None
    P, R = LatentPredictor(pcfg).to(device), LatentRegularizer(rcfg).to(device)
    opt = torch.optim.AdamW(
        [{"params": P.parameters(), "scale": 1.0}, {"params": R.parameters(), "scale": 0.3}],
        lr=lr,
        weight_decay=1e-4,
    )
    start = 0
    if st is not None and added_templates:
        missing, unexpected = P.load_state_dict(st["predictor"], strict=False)
        if unexpected or any(not k.startswith("point_tpl.") for k in missing):
            raise ValueError(f"{path}: cannot add the template input ({missing=}, {unexpected=})")
        R.load_state_dict(st["regularizer"])
        start = st["iter"]
        print(
            f"added the template input to the predictor of {path} (iteration {start}); "
            "optimiser state restarted"
        )
    elif st is not None:
        P.load_state_dict(st["predictor"])
        R.load_state_dict(st["regularizer"])
        opt.load_state_dict(st["opt"])
        start = st["iter"]
    else:
        R.load_state_dict(st1["regularizer"])
        P.w_avg.copy_(R.w_avg)
        P.w_std.copy_(R.w_std)
    alpha = rcfg.alpha
    print(
        f"predictor {count_parameters(P) / 1e6:.2f} M + regularizer {count_parameters(R) / 1e6:.2f} M "
        f"parameters, sub-step {substep:g} px, iterations {start}..{iters}"
    )
    val_batches = []
    if val_pairs is not None:
        vrng = np.random.default_rng([cfg.seed, 77])
        val_batches = [val_pairs.batch(batch, vrng, device) for _ in range(4)]

    loss_args = (
        cfg.feat_weight,
        cfg.feat_batch,
        cfg.motion_weight,
        cfg.local_weight,
        cfg.template_weight,
        cfg.track_weight,
    )
    term_weights = {
        "feature": cfg.feat_weight,
        "motion": cfg.motion_weight,
        "local": cfg.local_weight,
        "template": cfg.template_weight,
        "track": cfg.track_weight,
    }

    roll_substep = cfg.rollout_substep if cfg.rollout_substep is not None else 0.75 * substep

    def evaluate() -> dict:
        if not val_batches:
            return {}
        P.eval()
        R.eval()
        with torch.no_grad():
            ls = [stage2_losses(P, R, G, vb, alpha, *loss_args) for vb in val_batches]
        P.train()
        R.train()
        return {f"val_{k}": float(np.mean([d[k].item() for d in ls])) for k in ls[0]}

    def state(it: int) -> dict:
        return {
            "predictor": P.state_dict(),
            "regularizer": R.state_dict(),
            "opt": opt.state_dict(),
            "iter": it,
            "pcfg": pcfg.to_dict(),
            "rcfg": rcfg.to_dict(),
            "identity": identity.to_dict(),
            "substep": substep,
            "n_traj": n_traj,
            "args": cfg.to_dict(),
        }

    t0 = time.perf_counter()
    bar = bar_factory(iters, start, "stage 2")
    ema: dict[str, float] = {}
    it = start
    last_eval: dict = {}
    while it < iters:
        rng, gen = iteration_rngs(cfg.seed, 2, it)
        for g in opt.param_groups:
            g["lr"] = lr_at(it, iters, lr) * g["scale"]
        b = train_pairs.batch(batch, rng, device)
        losses = stage2_losses(P, R, G, b, alpha, *loss_args)
        total = losses["latent"] + sum(w * losses[k] for k, w in term_weights.items() if k in losses)
        if cfg.rollout_batch > 0:
            rb = rollout_batch(
                P, R, G, b, cfg.rollout_batch, cfg.rollout_steps, roll_substep, alpha, cfg.rollout_drift, rng
            )
            rl = stage2_losses(P, R, G, rb, alpha, 0.0, cfg.rollout_batch, *loss_args[2:])
            total = total + cfg.rollout_weight * sum(w * rl[k] for k, w in term_weights.items() if k in rl)
            losses.update({f"policy_{k}": v for k, v in rl.items()})
        if cfg.reg_weight > 0:
            dn, _ = denoise_loss(R, G, 64, gen)
            losses["denoise"] = dn
            total = total + cfg.reg_weight * dn
        opt.zero_grad(set_to_none=True)
        total.backward()
        torch.nn.utils.clip_grad_norm_(list(P.parameters()) + list(R.parameters()), 1.0)
        opt.step()
        it += 1
        for k, v in losses.items():
            ema[k] = v.item() if k not in ema else 0.98 * ema[k] + 0.02 * v.item()
        bar.update(1)
        bar.set_postfix({k[:4]: f"{v:.3f}" for k, v in ema.items()})
        if it % cfg.eval_every == 0 or it == iters:
            last_eval = evaluate()
            log(out, {"stage": 2, "iter": it, **{f"ema_{k}": v for k, v in ema.items()}, **last_eval})
        if it % cfg.ckpt_every == 0 or it == iters:
            save_ckpt(path, state(it))
        if (why := _stop_early(cfg, it, t0)) is not None:
            save_ckpt(path, state(it))
            print(why)
            break
    bar.close()
    return {"iter": it, **ema, **last_eval, **_finish(it, start, t0)}


# -- export ----------------------------------------------------------------------------------------


def parse_defaults(items: list[str]) -> dict:
    """``KEY=VALUE`` pairs -> recommended PredictOptions for the exported file (checked by
    PredictOptions; ValueError naming the bad item)."""
    from server.engine.predict_options import PredictOptions

    try:
        return PredictOptions.parse_changes(items)
    except ValueError as e:
        raise ValueError(f"--default {e}") from None


def export_predictor(G: Generator, run: Path, dest: Path, default: list[str] | None = None) -> Path:
    """Write the predictor file ``dest`` (fp16) from ``run/stage2.pt``, with the recommended
    inference options ``default`` (``KEY=VALUE``) on top of the trained sub-step."""
    run = Path(run)
    path = run / "stage2.pt"
    if not path.is_file():
        raise ValueError(f"{path} not found: train stage 2 first")
    defaults_given = list(default or [])
    extra = parse_defaults(defaults_given)
    st = load_ckpt(path)
    identity = GeneratorIdentity.of(G)
    check_identity(st, identity, path)
    P = LatentPredictor(PredictorConfig.from_dict(st["pcfg"]))
    R = LatentRegularizer(RegularizerConfig.from_dict(st["rcfg"]))
    P.load_state_dict(st["predictor"])
    R.load_state_dict(st["regularizer"])
    evals = []
    log_path = run / "log.jsonl"
    if log_path.is_file():
        evals = [json.loads(line) for line in log_path.read_text().splitlines() if line.strip()]
    last2 = [e for e in evals if e.get("stage") == 2]
    training = {
        "stage2_iters": st["iter"],
        "trajectories": st["n_traj"],
        "substep_px": st["substep"],
        "seed": st["args"].get("seed"),
        "feat_weight": st["args"].get("feat_weight"),
        "last_log": last2[-1] if last2 else None,
    }
    defaults = {"substep": st["substep"], **extra}
    training["inference_defaults"] = " ".join(defaults_given) if defaults_given else "as trained"
    bundle = PredictorBundle(P, R, identity, defaults=defaults, training=training)
    out = save_predictor(bundle, dest, half=True)
    print(f"wrote {out} ({out.stat().st_size / 1e6:.2f} MB)")
    return out
