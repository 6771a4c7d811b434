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


def _mirror(name: str) -> str:
    if name.startswith("jaw_"):
        return f"jaw_{8 - int(name[4:])}"
    for a, b in (("left", "right"), ("right", "left")):
        if a in name:
            return name.replace(a, b)
    return name


# FLIP_INDEX[i] is the landmark that i becomes when the image is mirrored left-right
FLIP_INDEX: list[int] = [LANDMARK_NAMES.index(_mirror(n)) for n in LANDMARK_NAMES]


def face_size(landmarks) -> float | np.ndarray:
    """Inter-ocular distance: outer-eye-corner to outer-eye-corner, in pixels.

    ``landmarks`` is [K, 2] (returns a float) or [N, K, 2] (returns [N]). About 0.5 x the face
    width for a frontal face; it shrinks a little with yaw (cos of the turn).
    """
    lm = np.asarray(landmarks, dtype=np.float64)
    dist = np.linalg.norm(lm[..., _OUTER[1], :] - lm[..., _OUTER[0], :], axis=-1)
    return float(dist) if lm.ndim == 2 else dist


def pair_spread(landmarks) -> float:
    """Geometric variety of a set of faces: the mean distance (px) between the same landmarks of
    faces 2i and 2i + 1, i.e. the no-edit MD of the drag benchmark's ``pairs`` protocol with all
    landmarks. [N, K, 2], N even and >= 2 -> float."""
    lm = np.asarray(landmarks, dtype=np.float64)
    if lm.ndim != 3 or lm.shape[0] < 2 or lm.shape[0] % 2 or lm.shape[2] != 2:
        raise ValueError(f"landmarks must be [N, K, 2] with N even and >= 2, got {lm.shape}")
    return float(np.linalg.norm(lm[0::2] - lm[1::2], axis=-1).mean())


def geometric_sanity(landmarks) -> np.ndarray:
    """Does each landmark set look like a face? [K, 2] or [N, K, 2] -> bool [N].

    Checked in the frame of the eye axis (left pupil -> right pupil), so head roll is allowed:
    the eye axis is within 40 degrees of horizontal and points image-right; brows above eyes
    above the nose tip above the upper lip above the lower lip above the chin; corners and jaw
    ends in left-to-right order; inter-pupil distance 0.2..0.8 of the jaw width; nose tip
    0.15..1.5 inter-pupil distances below the eyes; mouth narrower than the jaw.
    """
    lm = np.asarray(landmarks, dtype=np.float64)
    if lm.ndim == 2:
        lm = lm[None]
    if lm.ndim != 3 or lm.shape[1:] != (NUM_LANDMARKS, 2):
        raise ValueError(f"landmarks must be [N, {NUM_LANDMARKS}, 2], got {lm.shape}")
    i = {n: k for k, n in enumerate(LANDMARK_NAMES)}
    eye_l, eye_r = lm[:, i["left_pupil"]], lm[:, i["right_pupil"]]
    axis = eye_r - eye_l
    ipd = np.linalg.norm(axis, axis=-1)
    ex = axis / np.maximum(ipd, 1e-9)[:, None]  # unit vector along the eyes
    ey = np.stack([-ex[:, 1], ex[:, 0]], -1)  # perpendicular, pointing down the face
    centre = (eye_l + eye_r) / 2
    u = np.einsum("nkd,nd->nk", lm - centre[:, None], ex)  # along the eyes
    v = np.einsum("nkd,nd->nk", lm - centre[:, None], ey)  # down the face

    def below(a: str, b: str):  # b is below a
        return v[:, i[b]] > v[:, i[a]]

    def right_of(a: str, b: str):  # b is right of a
        return u[:, i[b]] > u[:, i[a]]

    ok = (ipd > 1e-6) & (ex[:, 0] > np.cos(np.radians(40)))
    for brow, eye in (("left_brow_mid", "left_pupil"), ("right_brow_mid", "right_pupil")):
        ok &= below(brow, eye)
    ok &= below("left_eye_top", "left_eye_bottom") & below("right_eye_top", "right_eye_bottom")
    ok &= below("left_pupil", "nose_tip") & below("right_pupil", "nose_tip")
    ok &= below("nose_tip", "upper_lip_top") & below("upper_lip_top", "lower_lip_bottom")
    ok &= below("lower_lip_bottom", "jaw_4")
    ok &= below("nose_tip", "mouth_left") & below("nose_tip", "mouth_right")
    for a, b in (
        ("left_eye_outer", "left_eye_inner"),
        ("left_eye_inner", "right_eye_inner"),
        ("right_eye_inner", "right_eye_outer"),
        ("left_brow_outer", "left_brow_inner"),
        ("left_brow_inner", "right_brow_inner"),
        ("right_brow_inner", "right_brow_outer"),
        ("mouth_left", "mouth_right"),
        ("jaw_0", "nose_tip"),
        ("nose_tip", "jaw_8"),
        ("jaw_0", "mouth_left"),
        ("mouth_right", "jaw_8"),
    ):
        ok &= right_of(a, b)
    jaw_w = u[:, i["jaw_8"]] - u[:, i["jaw_0"]]
    ok &= (ipd > 0.2 * jaw_w) & (ipd < 0.8 * jaw_w)
    nose_drop = v[:, i["nose_tip"]]
    ok &= (nose_drop > 0.15 * ipd) & (nose_drop < 1.5 * ipd)
    ok &= (u[:, i["mouth_right"]] - u[:, i["mouth_left"]]) < jaw_w
    return ok
