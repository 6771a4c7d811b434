"""Shared fixtures: tiny generator configs that run in milliseconds on the CPU."""

from __future__ import annotations

import functools
import importlib.util
from pathlib import Path
from types import ModuleType

import pytest
import torch

from server.engine.generator import Generator, GeneratorConfig

torch.set_num_threads(max(1, min(2, torch.get_num_threads())))

ROOT = Path(__file__).resolve().parents[1]


@functools.cache
def shipped_predictor_fits() -> bool:
    """Whether server/assets holds a predictor trained for the shipped generator. A new default
    generator ships before its predictor is retrained; predict mode is then off with a reason."""
    from server.engine.checkpoint import default_checkpoint_path, load_generator
    from server.engine.predictor_io import PredictorError, default_predictor_path, load_predictor

    if default_checkpoint_path() is None or not default_predictor_path().is_file():
        return False
    try:
        load_predictor(G=load_generator())
    except PredictorError:
        return False
    return True


NO_SHIPPED_PREDICTOR = (
    "the shipped predictor is not trained for the shipped generator yet (predict mode is off for it; "
    "scripts/make_trajectories.py and scripts/train_predictor.py make one)"
)


def load_script(name: str) -> ModuleType:
    """Import ``scripts/<name>.py`` (the scripts folder is not a package)."""
    spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture
def one_torch_thread():
    """One intra-op thread: small networks on a small shared machine run fastest that way (more
    threads only wait for each other) and leave the other core to the rest."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def tiny_config(res: int = 32, arch: str = "skip", c_dim: int = 0) -> GeneratorConfig:
    return GeneratorConfig(
        z_dim=32,
        w_dim=32,
        c_dim=c_dim,
        img_resolution=res,
        architecture=arch,
        channel_base=256 * res // 16,
        channel_max=32,
        mapping_layers=2,
        name=f"tiny-{res}-{arch}",
    )


@pytest.fixture
def tiny_cfg() -> GeneratorConfig:
    return tiny_config()


@pytest.fixture
def tiny_G() -> Generator:
    torch.manual_seed(0)
    return Generator(tiny_config()).eval().requires_grad_(False)


def small_predictor(
    G: Generator, moving: bool = False, seed: int = 0, template_input: bool = False, **defaults
):
    """A tiny random predictor bundle that fits ``G``: the identity unless ``moving`` (non-zero
    output layers); ``template_input``: it reads the tracking templates (non-zero when ``moving``);
    ``defaults`` are added to its recommended options (sub-step 2 px)."""
    from server.engine.predictor import LatentPredictor, PredictorConfig, latent_stats
    from server.engine.predictor_io import GeneratorIdentity, PredictorBundle
    from server.engine.regularizer import LatentRegularizer, RegularizerConfig

    torch.manual_seed(seed)
    pcfg = PredictorConfig.for_generator(
        G, d_model=32, n_heads=2, enc_layers=1, dec_layers=1, grid=2, template_input=template_input
    )
    P = LatentPredictor(pcfg)
    R = LatentRegularizer(RegularizerConfig(w_dim=G.w_dim, n_rows=pcfg.n_rows, hidden=32, blocks=1))
    mean, std = latent_stats(G, n=256)
    for m in (P, R):
        m.w_avg.copy_(mean)
        m.w_std.copy_(std)
    if moving:
        torch.nn.init.normal_(P.head.weight, std=0.3)
        torch.nn.init.normal_(R.head.weight, std=0.05)
        if template_input:
            torch.nn.init.normal_(P.point_tpl[1].weight, std=0.3)
    return PredictorBundle(P, R, GeneratorIdentity.of(G), defaults={"substep": 2.0, **defaults}).eval()
