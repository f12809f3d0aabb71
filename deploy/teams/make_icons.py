"""Draw the Teams app icons (color.png 192x192, outline.png 32x32) without any imaging library.

Run once after changing the drawing: ``python deploy/teams/make_icons.py``; the
PNGs are committed. Teams wants the outline icon white on transparent, the
colour icon a full-bleed symbol on a solid background.
"""

from __future__ import annotations

import itertools
import struct
import zlib
from collections.abc import Callable
from pathlib import Path

HERE = Path(__file__).resolve().parent
Pixel = tuple[int, int, int, int]


def png(width: int, height: int, pixel: Callable[[int, int], Pixel]) -> bytes:
    """An RGBA PNG whose pixel (x, y) is ``pixel(x, y)``."""
    rows = b"".join(
        b"\x00" + b"".join(bytes(pixel(x, y)) for x in range(width)) for y in range(height)
    )

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    header = struct.pack(">IIBBBBB", width, height, 8, 6, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(rows, 9))
        + chunk(b"IEND", b"")
    )


def heartbeat(u: float, v: float) -> bool:
    """A pulse line across the middle (u, v in 0..1): the bot watches a system's health."""
    points = [(0.1, 0.55), (0.35, 0.55), (0.45, 0.3), (0.55, 0.78), (0.65, 0.55), (0.9, 0.55)]
    for (x0, y0), (x1, y1) in itertools.pairwise(points):
        dx, dy = x1 - x0, y1 - y0
        t = max(0.0, min(1.0, ((u - x0) * dx + (v - y0) * dy) / (dx * dx + dy * dy)))
        if (u - x0 - t * dx) ** 2 + (v - y0 - t * dy) ** 2 < 0.055**2:
            return True
    return False


def color(x: int, y: int) -> Pixel:
    white: Pixel = (255, 255, 255, 255)
    blue: Pixel = (0x46, 0x4E, 0xB8, 255)  # Teams' accent
    return white if heartbeat((x + 0.5) / 192, (y + 0.5) / 192) else blue


def outline(x: int, y: int) -> Pixel:
    u, v = (x + 0.5) / 32, (y + 0.5) / 32
    ring = 0.36 < ((u - 0.5) ** 2 + (v - 0.5) ** 2) ** 0.5 < 0.47
    return (255, 255, 255, 255) if ring or heartbeat(u, v) else (0, 0, 0, 0)


if __name__ == "__main__":
    (HERE / "color.png").write_bytes(png(192, 192, color))
    (HERE / "outline.png").write_bytes(png(32, 32, outline))
