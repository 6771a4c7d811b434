"""How a drag that ends by itself reaches the room: stalled and lost (server/engine/stop_rules.py)."""

from __future__ import annotations

from server.core.jobs import FrameResult, JobKind
from tests.server.conftest import Harness, only

LATENT = "c" * 64


def start(h: Harness, pairs: int = 1) -> str:
    a = h.join().member_id
    for i in range(1, pairs + 1):
        h.send(a, {"t": "add_pair", "pair": f"p{i}", "handle": [10.5 * i, 20.5], "target": [30.5, 40.5]})
    assert only(h.send(a, {"t": "start"}), "status").msg["status"] == "running"
    return a


def test_a_stalled_session_ends_the_drag_with_reason_stalled(h: Harness):
    """A session that ended by itself (done "stalled") turns the drag to stopping at once; the
    FINISH job and the status carry the reason."""
    start(h)
    (job,) = h.manager.engine_jobs()
    frame = only(h.manager.on_frame(job, FrameResult(b"j", {"p1": (12.0, 21.0)}, done="stalled")), "frame")
    assert frame.msg["status"] == "stopping" and "lost" not in frame.msg
    (job,) = h.manager.engine_jobs()
    assert (job.kind, job.reason) == (JobKind.FINISH, "stalled")
    out = h.manager.on_finished(job, LATENT)
    assert only(out, "status").msg["reason"] == "stalled" and h.room.history.index == 1


def test_lost_handles_are_named_in_the_frame_and_end_the_drag(h: Harness):
    """The frame lists the pairs whose handle point tracking lost (not one an editor placed anew
    after the job was taken: it is tracked afresh); the drag ends with reason lost."""
    a = start(h, pairs=3)
    (job,) = h.manager.engine_jobs()
    h.send(a, {"t": "move_point", "pair": "p3", "which": "handle", "pos": [50, 60]})
    handles = {"p1": (11.0, 21.0), "p2": (22.0, 21.0), "p3": (32.0, 21.0)}
    frame = h.manager.on_frame(job, FrameResult(b"j", handles, done="lost", lost=("p2", "p3")))
    assert only(frame, "frame").msg["lost"] == ["p2"]
    (job,) = h.manager.engine_jobs()
    assert (job.kind, job.reason) == (JobKind.FINISH, "lost")
    assert only(h.manager.on_finished(job, LATENT), "status").msg["reason"] == "lost"


def test_a_lost_handle_is_named_while_the_drag_goes_on(h: Harness):
    """A session goes on with the other handles when one is lost: the frame names it, the drag
    keeps running, and the next step is asked for; the end names it again."""
    start(h, pairs=2)
    (job,) = h.manager.engine_jobs()
    handles = {"p1": (11.0, 21.0), "p2": (22.0, 21.0)}
    frame = only(h.manager.on_frame(job, FrameResult(b"j", handles, lost=("p2",))), "frame")
    assert frame.msg["lost"] == ["p2"] and frame.msg["status"] == "running"
    (job,) = h.manager.engine_jobs()
    assert job.kind is JobKind.STEP
    frame = only(h.manager.on_frame(job, FrameResult(b"j", handles, done="lost", lost=("p2",))), "frame")
    assert frame.msg["lost"] == ["p2"] and frame.msg["status"] == "stopping"


def test_the_rooms_cap_still_ends_a_drag_first(h: Harness):
    """max_steps is the room's: a session still running at the cap ends the drag with max_steps."""
    a = h.join().member_id
    h.send(a, {"t": "set_params", "params": {"max_steps": 1}})
    h.send(a, {"t": "add_pair", "pair": "p1", "handle": [10.5, 20.5], "target": [30.5, 40.5]})
    h.send(a, {"t": "start"})
    (job,) = h.manager.engine_jobs()
    h.manager.on_frame(job, FrameResult(b"j", {"p1": (11.0, 21.0)}))
    (job,) = h.manager.engine_jobs()
    assert (job.kind, job.reason) == (JobKind.FINISH, "max_steps")
