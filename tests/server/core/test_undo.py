"""Per-person undo and redo with two editors: each takes back only their own actions, a change
someone else made since is kept (and the action skipped when nothing of it holds), one shared
image history stays consistent, gestures are one action, stacks go only to their owner."""

from __future__ import annotations

import random

import pytest

from server.core.room import FrameResult, JobKind
from server.core.state import UploadInfo
from server.core.undo import MERGE_S, Action, MaskChange, UndoBook, mask_step
from tests.server.conftest import Harness, error_code, only

LATENT_A, LATENT_B = "a" * 64, "b" * 64


def add(pid: str, x: float = 10.5, y: float = 20.5) -> dict:
    return {"t": "add_pair", "pair": pid, "handle": [x, y], "target": [x + 20, y + 20]}


def move(pid: str, which: str, x: float, y: float) -> dict:
    return {"t": "move_point", "pair": pid, "which": which, "pos": [x, y]}


def stroke(mode: str, *points: tuple[float, float], radius: float = 12.0) -> dict:
    return {"t": "paint_mask", "mode": mode, "radius": radius, "points": [list(p) for p in points]}


def drag(h: Harness, who: str, latent: str, handle_to: tuple[float, float]) -> None:
    h.send(who, {"t": "start"})
    (job,) = h.manager.engine_jobs()
    h.manager.on_frame(job, FrameResult(b"j", {p.id: handle_to for p in job.pairs}, reached=True))
    (job,) = h.manager.engine_jobs()
    assert job.kind is JobKind.FINISH
    h.manager.on_finished(job, latent)


def undo(h: Harness, who: str, t: str = "undo") -> dict:
    return only(h.send(who, {"t": t}), "op").msg["patch"]


@pytest.fixture
def two(h: Harness) -> tuple[Harness, str, str]:
    return h, h.join(name="Ada").member_id, h.join(name="Grace").member_id


def test_undo_takes_back_your_own_pair_not_the_later_one_of_someone_else(two):
    """Ada adds p1, Grace adds p2 after her: Ada's undo removes p1 and keeps p2; redo brings p1."""
    h, a, g = two
    h.send(a, add("p1"))
    h.send(g, add("p2", 50.5, 60.5))
    op = only(h.send(a, {"t": "undo"}), "op")
    assert op.msg["by"] == a and [p["id"] for p in op.msg["patch"]["pairs"]] == ["p2"]
    assert undo(h, a, "redo")["pairs"][-1]["id"] == "p1"
    assert sorted(h.room.pairs) == ["p1", "p2"]
    assert [p["id"] for p in undo(h, g)["pairs"]] == ["p1"]  # Grace's undo: her own pair


def test_undo_state_goes_to_its_owner_only(two):
    """Only the author hears about their stacks (undo count, next kinds); joining sends them too."""
    h, a, g = two
    out = h.send(a, add("p1"))
    (state,) = [o for o in out if o.msg["t"] == "undo_state"]
    assert state.to == a and state.msg == {
        "t": "undo_state",
        "undo": 1,
        "redo": 0,
        "undo_kind": "add_pair",
        "redo_kind": None,
    }
    assert only(h.join(name="Late").messages, "undo_state").msg["undo"] == 0
    assert not [o for o in h.send(a, {"t": "cursor", "pos": [1, 1]}) if o.msg["t"] == "undo_state"]


def test_a_point_dragged_with_the_mouse_is_one_action(two):
    """move_point messages of one gesture (each within MERGE_S of the last) are one action; a move
    after a pause is another."""
    h, a, _ = two
    h.send(a, add("p1"))
    for i in range(10):
        h.clock.advance(0.05)
        h.send(a, move("p1", "target", 40.5 + i, 50.5))
    h.clock.advance(MERGE_S + 0.5)
    h.send(a, move("p1", "target", 5.5, 5.5))
    assert undo(h, a)["pairs"][0]["target"] == [49.5, 50.5]  # the second gesture
    assert undo(h, a)["pairs"][0]["target"] == [30.5, 40.5]  # the whole first gesture
    assert undo(h, a)["pairs"] == []  # then the pair


def test_a_stroke_sent_in_chunks_is_one_action(two):
    """paint_mask chunks that continue a stroke (starting at the last chunk's last point) are one
    action; a new stroke is another, even right after."""
    h, a, _ = two
    h.send(a, stroke("flexible", (20, 20), (60, 20)))
    h.clock.advance(0.1)
    h.send(a, stroke("flexible", (60, 20), (100, 20)))
    h.clock.advance(0.1)
    h.send(a, stroke("flexible", (200, 200)))  # starts elsewhere: a second stroke
    assert h.room.undo.state_message(a)["undo"] == 2
    cells = undo(h, a)["mask"]["cells"]
    assert any(cells) and not cells[(200 * 64 // 256) * 64 + 200 * 64 // 256]
    assert not any(undo(h, a)["mask"]["cells"])


def test_a_move_someone_changed_since_is_skipped_with_a_message(two):
    """Grace moved the target Ada moved: Ada's undo changes nothing, says why, and drops the move;
    her next undo takes back her action before it."""
    h, a, g = two
    h.send(a, add("p1"))
    h.clock.advance(2)
    h.send(a, move("p1", "target", 60.5, 60.5))
    h.send(g, move("p1", "target", 70.5, 70.5))
    out = h.send(a, {"t": "undo"})
    err = only(out, "error").msg
    assert err["code"] == "undo_conflict" and "point move" in err["message"] and err["ref"] is not None
    assert h.room.pairs["p1"].target == (70.5, 70.5)
    assert only(out, "undo_state").msg["undo"] == 1  # the move is gone from Ada's stack
    # her pair goes as it is now (with Grace's target); redo brings it back as it was
    assert undo(h, a)["pairs"] == [] and error_code(h.send(a, {"t": "undo"})) == "nothing_to_undo"
    assert undo(h, a, "redo")["pairs"][0]["target"] == [70.5, 70.5]


def test_a_handle_move_and_a_target_move_of_one_pair_are_separate_things(two):
    """Grace moving the handle does not block Ada's undo of her target move."""
    h, a, g = two
    h.send(g, add("p1"))
    h.send(a, move("p1", "target", 60.5, 60.5))
    h.send(g, move("p1", "handle", 5.5, 5.5))
    pair = undo(h, a)["pairs"][0]
    assert pair["target"] == [30.5, 40.5] and pair["handle"] == [5.5, 5.5]


def test_a_mask_stroke_undo_keeps_the_cells_someone_painted_since(two):
    """Ada paints a band, Grace paints a fixed spot on it: Ada's undo clears her band except that spot."""
    h, a, g = two
    h.send(a, stroke("flexible", (20, 128), (236, 128)))
    h.send(g, stroke("fixed", (128, 128), radius=8))
    cells = bytes(undo(h, a)["mask"]["cells"])
    assert set(cells) == {0, 2}  # Ada's flexible cells went, Grace's fixed ones stayed
    assert undo(h, a, "redo")["mask"]["cells"].count(1) > 0
    assert h.room.mask.cells.count(2) == cells.count(2)


def test_parameters_undo_per_key(two):
    """Ada's parameter change is undone key by key: keys Grace changed since stay hers."""
    h, a, g = two
    h.send(a, {"t": "set_params", "params": {"lr": 0.01, "lambda": 5.0}})
    h.send(g, {"t": "set_params", "params": {"lambda": 9.0}})
    params = undo(h, a)["params"]
    assert params["lr"] == 0.002 and params["lambda"] == 9.0


def test_a_drag_under_someone_elses_later_drag_cannot_be_undone(two):
    """Grace dragged after Ada: Ada's undo of her drag is refused (the image is Grace's now) and
    the history stays as it was; undos in order keep one consistent history for everyone."""
    h, a, g = two
    h.send(a, add("p1"))
    drag(h, a, LATENT_A, (20.0, 30.0))
    drag(h, g, LATENT_B, (25.0, 35.0))  # Grace drags Ada's pair further
    assert h.room.history.to_wire() == {"index": 2, "size": 3}
    before = (h.room.image, h.room.history.to_wire())
    err = only(h.send(a, {"t": "undo"}), "error").msg
    assert err["code"] == "undo_conflict" and "changed the image since" in err["message"]
    assert (h.room.image, h.room.history.to_wire()) == before
    # Grace takes hers back: Ada's drag image and the handle where Grace's drag found it
    patch = undo(h, g)
    assert patch["image"]["latent"] == LATENT_A and patch["pairs"][0]["handle"] == [20.0, 30.0]
    assert patch["history"] == {"index": 1, "size": 3} and patch["step"] == 0


def test_undos_in_turn_walk_the_shared_history(two):
    """Grace undoes her drag, Ada hers below it: the image is the seed's; Grace's redo now fails
    (her entry is not next), Ada's redo works and then Grace's does."""
    h, a, g = two
    h.send(a, add("p1"))
    drag(h, a, LATENT_A, (20.0, 30.0))
    drag(h, g, LATENT_B, (25.0, 35.0))
    undo(h, g)
    assert undo(h, a)["image"]["latent"] is None and h.room.history.index == 0
    assert h.room.pairs["p1"].handle == (10.5, 20.5)
    out = h.send(g, {"t": "redo"})
    assert only(out, "error").msg["code"] == "undo_conflict" and h.room.history.index == 0
    assert undo(h, a, "redo")["image"]["latent"] == LATENT_A
    assert error_code(h.send(g, {"t": "redo"})) == "nothing_to_redo"  # skipped: gone


def test_a_new_commit_after_an_undo_drops_the_redo_entry_for_its_author(two):
    """Ada undoes her new image, Grace makes another: Ada's redo is skipped, the history linear."""
    h, a, g = two
    h.send(a, {"t": "new_image", "seed": 5})
    undo(h, a)
    h.send(g, {"t": "new_image", "seed": 6})
    assert error_code(h.send(a, {"t": "redo"})) == "undo_conflict"
    assert [e.image.seed for e in h.room.history.entries] == [42, 6] and h.room.history.index == 1


def test_undoing_a_new_image_brings_back_what_it_cleared_and_keeps_later_work(two):
    """Grace's new image cleared Ada's pair and mask; after Ada adds a pair on the new image,
    Grace's undo restores the old image, Ada's old pair and mask, and keeps Ada's new pair."""
    h, a, g = two
    h.send(a, add("p1"))
    h.send(a, stroke("fixed", (50, 50)))
    h.send(g, {"t": "new_image", "seed": 5})
    h.send(a, add("p9", 100.5, 100.5))
    patch = undo(h, g)
    assert patch["image"]["seed"] == 42 and sorted(p["id"] for p in patch["pairs"]) == ["p1", "p9"]
    assert any(patch["mask"]["cells"])
    assert [p["id"] for p in undo(h, a)["pairs"]] == ["p1"]  # Ada's own undo: her new pair


def test_your_new_action_clears_only_your_redo(two):
    """Grace's edits leave Ada's redo stack alone; Ada's own new action clears it."""
    h, a, g = two
    h.send(a, add("p1"))
    undo(h, a)
    h.send(g, add("p2"))
    assert h.room.undo.state_message(a)["redo"] == 1
    h.send(a, add("p3"))
    assert h.room.undo.state_message(a)["redo"] == 0


def test_an_upload_is_undone_by_the_editor_who_sent_it(two):
    """An upload attributed to Ada (the HTTP upload's member) is hers to undo; Grace has nothing."""
    h, a, g = two
    h.send(a, add("p1"))
    h.manager.start_upload(h.room_id, UploadInfo("c" * 64, 256, 256), "optimize", 3, by=a)
    (job,) = h.manager.engine_jobs()
    h.manager.on_frame(job, FrameResult(b"j", {}, psnr=20.0, done="converged"))
    h.manager.on_finished(h.manager.engine_jobs()[0], LATENT_A)
    assert h.room.history.current.kind == "upload" and h.room.pairs == {}
    assert error_code(h.send(g, {"t": "undo"})) == "nothing_to_undo"
    patch = undo(h, a)
    assert patch["image"]["latent"] is None and [p["id"] for p in patch["pairs"]] == ["p1"]


def test_stacks_are_capped(h: Harness):
    """Each stack keeps at most history_max actions (the oldest go)."""
    from server.core.room import RoomLimits

    h = Harness(RoomLimits(history_max=3))
    a = h.join().member_id
    for i in range(6):
        h.send(a, add(f"p{i}", 10.5 + i))
    assert h.room.undo.state_message(a)["undo"] == 3


def test_mask_step_reverts_only_cells_that_still_hold():
    """mask_step: cells changed since stay; the applied change is inert elsewhere, so redo matches."""
    c = MaskChange(bytes([0, 0, 0, 0]), bytes([1, 1, 1, 0]))
    new, applied = mask_step(c, bytes([1, 2, 1, 0]), redo=False)
    assert new == bytes([0, 2, 0, 0])
    back, _ = mask_step(applied, new, redo=True)
    assert back == bytes([1, 2, 1, 0])
    assert mask_step(c, bytes([2, 2, 2, 0]), redo=False) is None


def test_stacks_round_trip_through_json():
    """UndoBook.to_json / from_json keep every action and change (masks compressed)."""
    book = UndoBook()
    book.record("m1", "paint_mask", [MaskChange(bytes(4096), bytes([1]) * 4096)], 0.0, {
        "mode": "flexible", "radius": 3.0, "points": [(1.0, 1.0)]})  # fmt: skip
    data = book.to_json()
    again = UndoBook.from_json({k: v for k, v in data.items() if v is not None})
    (action,) = again.members["m1"].undo
    assert isinstance(action, Action) and action.changes == book.members["m1"].undo[0].changes


def test_random_sessions_keep_history_consistent(h: Harness):
    """Two editors doing random edits, drags and undos: every message validates, the history index
    stays inside it, the image is always the current entry's, and stacks never pass their cap."""
    rng = random.Random(7)
    a, g = h.join().member_id, h.join(name="Grace").member_id
    latents = iter(f"{i:064x}" for i in range(1, 10_000))
    for _ in range(400):
        who = rng.choice((a, g))
        r = rng.random()
        pid = f"p{rng.randrange(4)}"
        xy = (rng.uniform(0, 255), rng.uniform(0, 255))
        if r < 0.15:
            h.send(who, add(pid, *xy))
        elif r < 0.3:
            h.send(who, move(pid, rng.choice(("handle", "target")), *xy))
        elif r < 0.4:
            h.send(who, stroke(rng.choice(("flexible", "fixed", "erase")), xy))
        elif r < 0.45:
            h.send(who, {"t": "set_params", "params": {"lr": rng.choice((0.001, 0.002, 0.01))}})
        elif r < 0.5:
            h.send(who, {"t": "new_image", "seed": rng.randrange(100)})
        elif r < 0.6 and h.room.pairs:
            drag(h, who, next(latents), xy)
        elif r < 0.85:
            h.send(who, {"t": "undo"})
        else:
            h.send(who, {"t": "redo"})
        h.clock.advance(rng.choice((0.1, 2.0)))
        hist = h.room.history
        assert 0 <= hist.index < len(hist.entries) and h.room.image == hist.current.image
        assert len(h.room.pairs) <= h.room.limits.max_pairs
        for s in h.room.undo.members.values():
            assert len(s.undo) <= h.room.limits.history_max and len(s.redo) <= h.room.limits.history_max


def test_an_image_undo_clears_a_crash_report(two):
    """state.interrupted (a run a crash cut short) goes with the first image undo or redo after it:
    it described the image no longer shown."""
    h, a, _ = two
    h.send(a, {"t": "new_image", "seed": 3})
    h.room.interrupted = {"kind": "drag", "drag": 1, "step": 4, "by": a}
    assert undo(h, a)["interrupted"] is None and h.room.interrupted is None
    assert "interrupted" not in undo(h, a, "redo")


def test_moving_a_target_during_a_drag_is_one_action_and_undo_leaves_the_handle(two):
    """While a drag tracks the handle between two messages of a target gesture, the gesture is still
    one action, and its undo puts back only the target (the handle stays where tracking has it)."""
    h, a, _ = two
    h.send(a, add("p1"))
    h.send(a, {"t": "start"})
    h.clock.advance(2)
    for i in range(3):
        (job,) = h.manager.engine_jobs()
        h.manager.on_frame(job, FrameResult(b"j", {"p1": (12.5 + i, 22.5)}))
        h.clock.advance(0.1)
        h.send(a, move("p1", "target", 50.5 + i, 60.5))
    assert h.room.undo.state_message(a)["undo"] == 2  # the pair, the gesture
    pair = undo(h, a)["pairs"][0]
    assert pair["target"] == [30.5, 40.5] and pair["handle"] == [14.5, 22.5]
