"""Small model files for library tests: tiny generators, a predictor and an encoder made for them."""

from __future__ import annotations

from pathlib import Path

import torch

from server.engine.checkpoint import save_generator
from server.engine.encoder import Encoder, EncoderConfig, save_encoder
from server.engine.generator import Generator
from server.engine.predictor_io import save_predictor
from tests.conftest import small_predictor, tiny_config
from tests.engine.test_convert import random_generator, ros_channels, ros_state_dict, snapshot, write_pickle


def tiny_generator(seed: int = 0, res: int = 16) -> Generator:
    return random_generator(tiny_config(res), seed=seed)


def write_generator(path: Path, seed: int = 0, res: int = 16) -> tuple[Path, Generator]:
    G = tiny_generator(seed, res)
    return save_generator(G, path), G


def write_predictor(path: Path, G: Generator) -> Path:
    return save_predictor(small_predictor(G), path)


def write_encoder(path: Path, G: Generator) -> Path:
    torch.manual_seed(0)
    enc = Encoder(EncoderConfig.for_generator(G, channels=(8, 16), feat_dim=16, row_dim=16)).eval()
    return save_encoder(path, enc, G)


def write_nvidia_pickle(path: Path, G: Generator, marker: Path) -> Path:
    """A fake NVIDIA snapshot whose stored module source would leave ``marker`` if executed."""
    return write_pickle(path, snapshot(G, marker))


def write_rosinality(path: Path, size: int = 16, style_dim: int = 16) -> Path:
    sd = ros_state_dict(size, style_dim, 2, ros_channels(size, cap=16))
    torch.save({"g_ema": sd, "latent_avg": torch.zeros(style_dim)}, path)
    return path
