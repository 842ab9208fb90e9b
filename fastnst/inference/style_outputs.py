"""Every style of a multi-style model at once: the style choices of a run, and the labelled sheet of a photo
in all of them (``infer.py --sheet``, :meth:`fastnst.Stylizer.style_sheet`)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from PIL import Image

from fastnst.errors import UserError
from fastnst.inference.styles import StyleChoice, StyleSpace, style_vector
from fastnst.media.image import tensor_to_pil
from fastnst.media.sheet import labelled_sheet

SHEET_PANEL = 1024  # longer side of each panel of a sheet at most (stylized at full size, then reduced)
PHOTO_LABEL = "photo"


def each_style(space: StyleSpace, style: StyleChoice, sheet: bool = False, painting: bool = False
               ) -> list[torch.Tensor | None] | None:
    """The style vector of every style when a run makes one output per style (no ``style`` on a multi-style model
    or on a network with saved styles, or ``sheet``); None when it makes one output with ``style`` or a
    ``painting``. One sentence for what cannot be."""
    names = space.names
    if sheet:
        if painting:
            raise UserError("--sheet shows every style the model holds side by side; drop --style-image (or drop "
                            "--sheet to write one image in the painting's style)")
        if len(names) < 2:
            what = (f"{len(names)} saved style(s)" if space.takes_painting else f"one style ({names[0]})")
            raise UserError(f"--sheet shows every style of a model side by side; this model holds {what}, so drop --sheet")
        if style is not None:
            raise UserError("--sheet shows every style of the model; drop --style (or drop --sheet to write one "
                            "image in that style)")
    if painting or (style is not None and not sheet):
        return None
    if not names or (len(names) == 1 and not space.takes_painting):
        return None
    return [style_vector(i, space) for i in range(len(names))]


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
