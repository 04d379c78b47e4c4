"""One colour per optimizer, and the name each drawn artist carries, for every figure that shows optimizers
(the report's, the weight plots', the comparison's): an optimizer has one colour throughout."""
from __future__ import annotations

import re
from collections.abc import Sequence

import matplotlib.artist
import seaborn as sns


def optimizer_colours(optimizers: Sequence[str]) -> dict[str, tuple[float, float, float]]:
    """Colours assigned in the given order (a report passes the heat map's, ``result.matrix.index``).
    Qualitative palettes: tab10 up to 10 optimizers, tab20 up to 20, evenly spaced hues beyond."""
    names = list(dict.fromkeys(map(str, optimizers)))
    palette = "tab10" if len(names) <= 10 else "tab20" if len(names) <= 20 else "husl"
    return dict(zip(names, sns.color_palette(palette, len(names))))


def tag_optimizer(artist: matplotlib.artist.Artist, optimizer: str) -> None:
    """Name the optimizer an artist draws (its SVG id): a report's test checks one colour per optimizer by it."""
    artist.set_gid("optimizer-" + re.sub(r"[^\w.-]+", "_", str(optimizer)))
