"""The named demo drags: handles at the named landmarks, targets offset, scaled and clipped."""

from __future__ import annotations

import numpy as np

from server.synthfaces.demos import DEMO_DRAGS, DemoDrag
from server.synthfaces.landmarks import LANDMARK_NAMES


def test_points_follow_the_named_landmarks_and_stay_in_the_image() -> None:
    lm = np.stack([np.arange(30, dtype=np.float32), np.full(30, 60.0, dtype=np.float32)], axis=1)
    demo = DemoDrag("x", 0, (("nose_tip", (5, 0)), ("mouth_left", (-3, 10))))
    handles, targets = demo.points(lm, 64)
    i, j = LANDMARK_NAMES.index("nose_tip"), LANDMARK_NAMES.index("mouth_left")
    assert demo.indices == [i, j]
    assert handles == [[float(i), 60.0], [float(j), 60.0]]
    assert targets == [[i + 5.0, 60.0], [j - 3.0, 63.0]]  # y clipped to the last row
    _, big = demo.points(lm * 2, 128)  # offsets are px at 64 px: doubled at 128
    assert big[0] == [2 * i + 10.0, 120.0]


def test_every_demo_names_real_landmarks() -> None:
    assert len({d.name for d in DEMO_DRAGS}) == len(DEMO_DRAGS)
    for d in DEMO_DRAGS:
        assert all(n in LANDMARK_NAMES for n, _ in d.moves)
