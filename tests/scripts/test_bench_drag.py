"""scripts/bench_drag.py on the embedded model: a tiny run, its report, and --merge."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from server.engine.checkpoint import default_checkpoint_path
from server.engine.stop_rules import default_stop_distance
from tests.conftest import load_script

pytestmark = pytest.mark.skipif(default_checkpoint_path() is None, reason="embedded generator not built")


def test_report_rows_columns_and_merge(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """Two pairs with a short budget give one row per (points, method) with every column, and a
    second run merges those rows instead of repeating the optimiser; another seed is refused."""
    bench = load_script("bench_drag")
    first = tmp_path / "a.json"
    common = ["--pairs", "2", "--points", "1", "5", "--threads", "1", "--no-progress", "--protocol", "shift"]
    methods = ["--methods", "none", "optimize"]
    assert (
        bench.main([*common, *methods, "--max-steps", "3", "--lost-ratio", "none", "--json", str(first)]) == 0
    )
    report = json.loads(first.read_text())
    assert report["protocol"] == "synthfaces-landmarks-v1-shift" and report["pairs"] == 2
    assert [(r["points"], r["method"]) for r in report["rows"]] == [
        ("1", "none"),
        ("1", "optimize"),
        ("5", "none"),
        ("5", "optimize"),
    ]
    for r in report["rows"]:
        assert {"md", "md_ratio", "fid_detector", "seconds_median", "seconds_p90", "steps_median"} <= set(r)
        assert len(r["md_per_pair"]) == 2
        assert {"cpu_seconds_median", "cpu_seconds_mean", "cpu_seconds_p90"} <= set(r)
        assert len(r["cpu_seconds_per_pair"]) == 2 and sum(r["end_reasons"].values()) == pytest.approx(1.0)
        assert r["cpu_seconds_mean"] == pytest.approx(sum(r["cpu_seconds_per_pair"]) / 2, abs=1e-4)
        # landed: the detector's view of arrival, every landmark within twice the stop distance
        assert r["landed_px"] == pytest.approx(2 * default_stop_distance(report["resolution"], r["n_points"]))
        worst = r["detected_max_per_pair"]
        assert len(worst) == 2 and all(w >= m - 1e-3 for w, m in zip(worst, r["md_per_pair"], strict=True))
        assert r["landed"] == pytest.approx(np.mean([w <= r["landed_px"] + 1e-3 for w in worst]))
    none, opt = report["rows"][0], report["rows"][1]
    assert none["md_ratio"] == pytest.approx(1.0) and none["steps_median"] == 0
    assert 1 <= opt["steps_median"] <= 3 and opt["seconds_median"] > 0
    assert "optimize" in capsys.readouterr().out

    # a report written before the p90 CPU time, the end reasons and `landed` were recorded still merges
    old = {
        **report,
        "rows": [
            {k: v for k, v in r.items() if k not in ("cpu_seconds_p90", "end_reasons", "landed")}
            for r in report["rows"]
        ],
    }
    older = tmp_path / "old.json"
    older.write_text(json.dumps(old))
    assert bench.main([*common, *methods, "--merge", str(older), "--bootstrap", "0"]) == 0

    second = tmp_path / "b.json"
    assert bench.main([*common, *methods, "--merge", str(first), "--json", str(second)]) == 0
    merged = json.loads(second.read_text())
    assert [r["md_per_pair"] for r in merged["rows"]] == [r["md_per_pair"] for r in report["rows"]]
    # the edited images' features travel with the report, so merged rows keep their intervals
    for a, b in zip(report["rows"], merged["rows"], strict=True):
        assert a.get("fid_ci95") == b.get("fid_ci95")
        assert (a["method"] == "none") == ("fid_ci95" not in a)
    with np.load(bench.features_path(second), allow_pickle=False) as z:
        assert sorted(z.files) == ["optimize@1", "optimize@5"] and z["optimize@1"].shape[0] == 2

    with pytest.raises(SystemExit, match="measured other edits"):
        bench.main([*common, "--seed", "5", "--methods", "none", "--merge", str(first)])


def test_targets_judge_speed_on_median_cpu_time() -> None:
    """The speed goal uses median CPU time where measured (a busy machine inflates wall time),
    the mean is reported beside it; MD and fidelity limits are 1.25x and 1.10x the optimiser's."""
    bench = load_script("bench_drag")

    def row(method: str, wall: float, cpu: float, cpu_mean: float, md: float, fid: float) -> dict:
        return {
            "points": "1",
            "method": method,
            "seconds_median": wall,
            "cpu_seconds_median": cpu,
            "cpu_seconds_mean": cpu_mean,
            "md": md,
            "fid_detector": fid,
        }

    opt = row("optimize", 3.0, 1.0, 2.0, 1.0, 1.0)
    (t,) = bench.compare([opt, row("predict", 0.1, 0.05, 0.1, 1.2, 1.05)], ["1"])
    assert t["speedup"] == pytest.approx(30) and t["speedup_cpu_time"] == pytest.approx(20)
    assert t["speedup_cpu_time_mean"] == pytest.approx(20) and t["met"]
    (t,) = bench.compare([opt, row("predict", 0.1, 0.2, 0.1, 1.0, 1.0)], ["1"])  # 15x wall, 5x CPU
    assert not t["met"]
    assert not bench.compare([opt, row("predict", 0.1, 0.05, 0.1, 1.3, 1.0)], ["1"])[0]["met"]
    assert not bench.compare([opt, row("predict", 0.1, 0.05, 0.1, 1.0, 1.2)], ["1"])[0]["met"]
    assert bench.compare([opt], ["1"]) == []


def test_fidelity_statistics_pair_the_methods_draw_by_draw() -> None:
    """The predictor / optimiser interval comes from the same draws of pairs for both: edits whose
    features differ by a constant keep their exact ratio on every draw; rows without features
    (an older report) get no interval."""
    bench = load_script("bench_drag")
    rng = np.random.default_rng(0)
    feats_a = rng.normal(size=(50, 4))
    feats = {"optimize@1": feats_a + 0.5, "predict@1": feats_a + 0.5 * 1.2**0.5}
    fid = {"none": 0.0, "optimize": 1.0, "predict": 1.2}  # 4 dims x 0.5^2 (x 1.2)
    rows = [{"points": p, "method": m, "fid_detector": fid[m]} for p in ("1", "5") for m in fid]
    targets = [{"points": "1", "fid_vs_optimize": 1.2}, {"points": "5", "fid_vs_optimize": 1.2}]
    bench.fidelity_statistics(rows, targets, feats, feats_a, n_boot=50, seed=0)
    assert targets[0]["fid_vs_optimize_ci95"] == pytest.approx([1.2, 1.2])
    assert targets[0]["fid_ratio_draws_above_goal"] == 1.0
    assert "fid_vs_optimize_ci95" not in targets[1]
    assert [("fid_ci95" in r) for r in rows] == [False, True, True, False, False, False]
    assert rows[1]["fid_ci95"] == pytest.approx([1.0, 1.0]) and rows[2]["fid_ci95"] == pytest.approx(
        [1.2, 1.2]
    )
    assert rows[1]["fid_bootstrap_inflation"] == pytest.approx(1.0)
    # a constant shift has no finite-sample part: the extrapolated scores are the scores
    assert rows[1]["fid_inf"] == pytest.approx(1.0) and targets[0]["fid_inf_vs_optimize"] == pytest.approx(
        1.2
    )


def test_predict_options_are_parsed_and_checked() -> None:
    bench = load_script("bench_drag")
    assert bench.parse_predict_options(["budget_rule=fit", "substep=1.5", "single_shot=true"]) == {
        "budget_rule": "fit",
        "substep": 1.5,
        "single_shot": True,
    }
    bad = [
        ("nope=1", "KEY=VALUE"),
        ("substep", "KEY=VALUE"),
        ("substep=x", "substep"),
        ("max_steps=0", ">= 1"),
    ]
    for item, msg in bad + [("budget_rule=grow", "budget_rule")]:
        with pytest.raises(SystemExit, match=msg):
            bench.parse_predict_options([item])


def test_long_protocol_moves_landmark_groups_far() -> None:
    """Protocol long: each group moves by 8-25% of the image in its own direction (a smile: the
    corners out and up; the chin down; the brows up; the nose tip sideways; the head anywhere), the
    same for a seed whatever other groups run."""
    bench = load_script("bench_drag")
    from server.synthfaces import LANDMARK_NAMES

    rng = np.random.default_rng(0)
    lm = rng.uniform(20, 44, size=(50, len(LANDMARK_NAMES), 2))
    res = 64
    for group in bench.LONG_GROUPS:
        idx = bench.group_indices(group)
        moved = bench.long_moves(group, lm, res, seed=3)
        assert moved.shape == (50, len(idx), 2)
        d = moved - lm[:, idx]
        length = np.linalg.norm(d, axis=-1)
        assert (length >= 0.08 * res - 1e-9).all() and (length <= 0.25 * res + 1e-9).all()
        assert np.allclose(length, length[:, :1])  # one length per edit
        assert np.array_equal(moved, bench.long_moves(group, lm, res, seed=3))
        if group == "mouth":
            assert (d[:, 0, 0] < 0).all() and (d[:, 1, 0] > 0).all() and (d[..., 1] < 0).all()
        elif group == "chin":
            assert (d[..., 1] > np.abs(d[..., 0])).all()
        elif group == "brows":
            assert (-d[..., 1] > np.abs(d[..., 0])).all() and len(idx) == 6
        elif group == "nose":
            assert (
                (np.abs(d[..., 0]) > np.abs(d[..., 1])).all()
                and (d[:, 0, 0] < 0).any()
                and (d[:, 0, 0] > 0).any()
            )
        else:
            assert len(idx) == len(LANDMARK_NAMES) and np.allclose(d, d[:, :1])
    assert not np.array_equal(bench.long_moves("mouth", lm, res, 3), bench.long_moves("mouth", lm, res, 4))


def test_long_protocol_report(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """--protocol long reports per group: reached share, end reasons, MD and MD / no-edit, fidelity,
    median and p90 CPU seconds, median steps; the point sets of the other protocols are refused."""
    bench = load_script("bench_drag")
    out = tmp_path / "long.json"
    args = [
        "--protocol",
        "long",
        "--pairs",
        "2",
        "--points",
        "nose",
        "mouth",
        "--threads",
        "1",
        "--no-progress",
    ]
    assert bench.main([*args, "--methods", "none", "optimize", "--max-steps", "3", "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["protocol"] == "synthfaces-landmarks-v1-long"
    assert [(r["points"], r["method"]) for r in report["rows"]] == [
        ("nose", "none"),
        ("nose", "optimize"),
        ("mouth", "none"),
        ("mouth", "optimize"),
    ]
    for r in report["rows"]:
        if r["method"] == "optimize":
            assert r["md_no_edit"] >= 0.08 * report["resolution"] - 1.5  # far drags (detector noise aside)
            assert {"reached", "cpu_seconds_p90", "steps_median", "fid_detector"} <= set(r)
            assert set(r["end_reasons"]) <= {"reached", "max_steps", "lost"} and r["steps_median"] <= 3
    assert "edits per group" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        bench.main(["--protocol", "long", "--points", "1", "--pairs", "1"])
    with pytest.raises(SystemExit):
        bench.main(["--protocol", "pairs", "--points", "mouth", "--pairs", "1"])
