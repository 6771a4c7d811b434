"""scripts/replay_teacher.py: reading a drag's path again with point tracking at fewer steps."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from server.engine.checkpoint import default_checkpoint_path
from server.engine.generator import Generator
from tests.conftest import load_script

rt = load_script("replay_teacher")


def test_reading_steps_start_at_0_and_always_read_the_last() -> None:
    assert rt.reading_steps(10, "1") == list(range(10))
    assert rt.reading_steps(10, "4") == [0, 4, 8, 9]
    assert rt.reading_steps(9, "4") == [0, 4, 8]
    assert rt.reading_steps(101, "n12") == [*range(0, 101, 9), 100]  # 12 spaced + the last
    assert rt.reading_steps(100, "n12") == list(range(0, 100, 9))  # the last is the 12th
    assert rt.reading_steps(5, "n12") == [0, 1, 2, 3, 4]
    assert rt.reading_steps(1, "3") == [0]
    for bad in ("0", "n0", "-2"):
        with pytest.raises(ValueError, match="reading spec"):
            rt.reading_steps(10, bad)


@pytest.mark.usefixtures("one_torch_thread")
def test_reading_every_step_is_the_optimisers_own_drag(tiny_G: Generator) -> None:
    """Replayed at every step, the path ends as the optimiser did, with its tracked handles; read
    more sparsely it is read fewer times and still ends at the path's last latent."""
    with torch.no_grad():
        w = tiny_G.ws_from_seed(0)
    handles, targets = np.array([[10.0, 12.0], [20.0, 8.0]]), np.array([[13.0, 12.0], [20.0, 11.0]])
    s, r, latents = rt.optimiser_path(tiny_G, w, handles, targets, max_steps=12)
    assert len(latents) == r.step
    kw = dict(
        r2=s.radii[1],
        lost_ratio=s.options.lost_ratio,
        stop_distance=s.stop_distance,
        feature_blocks=s.feature_blocks,
        noise_mode=s.options.noise_mode,
    )
    h0, t = torch.as_tensor(handles, dtype=torch.float32), torch.as_tensor(targets, dtype=torch.float32)
    every = rt.replay(
        tiny_G, latents, rt.reading_steps(len(latents), "1"), h0, t, s._templates, s._spread, **kw
    )
    assert every.readings == r.step
    assert every.reason == ("end" if r.reason == "max_steps" else r.reason)
    assert torch.equal(every.handles, torch.tensor(r.handles, dtype=torch.float32))
    sparse = rt.replay(
        tiny_G, latents, rt.reading_steps(len(latents), "4"), h0, t, s._templates, s._spread, **kw
    )
    assert sparse.readings <= len(rt.reading_steps(len(latents), "4"))
    if r.step > 5:
        assert sparse.readings < every.readings


@pytest.mark.skipif(default_checkpoint_path() is None, reason="embedded generator not built")
def test_a_tiny_run_on_the_embedded_model_reports_replays_and_end_states(tmp_path: Path) -> None:
    out = tmp_path / "replay.json"
    assert (
        rt.main(
            ["--pairs", "1", "--max-steps", "6", "--readings", "1", "n2", "--no-progress", "--json", str(out)]
        )
        == 0
    )
    report = json.loads(out.read_text())
    (edit,) = report["edits"]
    assert edit["replay"]["1"]["readings"] == edit["optimize"]["steps"]
    assert edit["replay"]["n2"]["readings"] <= 3
    assert (edit["replay"]["1"]["reason"] == "reached") == (edit["optimize"]["reason"] == "reached")
    for m in ("optimize", "predict"):
        assert len(edit[m]["match"]) == len(edit[m]["tracked_px"]) == len(edit[m]["detected_px"]) == 5
    assert set(report["summary"]["end_states"]["predict"]["match"]) == {
        "left_pupil",
        "right_pupil",
        "nose_tip",
        "mouth_left",
        "mouth_right",
    }
