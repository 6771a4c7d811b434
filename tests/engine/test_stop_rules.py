"""The rules that end a drag by itself (server/engine/stop_rules.py): lost handles and stalls."""

from __future__ import annotations

import torch

from server.engine.stop_rules import LOST_RATIO, StallWatch, lost_handles, match_ratio


def watch(*worst: float) -> StallWatch:
    w = StallWatch()
    for d in worst:
        w.add(torch.tensor([d, d / 2]))  # the largest distance is what counts
    return w


def test_stalled_when_the_largest_distance_stops_falling() -> None:
    """Stalled: the last N records never went more than px below the best before them."""
    assert watch(10, 9, 9, 9, 9).stalled(3, 0.5)
    assert not watch(10, 10, 9, 8).stalled(3, 0.5)  # 2 px below the best before the window
    assert watch(10, 9, 10, 9, 10).stalled(3, 0.5)  # a handle jittering by a pixel is no progress
    assert not watch(10, 9, 8.4, 9, 10).stalled(3, 0.5)  # 0.6 px of progress in the window
    assert watch(10, 9, 8.5, 9, 10).stalled(3, 0.5)  # exactly px: not more than it


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
