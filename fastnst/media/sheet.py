"""Labelled image sheets: panels in a grid, each with its name, for previews of every style during training
and ``infer.py --sheet`` (a photo in every style of a multi-style model, side by side)."""

from __future__ import annotations

from collections.abc import Sequence

from PIL import Image, ImageDraw, ImageFont

BACKGROUND = (255, 255, 255)
INK = (20, 20, 20)
GAP = 4


def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size=size)  # a scalable font where Pillow has FreeType
    except (TypeError, OSError):  # a Pillow without FreeType: the fixed bitmap font
        return ImageFont.load_default()


def _fit(draw: ImageDraw.ImageDraw, text: str, font: ImageFont.ImageFont, width: int) -> str:
    """``text`` shortened with an ellipsis until it fits ``width`` pixels."""
    if draw.textlength(text, font=font) <= width:
        return text
    while text and draw.textlength(text + "…", font=font) > width:
        text = text[:-1]
    return text + "…"


def labelled_sheet(panels: Sequence[Image.Image], labels: Sequence[str], columns: int | None = None,
                   label_side: str = "top") -> Image.Image:
    """Panels in a grid of ``columns`` (default: all in one row), each labelled above (``top``) or on its
    left (``left``); every cell has the size of the largest panel, panels are centred in it. RGB out."""
    if not panels or len(panels) != len(labels):
        raise ValueError(f"{len(panels)} panels and {len(labels)} labels")
    if label_side not in ("top", "left"):
        raise ValueError(f"label_side must be 'top' or 'left', got {label_side!r}")
    columns = max(1, min(columns or len(panels), len(panels)))
    rows = -(-len(panels) // columns)
    w = max(p.width for p in panels)
    h = max(p.height for p in panels)
    size = max(10, min(32, min(w, h) // 10 if label_side == "top" else h // 5))
    font = _font(size)
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    if label_side == "top":
        strip, cell_w, cell_h = size + 2 * GAP, w, h + size + 2 * GAP
    else:
        strip = min(max(int(probe.textlength(t, font=font)) for t in labels) + 2 * GAP, max(w, 64))
        cell_w, cell_h = w + strip, h
    sheet = Image.new("RGB", (columns * cell_w + (columns + 1) * GAP, rows * cell_h + (rows + 1) * GAP), BACKGROUND)
    draw = ImageDraw.Draw(sheet)
    for i, (panel, label) in enumerate(zip(panels, labels)):
        r, c = divmod(i, columns)
        x0, y0 = GAP + c * (cell_w + GAP), GAP + r * (cell_h + GAP)
        if label_side == "top":
            text = _fit(draw, label, font, w)
            draw.text((x0 + (w - draw.textlength(text, font=font)) / 2, y0 + GAP), text, fill=INK, font=font)
            px, py = x0 + (w - panel.width) // 2, y0 + strip + (h - panel.height) // 2
        else:
            text = _fit(draw, label, font, strip - 2 * GAP)
            draw.text((x0 + GAP, y0 + (h - size) / 2), text, fill=INK, font=font)
            px, py = x0 + strip + (w - panel.width) // 2, y0 + (h - panel.height) // 2
        sheet.paste(panel.convert("RGB"), (px, py))
    return sheet
