"""Painting one synthetic face from its appearance parameters: the stand-in renderer of
:mod:`gan.synthetic`.

Shapes are analytic (ellipses, parabolic bands, rounded boxes, given by signed distances)
and composited back to front with soft, one-pixel-wide edges, which anti-aliases them
without supersampling; each shape is painted only inside the pixel window of its bounding
box, so a 256-px face takes about 13 ms. The painters run in a fixed order and draw the
photo's pose, expression, background, clothing, light and noise from one generator, so a
face is a pure function of its parameters, its resolution and that generator's state.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["FaceParams", "paint_face"]


@dataclass(frozen=True)
class FaceParams:
    """The appearance of one person (face units: the canvas spans -1..1); drawn per
    identity by :mod:`gan.synthetic`, fixed across that person's photos."""

    skin: tuple[float, float, float]
    hair: tuple[float, float, float]
    iris: tuple[float, float, float]
    head_rx: float
    head_ry: float
    jaw: float            # lower-face width factor (1 wide .. 0.7 narrow)
    chin: float           # chin pointiness exponent
    eye_dx: float         # half distance between the eyes
    eye_y: float
    eye_rx: float
    eye_ry: float
    eye_tilt: float       # outer corners up (+) or down (-), radians
    lid: float            # upper-lid line weight (eyeliner, lashes)
    brow_thick: float
    brow_arch: float
    brow_gap: float
    nose_w: float
    nose_len: float
    mouth_w: float
    lip_u: float
    lip_l: float
    lip_colour: tuple[float, float, float]
    ear_r: float
    hair_len: int         # 0 short, 1 medium (chin), 2 long (shoulders)
    hair_curly: float     # 0 straight .. 1 afro volume
    hairline: float       # forehead top, relative to the head centre
    bangs: float
    part: float           # side-part tilt of the hairline
    grey: float           # fraction of grey hair
    wrinkles: float
    sag: float
    beard: float
    earrings: bool
    neck_w: float


def _cover(d: np.ndarray, aa: float) -> np.ndarray:
    """Soft coverage of a shape from its signed distance (negative inside), one pixel wide."""
    return np.clip(0.5 - d * (1.0 / aa), 0.0, 1.0)


def _ellipse_sd(x: np.ndarray, y: np.ndarray, rx: float, ry: float) -> np.ndarray:
    """Approximate signed distance to an axis-aligned ellipse at the origin (Quilez)."""
    px, py = x * (1.0 / rx), y * (1.0 / ry)
    k0 = np.sqrt(px * px + py * py)
    k1 = np.sqrt(px * px * (1.0 / rx**2) + py * py * (1.0 / ry**2))
    return k0 * (k0 - 1.0) / np.maximum(k1, 1e-6)


def _round_box_sd(x: np.ndarray, y: np.ndarray, hw: Any, hh: float, r: float) -> np.ndarray:
    """Signed distance to a box of half sizes ``hw`` x ``hh`` with corner radius ``r``."""
    qx = np.abs(x) - hw + r
    qy = np.abs(y) - hh + r
    outside = np.sqrt(np.maximum(qx, 0) ** 2 + np.maximum(qy, 0) ** 2)
    return outside + np.minimum(np.maximum(qx, qy), 0) - r


def _hair_texture(x: np.ndarray, y: np.ndarray, hair: np.ndarray, g: "FaceParams", aa: float) -> np.ndarray:
    """Per-pixel hair colour ``[h, w, 3]``: soft strands (or curls), grey strands by age.

    Each pattern fades to its mean where its period drops below a few pixels (``aa`` is
    one pixel in face units), so small images show grey as a mixed tone instead of
    aliased checkerboards.
    """
    def detail(freq: float) -> float:  # 1 when a period spans >= 6 pixels, 0 below 3
        return float(np.clip((2 * math.pi / freq / aa - 3.0) / 3.0, 0.0, 1.0))

    if g.hair_curly < 0.4:
        stripes = np.sin(x * 55 + 6 * np.sin(y * 9 + g.part * 10)) * (0.12 * detail(55))
    else:
        stripes = np.sin(x * 70) * np.sin(y * 70) * (0.12 * detail(70))
    out = hair * (1.0 + stripes)[..., None]
    if g.grey > 0:
        threshold = 1 - 2.2 * g.grey
        k = detail(45)
        wave = np.sin(x * 45 + 3 * np.sin(y * 12 + g.part * 7))
        strands = np.clip((wave - threshold) * 2.5, 0, 1) * (0.6 * k)
        # The strands' mean over a period replaces the fine pattern as it fades.
        phase = np.sin(np.linspace(0, 2 * math.pi, 64, endpoint=False))
        strands += np.float32(np.clip((phase - threshold) * 2.5, 0, 1).mean() * 0.6 * (1 - k))
        out += (np.float32([0.8, 0.8, 0.78]) - out) * strands[..., None]
    return out


class _Canvas:
    """An image in float32 with a face coordinate frame and windowed painting.

    Pixel centres map to canvas coordinates in [-1, 1]; the face frame is the canvas
    frame moved by the per-image pose (``shift``, ``scale``, roll ``angle``). Shapes are
    painted only inside the pixel window that covers their face-frame bounding box, which
    is what keeps a 256-px face cheap.
    """

    def __init__(self, res: int, shift: tuple[float, float], scale: float, angle: float) -> None:
        self.res = res
        self.img = np.zeros((res, res, 3), np.float32)  # [H, W, 3]
        self.fg = np.zeros((res, res), np.float32)  # [H, W] foreground alpha (for lighting)
        c = (np.arange(res, dtype=np.float32) + 0.5) * (2.0 / res) - 1.0
        cy, cx = np.meshgrid(c, c, indexing="ij")  # [H, W]
        self._shift, self._scale = shift, scale
        self._cos, self._sin = math.cos(angle), math.sin(angle)
        dx, dy = (cx - shift[0]) / scale, (cy - shift[1]) / scale
        self.x = (self._cos * dx + self._sin * dy).astype(np.float32)  # [H, W] face frame
        self.y = (-self._sin * dx + self._cos * dy).astype(np.float32)
        self.aa = 2.0 / (res * scale)  # one pixel in face units

    def window(self, x0: float, y0: float, x1: float, y1: float) -> tuple[slice, slice]:
        """Pixel rows and columns covering the face-frame box (plus a pixel of margin)."""
        xs = np.array([x0, x1, x0, x1]) * self._scale
        ys = np.array([y0, y0, y1, y1]) * self._scale
        cx = self._cos * xs - self._sin * ys + self._shift[0]
        cy = self._sin * xs + self._cos * ys + self._shift[1]
        to_px = lambda v: (v + 1.0) * 0.5 * self.res - 0.5  # noqa: E731
        c0, c1 = to_px(cx.min()), to_px(cx.max())
        r0, r1 = to_px(cy.min()), to_px(cy.max())
        clamp = lambda v: int(min(max(v, 0), self.res))  # noqa: E731
        return (
            slice(clamp(math.floor(r0) - 1), clamp(math.ceil(r1) + 2)),
            slice(clamp(math.floor(c0) - 1), clamp(math.ceil(c1) + 2)),
        )

    def paint(self, win: tuple[slice, slice], alpha: np.ndarray, colour: Any, fg: bool = True) -> None:
        """Composite ``colour`` (RGB or per-pixel ``[h, w, 3]``) over the window with ``alpha``."""
        a = alpha[..., None]
        sub = self.img[win]
        sub += (np.asarray(colour, np.float32) - sub) * a
        if fg:
            f = self.fg[win]
            f += (1.0 - f) * alpha


def _band(x: np.ndarray, y: np.ndarray, x0: float, x1: float, centre: Any, half: Any, aa: float) -> np.ndarray:
    """Coverage of a band ``|y - centre(x)| < half(x)`` for ``x0 < x < x1`` (soft ends)."""
    inside = _cover(np.abs(y - centre) - half, aa)
    ends = _cover(np.maximum(x0 - x, x - x1), aa)
    return inside * ends


def _mix(a: Any, b: Any, t: float) -> np.ndarray:
    return np.asarray(a, np.float32) * (1 - t) + np.asarray(b, np.float32) * t


@dataclass(frozen=True, eq=False)
class _Shot:
    """The per-image state every painter shares: the pose of the features, the
    expression and the colours of this photo (face units, like :class:`FaceParams`)."""

    yaw: float            # -1..1: features slide sideways, the far eye and ear narrow
    smile: float
    open_eye: float
    open_mouth: float
    gaze: tuple[float, float]
    hx: float             # head centre: the canvas centre, moved a little by yaw
    hy: float
    fx: float             # horizontal centre of the facial features
    skin: np.ndarray      # [3] float32
    hair: np.ndarray      # [3] float32, greyed by age


def _pose(g: FaceParams, res: int, rng: np.random.Generator) -> tuple[_Canvas, _Shot]:
    """Draw the pose and expression of one photo: the canvas in its face frame, and the shot.

    The head fills the frame as in a face crop; the pose (shift, scale, roll, and a yaw
    that slides the features sideways) jitters around that.
    """
    u = lambda a, b: float(rng.uniform(a, b))  # noqa: E731
    cv = _Canvas(
        res, shift=(u(-0.06, 0.06), u(-0.06, 0.04)), scale=1.22 * u(0.92, 1.06), angle=u(-0.14, 0.14)
    )
    yaw = u(-1.0, 1.0)
    smile = u(-0.01, 0.045)
    open_eye = u(0.55, 1.1) if rng.random() > 0.04 else 0.12
    open_mouth = u(0.0, 0.025) if rng.random() < 0.25 else 0.0
    gaze = (u(-0.3, 0.3), u(-0.2, 0.2))
    hx = yaw * 0.025
    shot = _Shot(
        yaw=yaw, smile=smile, open_eye=open_eye, open_mouth=open_mouth, gaze=gaze,
        hx=hx, hy=0.0, fx=hx + yaw * 0.06,
        skin=np.asarray(g.skin, np.float32), hair=_mix(g.hair, (0.78, 0.77, 0.75), g.grey * 0.9),
    )
    return cv, shot


def _paint_behind(cv: _Canvas, g: FaceParams, s: _Shot, rng: np.random.Generator) -> None:
    """The background (a linear gradient between two random colours) and the hair behind
    the head and neck (medium and long styles, big curly volume)."""
    x, y, aa = cv.x, cv.y, cv.aa
    c0 = rng.uniform(0.1, 0.95, 3).astype(np.float32)
    c1 = np.clip(c0 + rng.normal(0, 0.2, 3), 0, 1).astype(np.float32)
    sat = float(rng.uniform(0.0, 0.7))  # muted colours and studio greys are the common case
    c0 = c0 * sat + c0.mean() * (1 - sat)
    c1 = c1 * sat + c1.mean() * (1 - sat)
    ang = float(rng.uniform(0, 2 * math.pi))
    t = np.clip(0.5 + 0.5 * (x * math.cos(ang) + y * math.sin(ang)), 0, 1)[..., None]
    cv.img[:] = c0 + (c1 - c0) * t

    if not (g.hair_len > 0 or g.hair_curly > 0.4):
        return
    hx, hy, rx, ry = s.hx, s.hy, g.head_rx, g.head_ry
    vol = 0.1 * g.hair_curly
    bottom = (0.2, 0.42, 1.0)[g.hair_len]  # chin-length or shoulder-length
    win = cv.window(hx - rx - 0.35, -1.2, hx + rx + 0.35, bottom + 0.05)
    bx, by = x[win] - hx, y[win] - hy
    width = rx * (1.08 + 0.2 * g.hair_curly) + vol
    d = _ellipse_sd(bx, by + 0.06, width, ry + 0.05 + vol)
    if bottom > 0.2:  # a rounded box from the temples down to the hair's length
        flare = width * (0.92 + 0.12 * np.clip(by / bottom, 0, 1))
        d = np.minimum(d, _round_box_sd(bx, by - bottom / 2, flare, bottom / 2 + 0.05, 0.12))
    if g.hair_curly > 0.4:
        d = d + 0.02 * np.sin(np.arctan2(by, bx) * 14 + g.part * 30)
    cv.paint(win, _cover(d, aa), _hair_texture(bx, by, s.hair, g, aa) * 0.82)


def _paint_body(cv: _Canvas, g: FaceParams, s: _Shot, rng: np.random.Generator) -> None:
    """The neck, with a shadow under the jaw, and the torso in clothing, with a round or
    V neckline cut out of it."""
    x, y, aa, hx = cv.x, cv.y, cv.aa, s.hx
    win = cv.window(hx - 0.35, 0.2, hx + 0.35, 1.3)
    kx, ky = x[win] - hx * 0.5, y[win]
    neck = _cover(np.maximum(np.abs(kx) - g.neck_w, 0.25 - ky), aa)
    shade = np.clip(0.7 + 0.5 * (ky - 0.45), 0.7, 0.92)[..., None]
    cv.paint(win, neck, s.skin * shade)

    win = cv.window(-1.4, 0.5, 1.4, 1.4)
    cloth = rng.uniform(0.05, 0.85, 3).astype(np.float32)
    sx, sy = x[win] - hx * 0.5, y[win]
    torso = _cover(_ellipse_sd(sx, sy - 1.3, 1.0, 0.56), aa)
    if rng.random() < 0.5:
        cut = _ellipse_sd(sx, sy - 0.74, g.neck_w + 0.06, 0.14)
    else:
        cut = np.maximum(sy - 0.95 + np.abs(sx) * 1.6, 0.74 - sy)
    torso = torso * (1 - _cover(cut, aa))
    cv.paint(win, torso, cloth)


def _paint_head(cv: _Canvas, g: FaceParams, s: _Shot) -> None:
    """The ears (partly hidden by the head drawn next), the head, the sagging cheeks of
    older faces and the beard shadow."""
    x, y, aa, yaw, skin = cv.x, cv.y, cv.aa, s.yaw, s.skin
    hx, hy, rx, ry, fx = s.hx, s.hy, g.head_rx, g.head_ry, s.fx
    for side in (-1, 1):
        ex = hx + side * (rx * 0.97 - 0.005) - yaw * 0.02
        win = cv.window(ex - 0.12, g.eye_y - 0.1, ex + 0.12, g.eye_y + 0.25)
        d = _ellipse_sd(x[win] - ex, y[win] - (g.eye_y + 0.07), g.ear_r * (1 - 0.25 * side * yaw), g.ear_r * 1.6)
        cv.paint(win, _cover(d, aa), skin * 0.92)
        d2 = _ellipse_sd(x[win] - ex - side * 0.01, y[win] - (g.eye_y + 0.07), g.ear_r * 0.45, g.ear_r * 1.05)
        cv.paint(win, _cover(d2, aa) * 0.35, skin * 0.6)

    # Head: an ellipse whose lower half narrows toward the jaw; old faces sag a little.
    win = cv.window(hx - rx - 0.05, hy - ry - 0.05, hx + rx + 0.05, hy + ry + 0.08)
    lx, ly = x[win] - hx, y[win] - hy
    low = np.clip(ly / ry, 0.0, 1.0)
    taper = 1.0 - (1.0 - g.jaw) * low ** g.chin + 0.06 * g.sag * low * (1 - low) * 2
    head = _cover(_ellipse_sd(lx / taper, ly, rx, ry + 0.02 * g.sag), aa)
    cv.paint(win, head, skin)
    if g.sag > 0.2:  # soft shadows beside the mouth, down to the jowls
        for side in (-1, 1):
            cx_ = fx + side * 0.21
            w2 = cv.window(cx_ - 0.12, 0.12, cx_ + 0.12, 0.48)
            d = _ellipse_sd(x[w2] - cx_, y[w2] - 0.32, 0.05, 0.13)
            cv.paint(w2, _cover(d, 0.08) * (0.25 * g.sag), skin * 0.7)

    # Beard shadow / stubble: fades in below the nose, darkest on the chin and jaw, plus a
    # moustache; the lips stay clear.
    if g.beard > 0:
        ny0 = g.eye_y + g.nose_len
        bx, by = x[win] - fx, y[win] - hy
        region = np.clip((by - (ny0 + 0.05)) / 0.16, 0, 1) * head
        tache = _cover(_ellipse_sd(bx, by - (ny0 + 0.07), g.mouth_w * 1.05, 0.03), 0.02)
        lips = _cover(_ellipse_sd(bx, by - (ny0 + 0.12), g.mouth_w * 0.95, 0.035), aa)
        alpha = np.maximum(region, tache * 0.9) * (1 - lips) * (0.25 + 0.55 * g.beard)
        cv.paint(win, alpha, _mix(s.hair, skin, 0.35))


def _paint_wrinkles(cv: _Canvas, g: FaceParams, s: _Shot) -> None:
    """Signs of age: forehead lines, nasolabial folds, crow's feet and eye bags."""
    x, y, aa, fx = cv.x, cv.y, cv.aa, s.fx
    line = max(0.006, aa * 0.6)
    dark = s.skin * 0.62
    if g.wrinkles > 0.05:
        wr = g.wrinkles
        for k in range(3):
            wy = -0.22 - 0.06 * k
            w2 = cv.window(fx - 0.25, wy - 0.05, fx + 0.25, wy + 0.05)
            xx = x[w2] - fx
            band = _band(xx, y[w2], -0.2 + 0.03 * k, 0.2 - 0.03 * k, wy + 0.25 * xx * xx, line, aa)
            cv.paint(w2, band * min(1.0, wr * 1.1 - 0.15 * k), dark)
        for side in (-1, 1):
            # Nasolabial fold: from beside the nose to beside the mouth corner.
            w2 = cv.window(fx + side * 0.03, 0.1, fx + side * 0.22, 0.42)
            xx, yy = (x[w2] - fx) * side, y[w2]
            centre_x = 0.08 + 0.05 * (yy - 0.13) / 0.25 + 0.06 * ((yy - 0.27) / 0.15) ** 2 * 0.3
            d = np.abs(xx - centre_x - g.mouth_w * 0.35) - line
            fold = _cover(d, aa) * _cover(np.maximum(0.13 - yy, yy - 0.38), aa)
            cv.paint(w2, fold * min(1.0, wr * 0.9), dark)
            # Crow's feet at the outer eye corner.
            ox = fx + side * (g.eye_dx + g.eye_rx + 0.015)
            w2 = cv.window(ox - 0.05, g.eye_y - 0.05, ox + 0.05, g.eye_y + 0.05)
            for slope in (-0.5, 0.0, 0.5):
                xx = (x[w2] - ox) * side
                band = _band(xx, y[w2], 0.0, 0.045, g.eye_y + slope * xx, line * 0.8, aa)
                cv.paint(w2, band * wr * 0.8, dark)
    if g.sag > 0.15:
        for side in (-1, 1):
            ex = fx + side * g.eye_dx
            w2 = cv.window(ex - g.eye_rx, g.eye_y, ex + g.eye_rx, g.eye_y + 0.1)
            xx = (x[w2] - ex) / g.eye_rx
            centre = g.eye_y + g.eye_ry * 1.4 + 0.02 * (1 - xx * xx)
            band = _band(x[w2] - ex, y[w2], -g.eye_rx * 0.8, g.eye_rx * 0.8, centre, max(0.007, aa * 0.6), aa)
            cv.paint(w2, band * g.sag * 0.8, s.skin * 0.6)


def _paint_eyes(cv: _Canvas, g: FaceParams, s: _Shot) -> None:
    """The eyes (sclera almond, iris, pupil, catch-light, upper lid line and lashes,
    crease) and the brows above them."""
    x, y, aa, yaw, fx = cv.x, cv.y, cv.aa, s.yaw, s.fx
    for side in (-1, 1):
        ex, ey = fx + side * g.eye_dx * (1 - 0.12 * side * yaw), g.eye_y
        erx, ery = g.eye_rx * (1 - 0.15 * side * yaw), g.eye_ry * s.open_eye
        w2 = cv.window(ex - erx - 0.03, ey - 0.1, ex + erx + 0.03, ey + 0.06)
        xx, yy = x[w2] - ex, y[w2] - ey
        yy = yy + side * g.eye_tilt * xx  # tilt outer corners
        # Almond: upper arc higher than the lower one.
        t2 = np.clip(1.0 - (xx / erx) ** 2, 0.0, 1.0)
        top, bot = -ery * 1.2 * np.sqrt(t2), ery * 0.8 * t2
        d = np.maximum(np.maximum(top - yy, yy - bot), np.abs(xx) - erx)
        sclera = _cover(d, aa)
        cv.paint(w2, sclera, (0.92, 0.91, 0.88))
        ir = min(g.eye_ry * 1.05, erx * 0.5)
        ix, iy = s.gaze[0] * erx * 0.4, s.gaze[1] * ery * 0.3
        di = np.sqrt((xx - ix) ** 2 + (yy - iy) ** 2)
        cv.paint(w2, _cover(di - ir, aa) * sclera, g.iris)
        cv.paint(w2, _cover(di - ir * 0.45, aa) * sclera, (0.02, 0.02, 0.02))
        dl = np.sqrt((xx - ix + ir * 0.3) ** 2 + (yy - iy + ir * 0.35) ** 2)
        cv.paint(w2, _cover(dl - ir * 0.2, aa) * sclera * 0.9, (1.0, 1.0, 1.0))
        lid = max(0.008 * g.lid, aa * 0.7)
        lid_band = _band(xx, yy, -erx * 1.05, erx * 1.1, top, lid, aa)
        cv.paint(w2, lid_band, (0.06, 0.04, 0.04))
        # Eyelid crease above the eye (fainter for monolids).
        crease = _band(xx, yy, -erx * 0.8, erx * 0.9, top - 0.022, max(0.005, aa * 0.5), aa)
        cv.paint(w2, crease * 0.35 * min(1.0, g.eye_ry / 0.04), s.skin * 0.6)

    brow_col = _mix(s.hair, (0.08, 0.06, 0.05), 0.35)
    for side in (-1, 1):
        bx0 = fx + side * g.eye_dx * (1 - 0.12 * side * yaw)
        by0 = g.eye_y - g.brow_gap - g.eye_ry * 0.5
        w2 = cv.window(bx0 - 0.13, by0 - 0.07, bx0 + 0.13, by0 + 0.05)
        xx = (x[w2] - bx0) * side
        centre = by0 - 0.02 * g.brow_arch * (1 - (xx / 0.1) ** 2) + 0.01 * xx / 0.1
        half = g.brow_thick * (0.5 + 0.5 * np.clip(1 - (xx + 0.06) / 0.19, 0.15, 1))
        band = _band(xx, y[w2], -0.085, 0.1, centre, np.maximum(half, aa * 0.5), aa)
        cv.paint(w2, band * 0.9, brow_col)


def _paint_nose(cv: _Canvas, g: FaceParams, s: _Shot) -> None:
    """The nose: bridge shadow on the far side, the shadow under it, the wings, tip
    highlight and nostrils."""
    x, y, aa, fx, skin = cv.x, cv.y, cv.aa, s.fx, s.skin
    ny0 = g.eye_y + g.nose_len
    nw = g.nose_w
    w2 = cv.window(fx - nw - 0.05, g.eye_y, fx + nw + 0.05, ny0 + 0.05)
    xx, yy = x[w2] - fx, y[w2]
    shadow_side = 1 if s.yaw >= 0 else -1
    ridge = _band(yy, xx * shadow_side, g.eye_y + 0.04, ny0 - 0.03, nw * 0.5, 0.014, 0.025)
    cv.paint(w2, ridge * 0.55, skin * 0.7)
    under = _cover(_ellipse_sd(xx, yy - (ny0 + 0.035), nw * 0.8, 0.018), 0.025)
    cv.paint(w2, under * 0.35, skin * 0.6)
    for side in (-1, 1):  # the wings of the nose: soft arcs outside the nostrils
        ring = np.abs(_ellipse_sd(xx - side * nw * 0.78, yy - (ny0 - 0.002), nw * 0.36, 0.03))
        arc = _cover(ring - 0.004, aa * 1.5) * (xx * side > nw * 0.78)
        cv.paint(w2, arc * 0.5, skin * 0.6)
    tip = _cover(_ellipse_sd(xx, yy - (ny0 - 0.01), nw * 0.9, 0.035), 0.03)
    cv.paint(w2, tip * 0.3, np.minimum(skin * 1.15, 1.0))
    for side in (-1, 1):
        d = _ellipse_sd(xx - side * nw * 0.55, yy - (ny0 + 0.012), nw * 0.38, 0.014)
        cv.paint(w2, _cover(d, aa) * 0.8, skin * 0.35)
    wing = _band(xx, yy, -nw * 1.1, nw * 1.1, ny0 + 0.01 - 0.01 * (xx / nw) ** 2, 0.006, aa * 1.5)
    cv.paint(w2, wing * 0.3, skin * 0.55)


def _paint_mouth(cv: _Canvas, g: FaceParams, s: _Shot) -> None:
    """The lips between two parabolas around a centre line that curves with the smile;
    an open mouth shows its inside and the upper teeth."""
    x, y, aa, fx, smile, open_mouth = cv.x, cv.y, cv.aa, s.fx, s.smile, s.open_mouth
    my = g.eye_y + g.nose_len + 0.115
    mw = g.mouth_w * (1 + 2 * smile)
    w2 = cv.window(fx - mw - 0.03, my - 0.1, fx + mw + 0.03, my + 0.1)
    xx, yy = x[w2] - fx, y[w2] - my
    q = np.clip(1 - (xx / mw) ** 2, 0, 1)
    centre = -smile * (1 - q) * 1.2 + 0.004
    upper = centre - g.lip_u * q ** 0.6 - open_mouth * q
    lower = centre + g.lip_l * q ** 0.6 + open_mouth * q
    lips = _cover(np.maximum(np.maximum(upper - yy, yy - lower), np.abs(xx) - mw), aa)
    cv.paint(w2, lips, g.lip_colour)
    if open_mouth > 0:
        inner = _cover(np.maximum(np.abs(yy - centre) - open_mouth * q, np.abs(xx) - mw * 0.85), aa)
        cv.paint(w2, inner, (0.25, 0.08, 0.08))
        teeth = inner * _cover((centre - open_mouth * q * 0.1) - yy, aa)  # upper teeth
        cv.paint(w2, teeth, (0.9, 0.88, 0.82))
    seam = _band(xx, yy, -mw, mw, centre, max(0.005, aa * 0.5), aa)
    cv.paint(w2, seam * 0.8, _mix(g.lip_colour, (0.1, 0.03, 0.03), 0.6))


def _paint_front(cv: _Canvas, g: FaceParams, s: _Shot, rng: np.random.Generator) -> None:
    """The hair in front, inside a cap a little larger than the head and above the
    hairline, and the earrings."""
    x, y, aa, yaw = cv.x, cv.y, cv.aa, s.yaw
    hx, hy, rx, ry = s.hx, s.hy, g.head_rx, g.head_ry
    vol = 0.1 * g.hair_curly
    win = cv.window(hx - rx - 0.25, hy - ry - 0.3, hx + rx + 0.25, hy + ry * 0.8)
    lx, ly = x[win] - hx, y[win] - hy
    cap_rx, cap_ry = rx * 1.06 + vol * 1.4, ry * 1.04 + vol
    cap = _ellipse_sd(lx, ly + 0.03 + vol * 0.5, cap_rx, cap_ry)
    if g.hair_curly > 0.4:
        cap = cap + 0.015 * np.sin(np.arctan2(ly, lx) * 16 + g.part * 50)
    ax = np.abs(lx - yaw * 0.04) / rx
    sides = (0.05, 0.30, 0.45)[g.hair_len]  # how far the hair comes down the sides
    side_drop = (sides - g.hairline - 0.04) * np.clip((ax - 0.62) / 0.3, 0, 1) ** 1.5
    hl = g.hairline + 0.09 * ax ** 2 + g.part * (lx / rx) * 0.3 + side_drop
    if g.bangs:
        hl = hl + 0.02 * np.sin(lx * 40 + g.part * 20) * g.bangs
    front = _cover(cap, aa) * _cover(ly - hl, aa * 1.5)
    cv.paint(win, front, _hair_texture(lx, ly, s.hair, g, aa))

    if g.earrings:
        metal = (0.85, 0.7, 0.3) if rng.random() < 0.6 else (0.8, 0.8, 0.82)
        for side in (-1, 1):
            ex = hx + side * (rx * 0.97 + 0.01) - yaw * 0.02
            ey = g.eye_y + 0.07 + g.ear_r * 1.5
            w2 = cv.window(ex - 0.04, ey - 0.04, ex + 0.04, ey + 0.04)
            d = np.sqrt((x[w2] - ex) ** 2 + (y[w2] - ey) ** 2) - 0.018
            cv.paint(w2, _cover(d, aa), metal)


def _light_and_expose(cv: _Canvas, g: FaceParams, s: _Shot, rng: np.random.Generator) -> np.ndarray:
    """Light the foreground (Lambert over an ellipsoid around the head), then the camera:
    exposure, white balance and sensor grain; returns uint8 ``[H, W, 3]``."""
    x, y, hx, hy, rx, ry = cv.x, cv.y, s.hx, s.hy, g.head_rx, g.head_ry
    u = lambda a, b: float(rng.uniform(a, b))  # noqa: E731
    la = u(0, 2 * math.pi)
    strength = u(0.1, 0.55)
    L = np.array([math.cos(la) * 0.7, math.sin(la) * 0.5 - 0.2, 0.6])
    L = L / np.linalg.norm(L)
    nx = np.clip((x - hx) / (rx * 1.6), -1, 1)
    ny = np.clip((y - hy) / (ry * 1.6), -1, 1)
    nz = np.sqrt(np.clip(1 - nx * nx - ny * ny, 0, 1))
    lam = np.clip(nx * L[0] + ny * L[1] + nz * L[2], 0, 1)
    shade = (1 - strength) + strength * 1.25 * lam
    cv.img *= (1 + cv.fg * (shade - 1))[..., None]

    exposure = u(0.8, 1.15)
    wb = u(-0.06, 0.06)
    cv.img *= np.float32(exposure) * np.array([1 + wb, 1, 1 - wb], np.float32)
    # Sensor grain: uniform noise of the drawn standard deviation looks the same as Gaussian
    # at these levels and costs a fifth of the time (the largest single cost at 256 px).
    sigma = u(0.004, 0.03)
    grain = rng.random(cv.img.shape, dtype=np.float32)  # [H, W, 3]
    grain -= 0.5
    grain *= np.float32(sigma * math.sqrt(12.0))
    cv.img += grain
    np.clip(cv.img, 0, 1, out=cv.img)
    cv.img *= 255
    cv.img += 0.5
    return cv.img.astype(np.uint8)


def paint_face(g: FaceParams, res: int, rng: np.random.Generator) -> np.ndarray:
    """Paint one photo of the person ``g`` at ``res`` x ``res`` pixels: uint8 ``[res, res, 3]``.

    The painters composite back to front (background and back hair, body, head, signs of
    age, eyes, nose, mouth, front hair, then light and camera) and draw from ``rng`` in
    that fixed order, so the same generator state gives the same pixels.
    """
    cv, shot = _pose(g, res, rng)
    _paint_behind(cv, g, shot, rng)
    _paint_body(cv, g, shot, rng)
    _paint_head(cv, g, shot)
    _paint_wrinkles(cv, g, shot)
    _paint_eyes(cv, g, shot)
    _paint_nose(cv, g, shot)
    _paint_mouth(cv, g, shot)
    _paint_front(cv, g, shot, rng)
    return _light_and_expose(cv, g, shot, rng)
