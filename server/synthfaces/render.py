"""The SynthFaces renderer: pseudo-3D cartoon faces drawn with Pillow at 4x, box-downscaled.

Geometry. Every feature is a curve in face units on the front of the head (see params.py). A
point (x, y) is lifted onto a head whose horizontal cross-section at height y is an ellipse of
half-width hw(y) (the face outline) and depth DEPTH * hw(y); the nose tip, lips and glasses stand
off that surface. Points are rotated by yaw, pitch and roll and projected orthographically, so
features slide toward the turned side and foreshorten. The outline is the silhouette of the same
head (the rim point that is extreme after the turn), so it narrows instead of sliding.
Landmarks are vertices of the very polygons that are drawn, projected by the same transform.

Pixel convention: pixel (column i, row j) covers [i, i+1) x [j, j+1); its centre is
(i + 0.5, j + 0.5). A landmark (x, y) lies in pixel (floor(x), floor(y)), and the image centre is
(size / 2, size / 2). (torch grid_sample with align_corners=False uses the same convention.)
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw

from .landmarks import LANDMARK_NAMES
from .params import FaceParams

SS = 4  # supersampling factor: draw at SS x the output size, then box-average down
DEPTH = 0.8  # head depth / width ratio of the horizontal cross-sections
HEAD_TOP = 1.2  # skull top above the cheek line, face units
EYE_Y = -0.12  # eye centre line

_LM_INDEX = {n: i for i, n in enumerate(LANDMARK_NAMES)}


def _c(rgb, f: float = 1.0) -> tuple[int, int, int, int]:
    """Float RGB in [0, 1] (times f) -> RGBA ints for Pillow."""
    return (
        int(min(max(rgb[0] * f, 0.0), 1.0) * 255 + 0.5),
        int(min(max(rgb[1] * f, 0.0), 1.0) * 255 + 0.5),
        int(min(max(rgb[2] * f, 0.0), 1.0) * 255 + 0.5),
        255,
    )


def _mix(a, b, t: float):
    return (a[0] * (1 - t) + b[0] * t, a[1] * (1 - t) + b[1] * t, a[2] * (1 - t) + b[2] * t)


class _Head:
    """Face outline, the head surface and the pose transform for one FaceParams."""

    def __init__(self, p: FaceParams, size: int):
        cy, sy = np.cos(p.yaw), np.sin(p.yaw)
        cp, sp = np.cos(p.pitch), np.sin(p.pitch)
        cr, sr = np.cos(p.roll), np.sin(p.roll)
        r_yaw = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
        r_pitch = np.array([[1, 0, 0], [0, cp, sp], [0, -sp, cp]])
        r_roll = np.array([[cr, -sr, 0], [sr, cr, 0], [0, 0, 1]])
        s = p.scale * size
        # image = centre + s * (R @ P)[:2]; one 2x3 matrix does rotation, projection and scale
        self.M = s * (r_roll @ r_pitch @ r_yaw)[:2]
        self.centre = np.array([p.cx * size, p.cy * size])
        self.s = s
        phi = np.arctan(DEPTH * np.tan(p.yaw))  # rim angle: the silhouette point after the turn
        self.rim_c, self.rim_s = np.cos(phi), np.sin(phi)
        # lower outline (right half, cheek -> chin), superellipse tapered toward the jaw
        t = np.linspace(0.0, np.pi / 2, 25)
        e = 2.0 / p.jaw_roundness
        x = np.cos(t) ** e
        y = p.chin_length * np.sin(t) ** e
        x = x * (1.0 - (1.0 - p.jaw_width) * np.clip(y / (0.8 * p.chin_length), 0.0, 1.0) ** 2)
        x[-1] = 0.0
        self.low_x, self.low_y = x, y  # y increasing
        self.chin_z = 0.3  # extra depth of the chin over the rim

    def hw(self, y):
        """Half-width of the face outline at height y (face units)."""
        y = np.asarray(y, dtype=np.float64)
        upper = np.sqrt(np.clip(1.0 - (y / HEAD_TOP) ** 2, 0.0, None))
        lower = np.interp(y, self.low_y, self.low_x)
        return np.where(y <= 0, upper, lower)

    def surface(self, x, y, lift=0.0):
        """3D points on the front of the head at (x, y), raised by ``lift``. -> [n, 3]"""
        x = np.asarray(x, dtype=np.float64)
        y = np.asarray(y, dtype=np.float64)
        h = self.hw(y)
        z = DEPTH * np.sqrt(np.clip(h * h - x * x, 0.0, None)) + lift
        return np.stack(np.broadcast_arrays(x, y, z), axis=-1)

    def rim(self, x, y, z_extra=0.0):
        """3D silhouette points for outline-like curves at (x, y). -> [n, 3]"""
        x = np.asarray(x, dtype=np.float64)
        y = np.asarray(y, dtype=np.float64)
        return np.stack(np.broadcast_arrays(x * self.rim_c, y, DEPTH * x * self.rim_s + z_extra), axis=-1)

    def project(self, P):
        """[n, 3] face-space points -> [n, 2] image pixels (centre convention in the module doc)."""
        return self.centre + P @ self.M.T

    def flat(self, x, y):
        """Unrotated points (neck, torso): translate and scale only. -> [n, 2] pixels"""
        return self.centre + self.s * np.stack([np.asarray(x, float), np.asarray(y, float)], axis=-1)


def _xy(pts: np.ndarray) -> list[float]:
    """Pixel coordinates -> Pillow coordinates on the SS canvas.

    Pillow fills every canvas pixel a shape touches, with pixel k spanning [k, k+1): unbiased in
    our convention (it dilates shapes by ~half a canvas pixel, 1/8 output pixel at SS=4).
    """
    return (pts * SS).ravel().tolist()


def _ellipse_pts(cx, cy, rx, ry, n=20):
    t = np.linspace(0, 2 * np.pi, n, endpoint=False)
    return cx + rx * np.cos(t), cy + ry * np.sin(t)


def render(params: FaceParams, size: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """Render one face.

    Returns ``(image, landmarks)``: image uint8 [size, size, 3] and landmarks float32 [K, 2] as
    (x, y) pixel coordinates in the output image. Pixel (column i, row j) covers
    [i, i+1) x [j, j+1) and has its centre at (i + 0.5, j + 0.5); the image centre is
    (size/2, size/2). Landmark order is ``LANDMARK_NAMES``.
    """
    p = params
    H = _Head(p, size)
    S = size * SS
    # premultiplied RGBA: box-averaging the raw channels gives premultiplied colour and coverage
    canvas = Image.new("RGBa", (S, S), (0, 0, 0, 0))
    d = ImageDraw.Draw(canvas)
    lm = np.zeros((len(LANDMARK_NAMES), 2), dtype=np.float64)

    def put(name: str, xy) -> None:
        lm[_LM_INDEX[name]] = xy

    skin = p.skin_color
    hair = p.hair_color
    vol = p.hair_volume

    # ---------------- hair silhouette (shared by back hair and cap) ----------------
    hx_out = 1.06 + 0.22 * vol  # hair half-width
    hy_out = HEAD_TOP + 0.05 + 0.28 * vol  # hair height above the cheek line
    brow_top = EYE_Y - p.brow_height - 0.6 * p.brow_thickness
    y_side = EYE_Y + 0.02  # sideburns end here
    nt = 41
    t0 = np.arcsin(np.clip(-y_side / hy_out, -1, 1))  # hair outline meets the sideburns here
    t_top = np.linspace(t0, np.pi - t0, nt)
    bump = np.ones(nt)
    if p.hair_style == 1:  # curly: round bumps all over
        bump = 1.0 + (0.05 + 0.05 * vol) * np.abs(np.sin(t_top * 9.0))
    elif p.hair_style == 2:  # spiky: saw teeth on the top
        saw = np.abs(((t_top - np.pi / 2) * 10.0 / np.pi) % 2.0 - 1.0)
        bump = 1.0 + (0.1 + 0.12 * vol) * saw * np.clip(np.sin(t_top) * 2 - 0.6, 0, 1)
    out_x = hx_out * np.cos(t_top) * bump
    out_y = -hy_out * np.sin(t_top) * bump

    # ---------------- back hair ----------------
    if p.hair_length > 0.12:
        y_end = y_side + 0.3 + p.hair_length * 2.6
        flare = 1.0 + 0.25 * vol * p.hair_length
        ny = 9
        side_y = np.linspace(y_side, y_end, ny)
        side_x = hx_out * (1.0 + (flare - 1.0) * np.linspace(0, 1, ny) ** 2)
        if p.hair_style == 1:
            side_x = side_x * (1.0 + 0.06 * np.abs(np.sin(np.linspace(0, 5 * np.pi, ny))))
        bx = np.linspace(1.0, -1.0, 9)
        bottom_x = side_x[-1] * bx
        bottom_y = y_end + 0.12 * (1 - bx**2) * (1.0 if p.hair_style != 2 else -0.5)
        xs = np.concatenate([side_x[::-1], out_x[1:-1], -side_x, bottom_x[1:-1]])
        ys = np.concatenate([side_y[::-1], out_y[1:-1], side_y, bottom_y[1:-1]])
        back = H.project(H.rim(xs, ys, -0.45))
        d.polygon(_xy(back), fill=_c(hair, 0.78))
    if p.hair_style == 3:  # bun behind the top of the head
        bx, by = _ellipse_pts(0.0, -hy_out - 0.12 - 0.1 * vol, 0.38 + 0.1 * vol, 0.3 + 0.08 * vol, 24)
        d.polygon(_xy(H.project(H.rim(bx, by, -0.2))), fill=_c(hair, 0.85))

    # ---------------- neck and torso (not rotated) ----------------
    chin = p.chin_length
    sh_y = chin + 0.45  # shoulder line
    neck_dx = 0.35 * np.sin(p.yaw)
    nk = H.flat(
        np.array([-0.42, 0.42, 0.47, -0.47]) + neck_dx * np.array([1, 1, 0.3, 0.3]),
        np.array([0.3, 0.3, sh_y + 0.6, sh_y + 0.6]),
    )
    d.polygon(_xy(nk), fill=_c(skin, 0.78))
    tx = np.array([-0.45, -1.0, -1.7, -2.05, -2.3, -2.5, 2.5, 2.3, 2.05, 1.7, 1.0, 0.45, 0.0])
    ty = np.array([0.0, 0.05, 0.18, 0.4, 0.8, 3.0, 3.0, 0.8, 0.4, 0.18, 0.05, 0.0, 0.38]) + sh_y
    d.polygon(_xy(H.flat(tx + 0.15 * neck_dx, ty)), fill=_c(p.cloth_color))

    # ---------------- ears (behind the face) ----------------
    ear_y = EYE_Y + 0.2
    for sgn in (-1.0, 1.0):
        ex, ey = _ellipse_pts(0.0, ear_y, 0.16, 0.25, 16)
        # anchored on the rim at ear height, set back behind it; the ear's width is not turned
        P = H.rim(np.full_like(ex, sgn * (H.hw(ear_y) - 0.04)), ey, -0.25)
        P[:, 0] += sgn * (0.1 + ex) * H.rim_c
        d.polygon(_xy(H.project(P)), fill=_c(skin, 0.9))

    # ---------------- face outline (jaw landmarks are its vertices) ----------------
    tu = np.linspace(0, np.pi, 33)
    up_x, up_y = np.cos(tu), -HEAD_TOP * np.sin(tu)  # right -> over the top -> left
    lx, ly = H.low_x, H.low_y  # right half, cheek -> chin
    face_x = np.concatenate([up_x, -lx[1:], lx[-2:0:-1]])  # left cheek -> chin -> right cheek
    face_y = np.concatenate([up_y, ly[1:], ly[-2:0:-1]])
    face = H.project(H.rim(face_x, face_y, H.chin_z * np.clip(face_y / chin, 0, 1) ** 2))
    d.polygon(_xy(face), fill=_c(skin))
    # jaw: left cheek (index 32 == left end of the upper arc) -> chin -> right cheek (index 0)
    nl = len(lx)  # 25 samples per half, jaw points every 6th
    left = face[32 : 32 + nl]  # left cheek ... chin
    right = np.concatenate([face[32 + nl - 1 :], face[:1]])  # chin ... right cheek
    for i in range(5):
        put(f"jaw_{i}", left[6 * i])
    for i in range(1, 5):
        put(f"jaw_{4 + i}", right[6 * i])

    # blush
    for sgn in (-1.0, 1.0):
        bx, by = _ellipse_pts(sgn * (p.eye_spacing + 0.08), EYE_Y + 0.36, 0.15, 0.08, 14)
        d.polygon(_xy(H.project(H.surface(bx, by))), fill=_c(_mix(skin, (0.95, 0.45, 0.45), 0.18)))

    # ---------------- nose ----------------
    ny = EYE_Y + p.nose_length
    nw = p.nose_width
    dz = 0.12 + 0.5 * p.nose_length  # tip stands off the surface
    light_x = np.sin(p.light_azimuth)
    sh_side = -1.0 if light_x > 0 else 1.0  # the bridge shadow is on the side away from the light
    bridge_y = np.linspace(EYE_Y + 0.05, ny - 0.06, 6)
    frac = (bridge_y - bridge_y[0]) / (bridge_y[-1] - bridge_y[0])
    bxs = np.concatenate([sh_side * (0.03 + 0.05 * frac), sh_side * (0.06 + 0.07 * frac[::-1])])
    bys = np.concatenate([bridge_y, bridge_y[::-1]])
    bz = np.concatenate([frac, frac[::-1]]) * dz * 0.8
    d.polygon(_xy(H.project(H.surface(bxs, bys, bz))), fill=_c(skin, 0.86))
    # underside: wing -> tip -> wing; the middle vertex is the nose tip
    ux = np.array([-1.0, -0.8, -0.45, 0.0, 0.45, 0.8, 1.0]) * nw
    uy = ny + np.array([-0.07, -0.02, 0.015, 0.0, 0.015, -0.02, -0.07])
    uz = dz * np.array([0.25, 0.45, 0.8, 1.0, 0.8, 0.45, 0.25])
    under = H.project(H.surface(ux, uy, uz))
    # nostril shadow below the line
    shx = np.concatenate([ux[1:-1], ux[-2:0:-1] * 0.8])
    shy = np.concatenate([uy[1:-1], uy[-2:0:-1] + 0.045])
    shz = np.concatenate([uz[1:-1], uz[-2:0:-1] * 0.7])
    d.polygon(_xy(H.project(H.surface(shx, shy, shz))), fill=_c(skin, 0.78))
    d.line(_xy(under), fill=_c(skin, 0.55), width=max(1, round(0.035 * H.s * SS)), joint="curve")
    put("nose_tip", under[3])

    # ---------------- mouth ----------------
    my = ny + 0.24
    mw = p.mouth_width
    u = np.linspace(-1.0, 1.0, 15)
    w = 1.0 - u * u
    mid = my - 0.07 * p.smile * u * u  # where the lips meet
    gap = 0.17 * p.mouth_open
    up_in = mid - gap * 0.35 * w**0.8
    lo_in = mid + gap * 0.65 * w**0.8
    up_out = up_in - 0.075 * w**0.45 * (1.0 - 0.2 * np.exp(-((u / 0.2) ** 2)))
    lo_out = lo_in + 0.09 * w**0.45
    mx = mw * u

    def mouth_pts(ys, lift):
        return H.project(H.surface(mx, ys, 0.05 + lift * w))

    if p.mouth_open > 0.05:
        inner = np.concatenate([mouth_pts(up_in, 0.0), mouth_pts(lo_in, 0.0)[::-1]])
        d.polygon(_xy(inner), fill=(70, 18, 28, 255))
        if p.mouth_open > 0.25:
            teeth_lo = up_in + np.minimum(gap * 0.3, 0.045) * w**0.5
            teeth = np.concatenate([mouth_pts(up_in, 0.0), mouth_pts(teeth_lo, 0.0)[::-1]])
            d.polygon(_xy(teeth), fill=(242, 240, 232, 255))
    upper = np.concatenate([mouth_pts(up_out, 0.02), mouth_pts(up_in, 0.0)[::-1]])
    lower = np.concatenate([mouth_pts(lo_in, 0.0), mouth_pts(lo_out, 0.02)[::-1]])
    d.polygon(_xy(lower), fill=_c(p.lip_color, 1.06))
    d.polygon(_xy(upper), fill=_c(p.lip_color, 0.9))
    line = mouth_pts(mid, 0.0)
    d.line(_xy(line), fill=_c(p.lip_color, 0.45), width=max(1, round(0.022 * H.s * SS)), joint="curve")
    put("mouth_left", upper[0])
    put("mouth_right", upper[14])
    put("upper_lip_top", upper[7])
    put("lower_lip_bottom", lower[22])  # lo_out reversed: index 15 + (14 - 7)

    # ---------------- eyes ----------------
    ue = np.linspace(-1.0, 1.0, 17)
    ew = p.eye_size
    line_w = max(1, round(0.045 * H.s * SS))
    for side, sgn, openness in (("left", -1.0, p.eye_open_l), ("right", 1.0, p.eye_open_r)):
        ex = sgn * p.eye_spacing

        def lid_top(uu, sgn=sgn, openness=openness):
            # upper lid; it peaks a little toward the inner corner (uu runs image-left -> right)
            return EYE_Y - ew * 0.62 * openness * (1.0 - uu * uu) ** 0.8 * (1.0 - 0.15 * sgn * uu)

        def lid_bot(uu, openness=openness):
            return EYE_Y + ew * 0.3 * (0.4 + 0.6 * openness) * (1.0 - uu * uu) ** 0.9

        xs = ex + ew * ue
        lid_y = np.concatenate([lid_top(ue), lid_bot(ue)[::-1]])
        lids = H.project(H.surface(np.concatenate([xs, xs[::-1]]), lid_y, 0.01))
        d.polygon(_xy(lids), fill=(246, 246, 242, 255))
        # iris and pupil: circles clipped to the opening by clamping y between the lids at each x
        ir = 0.52 * ew
        ix = ex + p.gaze_x * 0.42 * ew
        iy = EYE_Y + p.gaze_y * 0.12 * ew
        for r, f, n in ((ir, 1.0, 24), (0.5 * ir, 0.3, 16)):
            cx, cy = _ellipse_pts(ix, iy, r, r, n)
            uu = np.clip((cx - ex) / ew, -1.0, 1.0)
            cy = np.clip(cy, lid_top(uu), lid_bot(uu))
            d.polygon(_xy(H.project(H.surface(ex + ew * uu, cy, 0.015))), fill=_c(p.iris_color, f))
        if openness > 0.4:
            # catch-light on the pupil's rim (it never covers the pupil centre)
            hx, hy = _ellipse_pts(ix + 0.4 * ir * light_x, iy - 0.5 * ir, 0.17 * ir, 0.17 * ir, 8)
            d.polygon(_xy(H.project(H.surface(hx, hy, 0.025))), fill=(255, 255, 255, 255))
        # lids: a bold upper line with a flick at the outer corner, a faint lower line
        upper_lid = lids[:17]
        d.line(_xy(upper_lid), fill=_c(hair, 0.35), width=line_w, joint="curve")
        flick = H.project(
            H.surface(np.array([ex + sgn * ew, ex + sgn * ew * 1.22]), np.array([EYE_Y, EYE_Y - 0.06]), 0.01)
        )
        d.line(_xy(flick), fill=_c(hair, 0.35), width=line_w)
        d.line(_xy(lids[17:]), fill=_c(skin, 0.7), width=max(1, line_w // 2), joint="curve")
        inner_i, outer_i = (16, 0) if sgn < 0 else (0, 16)
        put(f"{side}_eye_outer", lids[outer_i])
        put(f"{side}_eye_inner", lids[inner_i])
        put(f"{side}_eye_top", lids[8])
        put(f"{side}_eye_bottom", lids[17 + 8])
        put(f"{side}_pupil", H.project(H.surface(np.array([ix]), np.array([iy]), 0.02))[0])

    # ---------------- brows ----------------
    ub = np.linspace(0.0, 1.0, 9)  # 0 inner .. 1 outer
    for side, sgn in (("left", -1.0), ("right", 1.0)):
        ex = sgn * p.eye_spacing
        bx = ex + sgn * ew * (-0.95 + 2.2 * ub)
        by = EYE_Y - p.brow_height - 0.045 * np.sin(np.pi * ub) - p.brow_angle * 0.12 * (1.0 - ub) + 0.04 * ub
        th = p.brow_thickness * (1.0 - 0.55 * ub)
        edge_y = np.concatenate([by - th / 2, (by + th / 2)[::-1]])
        P = H.project(H.surface(np.concatenate([bx, bx[::-1]]), edge_y, 0.02))
        d.polygon(_xy(P), fill=_c(hair, 0.6))
        centre = H.project(H.surface(bx, by, 0.02))
        put(f"{side}_brow_inner", centre[0])
        put(f"{side}_brow_mid", centre[4])
        put(f"{side}_brow_outer", centre[8])

    # ---------------- front hair (cap) ----------------
    hl_x = np.linspace(-0.92, 0.92, 15)
    y_c = -0.95 + p.hair_fringe * (brow_top - 0.07 + 0.95)
    hl_y = y_c + 0.3 * hl_x**2 + 0.14 * p.hair_part * hl_x
    hl_y = np.minimum(hl_y, brow_top - 0.07)
    if p.hair_style == 2:  # spiky fringe
        hl_y = hl_y + 0.08 * (np.arange(15) % 2) * p.hair_fringe
    hl_y = np.minimum(hl_y, brow_top - 0.05)
    temple_l = H.rim(np.array([-0.97, -0.94]), np.array([y_side, hl_y[0] * 0.5 + y_side * 0.5]))
    temple_r = H.rim(np.array([0.94, 0.97]), np.array([hl_y[-1] * 0.5 + y_side * 0.5, y_side]))
    cap = np.concatenate([H.rim(out_x, out_y, -0.05), temple_l, H.surface(hl_x, hl_y, 0.03), temple_r])
    d.polygon(_xy(H.project(cap)), fill=_c(hair))

    # ---------------- glasses ----------------
    if p.glasses:
        gw = max(1, round(0.05 * H.s * SS))
        col = _c(p.glasses_color)
        rims = []
        for sgn in (-1.0, 1.0):
            ex = sgn * p.eye_spacing
            t = np.linspace(0, 2 * np.pi, 25)
            gx = ex + 1.55 * ew * np.sign(np.cos(t)) * np.abs(np.cos(t)) ** 0.7
            gy = EYE_Y + 0.02 + 1.15 * ew * np.sign(np.sin(t)) * np.abs(np.sin(t)) ** 0.7
            P = H.project(H.surface(gx, gy, 0.12))
            d.line(_xy(P), fill=col, width=gw, joint="curve")
            rims.append(P)
            arm = H.project(
                np.concatenate(
                    [
                        H.surface(np.array([ex + sgn * 1.55 * ew]), np.array([EYE_Y]), 0.12),
                        H.rim(np.array([sgn * 0.99]), np.array([EYE_Y + 0.05])),
                    ]
                )
            )
            d.line(_xy(arm), fill=col, width=gw)
        bridge = H.project(
            H.surface(
                np.array([-p.eye_spacing + 1.5 * ew, 0.0, p.eye_spacing - 1.5 * ew]),
                np.array([EYE_Y - 0.02, EYE_Y - 0.05, EYE_Y - 0.02]),
                0.13,
            )
        )
        d.line(_xy(bridge), fill=col, width=gw, joint="curve")

    # ---------------- downscale, shade, composite ----------------
    small = np.asarray(canvas.reduce(SS), dtype=np.float32) * (1.0 / 255.0)  # [size, size, 4]
    rgb, alpha = small[..., :3], small[..., 3:]  # rgb is premultiplied by alpha
    g = (np.arange(size, dtype=np.float32) + 0.5) / size
    ca, sa = np.cos(p.bg_angle), np.sin(p.bg_angle)
    tb = np.clip((g[None, :] - 0.5) * ca + (g[:, None] - 0.5) * sa + 0.5, 0, 1)[..., None]
    bg = np.asarray(p.bg_color, np.float32) * (1 - tb) + np.asarray(p.bg_color2, np.float32) * tb
    # Lambert shading on a sphere around the head (flattened to the rim outside it)
    R = 1.35 * H.s
    nx = (np.arange(size, dtype=np.float32) + 0.5 - H.centre[0])[None, :] / R
    nyy = (np.arange(size, dtype=np.float32) + 0.5 - H.centre[1] + 0.15 * H.s)[:, None] / R
    r2 = nx * nx + nyy * nyy
    inv = 1.0 / np.sqrt(np.maximum(r2, 1.0))
    nz = np.sqrt(np.clip(1.0 - r2, 0.0, None))
    ce = np.cos(p.light_elevation)
    L = (np.sin(p.light_azimuth) * ce, -np.sin(p.light_elevation), np.cos(p.light_azimuth) * ce)
    lam = (nx * inv) * L[0] + (nyy * inv) * L[1] + nz * L[2]
    shade = (1.0 + p.light_strength * (lam - 0.55))[..., None]
    out = rgb * shade + bg * (1.0 - alpha)
    image = (np.clip(out, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    return image, lm.astype(np.float32)
