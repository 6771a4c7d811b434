"""The room core without sockets: joining, permissions, ops and versions, drags, history, limits."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from server.core.mask import MaskGrid
from server.core.outgoing import ALL, Disconnect, Kind
from server.core.protocol import ProtocolError, encode, parse_client
from server.core.protocol_spec import CLIENT_MESSAGES, ERRORS
from server.core.protocol_types import ID_PATTERN, LIMITS, F
from server.core.ratelimit import ConnectionLimiter, RateBudgets, TokenBucket
from server.core.room import FrameResult, JobKind, JoinRefused, RoomLimits
from server.core.state import Status
from server.storage.manager import RoomManager, RoomsFull
from tests.server.conftest import IMAGE, FakeClock, Harness, check, error_code, only

ADD = {"t": "add_pair", "pair": "p1", "handle": [10.5, 20.5], "target": [30.5, 40.5]}
LATENT_A = "a" * 64
LATENT_B = "b" * 64


def test_core_imports_neither_starlette_nor_torch():
    """protocol, room, manager and store import no web framework and no torch."""
    import subprocess

    code = (
        "import sys; import server.core.protocol, server.core.room, "
        "server.storage.manager, server.storage.store; "
        "bad = [m for m in ('starlette', 'torch', 'uvicorn') if m in sys.modules]; print(bad); assert not bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)


# --- joining --------------------------------------------------------------------------------


def test_editor_join_gets_welcome_snapshot_and_others_see_it(h: Harness):
    """A joiner gets welcome + snapshot; the others get a presence join, the joiner does not."""
    a = h.join(name="Ada")
    b = h.join(name="Grace")
    welcome = only(b.messages, "welcome")
    assert welcome.to == b.member_id and welcome.msg["role"] == "editor" and welcome.msg["room"] == h.room_id
    snap = only(b.messages, "snapshot").msg
    assert [m["name"] for m in snap["members"]] == ["Ada", "Grace"]
    assert snap["state"]["image"]["seed"] == 42 and snap["state"]["history"] == {"index": 0, "size": 1}
    join = only(b.messages, "presence")
    assert join.msg["ev"] == "join" and join.to == ALL and join.exclude == b.member_id
    assert h.room.recipients(join) == [a.member_id]
    assert welcome.msg["colour"] != only(a.messages, "welcome").msg["colour"]


def test_viewer_is_counted_not_listed(h: Harness):
    """Viewers join as spectators: counted in the snapshot and presence, absent from members."""
    h.join(name="Ada")
    v = h.join("viewer", name="Watcher")
    snap = only(v.messages, "snapshot").msg
    assert [m["name"] for m in snap["members"]] == ["Ada"] and snap["spectators"] == 1
    count = only(v.messages, "presence")
    assert count.msg == {"t": "presence", "ev": "spectators", "count": 1} and count.kind is Kind.PRESENCE
    assert only(h.leave(v.member_id), "presence").msg["count"] == 0


def test_empty_name_gets_a_guest_name(h: Harness):
    """A hello with an empty name gets 'Guest N'."""
    j = h.join(name="")
    assert only(j.messages, "welcome").msg["name"] == f"Guest {j.member_id[1:]}"


def test_bad_capability_and_unknown_room_are_refused(h: Harness):
    """A wrong token closes with bad_capability; an unknown room with room_not_found."""
    hello = h.hello()
    with pytest.raises(JoinRefused) as e:
        h.manager.join(h.room_id, {**hello, "cap": "not-the-token"})
    assert e.value.close == "bad_capability"
    with pytest.raises(JoinRefused) as e:
        h.manager.join("nope", hello)
    assert e.value.close == "room_not_found"


def test_room_caps_for_editors_and_viewers():
    """Editors and viewers beyond the room's caps are refused with room_full."""
    h = Harness(RoomLimits(max_editors=2, max_viewers=1))
    h.join()
    h.join()
    with pytest.raises(JoinRefused, match="room_full"):
        h.join()
    h.join("viewer")
    with pytest.raises(JoinRefused, match="room_full"):
        h.join("viewer")


def test_rooms_per_server_cap():
    """At max_rooms live rooms, all in use, creating one more raises RoomsFull; when one is idle,
    it is archived to make space instead (tests/server/storage/test_lifecycle.py)."""
    m = RoomManager(limits=RoomLimits(max_rooms=2))
    rooms = [Harness.attach(m, m.create(IMAGE)) for _ in range(2)]
    ada = [h.join().member_id for h in rooms]
    with pytest.raises(RoomsFull):
        m.create(IMAGE)
    rooms[0].leave(ada[0])
    m.create(IMAGE)
    assert len(m.rooms) == 2 and rooms[0].room_id not in m.rooms


def test_links_carry_capabilities_in_the_fragment(h: Harness):
    """Edit and view links put the token after '#', and the tokens are long and distinct."""
    c = h.created
    assert c.edit_path == f"/r/{c.room_id}#edit={c.edit_token}" and c.view_path.endswith(
        f"#view={c.view_token}"
    )
    assert c.edit_token != c.view_token and len(c.edit_token) >= 32
    assert c.edit_token not in (h.room.edit_hash, h.room.view_hash)


def test_reconnect_with_client_id_keeps_identity(h: Harness):
    """The same client_id gets its member id back; a still-open old session is replaced and its
    late leave is ignored."""
    a1 = h.join(name="Ada", client_id="client-ada-1")
    h.send(a1.member_id, ADD)
    old_session = a1.session
    a2 = h.join(name="Ada", client_id="client-ada-1")
    assert a2.member_id == a1.member_id and a2.replaced_session == old_session
    assert h.manager.leave(h.room_id, a1.member_id, old_session) == []  # stale leave: ignored
    assert a1.member_id in h.room.members
    h.leave(a1.member_id)
    a3 = h.join(name="Ada", client_id="client-ada-1")
    assert a3.member_id == a1.member_id and a3.replaced_session is None
    assert h.room.pairs["p1"].owner == a1.member_id


def test_member_ids_are_never_reused(h: Harness):
    """A new member after others left gets a fresh id."""
    ids = set()
    for _ in range(3):
        j = h.join()
        ids.add(j.member_id)
        h.leave(j.member_id)
    assert len(ids) == 3


# --- ops, versions, permissions, broadcast ----------------------------------------------------


def test_versions_increase_by_one_per_applied_op(h: Harness):
    """Each applied op is broadcast to all with the next version, the author and its ref;
    refused ops do not use a version."""
    a = h.join().member_id
    out = h.send(a, {**ADD, "id": 7})
    op = only(out, "op")
    assert op.to == ALL and op.exclude is None
    assert (op.msg["v"], op.msg["by"], op.msg["ref"], op.msg["op"]) == (1, a, 7, "add_pair")
    assert op.msg["patch"]["pairs"][0] == {
        "id": "p1",
        "handle": [10.5, 20.5],
        "target": [30.5, 40.5],
        "owner": a,
    }
    assert error_code(h.send(a, ADD)) == "duplicate_pair"
    v2 = only(h.send(a, {"t": "move_point", "pair": "p1", "which": "target", "pos": [50, 60]}), "op").msg
    assert v2["v"] == 2 and v2["patch"]["pairs"][0]["target"] == [50.0, 60.0]
    assert h.room.version == 2


def test_refusals_go_to_the_author_only_with_ref(h: Harness):
    """An error reply targets only its author and names the refused message's id."""
    a = h.join().member_id
    out = h.send(a, {"t": "remove_pair", "pair": "ghost", "id": 99})
    err = only(out, "error")
    assert err.to == a and err.msg["ref"] == 99 and err.msg["code"] == "unknown_pair"


def test_viewer_cannot_edit(h: Harness):
    """Every editing message from a viewer is refused with forbidden; ping still works."""
    v = h.join("viewer").member_id
    for t, spec in CLIENT_MESSAGES.items():
        if spec.role == "editor":
            msg = {"t": t, **_valid_fields(t)}
            assert error_code(h.send(v, msg)) == "forbidden", t
    assert h.room.version == 0
    assert only(h.send(v, {"t": "ping", "id": 5}), "pong").msg["ref"] == 5


def _valid_fields(t: str) -> dict:
    return {
        "add_pair": {"pair": "p", "handle": [1, 1], "target": [2, 2]},
        "move_point": {"pair": "p", "which": "handle", "pos": [1, 1]},
        "remove_pair": {"pair": "p"},
        "paint_mask": {"mode": "fixed", "radius": 3, "points": [[1, 1]]},
        "set_params": {"params": {"lr": 0.01}},
        "new_image": {"seed": 3},
        "set_name": {"name": "x"},
        "cursor": {"pos": [3, 3]},
        "blend": {"source": "seed", "seed": 5},
    }.get(t, {})


def test_pairs_cap_and_points_outside_the_image(h: Harness):
    """The 65th pair is refused, and so is a point outside the image."""
    h = Harness(RoomLimits(max_pairs=2))
    a = h.join().member_id
    for i in range(2):
        h.send(a, {**ADD, "pair": f"p{i}"})
    assert error_code(h.send(a, {**ADD, "pair": "p9"})) == "too_many_pairs"
    assert error_code(h.send(a, {**ADD, "pair": "px", "target": [256, 3]})) == "out_of_bounds"
    assert (
        error_code(h.send(a, {"t": "move_point", "pair": "p0", "which": "handle", "pos": [3, -1]}))
        == "out_of_bounds"
    )


def test_remove_and_clear_points(h: Harness):
    """remove_pair drops one pair, clear_points all of them."""
    a = h.join().member_id
    h.send(a, ADD)
    h.send(a, {**ADD, "pair": "p2"})
    assert [
        p["id"] for p in only(h.send(a, {"t": "remove_pair", "pair": "p1"}), "op").msg["patch"]["pairs"]
    ] == ["p2"]
    assert only(h.send(a, {"t": "clear_points"}), "op").msg["patch"]["pairs"] == []


def test_set_params_changes_only_given_keys(h: Harness):
    """set_params merges its keys; the patch carries all params; null restores automatic."""
    a = h.join().member_id
    p = only(h.send(a, {"t": "set_params", "params": {"lr": 0.01, "r1": 5}}), "op").msg["patch"]["params"]
    assert p["lr"] == 0.01 and p["r1"] == 5.0 and p["max_steps"] == 300 and p["mode"] == "optimize"
    p = only(h.send(a, {"t": "set_params", "params": {"r1": None, "lambda": 3}}), "op").msg["patch"]["params"]
    assert p["r1"] is None and p["lambda"] == 3.0 and h.room.params.lam == 3.0


def test_set_name_is_presence_not_an_op(h: Harness):
    """A rename goes to everyone as presence and does not bump the version."""
    a = h.join().member_id
    out = h.send(a, {"t": "set_name", "name": "  Ada L.  "})
    assert only(out, "presence").msg == {"t": "presence", "ev": "rename", "id": a, "name": "Ada L."}
    assert h.room.version == 0
    assert error_code(h.send(a, {"t": "set_name", "name": "   "})) == "invalid_field"


# --- mask -------------------------------------------------------------------------------------


def test_paint_mask_marks_cells_within_radius(h: Harness):
    """A stroke paints the cells whose centres lie within the radius of its segments; erase clears."""
    a = h.join().member_id
    out = h.send(a, {"t": "paint_mask", "mode": "flexible", "radius": 6, "points": [[40, 100], [200, 100]]})
    mask = only(out, "op").msg["patch"]["mask"]
    grid = np.frombuffer(mask["cells"], np.uint8).reshape(mask["h"], mask["w"])
    assert (mask["w"], mask["h"]) == (64, 64)  # 4 px cells
    assert grid[25, 10:50].all() and not grid[20].any() and not grid[25, :8].any() and not grid[25, 52:].any()
    h.send(a, {"t": "paint_mask", "mode": "erase", "radius": 3, "points": [[100, 100]]})
    grid = h.room.mask.array()
    assert grid[25, 24] == 0 and grid[25, 20] == 1


def test_mask_fixed_region_semantics(h: Harness):
    """With flexible cells, everything else is fixed; with only fixed cells, those are fixed;
    with nothing painted there is no mask."""
    m = h.room.mask
    assert m.fixed_region() is None
    fixed = m.painted("fixed", 10, [(128, 128)])
    region = fixed.fixed_region()
    assert region.shape == (256, 256) and region[128, 128] and not region[0, 0]
    flex = m.painted("flexible", 10, [(128, 128)]).painted("fixed", 5, [(10, 10)])
    region = flex.fixed_region(64, 64)
    assert region.shape == (64, 64) and not region[32, 32] and region[0, 0] and region[60, 60]


@settings(max_examples=200, deadline=None)
@given(
    st.sampled_from([(256, 256), (64, 64), (100, 40), (512, 512)]),
    st.lists(st.tuples(st.floats(0, 1), st.floats(0, 1)), min_size=1, max_size=5),
    st.floats(0.5, 80),
)
def test_mask_stroke_matches_the_brute_force_rule(size, rel_points, radius):
    """Painting (which only visits cells near the stroke) marks exactly the cells whose centre
    is within the radius of the polyline, as protocol.md section 4 says."""
    w, hgt = size
    points = [(x * (w - 1), y * (hgt - 1)) for x, y in rel_points]
    mask = MaskGrid.empty(w, hgt).painted("fixed", radius, points)
    want = np.zeros((mask.h, mask.w), dtype=np.uint8)
    segs = list(zip(points, points[1:], strict=False)) or [(points[0], points[0])]
    for j in range(mask.h):
        for i in range(mask.w):
            cx, cy = (i + 0.5) * w / mask.w - 0.5, (j + 0.5) * hgt / mask.h - 0.5
            for (ax, ay), (bx, by) in segs:
                dx, dy = bx - ax, by - ay
                seg2 = dx * dx + dy * dy
                t = 0.0 if seg2 == 0 else min(1.0, max(0.0, ((cx - ax) * dx + (cy - ay) * dy) / seg2))
                if (cx - ax - t * dx) ** 2 + (cy - ay - t * dy) ** 2 <= radius * radius:
                    want[j, i] = 2
                    break
    assert (mask.array() == want).all()


def test_clear_mask(h: Harness):
    """clear_mask empties the grid."""
    a = h.join().member_id
    h.send(a, {"t": "paint_mask", "mode": "fixed", "radius": 20, "points": [[50, 50]]})
    assert not h.room.mask.is_empty
    h.send(a, {"t": "clear_mask"})
    assert h.room.mask.is_empty


# --- drags and the worker interface -----------------------------------------------------------


def start_drag(h: Harness, a: str) -> None:
    h.send(a, ADD)
    out = h.send(a, {"t": "start"})
    assert only(out, "op").msg["patch"] == {"status": "running", "step": 0, "drag": h.room.drag}
    assert only(out, "status").msg["status"] == "running"


def test_start_needs_points_and_idle(h: Harness):
    """start without pairs is no_points, a second start already_running, stop while idle not_running."""
    a = h.join().member_id
    assert error_code(h.send(a, {"t": "start"})) == "no_points"
    assert error_code(h.send(a, {"t": "stop"})) == "not_running"
    start_drag(h, a)
    assert error_code(h.send(a, {"t": "start"})) == "already_running"


def test_drag_steps_frames_and_reaching_the_target(h: Harness):
    """A render job first, then step jobs whose tracked handles update the state and the frame;
    reaching the target leads to a FINISH job that commits the latent to history."""
    a = h.join().member_id
    job = h.manager.engine_jobs()[0]
    assert job.kind is JobKind.RENDER
    frame = only(h.manager.on_frame(job, FrameResult(b"\xff\xd8img")), "frame")
    assert frame.kind is Kind.FRAME and frame.msg["seq"] == 1
    assert h.manager.engine_jobs() == []  # idle and rendered: nothing to do
    start_drag(h, a)
    for i in range(3):
        (job,) = h.manager.engine_jobs()
        assert job.kind is JobKind.STEP and job.step == i and job.pairs[0].id == "p1"
        out = h.manager.on_frame(
            job, FrameResult(b"jpeg", {"p1": (11.5 + i, 21.5)}, reached=(i == 2), fps=25.0)
        )
        msg = only(out, "frame").msg
        assert msg["step"] == i + 1 and msg["handles"] == {"p1": [11.5 + i, 21.5]} and msg["fps"] == 25.0
    (job,) = h.manager.engine_jobs()
    assert job.kind is JobKind.FINISH and job.reason == "reached"
    out = h.manager.on_finished(job, LATENT_A)
    op = only(out, "op").msg
    assert op["op"] == "finish" and op["by"] is None and op["patch"]["image"]["latent"] == LATENT_A
    assert op["patch"]["history"] == {"index": 1, "size": 2} and op["patch"]["status"] == "idle"
    assert only(out, "status").msg == {
        "t": "status",
        "status": "idle",
        "reason": "reached",
        "drag": 1,
        "step": 3,
    }
    assert h.room.status is Status.IDLE and h.manager.engine_jobs() == []


def test_handle_moved_during_a_step_is_not_overwritten(h: Harness):
    """A handle an editor placed after the worker took its job keeps the editor's position, and
    the next job shows the new handle_rev so the worker re-initialises its tracking."""
    a = h.join().member_id
    start_drag(h, a)
    (job,) = h.manager.engine_jobs()
    h.send(a, {"t": "move_point", "pair": "p1", "which": "handle", "pos": [100, 100]})
    h.manager.on_frame(job, FrameResult(b"j", {"p1": (12.0, 22.0)}))
    assert h.room.pairs["p1"].handle == (100.0, 100.0)
    (job2,) = h.manager.engine_jobs()
    assert job2.pairs[0].handle_rev > job.pairs[0].handle_rev and job2.step == 1


def test_target_moves_and_new_pairs_take_effect_next_tick(h: Harness):
    """Points changed during a drag are in the next job."""
    a = h.join().member_id
    start_drag(h, a)
    h.send(a, {"t": "move_point", "pair": "p1", "which": "target", "pos": [99, 98]})
    h.send(a, {**ADD, "pair": "p2"})
    (job,) = h.manager.engine_jobs()
    assert job.pairs[0].target == (99.0, 98.0) and [p.id for p in job.pairs] == ["p1", "p2"]


def test_max_steps_ends_the_drag(h: Harness):
    """After max_steps steps the next job is FINISH with reason max_steps."""
    a = h.join().member_id
    h.send(a, {"t": "set_params", "params": {"max_steps": 2}})
    start_drag(h, a)
    for _ in range(2):
        (job,) = h.manager.engine_jobs()
        assert job.kind is JobKind.STEP
        h.manager.on_frame(job, FrameResult(b"j", {}))
    (job,) = h.manager.engine_jobs()
    assert (job.kind, job.reason) == (JobKind.FINISH, "max_steps")


def test_stop_commits_what_was_reached(h: Harness):
    """stop turns the drag to stopping; the FINISH job commits the latent with reason stopped."""
    a = h.join().member_id
    start_drag(h, a)
    (job,) = h.manager.engine_jobs()
    h.manager.on_frame(job, FrameResult(b"j", {"p1": (15.0, 25.0)}))
    assert only(h.send(a, {"t": "stop"}), "op").msg["patch"] == {"status": "stopping"}
    assert error_code(h.send(a, {"t": "stop"})) == "not_running"
    (job,) = h.manager.engine_jobs()
    assert (job.kind, job.reason) == (JobKind.FINISH, "stopped")
    out = h.manager.on_finished(job, LATENT_A)
    assert only(out, "status").msg["reason"] == "stopped" and h.room.history.index == 1


def test_stop_before_any_step_commits_nothing(h: Harness):
    """A drag that ends without a latent leaves the image and history as they were."""
    a = h.join().member_id
    start_drag(h, a)
    h.send(a, {"t": "stop"})
    (job,) = h.manager.engine_jobs()
    patch = only(h.manager.on_finished(job, None), "op").msg["patch"]
    assert "image" not in patch and h.room.history.to_wire() == {"index": 0, "size": 1}


def test_clearing_points_during_a_drag_stops_it(h: Harness):
    """With every pair removed the running drag finishes (reason stopped)."""
    a = h.join().member_id
    start_drag(h, a)
    h.send(a, {"t": "clear_points"})
    (job,) = h.manager.engine_jobs()
    assert (job.kind, job.reason) == (JobKind.FINISH, "stopped")


def test_engine_error_ends_the_drag_and_reports(h: Harness):
    """on_error ends the drag with reason error, tells everyone, and commits a given latent."""
    a = h.join().member_id
    start_drag(h, a)
    (job,) = h.manager.engine_jobs()
    out = h.manager.on_error(job, "CUDA out of memory", latent=LATENT_A)
    assert only(out, "status").msg["reason"] == "error" and "CUDA" in only(out, "status").msg["message"]
    assert only(out, "error").msg["code"] == "engine_failed" and only(out, "error").to == ALL
    assert h.room.status is Status.IDLE and h.room.image.latent == LATENT_A
    assert h.manager.on_error(job, "again") == []  # stale: ignored


def test_stale_results_are_ignored(h: Harness):
    """A render of an image that was replaced meanwhile, or a step of an ended drag, is dropped."""
    a = h.join().member_id
    (render,) = h.manager.engine_jobs()
    h.send(a, {"t": "new_image", "seed": 7})
    assert h.manager.on_frame(render, FrameResult(b"old")) == []
    (render2,) = h.manager.engine_jobs()
    assert render2.image.seed == 7
    h.manager.on_frame(render2, FrameResult(b"new"))
    start_drag(h, a)
    (step,) = h.manager.engine_jobs()
    h.send(a, {"t": "stop"})
    h.manager.on_finished(h.manager.engine_jobs()[0], None)
    assert h.manager.on_frame(step, FrameResult(b"late")) == []
    assert h.manager.on_finished(step, LATENT_A) == []


def test_late_joiner_gets_the_latest_frame_bytes(h: Harness):
    """A late joiner receives the newest frame right after its snapshot, packed only once."""
    a = h.join().member_id
    (job,) = h.manager.engine_jobs()
    (frame,) = h.manager.on_frame(job, FrameResult(b"\xff\xd8jpeg"))
    data = frame.data
    late = h.join(name="Late")
    assert [o.msg["t"] for o in late.messages[-4:]] == ["welcome", "snapshot", "frame", "undo_state"]
    copy = late.messages[-2]
    assert copy.to == late.member_id and copy.data is data and copy.kind is Kind.FRAME
    assert a != late.member_id


# --- history ----------------------------------------------------------------------------------


def drag_to(h: Harness, a: str, latent: str, handle_to: tuple[float, float]) -> None:
    h.send(a, {"t": "start"})
    (job,) = h.manager.engine_jobs()
    h.manager.on_frame(job, FrameResult(b"j", {p.id: handle_to for p in job.pairs}, reached=True))
    (job,) = h.manager.engine_jobs()
    h.manager.on_finished(job, latent)


def test_undo_restores_image_and_points_before_the_drag_and_redo_after(h: Harness):
    """Undo of a drag brings back the previous image and the handles where they were at start
    (step back to 0); redo brings the dragged image and the tracked handles back."""
    a = h.join().member_id
    h.send(a, ADD)
    drag_to(h, a, LATENT_A, (29.5, 39.5))
    assert h.room.pairs["p1"].handle == (29.5, 39.5)
    out = h.send(a, {"t": "undo"})
    patch = only(out, "op").msg["patch"]
    assert patch["image"]["latent"] is None and patch["pairs"][0]["handle"] == [10.5, 20.5]
    assert patch["history"] == {"index": 0, "size": 2} and patch["step"] == 0
    state = only(out, "undo_state").msg
    assert [state[k] for k in ("undo", "redo", "undo_kind", "redo_kind")] == [1, 1, "add_pair", "drag"]
    patch = only(h.send(a, {"t": "undo"}), "op").msg["patch"]  # then the pair Ada added
    assert patch == {"pairs": []}
    assert error_code(h.send(a, {"t": "undo"})) == "nothing_to_undo"
    h.send(a, {"t": "redo"})
    patch = only(h.send(a, {"t": "redo"}), "op").msg["patch"]
    assert patch["image"]["latent"] == LATENT_A and patch["pairs"][0]["handle"] == [29.5, 39.5]
    assert error_code(h.send(a, {"t": "redo"})) == "nothing_to_redo"


def test_undo_takes_back_only_your_own_drag(h: Harness):
    """Another editor has nothing to undo after someone's drag; the author's undo goes to everyone."""
    a, b = h.join().member_id, h.join(name="B").member_id
    h.send(a, ADD)
    drag_to(h, a, LATENT_A, (20.0, 30.0))
    assert error_code(h.send(b, {"t": "undo"})) == "nothing_to_undo" and h.room.image.latent == LATENT_A
    op = only(h.send(a, {"t": "undo"}), "op")
    assert op.to == ALL and op.msg["by"] == a and h.room.image.latent is None


def test_new_commit_drops_the_redo_branch(h: Harness):
    """After an undo, a new drag replaces the undone entries."""
    a = h.join().member_id
    h.send(a, ADD)
    drag_to(h, a, LATENT_A, (20.0, 30.0))
    h.send(a, {"t": "undo"})
    drag_to(h, a, LATENT_B, (25.0, 35.0))
    assert h.room.history.to_wire() == {"index": 1, "size": 2}
    assert h.room.history.entries[1].image.latent == LATENT_B


def test_new_image_commits_and_clears(h: Harness):
    """new_image clears points and mask, commits a history entry and asks for a render;
    undo brings back the old image with its points."""
    a = h.join().member_id
    h.send(a, ADD)
    h.send(a, {"t": "paint_mask", "mode": "fixed", "radius": 9, "points": [[9, 9]]})
    patch = only(h.send(a, {"t": "new_image", "seed": 5, "truncation": 0.5}), "op").msg["patch"]
    assert patch["image"]["seed"] == 5 and patch["image"]["truncation"] == 0.5 and patch["pairs"] == []
    assert not any(patch["mask"]["cells"]) and patch["history"] == {"index": 1, "size": 2}
    assert h.manager.engine_jobs()[0].kind is JobKind.RENDER
    patch = only(h.send(a, {"t": "undo"}), "op").msg["patch"]
    assert (
        patch["image"]["seed"] == 42
        and [p["id"] for p in patch["pairs"]] == ["p1"]
        and any(patch["mask"]["cells"])
    )


def test_history_changes_are_busy_while_running(h: Harness):
    """new_image, and an undo or redo that would change the image, are refused with busy during a
    drag (the action stays); undoing a point or mask edit goes on while it runs."""
    a = h.join().member_id
    h.send(a, {"t": "new_image", "seed": 7})
    start_drag(h, a)
    assert error_code(h.send(a, {"t": "new_image", "seed": 1})) == "busy"
    assert only(h.send(a, {"t": "undo"}), "op").msg["patch"] == {"pairs": []}  # the added pair
    h.send(a, {"t": "redo"})
    h.send(a, {"t": "paint_mask", "mode": "fixed", "radius": 9, "points": [[9, 9]]})
    assert "mask" in only(h.send(a, {"t": "undo"}), "op").msg["patch"]
    h.send(a, {"t": "undo"})  # the pair again
    assert error_code(h.send(a, {"t": "undo"})) == "busy"  # the new image
    assert h.room.undo.peek(a, redo=False).kind == "new_image"


def test_history_keeps_at_most_history_max_entries():
    """The oldest entries go beyond history_max; the index stays on the newest."""
    h = Harness(RoomLimits(history_max=3))
    a = h.join().member_id
    for seed in range(5):
        h.send(a, {"t": "new_image", "seed": seed})
    assert h.room.history.to_wire() == {"index": 2, "size": 3}
    assert [e.image.seed for e in h.room.history.entries] == [2, 3, 4]


# --- presence, throttles, rate limits ---------------------------------------------------------


def test_cursor_throttle_sends_the_latest_position(h: Harness):
    """Cursors go out at most cursor_hz per member; a held-back position goes out on flush."""
    a, b = h.join().member_id, h.join().member_id
    first = only(h.send(a, {"t": "cursor", "pos": [1, 1]}), "presence")
    assert first.exclude == a and first.kind is Kind.PRESENCE and h.room.recipients(first) == [b]
    assert h.send(a, {"t": "cursor", "pos": [2, 2]}) == []
    assert h.send(a, {"t": "cursor", "pos": [3, 3]}) == []
    assert h.manager.flush_presence() == {}
    h.clock.advance(0.05)
    (out,) = h.manager.flush_presence()[h.room_id]
    assert out.msg == {"t": "presence", "ev": "cursor", "id": a, "pos": [3.0, 3.0]}
    h.clock.advance(0.05)
    assert only(h.send(a, {"t": "cursor", "pos": None}), "presence").msg["pos"] is None


def test_leave_is_broadcast(h: Harness):
    """An editor leaving is announced to the others."""
    a, b = h.join().member_id, h.join().member_id
    out = h.leave(b)
    assert only(out, "presence").msg == {"t": "presence", "ev": "leave", "id": b}
    assert h.room.recipients(out[0]) == [a]


def test_edit_rate_limit_with_a_fake_clock():
    """Past the edit burst, edits are refused with rate_limited until tokens refill."""
    budgets = RateBudgets(edit_rate=10, edit_burst=5, strike_burst=100)
    h = Harness(RoomLimits(rates=budgets))
    a = h.join().member_id
    for i in range(5):
        assert only(h.send(a, {"t": "set_params", "params": {"max_steps": i + 1}}), "op")
    assert error_code(h.send(a, {"t": "set_params", "params": {"max_steps": 9}})) == "rate_limited"
    h.clock.advance(0.1)  # one token back
    assert only(h.send(a, {"t": "set_params", "params": {"max_steps": 9}}), "op")
    assert error_code(h.send(a, {"t": "set_params", "params": {"max_steps": 9}})) == "rate_limited"


def test_cursor_flood_is_dropped_quietly(h: Harness):
    """Cursor messages over their budget are dropped without an error reply."""
    a = h.join().member_id
    replies = [h.send(a, {"t": "cursor", "pos": [1, 1]}) for _ in range(100)]
    assert not any(o.msg["t"] == "error" for out in replies for o in out)
    assert h.room.members[a].limiter.refused > 0


def test_sustained_abuse_closes_the_connection():
    """When refusals use up the strike budget the connection is closed (rate_limited)."""
    h = Harness(RoomLimits(rates=RateBudgets(edit_rate=1, edit_burst=1, strike_rate=0.1, strike_burst=3)))
    a = h.join().member_id
    with pytest.raises(Disconnect) as e:
        for _ in range(10):
            h.send(a, {"t": "clear_points"})
    assert e.value.close == "rate_limited" and e.value.messages[0].msg["code"] == "rate_limited"


def test_invalid_message_flood_is_a_protocol_violation():
    """Many malformed messages close the connection with protocol_violation."""
    h = Harness(RoomLimits(rates=RateBudgets(strike_burst=3, strike_rate=0.1)))
    a = h.join().member_id
    with pytest.raises(Disconnect) as e:
        for _ in range(10):
            h.manager.receive(h.room_id, a, b"\xc1")
    assert e.value.close == "protocol_violation"


def test_oversized_message_closes_with_too_large(h: Harness):
    """A message over the byte cap is answered with an error and a too_large close."""
    a = h.join().member_id
    with pytest.raises(Disconnect) as e:
        h.manager.receive(h.room_id, a, encode({"t": "set_name", "name": "x" * 40000}))
    assert e.value.close == "too_large" and e.value.messages[0].to == a


def test_second_hello_is_refused(h: Harness):
    """A hello after joining gets unexpected_hello."""
    a = h.join().member_id
    out = h.manager.receive(h.room_id, a, encode({"t": "hello", "v": 1, "cap": "x", "name": "y", "id": 3}))
    assert error_code(out) == "unexpected_hello" and out[0].msg["ref"] == 3


def test_token_bucket_refills_with_the_clock():
    """A bucket starts full, empties, and refills at its rate up to its burst."""
    clock = FakeClock()
    b = TokenBucket(rate=2, burst=3, clock=clock)
    assert [b.take() for _ in range(4)] == [True, True, True, False]
    clock.advance(0.5)
    assert b.take() and not b.take()
    clock.advance(100)
    assert b.tokens == 3
    lim = ConnectionLimiter(RateBudgets(cursor_rate=1, cursor_burst=1), clock)
    assert lim.allow("cursor") and not lim.allow("cursor") and lim.allow("edit") and lim.allow(None)


# --- fuzzing ----------------------------------------------------------------------------------

VALUES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-5, 300),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=10),
    st.sampled_from(["p1", "p2", "handle", "target", "fixed", "flexible", "erase", "predict"]),
    st.lists(st.floats(-10, 300) | st.integers(-10, 300), min_size=0, max_size=3),
    st.lists(st.lists(st.floats(0, 255), min_size=2, max_size=2), min_size=1, max_size=4),
    st.dictionaries(
        st.sampled_from(["lr", "mode", "max_steps", "r1", "lambda", "x"]),
        st.floats(0, 2) | st.text(max_size=3),
    ),
)
FIELDS = sorted({k for m in CLIENT_MESSAGES.values() for k in m.fields})


def valid_value(f: F) -> st.SearchStrategy:
    """Values that satisfy a field spec (pair ids drawn from a few so that they collide)."""
    if f.kind == "int":
        return st.integers(int(f.min if f.min is not None else -(2**31)), int(min(f.max or 2**31, 2**31)))
    if f.kind == "float":
        return st.floats(f.min if f.min is not None else -1e6, f.max if f.max is not None else 1e6)
    if f.kind == "enum":
        return st.sampled_from(f.values)
    if f.kind == "point":
        return st.lists(st.floats(0, 255.5), min_size=2, max_size=2)
    if f.kind == "name":
        return st.text(st.characters(codec="ascii", categories=["L", "N", "Zs"]), min_size=1, max_size=20)
    if f.kind == "str":
        return (
            st.sampled_from(["p1", "p2", "p3"])
            if f.pattern == ID_PATTERN
            else st.from_regex(f.pattern, fullmatch=True)
        )
    if f.kind == "list":
        return st.lists(valid_value(f.items), min_size=f.min_len or 0, max_size=min(f.max_len or 4, 4))
    if f.kind == "map":
        opt_keys = {k: valid_value(v) for k, v in f.fields.items() if not v.required}
        return st.fixed_dictionaries(
            {k: valid_value(v) for k, v in f.fields.items() if v.required}, optional=opt_keys
        )
    raise AssertionError(f.kind)


@st.composite
def messages(draw) -> dict:
    """Valid messages of every type (often), some with one field broken, and random maps."""
    t = draw(st.sampled_from(sorted(CLIENT_MESSAGES)))
    spec = CLIENT_MESSAGES[t]
    msg = {"t": t}
    for k, f in spec.fields.items():
        if f.required or draw(st.booleans()):
            msg[k] = draw(valid_value(f) | st.none() if f.nullable else valid_value(f))
    if t == "set_params" and not msg["params"]:
        msg["params"] = {"lr": 0.01}
    if draw(st.integers(0, 3)) == 0:  # break one field, or add an unknown one
        key = draw(st.sampled_from([*sorted(msg), "x"]))
        msg[key] = draw(VALUES)
    if draw(st.integers(0, 9)) == 0:  # or a random map
        keys = draw(st.lists(st.sampled_from(FIELDS) | st.text(max_size=4), max_size=5, unique=True))
        msg = {
            "t": draw(st.sampled_from(sorted(CLIENT_MESSAGES)) | st.text(max_size=5)),
            **{k: draw(VALUES) for k in keys},
        }
    return msg


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(messages(), min_size=1, max_size=20))
def test_fuzz_room_never_crashes_and_answers_every_bad_message(msgs: list[dict]):
    """Random message sequences from an editor only produce protocol messages (never an
    exception other than Disconnect); each refused message gets exactly one error reply; the
    state stays valid."""
    h = Harness(RoomLimits(rates=RateBudgets(edit_burst=1000, strike_burst=1000)))
    a = h.join().member_id
    h.join("viewer")
    applied = 0
    for msg in msgs:
        version = h.room.version
        try:
            out = h.manager.receive(h.room_id, a, encode(msg))
        except Disconnect:
            continue
        errors = [o for o in out if o.msg["t"] == "error"]
        assert len(errors) <= 1
        if errors:
            assert (
                errors[0].to == a and errors[0].msg["code"] in ERRORS and errors[0].msg["code"] != "internal"
            )
            assert h.room.version == version
        elif msg.get("t") in CLIENT_MESSAGES and CLIENT_MESSAGES[msg["t"]].versioned:
            assert h.room.version == version + 1
            applied += 1
        try:
            parse_client(msg, h.room.bounds)
        except ProtocolError:
            assert errors, msg  # every invalid message is answered
        check(out, h.room)
    event(f"applied ops: {min(applied, 3)}+")
    w, hh = h.room.bounds
    assert len(h.room.pairs) <= h.room.limits.max_pairs
    for p in h.room.pairs.values():
        assert 0 <= p.handle[0] < w and 0 <= p.target[1] < hh


def test_ack_records_the_newest_acknowledged_frame(h: Harness):
    """ack sets the member's acked_seq (never backwards) and sends nothing."""
    a = h.join().member_id
    assert h.send(a, {"t": "ack", "seq": 5}) == [] and h.room.members[a].acked_seq == 5
    h.send(a, {"t": "ack", "seq": 3})
    assert h.room.members[a].acked_seq == 5


def test_a_bug_in_a_handler_is_an_internal_error_not_a_crash(h: Harness, monkeypatch):
    """An unexpected exception while applying a message becomes an internal error reply."""
    a = h.join().member_id

    def boom(*args):
        raise RuntimeError("bug")

    monkeypatch.setattr(type(h.room), "_op_clear_points", boom)
    out = h.send(a, {"t": "clear_points", "id": 4})
    assert error_code(out) == "internal" and out[0].msg["ref"] == 4 and h.room.version == 0


def test_real_messages_have_the_shape_of_the_golden_examples(h: Harness):
    """The messages the core produces have the same keys as the golden examples of their kind."""
    golden = {}
    for path in sorted((Path(__file__).parents[3] / "shared" / "golden" / "s2c").glob("*.json")):
        msg = json.loads(path.read_text())
        golden.setdefault(_shape_key(msg), set()).add(frozenset(msg))
    a = h.join().member_id
    seen = list(h.join(name="B").messages)
    seen += h.send(a, {**ADD, "id": 1}) + h.send(a, {"t": "set_params", "params": {"lr": 0.01}})
    start = h.send(a, {"t": "start"})
    (job,) = h.manager.engine_jobs()
    seen += start + h.manager.on_frame(job, FrameResult(b"j", {"p1": (12.0, 22.0)}, reached=True, fps=20.0))
    seen += h.manager.on_finished(h.manager.engine_jobs()[0], LATENT_A)
    seen += h.send(a, {"t": "undo"}) + h.send(a, {"t": "ping"}) + h.send(a, {"t": "set_name", "name": "Z"})
    seen += (
        h.send(a, {"t": "cursor", "pos": [1, 1]}) + h.send(a, {"t": "remove_pair", "pair": "zz"}) + h.leave(a)
    )
    checked = 0
    for o in seen:
        key = _shape_key(o.msg)
        if key in golden:
            assert frozenset(o.msg) in golden[key], (key, sorted(o.msg))
            checked += 1
    assert checked >= 12


def _shape_key(msg: dict) -> tuple:
    return (
        msg["t"],
        msg.get("ev"),
        msg.get("op"),
        msg.get("reason") is None if msg["t"] == "status" else None,
    )


# --- order of checks (protocol.md section 5) ---------------------------------------------------


def test_field_errors_come_before_state_errors(h: Harness):
    """A blend without its seed is invalid_field whatever the state: while a drag runs (not busy),
    without a region (not no_region); from the upload with a seed likewise (not no_upload)."""
    a = h.join().member_id
    bad = {"t": "blend", "source": "seed", "steps": 3}
    assert error_code(h.send(a, bad)) == "invalid_field"  # no flexible cell either
    out = h.send(a, {"t": "blend", "source": "upload", "seed": 4})
    assert (only(out, "error").msg["code"], only(out, "error").msg["field"]) == ("invalid_field", "seed")
    start_drag(h, a)
    err = only(h.send(a, bad), "error").msg
    assert (err["code"], err["field"]) == ("invalid_field", "seed")
    assert error_code(h.send(a, {"t": "set_name", "name": "  "})) == "invalid_field"


def test_a_viewers_bad_fields_are_invalid_before_forbidden(h: Harness):
    """Fields are checked before the role: a viewer's malformed edit is invalid_field (a strike)."""
    v = h.join("viewer").member_id
    assert error_code(h.send(v, {"t": "add_pair", "pair": "p 1", "handle": [1, 1], "target": [2, 2]})) == (
        "invalid_field"
    )


def test_a_spectators_refused_edits_cost_edit_tokens_then_strikes(h: Harness):
    """Each edit of a viewer spends an edit token and gets forbidden (no strike); past the edit
    budget it gets rate_limited, a strike; when the strikes are spent the viewer is closed with
    rate_limited. Nothing reaches the room or the others."""
    v = h.join("viewer").member_id
    a = h.join().member_id
    burst, strikes = int(LIMITS["edit_burst"]), int(LIMITS["strike_burst"])
    msg = {"t": "clear_points"}
    for _ in range(burst):
        out = h.send(v, msg)
        assert error_code(out) == "forbidden" and all(o.to == v for o in out)
    for _ in range(strikes):
        assert error_code(h.send(v, msg)) == "rate_limited"
    with pytest.raises(Disconnect) as e:
        h.send(v, msg)
    assert e.value.close == "rate_limited"
    assert h.room.version == 0 and a in h.room.members
