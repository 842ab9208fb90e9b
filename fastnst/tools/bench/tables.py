"""The benchmark's text tables: cells, aligned columns, and the warning printed above a table measured on a busy
machine. Every part's table (the report's, the conditioning table, the tuning table) is drawn with these."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

DRIFT_LIMIT = 1.15  # a reference timing that changed more than this during a part: its ratios are bent


def fmt(v: Any, digits: int = 1) -> str:
    """A value as a table cell: floats with ``digits`` decimals, ``n/a`` for None and NaN."""
    if v is None or (isinstance(v, float) and v != v):
        return "n/a"
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    return str(v)


def table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Rows of cells under ``headers`` and a rule: the first column left-aligned, the others right-aligned."""
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]
    line = lambda cells: "  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(cells, widths)))  # noqa: E731
    return "\n".join([line(headers), line(["-" * w for w in widths]), *(line(r) for r in rows)])


def load_warning(load: dict[str, Any] | None, drift: float | None, what: str) -> str | None:
    """A plain sentence when other processes used the CPUs or the reference timing drifted during ``what``."""
    reasons = []
    if load and load.get("busy"):
        reasons.append(f"other processes used {load['other_processes_cpu_fraction']:.0%} of the CPUs")
    if drift is not None and not 1 / DRIFT_LIMIT <= drift <= DRIFT_LIMIT:
        reasons.append(f"the reference timing drifted {drift:.2f}x between the first and second half")
    if not reasons:
        return None
    return (f"!! MACHINE BUSY during {what}: {' and '.join(reasons)}; the ratios below are bent by load "
            f"(all paths were timed in turn, but not every path suffers alike): re-run on a quiet machine")
