"""Teacher drags on SynthFaces: the long landmark-group drags (bench_drag's ``long`` protocol) as a
share of the landmark drags, and the old kinds untouched when that share is 0."""

from __future__ import annotations

import numpy as np
import pytest

from server.engine.generator import Generator
from server.synthfaces import LANDMARK_NAMES
from server.synthfaces.long_drags import LONG_GROUPS, LONG_LENGTH, group_indices, group_moves, long_moves
from server.training.trajectories import KIND_LANDMARK, KIND_LANDMARK_LONG, TrajectoryConfig, make_shard


class CentreDetector:
    """Stands in for the landmark detector: every face's landmarks spread over the central third."""

    def detect(self, images: np.ndarray) -> np.ndarray:
        res = images.shape[1]
        rng = np.random.default_rng(0)
        lm = rng.uniform(res / 3, 2 * res / 3, (len(LANDMARK_NAMES), 2)).astype(np.float32)
        return np.broadcast_to(lm, (len(images), *lm.shape)).copy()


def test_landmark_long_drags_move_a_group_by_the_long_lengths(tiny_G: Generator, one_torch_thread) -> None:
    cfg = TrajectoryConfig(
        shards=1, per_shard=8, batch=8, max_steps=2, landmark_frac=1.0, landmark_long_frac=1.0
    )
    trajs = make_shard(tiny_G, 0, cfg, detector=CentreDetector())
    assert {t["kind"] for t in trajs} == {KIND_LANDMARK_LONG}
    res = tiny_G.img_resolution
    sizes = {len(idx) for idx in (group_indices(g) for g in LONG_GROUPS)}
    for t in trajs:
        h0, tg = t["handles"][0], t["targets"]
        assert len(tg) in sizes
        move = np.linalg.norm(tg - h0, axis=1)
        # the first tracked handles are the landmarks; targets clipped to the image
        assert (move <= LONG_LENGTH[1] * res + 1.5).all()
        assert ((tg >= 0) & (tg <= res - 1)).all()


def test_landmark_long_share_zero_keeps_the_old_drags(tiny_G: Generator, one_torch_thread) -> None:
    cfg = TrajectoryConfig(shards=1, per_shard=4, batch=4, max_steps=1, landmark_frac=1.0)
    a = make_shard(tiny_G, 0, cfg, detector=CentreDetector())
    assert {t["kind"] for t in a} == {KIND_LANDMARK}
    with pytest.raises(ValueError, match="landmark_long_frac"):
        TrajectoryConfig(landmark_long_frac=1.5)


@pytest.mark.parametrize("group", list(LONG_GROUPS))
def test_group_moves_direction_and_length(group: str) -> None:
    res, n = 128, 50
    lm = np.full((n, len(LANDMARK_NAMES), 2), 64.0)
    moved = group_moves(group, lm, res, np.random.default_rng(1))
    d = moved - lm[:, group_indices(group)]
    length = np.linalg.norm(d, axis=2)
    assert (length >= LONG_LENGTH[0] * res - 1e-6).all() and (length <= LONG_LENGTH[1] * res + 1e-6).all()
    dx, dy = d[..., 0], d[..., 1]
    if group == "chin":
        assert (dy > 0).all() and (np.abs(dx) < dy).all()
    elif group == "brows":
        assert (dy < 0).all() and (np.abs(dx) < -dy).all()
    elif group == "nose":
        assert (np.abs(dx) > np.abs(dy)).all()
    elif group == "mouth":  # corners out (left one left, right one right) and up
        assert (dy < 0).all() and (dx[:, 0] < 0).all() and (dx[:, 1] > 0).all()
    # the benchmark's draws depend on (seed, group) only
    assert np.array_equal(long_moves(group, lm, res, 3), long_moves(group, lm, res, 3))
