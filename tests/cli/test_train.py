"""`livedrag train`: a tiny generator to a library model, resuming, and one-line errors."""

from __future__ import annotations

from pathlib import Path

import torch

from server.cli import main as cli_main
from server.engine.checkpoint import save_generator
from server.engine.generator import Generator
from tests.conftest import tiny_config

TINY = ["--preset", "tiny", "--threads", "1", "--no-progress"]


def tiny_checkpoint(tmp_path: Path) -> Path:
    torch.manual_seed(0)
    return save_generator(Generator(tiny_config()).eval().requires_grad_(False), tmp_path / "g.safetensors")


def test_train_makes_a_model_that_models_check_accepts_and_resumes(
    tmp_path: Path, capsys, one_torch_thread
) -> None:
    """`train --preset tiny` runs the five stages, saying which one runs; `models check` accepts the
    folder with optimize, predict and encoder; the same command again runs no stage."""
    ckpt, lib = tiny_checkpoint(tmp_path), tmp_path / "lib"
    assert cli_main(["train", "--checkpoint", str(ckpt), "--out", str(lib / "tiny"), *TINY]) == 0
    err = capsys.readouterr().err
    for i, stage in enumerate(["trajectories", "stage1", "stage2", "encoder", "evaluate"], 1):
        assert f"[{i}/5] {stage}: running" in err and f"[{i}/5] {stage}: done in" in err
    assert "model tiny: ok; modes optimize, predict, encoder" in err
    assert cli_main(["models", "check", "--models", str(lib), "tiny"]) == 0
    assert "tiny: ok (optimize, predict, encoder)" in capsys.readouterr().out

    assert cli_main(["train", "--checkpoint", str(ckpt), "--out", str(lib / "tiny"), *TINY]) == 0
    err = capsys.readouterr().err
    assert "running" not in err and err.count(": skipped (") == 5


def test_a_missing_or_unreadable_checkpoint_is_one_line_and_exit_2(tmp_path: Path, capsys) -> None:
    """A checkpoint path that does not exist, or a file that is no generator, ends with one line on
    stderr naming the file, exit code 2, and no model folder."""
    missing = tmp_path / "nope.safetensors"
    assert cli_main(["train", "--checkpoint", str(missing), "--out", str(tmp_path / "m"), *TINY]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"livedrag train: error: checkpoint not found: {missing}"]
    junk = tmp_path / "junk.safetensors"
    junk.write_text("not a checkpoint")
    assert cli_main(["train", "--checkpoint", str(junk), "--out", str(tmp_path / "m"), *TINY]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("livedrag train: error: ") and str(junk) in err[0]
    assert not (tmp_path / "m").exists()
