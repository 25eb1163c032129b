"""Writing the analyses' figures: whole files only, and never at the cost of the numbers."""

from __future__ import annotations

import sys
from pathlib import Path


def save_png(figure, out_path: Path) -> Path:
    """Writes a matplotlib Figure to `out_path` (its folder made): to a temporary name first, so a
    reader never sees a half-written picture."""
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_path.with_suffix(".tmp.png")
    figure.savefig(tmp, format="png")
    tmp.replace(out_path)
    return out_path


def warn_not_drawn(out_path: Path, err: BaseException) -> None:
    """A figure is a by-product: a plotting failure (e.g. a broken matplotlib install) is reported
    on stderr and the caller goes on with its numbers."""
    print(f"warning: could not draw {out_path}: {err}", file=sys.stderr)
