"""scripts/demo_predict.py: side-by-side pictures of the optimiser and the shipped predictor."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from server.engine.checkpoint import load_generator
from server.engine.predict_options import PredictOptions
from server.engine.predictor_io import load_predictor
from tests.conftest import NO_SHIPPED_PREDICTOR, load_script, shipped_predictor_fits

pytestmark = pytest.mark.skipif(not shipped_predictor_fits(), reason=NO_SHIPPED_PREDICTOR)


def test_pictures_and_report(tmp_path: Path) -> None:
    demo = load_script("demo_predict")
    report = tmp_path / "demo.json"
    args = [
        "--out-dir",
        str(tmp_path),
        "--json",
        str(report),
        "--max-steps",
        "3",
        "--gif",
        "smile",
        "--frame-ms",
        "5",
    ]
    assert demo.main(args) == 0
    demos = json.loads(report.read_text())["demos"]
    assert [d["name"] for d in demos] == ["smile", "open_mouth", "turn_head", "raise_brows"]
    cap = PredictOptions.recommended(load_predictor()).max_steps  # a predict drag runs to its end
    res = load_generator().img_resolution
    for d in demos:
        assert 1 <= d["DragGAN"]["steps"] <= 3 and 1 <= d["predictor"]["steps"] <= cap
        assert d["predictor"]["cpu_seconds"] > 0 and len(d["start_distance_px"]) == len(
            d["predictor"]["detected_distance_px"]
        )
        with Image.open(tmp_path / f"predict_vs_optimize_{d['name']}.png") as im:
            assert im.size == (3 * res * demo.SCALE, res * demo.SCALE)  # start | DragGAN | predictor
    with Image.open(tmp_path / "predict_vs_optimize_smile.gif") as gif:
        assert gif.n_frames >= 3 and gif.size == (2 * res * demo.SCALE, res * demo.SCALE)
    assert not (tmp_path / "predict_vs_optimize_turn_head.gif").exists()


def test_unknown_demo_is_refused(tmp_path: Path) -> None:
    with pytest.raises(SystemExit):
        load_script("demo_predict").main(["--out-dir", str(tmp_path), "--gif", "wink"])
