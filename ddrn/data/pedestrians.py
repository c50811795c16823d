"""Numpy-drawn pedestrians for the synthetic benchmark: an identity is a combination of attributes.

Everything is drawn with boolean masks on an ``(H, W)`` pixel grid into a float RGB canvas
``(H, W, 3)`` in ``[0, 1]``; no image library is involved, so the output depends only on numpy and
the seed. Colours come from a small palette with a little per-identity jitter, so many identities
share colours and differ only in one or two attributes (some are deliberate near-duplicates, see
:func:`near_duplicate`): exactly the cue an occluder can hide.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

PALETTE = np.array([
    [0.85, 0.15, 0.15], [0.15, 0.35, 0.80], [0.15, 0.60, 0.25], [0.92, 0.85, 0.20],
    [0.95, 0.95, 0.95], [0.10, 0.10, 0.12], [0.55, 0.55, 0.58], [0.45, 0.28, 0.15],
    [0.90, 0.50, 0.10], [0.55, 0.20, 0.60], [0.20, 0.20, 0.45], [0.95, 0.60, 0.70],
], dtype=np.float32)
SKIN = np.array([[0.96, 0.80, 0.69], [0.87, 0.67, 0.52], [0.70, 0.50, 0.36], [0.45, 0.31, 0.22]],
                dtype=np.float32)
HAIR = np.array([[0.08, 0.06, 0.05], [0.35, 0.22, 0.12], [0.75, 0.60, 0.35], [0.55, 0.55, 0.55]],
                dtype=np.float32)
PATTERNS = ("solid", "hstripes", "vstripes", "checks", "two_tone", "logo")
BOTTOMS = ("trousers", "shorts", "skirt")
ACCESSORIES = ("none", "backpack", "bag", "hat")
VIEWS = ("front", "back", "side")


@dataclass(frozen=True)
class Identity:
    """The attributes that make one person (colours are RGB in [0, 1])."""

    skin: tuple[float, ...]
    hair: tuple[float, ...]
    long_hair: bool
    top: tuple[float, ...]
    pattern: str
    pattern_colour: tuple[float, ...]
    long_sleeves: bool
    bottom: tuple[float, ...]
    bottom_type: str
    shoes: tuple[float, ...]
    accessory: str
    accessory_colour: tuple[float, ...]
    height: float      # fraction of the nominal person height
    width: float       # shoulder-width factor
    leg_ratio: float   # share of the height taken by the legs


def _colour(rng: np.random.Generator, table: np.ndarray, jitter: float = 0.04) -> tuple[float, ...]:
    c = table[rng.integers(len(table))] + rng.normal(0, jitter, 3)
    return tuple(float(v) for v in np.clip(c, 0, 1))


def random_identity(rng: np.random.Generator) -> Identity:
    """Draw every attribute independently."""
    return Identity(
        skin=_colour(rng, SKIN, 0.02), hair=_colour(rng, HAIR, 0.02), long_hair=bool(rng.random() < 0.35),
        top=_colour(rng, PALETTE), pattern=PATTERNS[rng.integers(len(PATTERNS))],
        pattern_colour=_colour(rng, PALETTE), long_sleeves=bool(rng.random() < 0.5),
        bottom=_colour(rng, PALETTE), bottom_type=BOTTOMS[rng.choice(3, p=[0.6, 0.25, 0.15])],
        shoes=_colour(rng, PALETTE[[4, 5, 6, 7, 1, 0]]),
        accessory=ACCESSORIES[rng.choice(4, p=[0.4, 0.25, 0.2, 0.15])],
        accessory_colour=_colour(rng, PALETTE),
        height=float(rng.uniform(0.88, 1.0)), width=float(rng.uniform(0.85, 1.15)),
        leg_ratio=float(rng.uniform(0.42, 0.5)),
    )


def near_duplicate(base: Identity, rng: np.random.Generator) -> Identity:
    """``base`` with one or two attributes changed, mostly lower-body or accessory ones.

    Those are the attributes occluders (cars, bins, other people's legs) tend to hide, so such
    pairs are separable only when the body is fully visible.
    """
    fresh = random_identity(rng)
    fields = ["bottom", "bottom_type", "shoes", "accessory", "pattern_colour", "long_sleeves"]
    change = rng.choice(len(fields), size=int(rng.integers(1, 3)), replace=False)
    updates = {fields[i]: getattr(fresh, fields[i]) for i in change}
    if "accessory" in updates:
        updates["accessory_colour"] = fresh.accessory_colour
    return dataclasses.replace(base, **updates)


class Painter:
    """Mask-drawing primitives on a fixed ``(H, W)`` grid."""

    def __init__(self, height: int, width: int) -> None:
        self.height, self.width = height, width
        self.yy, self.xx = np.mgrid[0:height, 0:width].astype(np.float32)

    def rect(self, y0: float, y1: float, x0: float, x1: float) -> np.ndarray:
        return (self.yy >= y0) & (self.yy < y1) & (self.xx >= x0) & (self.xx < x1)

    def ellipse(self, cy: float, cx: float, ry: float, rx: float) -> np.ndarray:
        return ((self.yy - cy) / max(ry, 0.5)) ** 2 + ((self.xx - cx) / max(rx, 0.5)) ** 2 <= 1.0

    def slanted(self, y0: float, y1: float, cx0: float, cx1: float, half_w: float) -> np.ndarray:
        """A bar from (y0, cx0) to (y1, cx1) of half-width ``half_w`` (a walking leg or arm)."""
        t = np.clip((self.yy - y0) / max(y1 - y0, 1e-3), 0, 1)
        cx = cx0 + t * (cx1 - cx0)
        return (self.yy >= y0) & (self.yy < y1) & (np.abs(self.xx - cx) < half_w)


def draw_person(p: Painter, canvas: np.ndarray, ident: Identity, view: str, top: float,
                height: float, cx: float, phase: float, mirror: bool) -> np.ndarray:
    """Paint ``ident`` onto ``canvas`` (H, W, 3) in place and return its silhouette mask (H, W).

    ``top``/``height``/``cx`` place the person in pixels; ``phase`` in [-1, 1] sets the stride.
    """
    h = height * ident.height
    y = lambda v: top + (height - h) + v * h  # noqa: E731  (person-relative row -> pixel row)
    side = view == "side"
    half = h * 0.135 * ident.width * (0.62 if side else 1.0)   # half shoulder width in pixels
    sgn = -1.0 if mirror else 1.0
    body = np.zeros((p.height, p.width), dtype=bool)

    def paint(mask: np.ndarray, colour: tuple[float, ...] | np.ndarray) -> None:
        canvas[mask] = colour
        body[mask] = True

    v_hip = 1.0 - ident.leg_ratio
    stride = phase * h * 0.09
    leg_w = half * (0.42 if not side else 0.55)
    # Legs (behind the torso): thighs/shins as slanted bars from hip to ankle.
    legs = [(-0.45, -1), (0.45, 1)] if not side else [(0.0, -1), (0.0, 1)]
    knee = v_hip + 0.45 * ident.leg_ratio
    for off, s in legs:
        leg = p.slanted(y(v_hip), y(0.96), cx + off * half, cx + off * half + s * stride, leg_w)
        paint(leg, ident.bottom if ident.bottom_type == "trousers" else ident.skin)
        if ident.bottom_type == "shorts":
            paint(leg & (p.yy < y(knee)), ident.bottom)
        foot_x = cx + off * half + s * stride
        paint(p.rect(y(0.95), y(1.0), foot_x - leg_w * 1.2, foot_x + leg_w * 1.2), ident.shoes)
    if ident.bottom_type == "skirt":
        t = np.clip((p.yy - y(v_hip)) / max(y(knee) - y(v_hip), 1), 0, 1)
        paint((p.yy >= y(v_hip - 0.02)) & (p.yy < y(knee)) & (np.abs(p.xx - cx) < half * (0.9 + 0.5 * t)),
              ident.bottom)
    else:
        paint(p.rect(y(v_hip - 0.02), y(v_hip + 0.06), cx - half * 0.95, cx + half * 0.95), ident.bottom)
    # Backpack seen from the side sticks out behind the torso.
    if ident.accessory == "backpack" and side:
        paint(p.rect(y(0.19), y(0.46), cx - sgn * half * 1.9, cx - sgn * half * 0.6), ident.accessory_colour)
    # Torso with its pattern.
    torso = p.rect(y(0.17), y(v_hip), cx - half, cx + half) | p.ellipse(y(0.2), cx, h * 0.04, half)
    paint(torso, ident.top)
    ty0 = y(0.17)
    stripe = max(h * 0.035, 1.5)
    if ident.pattern == "hstripes":
        paint(torso & (((p.yy - ty0) // stripe) % 2 == 1), ident.pattern_colour)
    elif ident.pattern == "vstripes":
        paint(torso & (((p.xx - cx + 50) // stripe) % 2 == 1), ident.pattern_colour)
    elif ident.pattern == "checks":
        paint(torso & ((((p.yy - ty0) // (stripe * 1.5)) + ((p.xx - cx + 50) // (stripe * 1.5))) % 2 == 1),
              ident.pattern_colour)
    elif ident.pattern == "two_tone":
        paint(torso & (p.yy > y((0.17 + v_hip) / 2)), ident.pattern_colour)
    elif ident.pattern == "logo" and view != "back":
        paint(p.rect(y(0.25), y(0.36), cx - half * 0.45, cx + half * 0.45), ident.pattern_colour)
    if ident.accessory == "backpack" and view == "back":
        paint(p.rect(y(0.19), y(0.47), cx - half * 0.75, cx + half * 0.75), ident.accessory_colour)
    elif ident.accessory == "backpack" and view == "front":
        for s in (-0.6, 0.6):
            paint(p.rect(y(0.17), y(0.38), cx + s * half - 1, cx + s * half + 1), ident.accessory_colour)
    # Arms swing opposite to the legs.
    arm_w = max(half * 0.22, 1.0)
    arms = [(-1.0 - 0.18, 1), (1.0 + 0.18, -1)] if not side else [(0.0, 1)]
    for off, s in arms:
        x0 = cx + off * half
        arm = p.slanted(y(0.18), y(v_hip + 0.02), x0, x0 + s * stride * 0.6, arm_w)
        paint(arm, ident.skin)
        sleeve_end = y(v_hip) if ident.long_sleeves else y(0.29)
        paint(arm & (p.yy < sleeve_end), ident.top)
    if ident.accessory == "bag":
        bx = cx + sgn * half * 1.05
        paint(p.rect(y(v_hip - 0.08), y(v_hip + 0.06), bx - half * 0.35, bx + half * 0.35), ident.accessory_colour)
        paint(p.slanted(y(0.18), y(v_hip - 0.08), cx - sgn * half * 0.7, bx, 0.7), ident.accessory_colour)
    # Head, hair, hat.
    head_r = h * 0.062
    paint(p.rect(y(0.12), y(0.18), cx - head_r * 0.4, cx + head_r * 0.4), ident.skin)
    head = p.ellipse(y(0.075), cx, head_r * 1.05, head_r * 0.85)
    paint(head, ident.skin)
    hair = head & (p.yy < y(0.055)) if view != "back" else head
    if side:
        hair = hair | (head & (sgn * (p.xx - cx) < -head_r * 0.3))
    paint(hair, ident.hair)
    if ident.long_hair:
        paint(p.rect(y(0.06), y(0.2), cx - head_r * 0.9, cx + head_r * 0.9) & ~head
              | (head if view == "back" else np.zeros_like(head)), ident.hair)
    if ident.accessory == "hat":
        paint(p.ellipse(y(0.025), cx, head_r * 0.45, head_r * 1.1), ident.accessory_colour)
    return body
