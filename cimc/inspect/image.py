"""Streamed weight tiles: the header map of a weight image, read back.

A program compiled with weight streaming loads every weight tile from one image constant
(`weights.img` in DRAM, `weights.flash` for tiles read from flash). cimc/backend/stream/prefetch.py
(`declare_image`) writes a map of each image into
the program header, one full-line comment per tile, in image order:

    ; weights.img+6144: linear_1.w[0:32, 0:32]

i.e. the tile `rows r0:r1, columns c0:c1` of the layer's int8 weight constant `linear_1.w`
sits row-major at byte 6144 of the image. Reading the map back lets a load from the image
be named by its tile, the way a load from a per-layer constant is.
"""

from __future__ import annotations

import re
from bisect import bisect_right
from dataclasses import dataclass

from cimc.machine.program import Comment, Program

_ENTRY = re.compile(
    r"(?P<image>[A-Za-z_][\w.]*)\+(?P<offset>\d+): "
    r"(?P<name>[A-Za-z_][\w.]*)\[(?P<r0>\d+):(?P<r1>\d+), (?P<c0>\d+):(?P<c1>\d+)\]"
)


@dataclass(frozen=True)
class ImageTile:
    """One weight tile of an image: `name[r0:r1, c0:c1]`, int8 row-major at `offset`."""

    offset: int
    name: str
    r0: int
    r1: int
    c0: int
    c1: int

    @property
    def nbytes(self) -> int:
        return (self.r1 - self.r0) * (self.c1 - self.c0)

    def cut(self, first: int, last: int) -> str | None:
        """`name[...]` of the image bytes `first..last` (offsets in the image, a view's first
        and last element), or None when they do not both fall in this tile."""
        if not self.offset <= first <= last < self.offset + self.nbytes:
            return None
        width = self.c1 - self.c0
        r0, c0 = divmod(first - self.offset, width)
        r1, c1 = divmod(last - self.offset, width)
        rows = f"{self.r0 + r0}:{self.r0 + r1 + 1}"
        return f"{self.name}[{rows}, {self.c0 + c0}:{self.c0 + c1 + 1}]"


ImageMap = dict[str, tuple[ImageTile, ...]]  # image declaration name -> tiles by offset


def image_tiles(program: Program) -> ImageMap:
    """Every image map in the program header, keyed by the image's declaration name.
    Comments naming a declaration that is not a constant are not a map and are skipped."""
    consts = {d.name for d in program.decls if d.kind == "const"}
    found: dict[str, list[ImageTile]] = {}
    for item in program.header:
        if not isinstance(item, Comment):
            continue
        m = _ENTRY.fullmatch(item.text.strip())
        if m is None or m["image"] not in consts:
            continue
        bounds = (int(m[k]) for k in ("r0", "r1", "c0", "c1"))
        found.setdefault(m["image"], []).append(ImageTile(int(m["offset"]), m["name"], *bounds))
    return {k: tuple(sorted(v, key=lambda t: t.offset)) for k, v in found.items()}


def tile_label(tiles: tuple[ImageTile, ...], first: int, last: int) -> str | None:
    """Name the image bytes `first..last` by the tile holding them, if one tile does."""
    i = bisect_right(tiles, first, key=lambda t: t.offset) - 1
    return None if i < 0 else tiles[i].cut(first, last)
