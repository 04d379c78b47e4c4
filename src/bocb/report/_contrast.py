"""Text colour on a coloured background by WCAG 2.x contrast: the heat map's numbers are legible in every cell.

Written by hand: the two formulas (relative luminance, contrast ratio) are short and WCAG defines them exactly;
matplotlib and seaborn have no public function for them.
"""
from __future__ import annotations

from collections.abc import Sequence

from matplotlib.colors import to_hex, to_rgb

WCAG_AA = 4.5  # the minimum contrast ratio of normal-size text (WCAG 2.x, success criterion 1.4.3)
DARK, LIGHT = "#000000", "#ffffff"


def relative_luminance(colour: str | Sequence[float]) -> float:
    """WCAG 2.x relative luminance of an sRGB colour (0 black .. 1 white)."""
    channels = [c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4 for c in to_rgb(colour)]
    return 0.2126 * channels[0] + 0.7152 * channels[1] + 0.0722 * channels[2]


def contrast_ratio(first: str | Sequence[float], second: str | Sequence[float]) -> float:
    """WCAG 2.x contrast ratio, 1 (none) .. 21 (black on white)."""
    high, low = sorted((relative_luminance(first), relative_luminance(second)), reverse=True)
    return (high + 0.05) / (low + 0.05)


def text_colour(background: str | Sequence[float]) -> str:
    """Black or white, whichever contrasts more with ``background``: always at least 4.58 : 1, above WCAG AA."""
    return max((DARK, LIGHT), key=lambda text: contrast_ratio(text, to_hex(background)))
