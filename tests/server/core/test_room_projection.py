"""The sans-I/O room core's projecting state: start, frames, stop, commit, failure, persistence."""

from __future__ import annotations

from server.core.jobs import FrameResult, JobKind
from server.core.state import Status, UploadInfo
from server.storage.manager import RoomManager
from server.storage.store import Store
from tests.server.conftest import Harness, check, error_code, only

KEY = "ab" * 32
LATENT = "cd" * 32
UPLOAD = UploadInfo(KEY, 256, 256)
JPEG = b"\xff\xd8\xff\xd9"


def test_an_upload_starts_a_projection_with_an_op_and_a_status(h: Harness):
    """start_upload: op upload (by null) with status projecting, task and upload; then status."""
    a = h.join().member_id
    out = h.manager.start_upload(h.room_id, UPLOAD, "optimize", 50)
    check(out, h.room)
    op, status = out[0].msg, out[1].msg
    assert op["op"] == "upload" and op["by"] is None and op["v"] == 1
    assert op["patch"]["status"] == "projecting" and op["patch"]["upload"]["key"] == KEY
    assert op["patch"]["task"] == {"kind": "upload", "method": "optimize", "max_steps": 50, "by": None}
    assert status == {"t": "status", "status": "projecting", "reason": None, "drag": 1, "step": 0}
    job = h.room.engine_job()
    assert job is not None and job.kind is JobKind.PROJECT and job.task is not None and job.task.target == KEY
    assert error_code(h.send(a, {"t": "new_image", "seed": 3})) == "busy"


def test_frames_count_steps_and_a_done_session_is_committed(h: Harness):
    """PROJECT frames carry psnr/loss; a done frame turns to stopping; FINISH commits an entry."""
    h.join()
    h.manager.start_upload(h.room_id, UPLOAD, "encoder", 50)
    assert h.room.task is not None and h.room.task.max_steps == 0  # encoder: no optimisation step
    job = h.room.engine_job()
    frame = only(
        h.manager.on_frame(job, FrameResult(JPEG, {}, psnr=21.25, loss=0.5, done="max_steps")), "frame"
    )
    assert frame.msg["psnr"] == 21.25 and frame.msg["status"] == "stopping" and frame.msg["step"] == 1
    finish_job = h.room.engine_job()
    assert finish_job.kind is JobKind.FINISH and finish_job.reason == "max_steps"
    out = h.manager.on_finished(finish_job, LATENT)
    check(out, h.room)
    op = only(out, "op").msg
    assert op["op"] == "finish" and op["patch"]["image"]["latent"] == LATENT and op["patch"]["task"] is None
    assert op["patch"]["image"]["seed"] is None and op["patch"]["history"] == {"index": 1, "size": 2}
    assert only(out, "status").msg["reason"] == "max_steps"
    assert h.room.history.current.kind == "upload" and h.room.status is Status.IDLE


def test_stop_and_failures(h: Harness):
    """stop turns a projection to stopping; a failed one commits nothing and renders the image again."""
    a = h.join().member_id
    h.manager.start_upload(h.room_id, UPLOAD, "optimize", 50)
    job = h.room.engine_job()
    h.manager.on_frame(job, FrameResult(JPEG, {}, psnr=10.0, loss=1.0))
    assert only(h.send(a, {"t": "stop"}), "op").msg["patch"] == {"status": "stopping"}
    assert error_code(h.send(a, {"t": "stop"})) == "not_running"
    fin = h.room.engine_job()
    out = h.manager.on_error(fin, "boom", LATENT)
    check(out, h.room)
    assert only(out, "status").msg["reason"] == "error" and only(out, "error").msg["code"] == "engine_failed"
    assert "image" not in only(out, "op").msg["patch"] and h.room.history.to_wire()["size"] == 1
    assert h.room.render_pending and h.room.engine_job().kind is JobKind.RENDER


def test_a_blend_needs_a_region_and_a_source(h: Harness):
    """blend: no_region without flexible cells, no_upload without an upload, seed required for seeds."""
    a = h.join().member_id
    assert error_code(h.send(a, {"t": "blend", "source": "seed", "seed": 1})) == "no_region"
    h.send(a, {"t": "paint_mask", "mode": "fixed", "radius": 9.0, "points": [[20.0, 20.0]]})
    assert error_code(h.send(a, {"t": "blend", "source": "seed", "seed": 1})) == "no_region"
    h.send(a, {"t": "paint_mask", "mode": "flexible", "radius": 9.0, "points": [[60.0, 60.0]]})
    assert error_code(h.send(a, {"t": "blend", "source": "upload"})) == "no_upload"
    assert error_code(h.send(a, {"t": "blend", "source": "seed"})) == "invalid_field"
    out = h.send(a, {"t": "blend", "source": "seed", "seed": 9, "steps": 5})
    assert [o.msg["t"] for o in out] == ["op", "status"]
    task = h.room.task
    assert task is not None and task.source_seed == 9 and task.by == a and task.region is not None
    region = task.region.flexible_region(256, 256)
    assert region is not None and region[60, 60] and not region[20, 20]
    assert error_code(h.send(a, {"t": "blend", "source": "seed", "seed": 9})) == "busy"


def test_the_last_upload_survives_a_restart_but_a_projection_does_not():
    """The store keeps the room's upload (and its PNG); a restart loses the running projection."""
    store = Store(None)
    h = Harness(store=store)
    h.join()
    info = store.put_upload(b"\x89PNG fake", 256, 256)
    h.manager.start_upload(h.room_id, info, "optimize", 5)
    again = RoomManager(store)
    again.load()
    room = again.open(h.room_id)
    assert room.upload == info and room.status is Status.IDLE and room.task is None
    assert room.state_wire()["upload"]["key"] == info.key and store.get_upload(info.key) == b"\x89PNG fake"
    assert room.image == h.room.image and room.history.to_wire() == h.room.history.to_wire()
