"""The report of `livedrag train`: ``OUT/report.json`` and a short ``OUT/report.md``.

Per stage: whether it is done, the wall time and the stage's own measured time summed over every
run that worked on it, its work (teacher steps, iterations, edits) and the throughput (work /
measured time). Then the evaluation (``server/training/evaluate.py``), the library check of the
folder, and the history of runs (which stages each run ran and which it skipped).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .plan import STAGES, Plan

FORMAT = "livedrag.train-report"
FORMAT_VERSION = "1"
EXTRA_KEYS = ("drags", "batch", "held_out_psnr_db")


def stage_summary(records: list[dict]) -> dict:
    """One stage's runs (``Pipeline.run_stage`` records) summed."""
    if not records:
        return {"status": "not run"}
    seconds = sum(r["seconds"] for r in records)
    units = sum(r["units"] for r in records)
    out = {
        "status": "done",
        "runs": len(records),
        "wall_seconds": sum(r["wall_seconds"] for r in records),
        "seconds": seconds,
        "units": units,
        "unit": records[-1]["unit"],
        "per_s": units / seconds if units and seconds > 0 else None,
    }
    for k in EXTRA_KEYS:
        if k in records[-1]:
            out[k] = sum(r[k] for r in records) if k == "drags" else records[-1][k]
    return out


def write_report(pipe: Any, plan: Plan, stages: dict, run: dict, check: Any) -> dict:
    """Write OUT/report.json and OUT/report.md for ``pipe`` (a ``Pipeline``) and return the JSON."""
    out: Path = pipe.out
    old = out / "report.json"
    history = json.loads(old.read_text()).get("history", []) if old.is_file() else []
    plan_file = pipe.work / "plan.json"
    budget = json.loads(plan_file.read_text()).get("budget") if plan_file.is_file() else None
    eval_file = pipe.work / "eval.json"
    evaluation = json.loads(eval_file.read_text()) if eval_file.is_file() else None
    report = {
        "format": FORMAT,
        "version": FORMAT_VERSION,
        "model": pipe.name,
        "checkpoint": str(pipe.req.checkpoint),
        "resolution": pipe.G.img_resolution,
        "generator": pipe.identity.to_dict(),
        "machine": pipe.machine(),
        "plan": plan.sizes(),
        "budget": budget,
        "stages": {s: stage_summary(stages.get(s, [])) for s in STAGES},
        "last_run": run,
        "history": [*history, run],
        "evaluation": evaluation,
        "check": {"ok": check.ok, "modes": list(check.modes), "errors": list(check.errors)},
    }
    tmp = old.with_name("report.json.tmp")
    tmp.write_text(json.dumps(report, indent=2) + "\n")
    tmp.replace(old)
    md = out / "report.md"
    md.with_name("report.md.tmp").write_text(markdown(report))
    md.with_name("report.md.tmp").replace(md)
    return report


def _secs(s: float) -> str:
    return f"{s:.1f} s" if s < 120 else f"{s / 60:.1f} min"


def markdown(r: dict) -> str:
    m = r["machine"]
    lines = [
        f"# livedrag train: {r['model']}",
        "",
        f"Generator `{r['checkpoint']}` ({r['resolution']} px) on {m['device']} ({m['device_name']}, "
        f"CPU threads {m['threads']}). Plan: " + ", ".join(f"{k} {v}" for k, v in r["plan"].items()) + ".",
    ]
    if r["budget"]:
        split = ", ".join(f"{k} {100 * v:.0f}%" for k, v in r["budget"]["split"].items())
        lines.append(f"Budget {r['budget']['hours']:g} h, split: {split}.")
    expected = (r["budget"] or {}).get("expected_seconds")
    lines += ["", "| stage | status | time | throughput |", "| --- | --- | --- | --- |"]
    for name, s in r["stages"].items():
        if s["status"] != "done":
            lines.append(f"| {name} | {s['status']} | | |")
            continue
        rate = f"{s['per_s']:.2f} {s['unit']}/s" if s["per_s"] else "-"
        rate += f", batch {s['batch']}" if s.get("batch") else ""
        took = _secs(s["wall_seconds"])
        if expected:
            took += f" (planned {_secs(expected[name])})"
        lines.append(f"| {name} | done | {took} | {rate} ({s['units']} {s['unit']}) |")
    ev = r["evaluation"]
    if ev:
        lines += [
            "",
            "Drags (landmark-free shift and long protocols; MD in px, re-detected and by the method's "
            "own tracking):",
            "",
            "| protocol | points | method | MD | MD tracked | no edit | reached | steps | CPU s "
            "| change outside |",
            "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
        ]
        for row in ev["drags"]["rows"]:
            lines.append(
                f"| {row['protocol']} | {row['points']} | {row['method']} | {row['md_redetected']:.2f} | "
                f"{row['md_tracked']:.2f} | {row['md_no_edit']:.2f} | {100 * row['reached']:.0f}% | "
                f"{row['steps_median']:.0f} | {row['cpu_seconds_median']:.3f} | {row['outside_change']:.2f} |"
            )
        for c in ev["drags"]["compare"]:
            lines.append(
                f"\n{c['protocol']} {c['points']}: predict {c['speedup_cpu']:.1f}x faster in CPU time, "
                f"MD {c['md_redetected_vs_optimize']:.2f}x the optimiser's."
            )
        e = ev["encoder"]
        lines.append(
            f"\nEncoder: {e['psnr_mean']:.2f} dB mean PSNR (min {e['psnr_min']:.2f}) on {e['images']} "
            f"held-out generated images, {1000 * e['seconds_median']:.1f} ms each."
        )
    c = r["check"]
    lines.append(
        "\nLibrary check: "
        + ("ok, modes " + ", ".join(c["modes"]) if c["ok"] else "FAILED: " + "; ".join(c["errors"]))
        + "."
    )
    last = r["last_run"]
    lines.append(
        f"Last run: {_secs(last['seconds'])}; ran {', '.join(last['ran']) or 'nothing'}; "
        f"skipped {', '.join(last['skipped']) or 'nothing'}."
    )
    return "\n".join(lines) + "\n"
