"""scripts/bench_engine.py measures every timing it reports, the predictor tick included."""

from __future__ import annotations

from tests.conftest import load_script


def test_one_configuration_reports_forward_step_batch_and_predict(one_torch_thread):
    bench = load_script("bench_engine")
    r = bench.run_child("tiny-32", "cpu", threads=1, warmup=1, reps=3, batch=True)
    for key in ("forward_ms", "step_ms", "batch4_ms", "predict_ms", "predict_cpu_ms"):
        assert r[key]["n"] == 3 and r[key]["median"] > 0, key
    assert r["resolution"] == 32 and r["jpeg_ms"] > 0
    line = bench.table([r]).splitlines()[-1]
    assert line.startswith("tiny-32") and f"{r['predict_ms']['median']:.1f}" in line
