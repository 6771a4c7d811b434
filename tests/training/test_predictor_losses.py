"""Training pairs drawn from teacher trajectories (server/training/predictor_losses.Pairs)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from server.training.predictor_losses import Pairs

STEPS = 30  # recorded steps of the one synthetic teacher drag


def one_drag() -> dict:
    """One teacher drag of two handles: handle 0 moves 1 px right per step toward a target 40 px
    away; handle 1 sits 0.5 px from its target and jitters by 0.3 px (incidental motion)."""
    t = torch.arange(STEPS, dtype=torch.float32)
    h0 = torch.stack([10 + t, torch.full_like(t, 20.0)], dim=1)
    h1 = torch.stack([30 + 0.3 * (t % 2), torch.full_like(t, 30.0)], dim=1)
    n_rows, d = 2, 4
    return {
        "w0": torch.zeros(1, 3, d),
        "dw": torch.arange(STEPS, dtype=torch.float32)[:, None, None].expand(STEPS, n_rows, d).half(),
        "handles": torch.stack([h0, h1], dim=1),  # [STEPS, 2, 2]
        "targets": torch.tensor([[[50.0, 20.0], [30.5, 30.0]]]),
        "offsets": torch.tensor([0, STEPS]),
        "n_points": torch.tensor([2]),
    }


def picks(pairs: Pairs, n: int = 400) -> list[tuple[int, int, int]]:
    rng = np.random.default_rng(0)
    return [pairs.pick(rng) for _ in range(n)]


def test_span_sets_how_far_the_fastest_handle_moves_in_a_pair() -> None:
    """k is the first step at which the fastest handle moved U(span) sub-steps: 2-6 px with the
    default (0.5, 1.5) of a 4 px sub-step, 1-4 px with (0.25, 1.0); at 1 px per step that is
    k = ceil(4 u), so 3-6 and 2-4 steps. The label is w at t + k."""
    data = one_drag()
    ids = np.array([0])
    default = picks(Pairs(data, ids, substep=4.0, p_single=0.0))
    short = picks(Pairs(data, ids, substep=4.0, p_single=0.0, span=(0.25, 1.0)))
    full = [k for _, t, k in default if t + 6 < STEPS - 1]  # not cut short by the drag's end
    assert full and min(full) == 3 and max(full) == 6
    cut = [k for _, t, k in short if t + 4 < STEPS - 1]
    assert cut and min(cut) == 2 and max(cut) == 4
    assert np.mean([k for *_, k in short]) < np.mean([k for *_, k in default])

    b = Pairs(data, ids, substep=4.0, p_single=0.0).batch(16, np.random.default_rng(1), torch.device("cpu"))
    step = b["w_t"][:, 0, 0]  # dw of step t is t: w_t reads t, the label t + k
    assert torch.all(b["w_next"][:, 0, 0] - step == b["substep"][:, 0, 0])  # handle 0: 1 px per step


def test_zero_arrived_asks_no_move_of_handles_already_within_1_px() -> None:
    """Inference asks a handle within 1 px of its target for no move (PredictSession._substep);
    with ``zero_arrived`` training does too, instead of the teacher's incidental jitter there."""
    data = one_drag()
    ids = np.array([0])
    dev = torch.device("cpu")
    plain = Pairs(data, ids, substep=4.0, p_single=0.0).batch(64, np.random.default_rng(2), dev)
    zeroed = Pairs(data, ids, substep=4.0, p_single=0.0, zero_arrived=True)
    zero = zeroed.batch(64, np.random.default_rng(2), dev)
    assert plain["substep"][:, 1].abs().sum() > 0  # the jitter, as recorded
    assert torch.all(zero["substep"][:, 1] == 0)
    assert torch.equal(zero["substep"][:, 0], plain["substep"][:, 0])  # the moving handle keeps its move
    assert torch.equal(zero["w_next"], plain["w_next"]) and torch.equal(zero["valid"], plain["valid"])


@pytest.mark.parametrize("span", [(0.0, 1.0), (1.5, 0.5), (-1.0, 1.0)])
def test_a_wrong_span_is_refused(span: tuple[float, float]) -> None:
    with pytest.raises(ValueError, match="span"):
        Pairs(one_drag(), np.array([0]), substep=4.0, p_single=0.0, span=span)
