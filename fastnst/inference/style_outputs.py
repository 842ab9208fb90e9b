"""Every style of a multi-style model at once: the style choices of a run, and the labelled sheet of a photo
in all of them (``infer.py --sheet``, :meth:`fastnst.Stylizer.style_sheet`)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from PIL import Image

from fastnst.errors import UserError
from fastnst.inference.styles import StyleChoice, style_weights
from fastnst.media.image import tensor_to_pil
from fastnst.media.sheet import labelled_sheet

SHEET_PANEL = 1024  # longer side of each panel of a sheet at most (stylized at full size, then reduced)
PHOTO_LABEL = "photo"


def each_style(names: Sequence[str], style: StyleChoice, sheet: bool = False) -> list[torch.Tensor] | None:
    """The [S] weights of every style when a run makes one output per style (no ``style`` on a multi-style
    model, or ``sheet``); None when it makes one output with ``style``. One sentence for what cannot be."""
    if sheet:
        if len(names) == 1:
            raise UserError(f"--sheet shows every style of a multi-style model side by side; this model holds one "
                            f"style ({names[0]}), so drop --sheet")
        if style is not None:
            raise UserError("--sheet shows every style of the model; drop --style (or drop --sheet to write one "
                            "image in that style)")
    if len(names) == 1 or (style is not None and not sheet):
        return None
    return [style_weights(i, names) for i in range(len(names))]  # type: ignore[misc]


def sheet_columns(panels: int) -> int:
    """All panels side by side up to 6, else a near-square grid."""
    return panels if panels <= 6 else math.ceil(math.sqrt(panels))


def compose_sheet(photo: torch.Tensor, stylized: Sequence[torch.Tensor], names: Sequence[str]) -> Image.Image:
    """The labelled sheet of ``photo`` [3, H, W] (float in [0, 1]) and its ``stylized`` versions ([3, H, W] float
    in [0, 1] or uint8), one per name; panels reduced to at most :data:`SHEET_PANEL` px."""
    def panel(t: torch.Tensor) -> Image.Image:
        img = tensor_to_pil(t.float().div(255) if t.dtype == torch.uint8 else t)
        img.thumbnail((SHEET_PANEL, SHEET_PANEL), Image.BICUBIC, reducing_gap=3.0)
        return img

    panels = [panel(photo)] + [panel(t) for t in stylized]
    return labelled_sheet(panels, [PHOTO_LABEL, *names], columns=sheet_columns(len(panels)))
