"""Procedurally drawn anime-style portraits for the demo crawl.

Each portrait is a flat-colour, cel-shaded head-and-shoulders drawing in the usual anime
proportions: large tall eyes around the vertical middle of the head with thick dark upper
lashes, gradient irises with big white highlights, dense outlined bangs down to the
eyebrows, side locks framing a narrow face with a pointed chin, a tiny nose and a small
mouth. Hair colour and style, eyes, clothes, background, face position, scale, rotation
and mirroring all vary.

The head is described in *face units* (cheek-to-cheek width = 1, origin between the eyes,
y pointing down); a single similarity transform maps those units to pixels, so rotation
and mirroring apply to every shape exactly. Everything is drawn at twice the size and
downsampled (anti-aliasing), and every random choice comes from the generator passed in:
the same seed gives the same pixels.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

Color = tuple[int, int, int]

HAIR: list[Color] = [
    (38, 30, 40), (60, 45, 40), (110, 70, 45), (160, 105, 60), (240, 210, 125), (250, 235, 170),
    (245, 165, 195), (225, 110, 150), (85, 120, 225), (55, 75, 150), (205, 210, 225), (190, 60, 55),
    (230, 120, 60), (70, 150, 110), (135, 95, 180), (80, 190, 200),
]
IRIS: list[Color] = [
    (50, 100, 210), (45, 150, 90), (190, 50, 60), (140, 70, 180), (215, 150, 40), (40, 165, 175),
    (120, 75, 45), (215, 85, 140), (90, 90, 110),
]
SKIN: list[Color] = [(255, 232, 218), (252, 224, 204), (255, 238, 228), (245, 212, 190), (250, 228, 214)]
CLOTH: list[Color] = [
    (40, 50, 95), (235, 235, 240), (170, 40, 55), (55, 55, 60), (85, 135, 205), (240, 200, 80),
    (120, 170, 120), (200, 150, 200), (245, 245, 245), (30, 30, 35),
]
ACCENT: list[Color] = [(220, 50, 60), (250, 250, 250), (60, 90, 200), (250, 200, 60), (240, 120, 170), (40, 40, 45)]
INK: Color = (28, 20, 26)


@dataclass(frozen=True)
class PortraitInfo:
    """Where the face ended up in the returned image (pixels of the px x px output)."""

    face_centre: tuple[float, float]  # midway between the eyebrows and the chin
    face_width: float                 # cheek to cheek
    angle: float                      # degrees, counter-clockwise on screen
    mirrored: bool


def _pick(rng: np.random.Generator, palette: list[Color]) -> Color:
    return palette[int(rng.integers(len(palette)))]


def _shade(c: Color, f: float) -> Color:
    return tuple(int(max(0, min(255, round(v * f)))) for v in c)  # type: ignore[return-value]


def _mix(a: Color, b: Color, t: float) -> Color:
    return tuple(int(round(x + (y - x) * t)) for x, y in zip(a, b))  # type: ignore[return-value]


def _luma(c: Color) -> float:
    return 0.299 * c[0] + 0.587 * c[1] + 0.114 * c[2]


def _bez(p0, p1, p2, n: int = 12) -> np.ndarray:
    """Quadratic Bezier from p0 to p2 with control point p1, n points."""
    t = np.linspace(0.0, 1.0, n)[:, None]
    p0, p1, p2 = (np.asarray(p, float) for p in (p0, p1, p2))
    return (1 - t) ** 2 * p0 + 2 * (1 - t) * t * p1 + t ** 2 * p2


def _ellipse(cx: float, cy: float, rx: float, ry: float, n: int = 40, a0: float = 0.0,
             a1: float = 2 * math.pi) -> np.ndarray:
    a = np.linspace(a0, a1, n, endpoint=(a1 - a0) < 2 * math.pi - 1e-9)
    return np.stack([cx + rx * np.cos(a), cy + ry * np.sin(a)], axis=1)


class _Pen:
    """Draws polygons and strokes given in face units onto the supersampled canvas."""

    def __init__(self, draw: ImageDraw.ImageDraw, origin: tuple[float, float], unit: float,
                 angle_deg: float, mirror: bool):
        a = math.radians(angle_deg)
        m = -1.0 if mirror else 1.0
        # Screen y points down, so a counter-clockwise turn on screen uses -a.
        self.m = unit * np.array([[math.cos(a) * m, math.sin(a)], [-math.sin(a) * m, math.cos(a)]])
        self.o = np.asarray(origin, float)
        self.unit = unit
        self.d = draw

    def xy(self, pts) -> list[tuple[float, float]]:
        p = np.asarray(pts, float).reshape(-1, 2) @ self.m.T + self.o
        return [tuple(q) for q in p.tolist()]

    def w(self, width: float) -> int:
        return max(1, int(round(width * self.unit)))

    def poly(self, pts, fill: Color | None = None, outline: Color | None = None, width: float = 0.0) -> None:
        xy = self.xy(pts)
        if fill is not None:
            self.d.polygon(xy, fill=fill)
        if outline is not None and width > 0:
            self.d.line(xy + [xy[0]], fill=outline, width=self.w(width), joint="curve")

    def line(self, pts, fill: Color, width: float) -> None:
        self.d.line(self.xy(pts), fill=fill, width=self.w(width), joint="curve")

    def ellipse(self, cx, cy, rx, ry, fill=None, outline=None, width=0.0, n: int = 40) -> None:
        self.poly(_ellipse(cx, cy, rx, ry, n), fill, outline, width)


# ----------------------------------------------------------------------------- pieces


def _background(rng: np.random.Generator, s: int) -> Image.Image:
    base = tuple(int(v) for v in rng.integers(150, 250, 3))
    kind = int(rng.integers(4))
    top = _mix(base, (255, 255, 255), rng.uniform(0.1, 0.5)) if kind else base
    t = np.linspace(0.0, 1.0, s, dtype=np.float32)[:, None, None]
    col = np.asarray(top, np.float32) * (1 - t) + np.asarray(base, np.float32) * t
    img = Image.fromarray(np.ascontiguousarray(np.broadcast_to(col, (s, s, 3)), np.uint8))
    d = ImageDraw.Draw(img)
    if kind == 2:  # diagonal stripes
        step = s * rng.uniform(0.06, 0.12)
        c = _mix(base, (255, 255, 255), 0.25)
        for k in range(-int(s / step) - 2, int(s / step) + 2, 2):
            x = k * step
            d.polygon([(x, 0), (x + step, 0), (x + step + s, s), (x + s, s)], fill=c)
    elif kind == 3:  # sparkles
        for _ in range(int(rng.integers(6, 14))):
            x, y = rng.uniform(0, s, 2)
            r = s * rng.uniform(0.01, 0.03)
            d.polygon([(x, y - 2.5 * r), (x + r * 0.4, y - r * 0.4), (x + 2.5 * r, y), (x + r * 0.4, y + r * 0.4),
                       (x, y + 2.5 * r), (x - r * 0.4, y + r * 0.4), (x - 2.5 * r, y), (x - r * 0.4, y - r * 0.4)],
                      fill=(255, 255, 250))
    for _ in range(int(rng.integers(0, 6))):  # soft bokeh circles
        r = rng.uniform(0.02, 0.09) * s
        x, y = rng.uniform(0, s, 2)
        d.ellipse([x - r, y - r, x + r, y + r], fill=_mix(_shade(base, rng.uniform(0.9, 1.1)), (255, 255, 255), 0.2))
    return img


def _lock(pen: _Pen, root_l, root_r, tip, bend: float, fill: Color, line: Color, lw: float,
          tip_w: float = 0.0, outline_from: float = 0.35) -> None:
    """One pointed lock of hair from a root segment to a tip, edges bent sideways by `bend`."""
    root_l, root_r, tip = (np.asarray(p, float) for p in (root_l, root_r, tip))
    tl, tr = tip - [tip_w / 2, 0], tip + [tip_w / 2, 0]
    ml, mr = (root_l + tl) / 2 + [bend, 0], (root_r + tr) / 2 + [bend, 0]
    left, right = _bez(root_l, ml, tl, 14), _bez(tr, mr, root_r, 14)
    pts = np.concatenate([left, right])
    pen.poly(pts, fill=fill)
    k = int(14 * outline_from)
    pen.line(np.concatenate([left[k:], right[: 14 - k]]), line, lw)


def _strand(pen: _Pen, centre: np.ndarray, widths: np.ndarray, fill: Color, line: Color, lw: float,
            inner_lines: int = 0) -> None:
    """A ribbon of hair along a centre line with the given half-widths (tails, long locks)."""
    g = np.gradient(centre, axis=0)
    nrm = np.stack([-g[:, 1], g[:, 0]], axis=1) / (np.hypot(g[:, 0], g[:, 1])[:, None] + 1e-9)
    w = widths[:, None]
    pen.poly(np.concatenate([centre + nrm * w, (centre - nrm * w)[::-1]]), fill=fill, outline=line, width=lw)
    m = len(centre)
    for k in range(inner_lines):
        f = (k + 1) / (inner_lines + 1) * 2 - 1
        a = int(m * (0.3 + 0.15 * (k % 2)))
        pen.line(centre[a:-2] + nrm[a:-2] * w[a:-2] * f * 0.8, line, lw * 0.7)


def _eye(pen: _Pen, ex: float, ey: float, ew: float, eh: float, side: int, st: dict) -> None:
    """A large anime eye. side=+1: the eye on the +x side (its outer corner points to +x)."""
    p = 2.6  # superellipse exponent: a tall eye with rounded-square corners

    def supell(a0, a1, n, grow=0.0):
        a = np.linspace(a0, a1, n)
        c, s_ = np.cos(a), np.sin(a)
        x = (ew / 2 + grow) * np.sign(c) * np.abs(c) ** (2 / p)
        y = (eh / 2 + grow) * np.sign(s_) * np.abs(s_) ** (2 / p)
        return x, y

    tilt = st["tilt"]

    def place(x, y):  # eye-local -> face units; x mirrored so +x is always the outer side
        xx, yy = x * side, y
        ca, sa = math.cos(tilt), math.sin(tilt)
        return np.stack([ex + xx * ca - yy * sa * side, ey + xx * sa * side + yy * ca], axis=1)

    def clip(pts_local):  # radially pull points into the eye-white outline
        x, y = pts_local[:, 0], pts_local[:, 1]
        v = (np.abs(x) / (ew / 2)) ** p + (np.abs(y) / (eh / 2)) ** p
        f = np.where(v > 1, v ** (-1 / p), 1.0)
        return x * f, y * f

    # White of the eye with a faint shadow under the lid.
    x, y = supell(0, 2 * math.pi, 56)
    pen.poly(place(x, y), fill=(255, 255, 255))
    sh = np.stack(supell(math.pi, 2 * math.pi, 20), axis=1)
    sh = np.concatenate([sh, (sh * [1, 0.55] + [0, -0.05 * eh])[::-1]])
    pen.poly(place(*clip(sh)), fill=(220, 222, 238))

    iris = st["iris"]
    icx, icy = st["look"] * ew, 0.04 * eh
    irx, iry = st["iris_w"] * ew, 0.47 * eh

    def iris_ell(cx, cy, rx, ry, col, n=44):
        pts = _ellipse(cx, cy, rx, ry, n)
        pen.poly(place(*clip(pts)), fill=col)

    iris_ell(icx, icy, irx, iry, _shade(iris, 0.32))
    iris_ell(icx, icy, irx * 0.92, iry * 0.95, _shade(iris, 0.62))
    for k, f in enumerate((0.78, 0.62, 0.46)):  # gradient: darker top, lighter bottom
        col = _mix(iris, (255, 255, 255), 0.12 + 0.16 * k)
        iris_ell(icx, icy + iry * (1 - f) * 0.95, irx * (0.9 - 0.1 * k) * (0.8 + 0.2 * f), iry * f, col)
    iris_ell(icx, icy - 0.06 * eh, irx * 0.45, iry * 0.5, _shade(iris, 0.22))  # pupil
    # Lid shadow over the top of the iris.
    band = np.concatenate([_ellipse(icx, icy, irx, iry, 20, math.pi, 2 * math.pi),
                           _ellipse(icx, icy - 0.1 * eh, irx * 0.9, iry * 0.75, 20, math.pi, 2 * math.pi)[::-1]])
    pen.poly(place(*clip(band)), fill=_shade(iris, 0.28))
    # Highlights: a big one up-and-toward the light, a small one lower on the other side.
    hx = st["light"] * side
    hr = st["hl"] * ew
    pen.poly(place(*clip(_ellipse(icx + hx * 0.16 * ew, icy - 0.17 * eh, hr, hr * 1.2, 24))), fill=(255, 255, 255))
    pen.poly(place(*clip(_ellipse(icx - hx * 0.14 * ew, icy + 0.22 * eh, hr * 0.45, hr * 0.45, 16))),
             fill=(255, 255, 255))

    # Thick upper lash: a band along the top of the eye, thicker toward the outer corner.
    a = np.linspace(math.pi * 1.0, math.pi * 2.0, 30)  # inner corner -> top -> outer corner
    t = (a - a[0]) / (a[-1] - a[0])
    c, s_ = np.cos(a), np.sin(a)
    bx = (ew / 2) * np.sign(c) * np.abs(c) ** (2 / p)
    by = (eh / 2) * np.sign(s_) * np.abs(s_) ** (2 / p)
    th = st["lash"] * eh * (0.35 + 0.9 * t ** 1.3) * np.sin(np.clip(t * 1.25, 0, 1) * math.pi / 2 + 0.15)
    nx, ny = bx / (ew / 2), by / (eh / 2)
    nl = np.hypot(nx, ny) + 1e-9
    ox, oy = bx + th * nx / nl, by + th * ny / nl - 0.02 * eh
    lower = np.stack([bx, by + 0.02 * eh], axis=1)
    upper = np.stack([ox, oy], axis=1)
    # Outer flick of lashes past the corner.
    fx, fy = bx[-1], by[-1]
    flick = np.array([[fx + 0.05 * ew, fy + 0.08 * eh], [fx + 0.2 * ew, fy + 0.02 * eh + st["flick"] * eh],
                      [fx + 0.08 * ew, fy - 0.1 * eh]])
    lash = np.concatenate([lower, flick, upper[::-1]])
    pen.poly(place(lash[:, 0], lash[:, 1]), fill=INK)
    for k in range(st["n_lashes"]):  # a few single lashes sticking out
        i = 22 + 3 * k
        if i >= len(ox) - 1:
            break
        base = np.array([ox[i], oy[i]])
        dx, dy = nx[i] / nl[i], ny[i] / nl[i]
        tipp = base + [0.12 * ew * dx + 0.05 * ew, 0.12 * ew * dy]
        side_off = np.array([-dy, dx]) * 0.025 * ew
        lp = np.array([base - side_off, tipp, base + side_off])
        pen.poly(place(lp[:, 0], lp[:, 1]), fill=INK)
    # Crease above the eye.
    if st["crease"]:
        cx_, cy_ = supell(math.pi * 1.25, math.pi * 1.8, 12, grow=0.05 * eh)
        pen.line(place(cx_, cy_ - th.max() * 0.8), st["skin_line"], 0.006)
    # Thin lower lid on the outer half.
    lx, ly = supell(math.pi * 0.15, math.pi * 0.55, 12)
    pen.line(place(lx, ly + 0.01 * eh), _shade(st["skin_line"], 0.8), 0.009)
    # Eyebrow: a thin tapered arc.
    bw = ew * 0.95
    brow = _bez((-0.45 * bw, -0.62 * eh + st["brow"] * eh), (0.0, -0.78 * eh + st["brow"] * eh),
                (0.5 * bw, -0.62 * eh + st["brow"] * eh + 0.06 * eh), 10)
    pen.line(place(brow[:, 0], brow[:, 1]), st["brow_col"], 0.012)


def _mouth(pen: _Pen, my: float, mw: float, kind: int, skin_line: Color) -> None:
    if kind == 0:  # gentle smile
        pen.line(_bez((-mw, my - 0.008), (0, my + 0.03), (mw, my - 0.008), 10), _shade(skin_line, 0.85), 0.011)
    elif kind == 1:  # small open smile
        pts = np.concatenate([[[-mw * 0.8, my - 0.01], [mw * 0.8, my - 0.01]],
                              _ellipse(0, my - 0.01, mw * 0.8, 0.07, 16, 0, math.pi)])
        pen.poly(pts, fill=(120, 35, 45), outline=(80, 25, 30), width=0.008)
        pen.poly(_ellipse(0, my + 0.035, mw * 0.45, 0.022, 14, math.pi, 2 * math.pi), fill=(235, 120, 130))
    elif kind == 2:  # small "o"
        pen.ellipse(0, my + 0.01, mw * 0.45, 0.035, fill=(150, 50, 60), outline=(90, 30, 35), width=0.007, n=20)
    else:  # cat mouth
        pen.line(_bez((-mw, my - 0.01), (-mw * 0.5, my + 0.035), (0, my), 8), _shade(skin_line, 0.85), 0.01)
        pen.line(_bez((0, my), (mw * 0.5, my + 0.035), (mw, my - 0.01), 8), _shade(skin_line, 0.85), 0.01)


# ----------------------------------------------------------------------------- portrait


def render_portrait(rng: np.random.Generator, px: int = 512) -> tuple[Image.Image, PortraitInfo]:
    """One anime-style portrait (RGB, px x px) and where its face is."""
    ss = 2  # supersampling factor
    s = ss * px
    img = _background(rng, s)
    d = ImageDraw.Draw(img)

    # Placement: face width, centre, rotation, mirroring.
    fw = rng.uniform(0.34, 0.44) * s
    cx = s * (0.5 + rng.uniform(-0.05, 0.05))
    cy = s * rng.uniform(0.40, 0.47)  # between the eyes
    angle = float(rng.uniform(-10, 10))
    mirror = bool(rng.random() < 0.5)
    pen = _Pen(d, (cx, cy), fw, angle, mirror)

    hair = _pick(rng, HAIR)
    skin = _pick(rng, SKIN)
    cloth = _pick(rng, CLOTH)
    accent = _pick(rng, ACCENT)
    hair_line = _shade(hair, 0.35) if _luma(hair) > 70 else INK
    hair_shadow = _shade(hair, 0.82)
    hair_light = _mix(hair, (255, 255, 255), 0.45)
    skin_line = _mix(_shade(skin, 0.42), (90, 40, 40), 0.3)
    skin_shadow = _mix(skin, (225, 150, 150), 0.35)
    lw = 0.011  # outline width, face units

    style = int(rng.integers(4))  # 0 long, 1 bob, 2 short, 3 twin tails
    chin_y = rng.uniform(0.6, 0.68)
    eye_y = rng.uniform(-0.02, 0.04)

    # Back hair.
    if style != 2:
        bottom = {0: rng.uniform(1.3, 1.9), 1: rng.uniform(0.55, 0.8), 3: rng.uniform(0.45, 0.7)}[style]
        wide = rng.uniform(0.7, 0.82)
        n_tips = int(rng.integers(5, 9))
        xs = np.linspace(wide, -wide, 2 * n_tips + 1)
        ys = np.where(np.arange(2 * n_tips + 1) % 2 == 0, bottom, bottom - rng.uniform(0.08, 0.16))
        ys = ys - 0.12 * (np.abs(xs) / wide) ** 2 * (style == 1)
        outline = np.concatenate([_ellipse(0, -0.25, 0.66, 0.66, 30, math.pi, 2 * math.pi),
                                  _bez((0.66, -0.25), (wide + 0.04, 0.3), (wide, bottom - 0.1), 10),
                                  np.stack([xs, ys], axis=1),
                                  _bez((-wide, bottom - 0.1), (-wide - 0.04, 0.3), (-0.66, -0.25), 10)])
        pen.poly(outline, fill=hair_shadow, outline=hair_line, width=lw)
    if style == 3:  # twin tails
        tail_len = rng.uniform(1.2, 1.9)
        tail_w = rng.uniform(0.16, 0.24)
        for sd in (-1, 1):
            root = np.array([sd * 0.5, -0.62])
            centre = _bez(root, (sd * rng.uniform(1.05, 1.3), -0.3), (sd * rng.uniform(0.8, 1.0), tail_len), 28)
            t = np.linspace(0, 1, 28)
            widths = tail_w * (0.35 + 0.65 * np.sin(np.pi * np.clip(t * 1.6, 0, 1) / 2)) * (1 - t) ** 0.6 + 0.005
            _strand(pen, centre, widths, hair, hair_line, lw, inner_lines=2)
            pen.ellipse(root[0], root[1] + 0.03, 0.08, 0.07, fill=accent, outline=_shade(accent, 0.5), width=lw * 0.8)

    # Neck, shadow under the chin, shoulders and clothes.
    neck_w = rng.uniform(0.12, 0.15)
    pen.poly([(-neck_w, 0.3), (neck_w, 0.3), (neck_w * 1.05, 1.1), (-neck_w * 1.05, 1.1)], fill=skin,
             outline=skin_line, width=lw * 0.8)
    pen.poly([(-neck_w, 0.3), (neck_w, 0.3), (neck_w, 0.62), (0, chin_y + 0.12), (-neck_w, 0.62)], fill=skin_shadow)
    sh_y = rng.uniform(0.95, 1.05)
    half = np.concatenate([[(neck_w * 1.05, sh_y - 0.02)],
                           _bez((neck_w * 1.05, sh_y - 0.02), (0.45, sh_y + 0.02), (0.75, sh_y + 0.12), 8)[1:],
                           _bez((0.75, sh_y + 0.12), (1.0, sh_y + 0.2), (1.02, sh_y + 0.55), 8)[1:],
                           [(1.08, 2.6)]])
    body = np.concatenate([(half * [-1, 1])[::-1], half])
    cloth_line = _shade(cloth, 0.45) if _luma(cloth) > 60 else INK
    pen.poly(body, fill=cloth, outline=cloth_line, width=lw)
    collar = int(rng.integers(3))
    if collar == 0:  # V neck
        pen.poly([(-neck_w * 1.05, sh_y - 0.03), (neck_w * 1.05, sh_y - 0.03), (0, sh_y + 0.22)], fill=skin,
                 outline=cloth_line, width=lw)
    elif collar == 1:  # sailor collar with a ribbon
        white = (245, 245, 248)
        for sd in (-1, 1):
            pen.poly([(sd * neck_w * 1.05, sh_y - 0.04), (sd * 0.62, sh_y + 0.1), (sd * 0.45, sh_y + 0.35),
                      (0, sh_y + 0.3)], fill=white, outline=cloth_line, width=lw)
            pen.line([(sd * 0.52, sh_y + 0.13), (sd * 0.4, sh_y + 0.3), (sd * 0.05, sh_y + 0.26)], accent, 0.02)
        pen.poly([(0, sh_y + 0.3), (-0.16, sh_y + 0.22), (-0.14, sh_y + 0.4)], fill=accent, outline=_shade(accent, 0.5),
                 width=lw * 0.8)
        pen.poly([(0, sh_y + 0.3), (0.16, sh_y + 0.22), (0.14, sh_y + 0.4)], fill=accent, outline=_shade(accent, 0.5),
                 width=lw * 0.8)
    else:  # shirt collar
        for sd in (-1, 1):
            pen.poly([(sd * neck_w * 1.1, sh_y - 0.06), (sd * 0.3, sh_y + 0.05), (sd * 0.05, sh_y + 0.2)],
                     fill=(250, 250, 252), outline=_shade(cloth_line, 1.0), width=lw)

    # Face: round skull, widest at the cheeks, jaw tapering to a pointed chin.
    right = np.concatenate([_bez((0.5, -0.05), (0.5, 0.2), (0.42, 0.36), 10),
                            _bez((0.42, 0.36), (0.25, chin_y - 0.07), (0.03, chin_y - 0.005), 12)])
    left = (right * [-1, 1])[::-1]
    face = np.concatenate([_ellipse(0, -0.2, 0.5, 0.55, 30, math.pi, 2 * math.pi), [(0.5, -0.2)], right,
                           [(0, chin_y)], left, [(-0.5, -0.2)]])
    if style == 2:  # ears show with short hair
        for sd in (-1, 1):
            pen.ellipse(sd * 0.5, 0.08, 0.07, 0.12, fill=skin, outline=skin_line, width=lw * 0.8, n=20)
    pen.poly(face, fill=skin, outline=skin_line, width=lw)

    # Blush.
    if rng.random() < 0.6:
        blush = _mix(skin, (245, 140, 150), rng.uniform(0.3, 0.5))
        for sd in (-1, 1):
            pen.ellipse(sd * 0.27, eye_y + 0.22, 0.1, 0.04, fill=blush, n=24)
            for k in range(3):
                x0 = sd * 0.27 + (k - 1) * 0.035
                pen.line([(x0 + 0.012, eye_y + 0.2), (x0 - 0.012, eye_y + 0.24)], _shade(blush, 0.85), 0.006)

    # Eyes.
    ew = rng.uniform(0.24, 0.29)
    eh = ew * rng.uniform(1.15, 1.4)
    gap = rng.uniform(0.2, 0.24)
    iris = _pick(rng, IRIS)
    st = dict(iris=iris, tilt=math.radians(rng.uniform(-8, 4)), look=rng.uniform(-0.04, 0.04),
              iris_w=rng.uniform(0.34, 0.42), light=float(rng.choice([-1, 1])), hl=rng.uniform(0.11, 0.15),
              lash=rng.uniform(0.16, 0.24), flick=rng.uniform(-0.1, 0.06), n_lashes=int(rng.integers(0, 3)),
              crease=bool(rng.random() < 0.5), skin_line=skin_line, brow=rng.uniform(-0.05, 0.05),
              brow_col=hair_line if _luma(hair) < 70 else _shade(hair, 0.55))
    for sd in (-1, 1):
        st_side = dict(st)
        st_side["look"] = st["look"] * sd  # eye-local x points outward: same gaze for both eyes
        _eye(pen, sd * gap, eye_y, ew, eh, sd, st_side)

    # Nose and mouth.
    ny = eye_y + rng.uniform(0.25, 0.3)
    if rng.random() < 0.5:
        pen.line([(0.0, ny - 0.03), (-0.015, ny + 0.01), (0.005, ny + 0.015)], _shade(skin_line, 1.1), 0.008)
    else:
        pen.poly([(0.0, ny - 0.04), (0.02, ny + 0.012), (-0.015, ny + 0.015)], fill=skin_shadow)
    my = min(ny + rng.uniform(0.13, 0.17), chin_y - 0.17)
    _mouth(pen, my, rng.uniform(0.04, 0.08), int(rng.integers(4)), skin_line)

    # Hair over the head: side locks framing the face, then the crown with its bangs.
    cr = rng.uniform(0.6, 0.66)  # crown radius, centred at (0, -0.27)
    for sd in (-1, 1):
        for k in range(2):
            tip_y = rng.uniform(0.3, 0.8) if style != 2 else rng.uniform(0.05, 0.25)
            x_in, x_out = sd * (0.4 + 0.06 * k), sd * (cr - 0.03)
            tip = (sd * rng.uniform(0.42, 0.55) + sd * 0.05 * k, tip_y - 0.1 * k)
            _lock(pen, (x_in, -0.4), (x_out, -0.3), tip, sd * rng.uniform(0.02, 0.07), hair, hair_line, lw)
    if rng.random() < 0.4:  # ahoge
        base = np.array([rng.uniform(-0.15, 0.15), -0.2 - cr])
        pen.poly(np.concatenate([_bez(base - [0.04, -0.03], base + [0.05, -0.2], base + [0.2, -0.18], 10),
                                 _bez(base + [0.2, -0.18], base + [0.04, -0.12], base + [0.04, 0.03], 10)]),
                 fill=hair, outline=hair_line, width=lw)

    # Bangs: dense pointed locks hanging from the crown down to about the eyebrows.
    bang = int(rng.integers(3))  # 0 spiky, 1 blunt, 2 swept
    n = int(rng.integers(7, 12))
    brow_y = eye_y - eh * 0.62
    sweep = rng.uniform(0.04, 0.1) * float(rng.choice([-1, 1])) if bang == 2 else 0.0
    span = 0.6
    cell = 2 * span / n
    tips = []
    for k in range(n):
        xm = -span + (k + 0.5) * cell
        tip_y = brow_y + rng.uniform(-0.03, 0.03) + 0.32 * max(0.0, abs(xm) - 0.3) / 0.3
        if bang == 0 and k % 2:
            tip_y -= rng.uniform(0.03, 0.08)
        if abs(xm) < 0.2:
            tip_y = min(tip_y, eye_y - eh * 0.56)  # keep the eyes clear
        tips.append((xm + sweep + rng.uniform(-0.2, 0.2) * cell, tip_y))
    depth = (0.03, 0.02, 0.05) if bang == 1 else (0.07, 0.1, 0.16)
    a_end = math.asin(min(0.95, 0.05 / cr))
    start = (-cr * math.cos(a_end), -0.27 - cr * math.sin(a_end))
    edge = [np.array([start])]
    prev = np.array(start)
    notches = []
    for k, (tx, ty) in enumerate(tips):
        tip = np.array([tx, ty])
        if k:
            ny_ = min(ty, tips[k - 1][1]) - rng.uniform(depth[1], depth[2])
            notch = np.array([-span + k * cell + sweep * 0.5, ny_])
            notches.append(notch)
            edge.append(_bez(prev, 0.6 * (prev + notch) / 2 + 0.4 * np.array([notch[0], prev[1]]), notch, 6)[1:])
            prev = notch
        # Lock edge down to the tip, bulging outward like a drawn hair lock.
        tip_w = cell * 0.18 if bang == 1 else 0.0
        t0 = tip - [tip_w, 0]
        edge.append(_bez(prev, 0.6 * (prev + t0) / 2 + 0.4 * np.array([prev[0], t0[1]]), t0, 8)[1:])
        prev = tip + [tip_w, 0]
        edge.append(prev[None, :])
    end = np.array([-start[0], start[1]])
    edge.append(_bez(prev, 0.6 * (prev + end) / 2 + 0.4 * np.array([end[0], prev[1]]), end, 8)[1:])
    top = _ellipse(0, -0.27, cr, cr, 36, math.pi + a_end, 2 * math.pi - a_end)[::-1]  # back over the top
    bangs = np.concatenate(edge + [top])
    pen.poly(bangs, fill=hair, outline=hair_line, width=lw)
    focus = np.array([sweep * 2, -1.05])
    for notch in notches:  # strand lines running up from each notch, tapering
        dvec = focus - notch
        dvec /= np.hypot(*dvec)
        ln = rng.uniform(0.12, 0.25)
        perp = np.array([-dvec[1], dvec[0]]) * lw * 0.5
        pen.poly([notch - perp, notch + dvec * ln, notch + perp], fill=hair_line)
    shine_y = -0.27 - cr * rng.uniform(0.55, 0.7)
    if rng.random() < 0.75:  # shine band across the crown
        xs = np.linspace(-0.42, 0.42, 15)
        top = shine_y - 0.04 + 0.35 * xs ** 2
        bot = top + np.where(np.arange(15) % 2 == 0, 0.04, 0.09)
        pen.poly(np.concatenate([np.stack([xs, top], 1), np.stack([xs, bot], 1)[::-1]]), fill=hair_light)

    # Accessory: a hair clip or a ribbon.
    acc = int(rng.integers(3))
    if acc == 1:
        sd = float(rng.choice([-1, 1]))
        pen.poly([(sd * 0.28, -0.42), (sd * 0.45, -0.5), (sd * 0.47, -0.46), (sd * 0.3, -0.38)], fill=accent,
                 outline=_shade(accent, 0.5), width=lw * 0.7)
    elif acc == 2 and style != 3:
        sd = float(rng.choice([-1, 1]))
        c0 = np.array([sd * 0.45, -0.7])
        for w in (-1, 1):
            pen.poly([c0, c0 + [w * 0.16, -0.1], c0 + [w * 0.18, 0.08]], fill=accent, outline=_shade(accent, 0.5),
                     width=lw * 0.8)
        pen.ellipse(c0[0], c0[1], 0.04, 0.04, fill=_shade(accent, 0.85), outline=_shade(accent, 0.5), width=lw * 0.8,
                    n=16)

    out = img.resize((px, px), Image.LANCZOS)
    centre = np.array([[0.0, (brow_y + chin_y) / 2]]) @ pen.m.T + pen.o
    info = PortraitInfo(face_centre=(float(centre[0, 0]) / ss, float(centre[0, 1]) / ss),
                        face_width=float(fw) / ss, angle=angle, mirrored=mirror)
    return out, info


def draw_portrait(rng: np.random.Generator, px: int = 512) -> Image.Image:
    """One anime-style portrait, RGB, px x px."""
    return render_portrait(rng, px)[0]
