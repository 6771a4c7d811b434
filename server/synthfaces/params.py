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


# --- the latent: one uniform slot per random choice ------------------------------------------
# A face is a function of N_SLOTS numbers in [0, 1), each feeding one choice of the sampler below
# (a slot is never shared between fields, so moving one slot changes one thing). Seeds reach it
# through a Gaussian z (params_from_z), the latent of the distilled generator, so that a seed names
# the same face in the renderer and in the generator (docs/model.md).
GEOMETRY_FIELDS = (
    "cx", "cy", "scale", "yaw", "pitch", "roll", "jaw_width", "jaw_roundness", "chin_length",
    "eye_open_l", "eye_open_r", "gaze_x", "gaze_y", "eye_spacing", "eye_size", "brow_height",
    "brow_angle", "brow_thickness", "nose_length", "nose_width", "mouth_width", "mouth_open",
    "smile", "hair_style", "hair_length", "hair_volume", "hair_fringe", "hair_part", "glasses",
)  # fmt: skip
"""Fields that say where things are; the others (colours, light) say how they look."""

_SLOTS = (
    "skin_t", "skin_r", "skin_g", "skin_b",
    "hair_kind", "hair_mult", "hair_r", "hair_g", "hair_b", "dye_h", "dye_s", "dye_v",
    "lip_t", "lip_mult", "lipstick", "lipstick_h", "lipstick_s", "lipstick_v",
    "bg_h", "bg_s", "bg_v", "bg2_h", "bg2_s", "bg2_v", "bg_angle",
    "hair_style", "open_base", "open_l", "open_r", "mouth_open", "glasses",
    "glasses_h", "glasses_s", "glasses_v",
    "cx", "cy", "scale", "yaw", "pitch", "roll", "jaw_width", "jaw_roundness", "chin_length",
    "gaze_x", "gaze_y", "eye_spacing", "eye_size", "iris_kind", "iris_mult",
    "brow_height", "brow_angle", "brow_thickness", "nose_length", "nose_width",
    "mouth_width", "smile", "hair_length", "hair_volume", "hair_fringe", "hair_part",
    "cloth_h", "cloth_s", "cloth_v", "light_azimuth", "light_elevation", "light_strength",
)  # fmt: skip
N_SLOTS = len(_SLOTS)
SLOT = {name: i for i, name in enumerate(_SLOTS)}
_STYLE_P = np.array([0.5, 0.2, 0.15, 0.15])
_HAIR_KIND_P = np.append(_HAIR_P, 1 - _HAIR_P.sum())


def _pick(u: float, p: np.ndarray) -> int:
    """Inverse CDF of a discrete distribution: the category that uniform u falls into."""
    return int(min(np.searchsorted(np.cumsum(p), u, side="right"), len(p) - 1))


def params_from_uniforms(u) -> FaceParams:
    """The face named by N_SLOTS uniforms in [0, 1) (slot names in ``SLOT``)."""
    u = np.asarray(u, dtype=np.float64)
    if u.shape != (N_SLOTS,):
        raise ValueError(f"expected {N_SLOTS} uniforms, got shape {u.shape}")

    def r(name: str, lo: float = 0.0, hi: float = 1.0) -> float:
        return float(lo + (hi - lo) * u[SLOT[name]])

    def r3(names: tuple[str, str, str], lo: float, hi: float) -> np.ndarray:
        return np.array([r(n, lo, hi) for n in names])

    t = r("skin_t", 0, len(_SKIN) - 1)
    i = min(int(t), len(_SKIN) - 2)
    skin = (
        _SKIN[i] * (1 - (t - i)) + _SKIN[i + 1] * (t - i) + r3(("skin_r", "skin_g", "skin_b"), -0.025, 0.025)
    )
    skin = np.clip(skin, 0, 1)

    k = _pick(u[SLOT["hair_kind"]], _HAIR_KIND_P)
    if k < len(_HAIR):
        hair = _HAIR[k] * r("hair_mult", 0.85, 1.15) + r3(("hair_r", "hair_g", "hair_b"), -0.03, 0.03)
    else:
        hair = np.array(_hsv(r("dye_h"), r("dye_s", 0.45, 0.8), r("dye_v", 0.45, 0.85)))

    lip_t = r("lip_t", 0.3, 0.7)
    lip = (skin * (1 - lip_t) + np.array([0.78, 0.22, 0.28]) * lip_t) * r("lip_mult", 0.8, 1.0)
    if r("lipstick") < 0.12:
        lip = np.array(
            _hsv(r("lipstick_h", -0.05, 0.02), r("lipstick_s", 0.6, 0.85), r("lipstick_v", 0.5, 0.85))
        )

    bg_h, bg_s, bg_v = r("bg_h"), r("bg_s", 0.12, 0.55), r("bg_v", 0.5, 0.95)
    open_base = r("open_base", 0.45, 1.0)
    m = r("mouth_open")  # 60% nearly closed (0..0.12), 40% open (0.12..1), monotone in the slot
    mouth_open = m / 0.6 * 0.12 if m < 0.6 else 0.12 + (m - 0.6) / 0.4 * 0.88
    h = r("hair_length")  # 35% short (0), else 0.15..1
    hair_length = 0.0 if h < 0.35 else 0.15 + (h - 0.35) / 0.65 * 0.85
    return FaceParams(
        cx=r("cx", 0.47, 0.53),
        cy=r("cy", 0.45, 0.50),
        scale=r("scale", 0.215, 0.27),
        yaw=r("yaw", -0.45, 0.45),
        pitch=r("pitch", -0.22, 0.22),
        roll=r("roll", -0.2, 0.2),
        jaw_width=r("jaw_width", 0.6, 1.0),
        jaw_roundness=r("jaw_roundness", 1.8, 3.2),
        chin_length=r("chin_length", 0.95, 1.2),
        eye_open_l=float(np.clip(open_base + r("open_l", -0.12, 0.12), 0.25, 1.0)),
        eye_open_r=float(np.clip(open_base + r("open_r", -0.12, 0.12), 0.25, 1.0)),
        gaze_x=r("gaze_x", -1, 1),
        gaze_y=r("gaze_y", -1, 1),
        eye_spacing=r("eye_spacing", 0.38, 0.48),
        eye_size=r("eye_size", 0.18, 0.24),
        iris_color=_clip3(
            _IRIS[min(int(r("iris_kind", 0, len(_IRIS))), len(_IRIS) - 1)] * r("iris_mult", 0.8, 1.2)
        ),
        brow_height=r("brow_height", 0.21, 0.33),
        brow_angle=r("brow_angle", -0.35, 0.35),
        brow_thickness=r("brow_thickness", 0.04, 0.09),
        nose_length=r("nose_length", 0.28, 0.42),
        nose_width=r("nose_width", 0.11, 0.19),
        mouth_width=r("mouth_width", 0.24, 0.38),
        mouth_open=float(mouth_open),
        smile=r("smile", -0.6, 1.0),
        lip_color=_clip3(lip),
        hair_style=_pick(u[SLOT["hair_style"]], _STYLE_P),
        hair_length=float(hair_length),
        hair_volume=r("hair_volume"),
        hair_fringe=r("hair_fringe"),
        hair_part=r("hair_part", -1, 1),
        hair_color=_clip3(hair),
        skin_color=_clip3(skin),
        cloth_color=_hsv(r("cloth_h"), r("cloth_s", 0.2, 0.8), r("cloth_v", 0.25, 0.9)),
        bg_color=_hsv(bg_h, bg_s, bg_v),
        bg_color2=_hsv(
            bg_h + r("bg2_h", -0.08, 0.08), bg_s * r("bg2_s", 0.7, 1.2), bg_v * r("bg2_v", 0.75, 1.05)
        ),
        bg_angle=r("bg_angle", 0, 2 * np.pi),
        light_azimuth=r("light_azimuth", -1.2, 1.2),
        light_elevation=r("light_elevation", -0.3, 0.9),
        light_strength=r("light_strength", 0.05, 0.45),
        glasses=bool(r("glasses") < 0.2),
        glasses_color=_hsv(r("glasses_h"), r("glasses_s", 0, 0.8), r("glasses_v", 0.05, 0.6)),
    )


def sample_params(rng: np.random.Generator) -> FaceParams:
    """Draw a random face; every face stays inside the frame (landmarks included)."""
    return params_from_uniforms(rng.random(N_SLOTS))


# The generator's mapping network sees z only after normalize_2nd_moment (z * sqrt(n) / |z|), so
# the face must be a function of the normalised z: each of its coordinates x lies in
# [-sqrt(n), sqrt(n)] with density proportional to (1 - x^2 / n)^((n - 3) / 2) (a coordinate of a
# point uniform on the sphere of radius sqrt(n)); its CDF turns x into an exact uniform.
def _sphere_cdf_table(n: int, points: int = 8193) -> tuple[np.ndarray, np.ndarray]:
    x = np.linspace(-np.sqrt(n), np.sqrt(n), points)
    dens = np.clip(1.0 - x**2 / n, 0.0, None) ** ((n - 3) / 2)
    cdf = np.concatenate([[0.0], np.cumsum((dens[1:] + dens[:-1]) * 0.5 * np.diff(x))])
    return x, cdf / cdf[-1]


_SPHERE_X, _SPHERE_CDF = _sphere_cdf_table(N_SLOTS)


def uniforms_from_z(z) -> np.ndarray:
    """Gaussian z [..., N_SLOTS] -> uniforms [..., N_SLOTS] through the normalised z."""
    z = np.asarray(z, dtype=np.float64)
    if z.shape[-1] != N_SLOTS:
        raise ValueError(f"z must have {N_SLOTS} entries in its last axis, got shape {z.shape}")
    x = z / np.sqrt(np.mean(z**2, axis=-1, keepdims=True) + 1e-8)
    u = np.interp(x, _SPHERE_X, _SPHERE_CDF)
    return np.clip(u, 0.0, np.nextafter(1.0, 0.0))


def params_from_z(z) -> FaceParams:
    """The face of a generator latent z [N_SLOTS] (the same face the distilled generator draws)."""
    return params_from_uniforms(uniforms_from_z(np.asarray(z).reshape(-1)))


def z_from_seed(seed: int) -> np.ndarray:
    """``numpy.random.RandomState(seed).randn(N_SLOTS)``: the generator's z of a seed."""
    return np.random.RandomState(int(seed)).randn(1, N_SLOTS)[0]


def mix_params(geometry: FaceParams, look: FaceParams) -> FaceParams:
    """The face of ``geometry`` with the colours and light of ``look`` (style mixing's target)."""
    return look.replace(**{f: getattr(geometry, f) for f in GEOMETRY_FIELDS})
