"""Landmark names, index groups and the face-size normaliser.

"left" and "right" are image-left and image-right (as seen on screen, not the person's own).
"""

from __future__ import annotations

import numpy as np

LANDMARK_NAMES: tuple[str, ...] = (
    # jaw contour, image-left cheek -> chin (jaw_4) -> image-right cheek
    "jaw_0", "jaw_1", "jaw_2", "jaw_3", "jaw_4", "jaw_5", "jaw_6", "jaw_7", "jaw_8",
    # brows, each outer -> inner along the brow's centre line
    "left_brow_outer", "left_brow_mid", "left_brow_inner",
    "right_brow_inner", "right_brow_mid", "right_brow_outer",
    # eyes: corners, upper/lower lid midpoints, pupil (iris centre)
    "left_eye_outer", "left_eye_top", "left_eye_inner", "left_eye_bottom", "left_pupil",
    "right_eye_inner", "right_eye_top", "right_eye_outer", "right_eye_bottom", "right_pupil",
    # nose tip (middle of the drawn underside line)
    "nose_tip",
    # mouth corners and lip centres (outer edges)
    "mouth_left", "upper_lip_top", "mouth_right", "lower_lip_bottom",
)  # fmt: skip
NUM_LANDMARKS = len(LANDMARK_NAMES)


def _idx(*names: str) -> list[int]:
    return [LANDMARK_NAMES.index(n) for n in names]


LANDMARK_GROUPS: dict[str, list[int]] = {
    "jaw": list(range(9)),
    "left_brow": _idx("left_brow_outer", "left_brow_mid", "left_brow_inner"),
    "right_brow": _idx("right_brow_inner", "right_brow_mid", "right_brow_outer"),
    "left_eye": _idx("left_eye_outer", "left_eye_top", "left_eye_inner", "left_eye_bottom", "left_pupil"),
    "right_eye": _idx(
        "right_eye_inner", "right_eye_top", "right_eye_outer", "right_eye_bottom", "right_pupil"
    ),
    "nose": _idx("nose_tip"),
    "mouth": _idx("mouth_left", "upper_lip_top", "mouth_right", "lower_lip_bottom"),
    # benchmark subsets (DragGAN's 1 / 5 / all-points table)
    "one": _idx("nose_tip"),
    "five": _idx("left_pupil", "right_pupil", "nose_tip", "mouth_left", "mouth_right"),
    "all": list(range(NUM_LANDMARKS)),
}

_OUTER = _idx("left_eye_outer", "right_eye_outer")


def face_size(landmarks) -> float | np.ndarray:
    """Inter-ocular distance: outer-eye-corner to outer-eye-corner, in pixels.

    ``landmarks`` is [K, 2] (returns a float) or [N, K, 2] (returns [N]). About 0.5 x the face
    width for a frontal face; it shrinks a little with yaw (cos of the turn).
    """
    lm = np.asarray(landmarks, dtype=np.float64)
    dist = np.linalg.norm(lm[..., _OUTER[1], :] - lm[..., _OUTER[0], :], axis=-1)
    return float(dist) if lm.ndim == 2 else dist
