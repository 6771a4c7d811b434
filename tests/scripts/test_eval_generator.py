"""scripts/eval_generator.py on a tiny random generator: pictures, the FID-style score, landmark
sanity and spread, the snapshot curves and the demo drags all come out."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from server.engine.checkpoint import save_generator
from server.engine.generator import Generator, GeneratorConfig
from tests.conftest import load_script


def test_report_and_pictures(tmp_path: Path) -> None:
    ev = load_script("eval_generator")
    torch.manual_seed(0)
    cfg = GeneratorConfig(
        img_resolution=64, channel_base=256, channel_max=32, z_dim=32, w_dim=32, mapping_layers=2
    )
    G = Generator(cfg).eval()
    ckpt = save_generator(G, tmp_path / "g.safetensors")
    (tmp_path / "run" / "snapshots").mkdir(parents=True)
    for kimg in (10, 20):
        save_generator(G, tmp_path / "run" / "snapshots" / f"g_ema_{kimg:06d}.safetensors")
    out, report = tmp_path / "img", tmp_path / "eval.json"
    args = ["--checkpoint", str(ckpt), "--run", str(tmp_path / "run"), "--n", "16", "--drag-steps", "2"]
    assert ev.main([*args, "--out-dir", str(out), "--json", str(report), "--threads", "1"]) == 0
    r = json.loads(report.read_text())
    spread = r["landmark_spread_px"]
    assert set(spread) == {"generated_psi1", "generated_psi0.7", "rendered"}
    assert all(v >= 0 for v in spread.values()) and spread["rendered"] > 0
    assert [c["kimg"] for c in r["curve"]] == [10, 20] and all("landmark_spread_px" in c for c in r["curve"])
    assert len(r["drags"]) == 4
    for name in ("generator_grid", "generator_truncation", "generator_fid_curve", "generator_spread_curve"):
        assert (out / f"{name}.png").is_file()
