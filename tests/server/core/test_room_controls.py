"""DragGAN's controls on the room: reset to the original image (an undoable history entry) and the
latent space parameter (W / W+)."""

from __future__ import annotations

from server.core.room import FrameResult, JobKind
from tests.server.conftest import IMAGE, Harness, error_code, only

ADD = {"t": "add_pair", "pair": "p1", "handle": [10.5, 20.5], "target": [30.5, 40.5]}
LATENT = "c" * 64


def drag_to(h: Harness, a: str, latent: str) -> None:
    h.send(a, ADD)
    h.send(a, {"t": "start"})
    (job,) = h.manager.engine_jobs()
    h.manager.on_frame(job, FrameResult(b"j", {"p1": (28.0, 38.0)}, reached=True))
    (job,) = h.manager.engine_jobs()
    h.manager.on_finished(job, latent)


def test_reset_returns_to_the_original_image_as_an_undoable_entry(h: Harness):
    """After a drag and a new image, reset shows the room's first image again, clears points and
    mask, and is one more history entry: undo goes back to the image before the reset."""
    a = h.join().member_id
    drag_to(h, a, LATENT)
    h.send(a, {"t": "new_image", "seed": 9})
    h.send(a, {"t": "add_pair", "pair": "q", "handle": [1.5, 2.5], "target": [3.5, 4.5]})
    out = h.send(a, {"t": "reset"})
    op = only(out, "op").msg
    assert op["op"] == "reset" and op["by"] == a
    assert op["patch"]["image"] == IMAGE.to_wire() and op["patch"]["pairs"] == []
    assert op["patch"]["history"] == {"index": 3, "size": 4}
    assert h.room.history.current.kind == "reset" and h.room.render_pending
    undo = only(h.send(a, {"t": "undo"}), "op").msg["patch"]
    assert undo["image"]["seed"] == 9 and [p["id"] for p in undo["pairs"]] == ["q"]


def test_reset_is_busy_while_a_drag_runs(h: Harness):
    """reset needs the room idle, like new_image."""
    a = h.join().member_id
    h.send(a, ADD)
    h.send(a, {"t": "start"})
    assert error_code(h.send(a, {"t": "reset"})) == "busy"


def test_reset_is_for_editors(h: Harness):
    """A viewer's reset is forbidden."""
    v = h.join(role="viewer").member_id
    assert error_code(h.send(v, {"t": "reset"})) == "forbidden"


def test_space_parameter_is_validated_and_reaches_the_job(h: Harness):
    """space is "w+" by default, "w" can be set, anything else is invalid_field; jobs carry it."""
    a = h.join().member_id
    assert h.room.params.space == "w+"
    op = only(h.send(a, {"t": "set_params", "params": {"space": "w"}}), "op").msg
    assert op["patch"]["params"]["space"] == "w"
    out = h.send(a, {"t": "set_params", "params": {"space": "z+"}})
    assert error_code(out) == "invalid_field" and only(out, "error").msg["field"] == "params.space"
    h.send(a, ADD)
    h.send(a, {"t": "start"})
    (job,) = h.manager.engine_jobs()
    assert job.kind is JobKind.STEP and job.params.space == "w"
