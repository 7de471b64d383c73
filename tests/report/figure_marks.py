"""What a drawn figure plots, read back from its matplotlib artists, and the check that every
plotted value is a value some cell measured (no mean, no band, no zero bar of a missing value).

Shared by the figure tests; not a test module itself.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np
from matplotlib.collections import LineCollection, PathCollection, PolyCollection, QuadMesh
from matplotlib.patches import Polygon, Rectangle

from llmbench.report.figures.style import DID_NOT_RUN, REFERENCE, VALUE

NUMBER = re.compile(r"\d+(?:\.\d+)?")


@dataclass
class Marks:
    """Every plotted value of a figure, by kind."""

    data: list[float] = field(default_factory=list)
    """y of every data point, bar height and band/whisker vertex."""
    did_not_run: int = 0
    """Marks tagged as cells that did not run."""
    numbers: list[float] = field(default_factory=list)
    """Numbers quoted by texts tagged as a cell's value."""
    heatmaps: int = 0


def _finite(values: Iterable[float]) -> list[float]:
    return [float(v) for v in np.asarray(list(values), dtype=float).ravel() if np.isfinite(v)]


def _collection(collection, marks: Marks) -> None:
    if isinstance(collection, QuadMesh):
        marks.heatmaps += 1
    elif collection.get_gid() == DID_NOT_RUN:
        marks.did_not_run += len(collection.get_offsets())
    elif isinstance(collection, PathCollection):
        marks.data += _finite(np.asarray(collection.get_offsets())[:, 1:2].ravel())
    elif isinstance(collection, PolyCollection):  # fill_between: a confidence band
        marks.data += _finite(v[1] for path in collection.get_paths() for v in path.vertices)
    elif isinstance(collection, LineCollection):  # error bars
        marks.data += _finite(v[1] for segment in collection.get_segments() for v in segment)


def plotted(figure) -> Marks:
    """Every value plotted in the figure's axes, skipping artists tagged ``REFERENCE``."""
    marks = Marks()
    for axis in figure.axes:
        for line in axis.get_lines():
            if line.get_gid() != REFERENCE:
                marks.data += _finite(line.get_ydata())
        for collection in axis.collections:
            if collection.get_gid() != REFERENCE:
                _collection(collection, marks)
        for patch in axis.patches:
            if patch.get_gid() == REFERENCE:
                continue
            if isinstance(patch, Rectangle):
                marks.data.append(float(patch.get_height()))
            elif isinstance(patch, Polygon):
                marks.data += _finite(patch.get_xy()[:, 1])
        for text in axis.texts:
            if text.get_gid() == VALUE:
                marks.numbers += [float(n) for n in NUMBER.findall(text.get_text())]
    return marks


def lacking(values: Iterable[float], allowed: Iterable[float], rel: float = 1e-9) -> list[float]:
    """The values that equal no allowed value (within ``rel``, relative)."""
    pool = sorted(_finite(allowed))
    missing = []
    for value in values:
        index = np.searchsorted(pool, value)
        near = pool[max(index - 1, 0) : index + 1]
        if not any(math.isclose(value, v, rel_tol=rel, abs_tol=0.0) for v in near):
            missing.append(value)
    return missing


def assert_every_mark_is_a_cell(
    figure, allowed: Iterable[float], numbers: Iterable[float] = ()
) -> Marks:
    """No plotted mark lacks a cell: every plotted y (and every quoted number) is a value of
    a measured cell."""
    marks = plotted(figure)
    missing = lacking(marks.data, allowed)
    assert not missing, f"plotted values that no cell measured: {missing[:10]}"
    missing = lacking(marks.numbers, numbers)
    assert not missing, f"labels that quote no cell's value: {missing[:10]}"
    return marks


def figure_text(figure) -> str:
    """Every text of the figure: its own, its axes', titles, legends, annotations."""
    texts = [t.get_text() for t in figure.findobj(lambda a: hasattr(a, "get_text"))]
    return "\n".join(t for t in texts if isinstance(t, str))
