"""The README's picture (docs/images/demo.jpg) from a `make demo` output folder, so that it can be remade:

    python scripts/demo_picture.py demo_out docs/images/demo.jpg

Three photos over their stylized versions, and the demo's painting, each panel 192 px high, labelled.
"""

from __future__ import annotations

import sys
from pathlib import Path

from PIL import Image

from fastnst.media.sheet import labelled_sheet

HEIGHT = 192


def panel(path: Path) -> Image.Image:
    with Image.open(path) as im:
        im = im.convert("RGB")
        return im.resize((round(im.width * HEIGHT / im.height), HEIGHT), Image.LANCZOS)


def main(demo: Path, out: Path) -> None:
    photos = sorted((demo / "photos").glob("*"))[:3]
    stylized = [next((demo / "stylized").glob(p.stem + "*")) for p in photos]
    panels = [panel(demo / "style.png")] + [panel(p) for p in photos] + \
             [panel(demo / "style.png").point(lambda v: 255)] + [panel(p) for p in stylized]
    labels = ["painting (drawn by the demo)"] + [f"photo: {p.stem}" for p in photos] + \
             ["random-VGG19 loss network"] + [f"stylized: {p.stem}" for p in photos]
    out.parent.mkdir(parents=True, exist_ok=True)
    labelled_sheet(panels, labels, columns=len(photos) + 1).save(out, quality=85, optimize=True)


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
