"""The rules that end a drag by itself (server/engine/stop_rules.py): lost handles and stalls."""

from __future__ import annotations

import torch

from server.engine.stop_rules import (
    LOST_RATIO,
    StallWatch,
    arrival,
    lost_handles,
    match_ratio,
    track_and_flag,
)


def watch(*worst: float) -> StallWatch:
    w = StallWatch()
    for d in worst:
        w.add(torch.tensor([d, d / 2]))  # the largest distance d, the mean 0.75 d
    return w


def test_stalled_when_the_largest_distance_stops_falling() -> None:
    """Stalled on "max": the last N records never went more than px below the best before them."""
    assert watch(10, 9, 9, 9, 9).stalled(3, 0.5, "max")
    assert not watch(10, 10, 9, 8).stalled(3, 0.5, "max")  # 2 px below the best before the window
    assert watch(10, 9, 10, 9, 10).stalled(3, 0.5, "max")  # a handle jittering by a pixel is no progress
    assert not watch(10, 9, 8.4, 9, 10).stalled(3, 0.5, "max")  # 0.6 px of progress in the window
    assert watch(10, 9, 8.5, 9, 10).stalled(3, 0.5, "max")  # exactly px: not more than it


def test_stall_on_the_mean_sees_a_drag_closing_in_behind_one_stuck_handle() -> None:
    """The default measure is the mean: one handle stuck at 20 px while 29 others close in 1 px a
    step is progress; the same drag with every handle stuck is stalled."""
    w = StallWatch()
    for k in range(12):
        w.add(torch.tensor([20.0] + [15.0 - k] * 29))
    assert not w.stalled(8, 1.0) and w.stalled(8, 1.0, "max")
    still = StallWatch()
    for _ in range(12):
        still.add(torch.tensor([20.0] + [15.0] * 29))
    assert still.stalled(8, 1.0)
    assert watch(10, 9, 9, 9, 9).stalled(3, 0.5)  # mean 7.5, 6.75, ...: stuck
    assert not watch(10, 10, 9, 8).stalled(3, 0.5)


def test_stall_needs_a_full_window_and_restarts_with_the_points() -> None:
    w = watch(10, 10, 10)
    assert not w.stalled(3, 0.5)  # three records: nothing before the window yet
    w.add(torch.tensor([10.0]))
    assert w.stalled(3, 0.5)
    assert not w.stalled(0, 0.5)  # 0 steps: the rule is off
    w.reset()
    assert not w.stalled(3, 0.5)


def test_lost_handles_and_match_ratio() -> None:
    """A handle is lost when its best match is worse than lost_ratio times its template's spread."""
    best, spread = torch.tensor([0.0, 1.0, 3.0]), torch.tensor([2.0, 2.0, 2.0])
    m = match_ratio(best, spread)
    assert torch.allclose(m, torch.tensor([0.0, 0.5, 1.5]))
    assert lost_handles(m, 1.0).tolist() == [False, False, True]
    assert lost_handles(m, None).tolist() == [False, False, False]  # the rule off
    assert match_ratio(torch.tensor([0.0]), torch.tensor([0.0])).item() == 0.0  # flat and found
    assert match_ratio(torch.tensor([0.1]), torch.tensor([0.0])).item() > 1e4  # flat and not found
    assert 0 < LOST_RATIO < 2


def test_arrival_never_says_reached_with_a_lost_handle() -> None:
    """reached: all there and none lost; lost: all lost, or every handle still found is there."""
    no, d = torch.tensor([False, False]), torch.tensor([0.5, 3.0])
    assert arrival(d, no, 1.0) is None
    assert arrival(torch.tensor([0.5, 0.9]), no, 1.0) == "reached"
    assert arrival(d, torch.tensor([False, True]), 1.0) == "lost"  # the one away is lost: the rest arrived
    assert arrival(d, torch.tensor([True, False]), 1.0) is None  # the one found is still away
    assert arrival(d, torch.tensor([True, True]), 1.0) == "lost"


def test_a_lost_handle_stays_lost_and_keeps_its_place() -> None:
    """track_and_flag: the lost flags only grow, and a lost handle is not moved by tracking."""
    feat = torch.zeros(1, 2, 16, 16)
    feat[0, 0, 5, 9] = 1.0  # one distinct pixel at (x=9, y=5)
    templates = torch.tensor([[1.0, 0.0], [5.0, 5.0]])  # handle 0's feature is there; handle 1's is nowhere
    spread = torch.tensor([1.0, 1.0])
    handles = torch.tensor([[8.0, 6.0], [3.0, 3.0]])
    new, match, lost = track_and_flag(feat, templates, spread, handles, torch.tensor([False, False]), 3, 1.0)
    assert new[0].tolist() == [9.0, 5.0] and lost.tolist() == [False, True] and match[1] > 1.0
    assert new[1].tolist() == [3.0, 3.0]  # kept where it was, not moved to whatever matched best
    templates[1] = 0.0  # its feature is found again (every zero pixel): it stays lost all the same
    new, match, lost = track_and_flag(feat, templates, spread, new, lost, 3, 1.0)
    assert lost.tolist() == [False, True] and match[1] == 0.0 and new[1].tolist() == [3.0, 3.0]
    _, _, off = track_and_flag(
        feat, torch.tensor([[5.0, 5.0]]), spread[:1], handles[:1], torch.tensor([False]), 3, None
    )
    assert off.tolist() == [False]  # the rule off
