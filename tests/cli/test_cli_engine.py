"""`livedrag sample` and `livedrag drag` end to end on a tiny checkpoint, and their errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors import safe_open
from safetensors.torch import load_file

from server.cli import main
from server.engine.checkpoint import save_generator
from server.engine.generator import Generator
from tests.conftest import tiny_config


@pytest.fixture
def ckpt(tmp_path: Path) -> Path:
    torch.manual_seed(0)
    return save_generator(Generator(tiny_config()).eval(), tmp_path / "tiny.safetensors")


@pytest.fixture
def no_default_model(monkeypatch: pytest.MonkeyPatch) -> None:
    """Pretend the embedded model is absent (it is not built yet, and may be later)."""
    import server.engine.checkpoint as checkpoint

    monkeypatch.setattr(checkpoint, "default_checkpoint_path", lambda: None)


def test_sample_writes_a_grid(tmp_path: Path, ckpt: Path) -> None:
    out = tmp_path / "grid.png"
    rc = main(
        [
            "sample",
            "--seeds",
            "0-4",
            "--cols",
            "3",
            "--out",
            str(out),
            "--checkpoint",
            str(ckpt),
            "--device",
            "cpu",
        ]
    )
    assert rc == 0
    with Image.open(out) as im:
        grid = np.asarray(im)
    assert grid.shape == (64, 96, 3)  # 2 rows x 3 columns of 32 px, the last cell empty
    assert grid[32:, 64:].max() == 0 and grid[:32, :32].std() > 0


def test_drag_writes_every_output(tmp_path: Path, ckpt: Path, capsys: pytest.CaptureFixture) -> None:
    args = [
        "drag", "--seed", "0", "--point", "10,12:16,12", "--point", "20,20:20,14", "--steps", "6",
        "--checkpoint", str(ckpt), "--device", "cpu", "--overlay",
        "--out", str(tmp_path / "r.png"), "--gif", str(tmp_path / "t.gif"),
        "--json", str(tmp_path / "r.json"), "--latent", str(tmp_path / "w.safetensors"),
    ]  # fmt: skip
    assert main(args) == 0
    assert "after 6 steps" in capsys.readouterr().out
    with Image.open(tmp_path / "r.png") as im:
        assert im.size == (32, 32)
    with Image.open(tmp_path / "t.gif") as gif:
        assert gif.format == "GIF" and gif.size == (256, 256) and gif.n_frames >= 2
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["steps"] == 6 and report["reason"] == "max_steps" and report["reached"] is False
    assert report["targets"] == [[16.0, 12.0], [20.0, 14.0]] and len(report["handles"]) == 2
    assert report["handles_start"] == [[10.0, 12.0], [20.0, 20.0]]
    assert report["seconds_per_step_median"] > 0 and report["seconds_total"] > 0
    assert report["options"]["lr"] == 2e-3 and report["method"] == "optimize"
    w = load_file(str(tmp_path / "w.safetensors"))["w_plus"]
    assert w.shape == (1, 8, 32)
    with safe_open(str(tmp_path / "w.safetensors"), framework="pt") as f:
        assert f.metadata()["format"] == "livedrag.latent"


def test_drag_reaches_a_target_it_starts_on(tmp_path: Path, ckpt: Path) -> None:
    out, js = tmp_path / "r.png", tmp_path / "r.json"
    assert (
        main(
            [
                "drag",
                "--seed",
                "1",
                "--point",
                "5,5:5,6",
                "--checkpoint",
                str(ckpt),
                "--out",
                str(out),
                "--json",
                str(js),
            ]
        )
        == 0
    )
    report = json.loads(js.read_text())
    assert report["reached"] is True and report["steps"] == 1


def test_drag_with_a_mask(tmp_path: Path, ckpt: Path) -> None:
    mask = np.zeros((32, 32), np.uint8)
    mask[:, :20] = 255
    Image.fromarray(mask).save(tmp_path / "m.png")
    out = tmp_path / "r.png"
    base = [
        "drag",
        "--seed",
        "0",
        "--point",
        "10,12:16,12",
        "--steps",
        "3",
        "--checkpoint",
        str(ckpt),
        "--out",
        str(out),
    ]
    assert main([*base, "--mask", str(tmp_path / "m.png")]) == 0
    Image.fromarray(mask[:16, :16]).save(tmp_path / "small.png")
    assert main([*base, "--mask", str(tmp_path / "small.png")]) == 2


def test_missing_default_model_is_a_clear_error(
    tmp_path: Path, no_default_model: None, capsys: pytest.CaptureFixture
) -> None:
    assert main(["sample", "--seeds", "0-3", "--out", str(tmp_path / "g.png")]) == 2
    assert "no embedded default model" in capsys.readouterr().err
    assert main(["drag", "--seed", "0", "--point", "1,1:2,2", "--out", str(tmp_path / "r.png")]) == 2
    assert "no embedded default model" in capsys.readouterr().err
    assert not (tmp_path / "g.png").exists() and not (tmp_path / "r.png").exists()


def test_predict_method_refuses_a_predictor_of_another_generator(
    tmp_path: Path, ckpt: Path, capsys: pytest.CaptureFixture
) -> None:
    """The shipped predictor belongs to the embedded model: another checkpoint gets a clear error."""
    args = ["drag", "--seed", "0", "--point", "1,1:2,2", "--method", "predict", "--checkpoint", str(ckpt)]
    assert main([*args, "--out", str(tmp_path / "r.png")]) == 2
    err = capsys.readouterr().err
    assert "was trained for generator" in err or "predictor not available yet" in err
    assert not (tmp_path / "r.png").exists()


def test_predict_method_says_clearly_when_the_default_model_has_no_predictor(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    """Without a predictor for the embedded model, --method predict exits 2 with one clear line."""
    from tests.conftest import shipped_predictor_fits

    if shipped_predictor_fits():
        pytest.skip("the shipped predictor fits the shipped generator (the other test covers it)")
    args = ["drag", "--seed", "3", "--point", "24,30:28,30", "--method", "predict"]
    assert main([*args, "--out", str(tmp_path / "r.png")]) == 2
    err = capsys.readouterr().err
    assert "train" in err and "Traceback" not in err
    assert not (tmp_path / "r.png").exists()


def test_predict_method_with_the_default_model(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """`livedrag drag --method predict` runs the shipped predictor on the embedded model."""
    from tests.conftest import NO_SHIPPED_PREDICTOR, shipped_predictor_fits

    if not shipped_predictor_fits():
        pytest.skip(NO_SHIPPED_PREDICTOR)
    out = tmp_path / "r.png"
    args = ["drag", "--seed", "3", "--point", "24,30:28,30", "--method", "predict", "--out", str(out)]
    assert main([*args, "--json", str(tmp_path / "r.json")]) == 0
    with Image.open(out) as im:
        assert im.size[0] >= 64
    report = json.loads((tmp_path / "r.json").read_text())
    # the room's rules: no budget of the file's, the drag ends when the handle arrives (or stalls,
    # or is lost) or at the 200-step cap
    assert report["method"] == "predict" and report["options"]["budget_rule"] == "fixed"
    assert report["options"]["max_steps"] == 200 and 1 <= report["steps"] <= 200
    assert report["reason"] in ("reached", "stalled", "lost", "max_steps") and len(report["match"]) == 1
    # --steps N caps the drag at N steps
    assert main([*args, "--steps", "3", "--stop-distance", "0", "--json", str(tmp_path / "r3.json")]) == 0
    capped = json.loads((tmp_path / "r3.json").read_text())
    assert (capped["steps"], capped["reason"], capped["lost"]) == (3, "max_steps", [])


@pytest.mark.parametrize(
    "extra,match",
    [
        (["--point", "40,1:2,2"], "outside the 32x32 image"),
        (["--point", "1,1:2,2", "--steps", "0"], "--steps"),
        (["--point", "1,1:2,2", "--gif", "t.mp4"], "--gif"),
    ],
)
def test_bad_drag_arguments(tmp_path: Path, ckpt: Path, capsys: pytest.CaptureFixture, extra, match) -> None:
    args = ["drag", "--seed", "0", "--checkpoint", str(ckpt), "--out", str(tmp_path / "r.png"), *extra]
    assert main(args) == 2
    assert match in capsys.readouterr().err


def test_bad_point_syntax_is_a_usage_error(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as e:
        main(["drag", "--seed", "0", "--point", "10,12-16,12", "--out", str(tmp_path / "r.png")])
    assert e.value.code == 2
    assert "X,Y:TX,TY" in capsys.readouterr().err


def test_exit_code_in_a_real_process(tmp_path: Path) -> None:
    """The installed entry point exits 2 with one clear line for a missing checkpoint."""
    cmd = [sys.executable, "-m", "server.cli", "sample", "--seeds", "0", "--out", str(tmp_path / "g.png"),
           "--checkpoint", str(tmp_path / "missing.safetensors")]  # fmt: skip
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert p.returncode == 2
    assert "checkpoint not found" in p.stderr and "Traceback" not in p.stderr
