"""Shared fixtures: tiny generator configs that run in milliseconds on the CPU."""

from __future__ import annotations

import pytest
import torch

from server.engine.generator import Generator, GeneratorConfig

torch.set_num_threads(max(1, min(2, torch.get_num_threads())))


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
