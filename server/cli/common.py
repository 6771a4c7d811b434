"""Helpers shared by subcommands: checkpoint/device options, seed ranges, progress bars."""

from __future__ import annotations

import argparse
import sys

import torch


def add_model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--checkpoint", default=None, help="generator .safetensors (default: embedded SynthFaces model)"
    )
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda if available)")


def pick_device(name: str | None) -> torch.device:
    if name:
        return torch.device(name)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def load_model(args: argparse.Namespace):
    from server.engine.checkpoint import load_generator

    return load_generator(args.checkpoint, device=pick_device(args.device))


def parse_seeds(spec: str) -> list[int]:
    """'0-3,7,10-11' -> [0, 1, 2, 3, 7, 10, 11]."""
    seeds: list[int] = []
    for part in spec.split(","):
        part = part.strip()
        if not part:
            continue
        if "-" in part:
            a, b = part.split("-", 1)
            lo, hi = int(a), int(b)
            if hi < lo:
                raise ValueError(f"bad seed range {part!r}")
            seeds.extend(range(lo, hi + 1))
        else:
            seeds.append(int(part))
    if not seeds:
        raise ValueError(f"no seeds in {spec!r}")
    return seeds


def progress(iterable=None, total=None, desc: str = "", disable: bool | None = None):
    """tqdm on a terminal, silent otherwise (unless forced)."""
    from tqdm import tqdm

    if disable is None:
        disable = not sys.stderr.isatty()
    return tqdm(iterable, total=total, desc=desc, disable=disable, dynamic_ncols=True)
