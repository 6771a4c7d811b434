"""SynthFaces renderer: determinism, shapes, the pixel convention and landmarks on drawn features."""

from __future__ import annotations

import numpy as np
import pytest

from server.synthfaces import (
    LANDMARK_GROUPS,
    LANDMARK_NAMES,
    NUM_LANDMARKS,
    FaceParams,
    face_size,
    render,
    render_batch,
    render_seed,
    sample_params,
)

L = {n: i for i, n in enumerate(LANDMARK_NAMES)}


def params(seed: int, **changes) -> FaceParams:
    return sample_params(np.random.default_rng(seed)).replace(**changes)


def pixel(img: np.ndarray, xy) -> np.ndarray:
    """Colour of the pixel containing point xy (pixel (i, j) covers [i, i+1) x [j, j+1))."""
    return img[int(np.floor(xy[1])), int(np.floor(xy[0]))].astype(np.float64) / 255.0


def sample(img: np.ndarray, xy) -> np.ndarray:
    """Bilinear colour at point xy (pixel centres at i + 0.5)."""
    x, y = xy[0] - 0.5, xy[1] - 0.5
    i, j = int(np.floor(x)), int(np.floor(y))
    fx, fy = x - i, y - j
    im = img.astype(np.float64) / 255.0
    top = im[j, i] * (1 - fx) + im[j, i + 1] * fx
    bot = im[j + 1, i] * (1 - fx) + im[j + 1, i + 1] * fx
    return top * (1 - fy) + bot * fy


def dist(a, b) -> float:
    return float(np.linalg.norm(np.asarray(a, np.float64) - np.asarray(b, np.float64)))


def test_names_and_groups_are_consistent():
    """Every group indexes valid landmarks, and names are unique."""
    assert len(set(LANDMARK_NAMES)) == NUM_LANDMARKS == len(LANDMARK_NAMES)
    assert 20 <= NUM_LANDMARKS <= 32
    for idx in LANDMARK_GROUPS.values():
        assert all(0 <= i < NUM_LANDMARKS for i in idx)
    assert len(LANDMARK_GROUPS["one"]) == 1 and len(LANDMARK_GROUPS["five"]) == 5
    assert LANDMARK_GROUPS["all"] == list(range(NUM_LANDMARKS))


def test_deterministic_per_seed():
    """The same seed gives the same bytes; different seeds give different faces."""
    a, la = render_seed(7)
    b, lb = render_seed(7)
    assert a.tobytes() == b.tobytes() and la.tobytes() == lb.tobytes()
    c, lc = render_seed(8)
    assert np.abs(a.astype(int) - c.astype(int)).mean() > 5
    assert not np.allclose(la, lc)


@pytest.mark.parametrize("size", [64, 128])
def test_shapes_and_dtypes(size):
    """Images are uint8 [N, size, size, 3], landmarks float32 [N, K, 2]."""
    img, lm = render_seed(0, size)
    assert img.shape == (size, size, 3) and img.dtype == np.uint8
    assert lm.shape == (NUM_LANDMARKS, 2) and lm.dtype == np.float32
    imgs, lms = render_batch([0, 1, 2], size)
    assert imgs.shape == (3, size, size, 3) and imgs.dtype == np.uint8
    assert lms.shape == (3, NUM_LANDMARKS, 2) and lms.dtype == np.float32
    assert imgs[0].tobytes() == img.tobytes()


def test_landmarks_scale_with_size():
    """The same face at 128 px has its landmarks at twice the 64 px coordinates."""
    _, a = render_seed(3, 64)
    _, b = render_seed(3, 128)
    np.testing.assert_allclose(b, 2 * a, atol=1e-4)


def test_landmarks_inside_image():
    """Every landmark of 300 random faces lies at least 2 px inside the 64 px frame."""
    _, lms = render_batch(range(300), 64)
    assert lms.min() >= 2.0 and lms.max() <= 62.0


def test_pixel_centre_convention():
    """A symmetric face centred at x = size/2 is mirror-symmetric: pixel i's centre is i + 0.5."""
    size = 128
    p = FaceParams(cx=0.5, glasses=False)  # defaults: frontal, no gaze, no part, light from the front
    img, lm = render(p, size)
    assert lm[L["nose_tip"], 0] == pytest.approx(size / 2, abs=1e-4)
    # mirrored landmark pairs are symmetric about size/2
    for a, b in [("jaw_0", "jaw_8"), ("mouth_left", "mouth_right"), ("left_pupil", "right_pupil")]:
        assert lm[L[a], 0] + lm[L[b], 0] == pytest.approx(size, abs=1e-3)
    # the lower face (mouth to below the chin; no nose shadow there) is mirror-symmetric in pixels;
    # with the integer convention the axis would sit at 63.5 and the jaw edges would differ a lot
    y0, y1 = int(lm[L["upper_lip_top"], 1]) - 1, int(lm[L["jaw_4"], 1]) + 2
    band = img[y0:y1].astype(int)
    assert np.abs(band - band[:, ::-1]).max() <= 12
    shifted = np.roll(band, 1, axis=1)
    assert np.abs(shifted - shifted[:, ::-1]).max() > 40  # the check can see a one-pixel error


def _flat(seed: int, **changes) -> FaceParams:
    """Sampled face with flat lighting, no glasses and open eyes, for colour checks."""
    return params(seed, light_strength=0.0, glasses=False, eye_open_l=0.9, eye_open_r=0.9, **changes)


@pytest.mark.parametrize("seed", range(12))
def test_pupil_landmark_is_on_the_iris(seed):
    """The pixel under each pupil landmark is the dark pupil/iris colour, not skin or sclera."""
    p = _flat(seed)
    p = p.replace(gaze_y=0.5 * p.gaze_y)  # looking far down/up the lid line crosses the pupil
    img, lm = render(p, 128)
    iris = np.asarray(p.iris_color)
    for name in ("left_pupil", "right_pupil"):
        c = sample(img, lm[L[name]])
        # the pupil is drawn as 0.3 x iris: the pixel lies between the two shades of the iris colour
        t = np.clip(c @ iris / (iris @ iris), 0.3, 1.0)
        d_eye = dist(c, t * iris)
        assert d_eye < dist(c, p.skin_color), name
        assert d_eye < dist(c, (0.96, 0.96, 0.95)), name
        assert d_eye < 0.1, (name, c, iris)


@pytest.mark.parametrize("seed", range(12))
def test_lip_landmarks_touch_the_lips(seed):
    """Within 1.5 px of each mouth landmark there is a pixel closer to lip colour than to skin."""
    p = _flat(seed)
    img, lm = render(p, 128)
    lips = [np.asarray(p.lip_color) * f for f in (0.45, 0.9, 1.0, 1.06)]
    for name in ("mouth_left", "mouth_right", "upper_lip_top", "lower_lip_bottom"):
        x, y = lm[L[name]]
        found = False
        for dy in (-1.5, -0.75, 0.0, 0.75, 1.5):
            for dx in (-1.5, -0.75, 0.0, 0.75, 1.5):
                c = pixel(img, (x + dx, y + dy))
                if min(dist(c, q) for q in lips) < 0.6 * dist(c, p.skin_color):
                    found = True
        assert found, name


@pytest.mark.parametrize("seed", range(12))
def test_nose_tip_is_inside_the_face(seed):
    """The nose tip lies between the cheeks, above the chin, below the eyes, on skin-toned pixels."""
    p = _flat(seed)
    img, lm = render(p, 128)
    nose = lm[L["nose_tip"]]
    assert lm[L["jaw_0"], 0] < nose[0] < lm[L["jaw_8"], 0]
    assert max(lm[L["left_pupil"], 1], lm[L["right_pupil"], 1]) < nose[1] < lm[L["upper_lip_top"], 1]
    c = pixel(img, nose)
    skin = np.asarray(p.skin_color)
    # the nose line is a darker shade of skin: close to the line through black and the skin colour
    t = float(c @ skin / (skin @ skin))
    assert 0.3 < t < 1.1 and dist(c, t * skin) < 0.08


def test_geometry_reads_as_a_face():
    """Brows above eyes above nose above mouth above chin; image-left features left of right ones."""
    _, lms = render_batch(range(200), 64)
    y = lms[..., 1]
    assert (y[:, L["left_brow_mid"]] < y[:, L["left_pupil"]]).all()
    assert (y[:, L["left_pupil"]] < y[:, L["nose_tip"]]).all()
    assert (y[:, L["nose_tip"]] < y[:, L["upper_lip_top"]]).all()
    assert (y[:, L["upper_lip_top"]] < y[:, L["lower_lip_bottom"]]).all()
    assert (y[:, L["lower_lip_bottom"]] < y[:, L["jaw_4"]]).all()
    x = lms[..., 0]
    assert (x[:, L["left_eye_outer"]] < x[:, L["left_eye_inner"]]).all()
    assert (x[:, L["left_eye_inner"]] < x[:, L["right_eye_inner"]]).all()
    assert (x[:, L["right_eye_inner"]] < x[:, L["right_eye_outer"]]).all()
    assert (x[:, L["mouth_left"]] < x[:, L["mouth_right"]]).all()
    fs = face_size(lms)
    assert fs.shape == (200,) and (fs > 12).all() and (fs < 40).all()
    assert face_size(lms[0]) == pytest.approx(fs[0])


def test_mouth_width_moves_the_corners_apart():
    """A wider mouth puts the corners further apart; the eyes stay where they were."""
    _, a = render(params(5, mouth_width=0.25), 128)
    _, b = render(params(5, mouth_width=0.36), 128)
    assert dist(b[L["mouth_left"]], b[L["mouth_right"]]) > dist(a[L["mouth_left"]], a[L["mouth_right"]]) + 4
    np.testing.assert_allclose(a[L["left_pupil"]], b[L["left_pupil"]])


def test_yaw_shifts_features_sideways():
    """Turning toward image-right moves the nose and eyes right, more than the cheek outline."""
    _, a = render(params(6, yaw=-0.3), 128)
    _, b = render(params(6, yaw=0.3), 128)
    shift = b[:, 0] - a[:, 0]
    assert shift[L["nose_tip"]] > 8
    assert shift[L["left_pupil"]] > 4 and shift[L["right_pupil"]] > 4
    assert abs(shift[L["jaw_0"]]) < 0.5 * shift[L["nose_tip"]]


def test_eye_openness_gaze_and_smile():
    """Openness separates the lids, gaze moves the pupils, smiling raises the mouth corners."""
    _, a = render(params(9, eye_open_l=0.3, gaze_x=-1.0, smile=-0.5), 128)
    _, b = render(params(9, eye_open_l=1.0, gaze_x=1.0, smile=1.0), 128)
    gap = lambda lm: lm[L["left_eye_bottom"], 1] - lm[L["left_eye_top"], 1]  # noqa: E731
    assert gap(b) > gap(a) + 2
    assert b[L["left_pupil"], 0] > a[L["left_pupil"], 0] + 1.5
    assert b[L["mouth_left"], 1] < a[L["mouth_left"], 1] - 1.5
    np.testing.assert_allclose(a[L["right_eye_top"]], b[L["right_eye_top"]])


def test_head_position_moves_every_landmark():
    """Moving the head centre translates all landmarks by the same amount."""
    _, a = render(params(11, cx=0.48), 64)
    _, b = render(params(11, cx=0.52), 64)
    np.testing.assert_allclose(b[:, 0] - a[:, 0], 0.04 * 64, atol=1e-3)
    np.testing.assert_allclose(b[:, 1], a[:, 1], atol=1e-4)
