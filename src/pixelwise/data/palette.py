"""Class colour palettes.

`default_palette(n)` is the Pascal VOC colour map (the bit-interleaving scheme of the VOC
devkit's `labelcolormap.m`), so VOC palette PNGs and pixelwise outputs show the same colours.
"""

from __future__ import annotations

from pixelwise.errors import ConfigError


def default_palette(n: int) -> list[tuple[int, int, int]]:
    """`n` distinct `(r, g, b)` colours: class 0 black, 1 dark red, 2 dark green, ... (VOC map).

    Colour `i` spreads the bits of `i` over the three channels from the most significant bit
    down, as the VOC devkit does. Ids above 255 wrap to 0..255 first (PNG palettes hold 256).
    """
    if n < 1:
        raise ConfigError(f"n must be a positive number of classes, got {n}; try n=21")
    colours = []
    for index in range(n):
        value, r, g, b = index % 256, 0, 0, 0
        for shift in range(7, -1, -1):
            r |= ((value >> 0) & 1) << shift
            g |= ((value >> 1) & 1) << shift
            b |= ((value >> 2) & 1) << shift
            value >>= 3
        colours.append((r, g, b))
    return colours
