"""Face parameters and their sampling distribution.

Lengths are in *face units*: the half-width of the face at the cheek line is 1, y points down,
the origin is the face centre on the cheek line (just below the eyes). ``scale`` maps face units
to pixels as a fraction of the image size, so a face looks the same at every resolution.
Colours are RGB triples in [0, 1]. Angles are radians.
"""

from __future__ import annotations

import colorsys
from dataclasses import dataclass, fields

import numpy as np

RGB = tuple[float, float, float]

HAIR_STYLES = ("straight", "curly", "spiky", "bun")


@dataclass(frozen=True)
class FaceParams:
    # --- placement and pose ---
    cx: float = 0.5  # head centre x, fraction of image width (sampled 0.47..0.53)
    cy: float = 0.47  # head centre y (cheek line), fraction of image height (0.45..0.50)
    scale: float = 0.24  # face half-width as a fraction of image size (0.215..0.27)
    yaw: float = 0.0  # turn, > 0 moves features toward image right (-0.45..0.45)
    pitch: float = 0.0  # nod, > 0 moves features down, face looks down (-0.25..0.25)
    roll: float = 0.0  # in-plane tilt, > 0 is clockwise on screen (-0.2..0.2)
    # --- face shape ---
    jaw_width: float = 0.8  # jaw half-width at 80% of the lower face, relative to the cheeks (0.6..1.0)
    jaw_roundness: float = 2.3  # superellipse exponent of the lower face: 1.8 pointed .. 3.2 square
    chin_length: float = 1.05  # cheek line to chin bottom, face units (0.95..1.2)
    # --- eyes ---
    eye_open_l: float = 0.85  # image-left eye openness (0.25 almost shut .. 1 wide open)
    eye_open_r: float = 0.85  # image-right eye openness
    gaze_x: float = 0.0  # iris offset, -1 looks image-left .. 1 image-right
    gaze_y: float = 0.0  # iris offset, -1 up .. 1 down
    eye_spacing: float = 0.43  # eye centre distance from the face midline (0.38..0.48)
    eye_size: float = 0.21  # eye half-width (0.18..0.24)
    iris_color: RGB = (0.35, 0.22, 0.12)  # iris colour (the pupil is drawn darker)
    # --- brows ---
    brow_height: float = 0.27  # brow centre line above the eye centre (0.21..0.33)
    brow_angle: float = 0.0  # > 0 raises the inner ends (worried), < 0 lowers them (angry) (-0.35..0.35)
    brow_thickness: float = 0.065  # brow thickness at the inner end (0.04..0.09)
    # --- nose ---
    nose_length: float = 0.34  # eye line to nose tip (0.28..0.42)
    nose_width: float = 0.15  # half-width of the nostril wings (0.11..0.19)
    # --- mouth ---
    mouth_width: float = 0.31  # mouth half-width, corner to midline (0.24..0.38)
    mouth_open: float = 0.1  # gap between the lips, 0 closed .. 1 wide open
    smile: float = 0.3  # corner curvature, -0.6 frown .. 1 big smile
    lip_color: RGB = (0.75, 0.4, 0.4)  # lip colour
    # --- hair ---
    hair_style: int = 0  # index into HAIR_STYLES: 0 straight, 1 curly, 2 spiky, 3 bun
    hair_length: float = 0.3  # 0 short (no back hair, sampled 35%) .. 1 past the shoulders
    hair_volume: float = 0.5  # how far the hair stands off the head (0..1)
    hair_fringe: float = 0.3  # 0 high forehead .. 1 fringe down to the brows
    hair_part: float = 0.0  # side sweep of the fringe, -1 .. 1
    hair_color: RGB = (0.25, 0.15, 0.09)  # hair colour (brows are a darker shade of it)
    # --- colours, light ---
    skin_color: RGB = (0.9, 0.72, 0.58)  # skin colour before shading
    cloth_color: RGB = (0.3, 0.4, 0.6)  # shirt colour
    bg_color: RGB = (0.6, 0.7, 0.8)  # background colour at the gradient start
    bg_color2: RGB = (0.5, 0.6, 0.75)  # background colour at the gradient end
    bg_angle: float = 1.57  # gradient direction (0 = left to right, pi/2 = top to bottom)
    light_azimuth: float = 0.0  # light from image left (< 0) or right (> 0), (-1.2..1.2)
    light_elevation: float = 0.3  # light from above (> 0) or below (< 0), (-0.3..0.9)
    light_strength: float = 0.25  # shading amount, 0 flat .. 0.45 strong
    # --- accessories ---
    glasses: bool = False  # draw glasses (sampled with probability 0.2)
    glasses_color: RGB = (0.1, 0.1, 0.12)  # glasses frame colour

    def replace(self, **changes) -> FaceParams:
        """A copy with some fields changed (dataclasses.replace)."""
        from dataclasses import replace

        return replace(self, **changes)

    def to_dict(self) -> dict:
        return {f.name: getattr(self, f.name) for f in fields(self)}


_SKIN = np.array(
    [
        [0.98, 0.87, 0.78],
        [0.95, 0.80, 0.67],
        [0.88, 0.68, 0.53],
        [0.77, 0.56, 0.40],
        [0.60, 0.41, 0.28],
        [0.42, 0.28, 0.19],
    ]
)
_HAIR = np.array(
    [
        [0.09, 0.07, 0.06],  # black
        [0.22, 0.13, 0.08],  # dark brown
        [0.42, 0.26, 0.14],  # brown
        [0.86, 0.70, 0.42],  # blond
        [0.66, 0.28, 0.11],  # ginger
        [0.58, 0.57, 0.56],  # grey
        [0.88, 0.87, 0.84],  # white
    ]
)
_HAIR_P = np.array([0.22, 0.22, 0.18, 0.14, 0.08, 0.06, 0.03])  # + 0.07 dyed (any hue)
_IRIS = np.array(
    [
        [0.30, 0.17, 0.08],  # brown
        [0.12, 0.08, 0.06],  # dark
        [0.22, 0.42, 0.70],  # blue
        [0.25, 0.48, 0.28],  # green
        [0.48, 0.38, 0.18],  # hazel
    ]
)


def _hsv(h: float, s: float, v: float) -> RGB:
    r, g, b = colorsys.hsv_to_rgb(h % 1.0, s, v)
    return (float(r), float(g), float(b))


def _clip3(c) -> RGB:
    c = np.clip(np.asarray(c, dtype=np.float64), 0.0, 1.0)
    return (float(c[0]), float(c[1]), float(c[2]))


def sample_params(rng: np.random.Generator) -> FaceParams:
    """Draw a random face; every face stays inside the frame (landmarks included)."""
    u = rng.uniform
    t = u(0, len(_SKIN) - 1)
    i = min(int(t), len(_SKIN) - 2)
    skin = _SKIN[i] * (1 - (t - i)) + _SKIN[i + 1] * (t - i) + u(-0.025, 0.025, 3)
    skin = np.clip(skin, 0, 1)

    k = rng.choice(len(_HAIR_P) + 1, p=np.append(_HAIR_P, 1 - _HAIR_P.sum()))
    if k < len(_HAIR):
        hair = _HAIR[k] * u(0.85, 1.15) + u(-0.03, 0.03, 3)
    else:
        hair = np.array(_hsv(u(), u(0.45, 0.8), u(0.45, 0.85)))

    lip_t = u(0.3, 0.7)
    lip = skin * (1 - lip_t) + np.array([0.78, 0.22, 0.28]) * lip_t
    lip = lip * u(0.8, 1.0)
    if u() < 0.12:  # lipstick
        lip = np.array(_hsv(u(-0.05, 0.02), u(0.6, 0.85), u(0.5, 0.85)))

    bg_h, bg_s, bg_v = u(), u(0.12, 0.55), u(0.5, 0.95)
    style = int(rng.choice(4, p=[0.5, 0.2, 0.15, 0.15]))
    open_base = u(0.45, 1.0)
    mouth_open = u(0.0, 0.12) if u() < 0.6 else u(0.12, 1.0)
    glasses = bool(u() < 0.2)
    return FaceParams(
        cx=u(0.47, 0.53),
        cy=u(0.45, 0.50),
        scale=u(0.215, 0.27),
        yaw=u(-0.45, 0.45),
        pitch=u(-0.22, 0.22),
        roll=u(-0.2, 0.2),
        jaw_width=u(0.6, 1.0),
        jaw_roundness=u(1.8, 3.2),
        chin_length=u(0.95, 1.2),
        eye_open_l=float(np.clip(open_base + u(-0.12, 0.12), 0.25, 1.0)),
        eye_open_r=float(np.clip(open_base + u(-0.12, 0.12), 0.25, 1.0)),
        gaze_x=u(-1, 1),
        gaze_y=u(-1, 1),
        eye_spacing=u(0.38, 0.48),
        eye_size=u(0.18, 0.24),
        iris_color=_clip3(_IRIS[rng.integers(len(_IRIS))] * u(0.8, 1.2)),
        brow_height=u(0.21, 0.33),
        brow_angle=u(-0.35, 0.35),
        brow_thickness=u(0.04, 0.09),
        nose_length=u(0.28, 0.42),
        nose_width=u(0.11, 0.19),
        mouth_width=u(0.24, 0.38),
        mouth_open=mouth_open,
        smile=u(-0.6, 1.0),
        lip_color=_clip3(lip),
        hair_style=style,
        hair_length=0.0 if u() < 0.35 else u(0.15, 1.0),
        hair_volume=u(0.0, 1.0),
        hair_fringe=u(0.0, 1.0),
        hair_part=u(-1, 1),
        hair_color=_clip3(hair),
        skin_color=_clip3(skin),
        cloth_color=_hsv(u(), u(0.2, 0.8), u(0.25, 0.9)),
        bg_color=_hsv(bg_h, bg_s, bg_v),
        bg_color2=_hsv(bg_h + u(-0.08, 0.08), bg_s * u(0.7, 1.2), bg_v * u(0.75, 1.05)),
        bg_angle=u(0, 2 * np.pi),
        light_azimuth=u(-1.2, 1.2),
        light_elevation=u(-0.3, 0.9),
        light_strength=u(0.05, 0.45),
        glasses=glasses,
        glasses_color=_hsv(u(), u(0, 0.8), u(0.05, 0.6)),
    )
