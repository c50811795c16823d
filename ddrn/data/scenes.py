"""Cameras, backgrounds and occluders of the synthetic benchmark.

A camera has its own background (wall, floor, texture), light (per-channel gain, brightness),
sensor noise, blur and viewpoint distribution. An occluder (object, pole/tree, vehicle or another
person) is placed so that it covers a *requested share of the person's silhouette*: its size or
offset is found by bisection on the covered share, so ``occluded_area`` in the config is what the
images actually get (within a few percent).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from ddrn.data.pedestrians import PALETTE, VIEWS, Painter, draw_person, random_identity

OCCLUDERS = ("object", "pole", "vehicle", "person")
_OCCLUDER_P = (0.3, 0.2, 0.25, 0.25)


@dataclass(frozen=True)
class Camera:
    """One camera's look."""

    wall: np.ndarray        # (3,) RGB
    floor: np.ndarray       # (3,)
    horizon: float          # floor starts at this fraction of the height
    panel: float            # wall texture period in pixels
    gain: np.ndarray        # (3,) per-channel light gain
    noise: float            # sensor noise std
    blur: bool
    views: np.ndarray       # (3,) probabilities of front/back/side


def random_camera(rng: np.random.Generator) -> Camera:
    # The gain keeps hues recognisable across cameras (+-10% per channel, 0.8-1.1 overall):
    # clothing colour is the identity cue, and a wider per-channel gain (0.75-1.2) recoloured it so
    # much that a demo-sized ViT recognised even unoccluded twins poorly (twin R1 46 -> 58).
    muted = lambda: np.clip(rng.uniform(0.2, 0.75, 3) * rng.uniform(0.7, 1.1), 0, 1)  # noqa: E731
    return Camera(wall=muted().astype(np.float32), floor=muted().astype(np.float32),
                  horizon=float(rng.uniform(0.5, 0.8)), panel=float(rng.uniform(6, 20)),
                  gain=(rng.uniform(0.9, 1.1, 3) * rng.uniform(0.8, 1.1)).astype(np.float32),
                  noise=float(rng.uniform(0.01, 0.04)), blur=bool(rng.random() < 0.4),
                  views=rng.dirichlet([2.0, 2.0, 1.5]))


def background(p: Painter, cam: Camera, rng: np.random.Generator) -> np.ndarray:
    """(H, W, 3) float canvas: the camera's wall and floor, shifted a little per image, plus clutter."""
    h, w = p.height, p.width
    canvas = np.empty((h, w, 3), dtype=np.float32)
    horizon = (cam.horizon + rng.uniform(-0.05, 0.05)) * h
    wall = p.yy < horizon
    shade = 0.9 + 0.1 * (((p.xx + rng.uniform(0, cam.panel)) // cam.panel) % 2)
    canvas[:] = cam.floor
    canvas[wall] = cam.wall * shade[wall, None]
    floor_lines = ~wall & (((p.yy - horizon) // 6) % 2 == 0)
    canvas[floor_lines] *= 0.92
    for _ in range(int(rng.integers(0, 4))):  # per-image background clutter
        y0, x0 = rng.uniform(0, h * 0.9), rng.uniform(-w * 0.2, w)
        canvas[p.rect(y0, y0 + rng.uniform(4, h * 0.25), x0, x0 + rng.uniform(3, w * 0.4))] = \
            np.clip(PALETTE[rng.integers(len(PALETTE))] * rng.uniform(0.4, 0.8), 0, 1)
    return canvas


def place_person(p: Painter, canvas: np.ndarray, ident, cam: Camera,
                 rng: np.random.Generator) -> tuple[np.ndarray, tuple[float, float, float]]:
    """Draw the identity as this camera sees it; returns (silhouette mask, (top, height, cx))."""
    h, w = p.height, p.width
    height = h * rng.uniform(0.86, 0.96)
    top = h - height - rng.uniform(0.0, 0.04) * h
    cx = w / 2 + rng.uniform(-0.07, 0.07) * w
    view = VIEWS[rng.choice(3, p=cam.views)]
    body = draw_person(p, canvas, ident, view, top, height, cx, float(rng.uniform(-1, 1)),
                       bool(rng.random() < 0.5))
    return body, (top, height, cx)


def _bisect(share: Callable[[float], float], target: float, lo: float, hi: float,
            steps: int = 9) -> float:
    """Parameter in [lo, hi] whose covered share is closest to ``target`` (share grows with it)."""
    for _ in range(steps):
        mid = (lo + hi) / 2
        if share(mid) < target:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2


def add_occluder(p: Painter, canvas: np.ndarray, body: np.ndarray, box: tuple[float, float, float],
                 area: float, rng: np.random.Generator, kind: str | None = None) -> tuple[str, float]:
    """Paint an occluder covering about ``area`` of ``body`` in place; returns (kind, share covered)."""
    kind = kind or OCCLUDERS[rng.choice(len(OCCLUDERS), p=_OCCLUDER_P)]
    top, height, cx = box
    h, w = p.height, p.width
    n_body = max(int(body.sum()), 1)
    cover = lambda m: float((m & body).sum()) / n_body  # noqa: E731
    colour = PALETTE[rng.integers(len(PALETTE))]
    if kind in ("object", "vehicle"):
        # Rises from the bottom; the parameter is its height in pixels.
        x0 = rng.uniform(-0.3, 0.1) * w if kind == "vehicle" else cx - rng.uniform(0.3, 0.6) * w
        x1 = x0 + (w * rng.uniform(1.2, 1.6) if kind == "vehicle" else rng.uniform(0.6, 1.0) * w)
        make = lambda t: p.rect(h - t, h + 1, x0, x1)  # noqa: E731
        t = _bisect(lambda t: cover(make(t)), area, 0, h)
        mask = make(t)
        canvas[mask] = colour * rng.uniform(0.6, 1.0)
        if kind == "vehicle":  # windows and a wheel
            canvas[mask & p.rect(h - t, h - t * 0.6, x0 + 3, x1 - 3)] = (0.15, 0.2, 0.3)
            canvas[p.ellipse(h - 2, x0 + (x1 - x0) * 0.7, t * 0.2, t * 0.2) & mask] = (0.05, 0.05, 0.05)
        else:
            canvas[mask & (((p.yy - (h - t)) // 5) % 3 == 0)] *= 0.7
    elif kind == "pole":
        # A trunk or pillar in front of the body; the parameter is its half width.
        centre = cx + rng.uniform(-0.2, 0.2) * w
        leaves = rng.random() < 0.5
        make = lambda t: (p.rect(-1, h + 1, centre - t, centre + t)  # noqa: E731
                          | (p.ellipse(top, centre, t * 1.6, t * 2.5) if leaves else False))
        t = _bisect(lambda t: cover(make(t)), area, 0.5, w)
        mask = make(t)
        canvas[mask] = (0.4, 0.3, 0.2) if leaves else (0.55, 0.55, 0.6)
        if leaves:
            canvas[mask & ~p.rect(-1, h + 1, centre - t, centre + t)] = (0.2, 0.5, 0.2)
    else:
        # Another pedestrian, slightly closer to the camera; the parameter is how far in they step.
        other = np.zeros_like(canvas)
        side = 1.0 if rng.random() < 0.5 else -1.0
        o_body = draw_person(p, other, random_identity(rng), VIEWS[rng.integers(3)],
                             top - 0.05 * h, height * 1.08, w / 2, float(rng.uniform(-1, 1)),
                             bool(rng.random() < 0.5))

        def shifted(t: float) -> np.ndarray:
            dx = int(round(side * (w - t)))
            return np.roll(o_body, dx, axis=1) & _valid_cols(w, dx)

        t = _bisect(lambda t: cover(shifted(t)), area, 0, w)
        dx = int(round(side * (w - t)))
        mask = shifted(t)
        canvas[mask] = np.roll(other, dx, axis=1)[mask]
    return kind, cover(mask)


def _valid_cols(w: int, dx: int) -> np.ndarray:
    cols = np.arange(w)
    return ((cols >= dx) & (cols < w + dx))[None, :]


def finish(canvas: np.ndarray, cam: Camera, brightness: float, noise: np.ndarray) -> np.ndarray:
    """Camera light, blur and sensor noise; (H, W, 3) float -> uint8. ``noise`` ~ N(0, 1), same shape."""
    img = canvas * cam.gain * brightness
    if cam.blur:  # 3-tap box blur along both axes: a cheap low-resolution camera
        img = (img + np.roll(img, 1, 0) + np.roll(img, -1, 0)) / 3
        img = (img + np.roll(img, 1, 1) + np.roll(img, -1, 1)) / 3
    img = img + noise * cam.noise
    return (np.clip(img, 0, 1) * 255 + 0.5).astype(np.uint8)
