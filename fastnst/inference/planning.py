"""Planning jobs over files: INPUTs (files, folders searched recursively, glob patterns of images and videos)
mapped to the outputs they will be written to, with the naming rules of ``fastnst stylize`` (one output per
style, sheets, ``--ext``), and nothing a user owns overwritten without ``--overwrite``."""

from __future__ import annotations

import glob
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from fastnst.errors import UserError
from fastnst.fileio import check_writable_folder
from fastnst.media.image import IMAGE_EXTENSIONS, image_files, is_image_path
from fastnst.media.video import CONTAINERS, VIDEO_EXTENSIONS, is_video_path

MEDIA_EXTENSIONS = IMAGE_EXTENSIONS | VIDEO_EXTENSIONS


def is_media_path(path: str | os.PathLike[str]) -> bool:
    """An image or a video, by extension."""
    return is_image_path(path) or is_video_path(path)


def video_suffix(src: Path) -> str:
    """The output extension of a video: its own where fastnst writes that container, else .mp4."""
    return src.suffix if src.suffix.lower() in CONTAINERS else ".mp4"


@dataclass(frozen=True)
class Job:
    """One output file: ``src`` stylized with the run's style choice number ``style`` into ``dst``."""

    src: Path
    dst: Path
    style: int = 0


def _has_magic(s: str) -> bool:
    return any(c in s for c in "*?[")


def _glob_base(pattern: str) -> Path:
    parts = Path(pattern).expanduser().parts
    base: list[str] = []
    for part in parts:
        if _has_magic(part):
            break
        base.append(part)
    return Path(*base) if base else Path(".")


def find_inputs(inputs: Sequence[str], exclude: Path | None = None) -> list[tuple[Path, Path]]:
    """(image or video file, path relative to the output folder) for every INPUT: files, folders searched
    recursively (hidden entries and the folder ``exclude`` skipped) and glob patterns. Several inputs
    keep each folder's name as a prefix so their files cannot collide."""
    if not inputs:
        raise UserError("no inputs given; pass image or video files, folders or glob patterns")
    pairs: list[tuple[Path, Path]] = []
    for arg in inputs:
        p = Path(arg).expanduser()
        prefix = Path(p.resolve().name) if len(inputs) > 1 else Path()
        if p.is_dir():
            files = image_files(p, exclude, is_media_path)
            if not files:
                raise UserError(f"input folder {p} contains no images or videos (looked for "
                                f"{', '.join(sorted(MEDIA_EXTENSIONS))})")
            pairs.extend((f, prefix / f.relative_to(p)) for f in files)
        elif p.is_file():
            pairs.append((p, Path(p.name)))
        elif _has_magic(arg):
            base = _glob_base(arg)
            matches = sorted(Path(m) for m in glob.glob(os.path.expanduser(arg), recursive=True))
            n = len(pairs)
            for m in matches:
                if m.is_dir():
                    pairs.extend((f, f.relative_to(base)) for f in image_files(m, exclude, is_media_path))
                elif m.is_file() and is_media_path(m) and not m.name.startswith("."):
                    pairs.append((m, m.relative_to(base)))
            if len(pairs) == n:
                raise UserError(f"no images or videos match {arg!r}")
        else:
            raise UserError(f"input {p} does not exist")
    return pairs


def plan_jobs(inputs: Sequence[str], output: str | None = None, *, overwrite: bool = False,
              skip_existing: bool = False, ext: str | None = None, variants: Sequence[str] | None = None,
              default_suffix: str = "_stylized", folder_suffix: str = "") -> tuple[list[Job], int]:
    """Map INPUTs (files, folders searched recursively, glob patterns) to output files.

    One input file: ``output`` is a file (its extension picks the format) or a folder; default
    ``<stem>_stylized<ext>`` in the current folder. Otherwise ``output`` is a folder (default ``stylized``)
    and each folder input keeps its structure. Inputs are never overwritten; existing outputs only with
    ``overwrite`` (or are skipped with ``skip_existing``). Returns the jobs and the number skipped.

    ``variants`` (style names) make one output per input and name, ``<output stem>_<name><ext>``, with job
    ``style`` the name's position; ``default_suffix`` ends the default output name of one input file, and
    ``folder_suffix`` the name of every output written into a folder (``--sheet``: ``NAME_sheet.EXT``).
    """
    if not inputs:
        raise UserError("no inputs given; pass image or video files, folders or glob patterns")
    if ext is not None:
        ext = ext if ext.startswith(".") else f".{ext}"
        if ext.lower() not in IMAGE_EXTENSIONS:
            raise UserError(f"--ext {ext} is not an image format; use one of {', '.join(sorted(IMAGE_EXTENSIONS))} "
                            f"(videos keep their container)")
    paths = [Path(a).expanduser() for a in inputs]
    single = len(inputs) == 1 and paths[0].is_file()
    out_file: Path | None = None
    out_dir: Path
    if single:
        src = paths[0]
        video = is_video_path(src)
        own = video_suffix(src) if video else (ext or src.suffix)
        if output is None:
            out_file = Path(f"{src.stem}{default_suffix}{own}")
        else:
            o = Path(output).expanduser()
            if o.is_dir() or output.endswith(("/", os.sep)) or not o.suffix:
                out_file = o / (src.stem + folder_suffix + own)
            elif video and o.suffix.lower() in CONTAINERS:
                out_file = o
            elif video:
                raise UserError(f"output {o}: a video is written to a video container; use one of "
                                f"{', '.join(sorted(CONTAINERS))}, or a folder")
            elif is_image_path(o):
                out_file = o
            else:
                raise UserError(f"output {o} has an unknown image extension '{o.suffix}'; use one of "
                                f"{', '.join(sorted(IMAGE_EXTENSIONS))}, or a folder")
        out_dir = out_file.parent
    else:
        out_dir = Path(output).expanduser() if output is not None else Path("stylized")
    pairs = find_inputs(inputs, exclude=out_dir.resolve())
    if out_file is None and (out_dir.is_file() or (not out_dir.exists() and is_media_path(out_dir))):
        raise UserError(f"output {out_dir} is a file, but there are several inputs; give a folder with -o")

    jobs: list[Job] = []
    if out_file is not None:
        jobs.append(Job(pairs[0][0], out_file))
    else:
        for src, rel in pairs:
            suffix = (video_suffix(src) if is_video_path(src) else ext) or rel.suffix
            jobs.append(Job(src, out_dir / rel.with_name(rel.stem + folder_suffix + suffix)))
    if variants:
        jobs = [Job(j.src, j.dst.with_name(f"{j.dst.stem}_{name}{j.dst.suffix}"), k) for j in jobs
                for k, name in enumerate(variants)]

    sources = {j.src.resolve() for j in jobs}
    seen: dict[Path, Path] = {}
    for j in jobs:
        d = j.dst.resolve()
        if d in sources:
            raise UserError(f"output {j.dst} would overwrite the input {j.src}; inputs are never overwritten, "
                            f"choose another -o")
        if d in seen:
            raise UserError(f"inputs {seen[d]} and {j.src} would both be written to {j.dst}; "
                            f"stylize them into different -o folders")
        seen[d] = j.src
    existing = [j for j in jobs if j.dst.exists()]
    if existing and not overwrite:
        if not skip_existing:
            raise UserError(f"{len(existing)} output file(s) already exist, e.g. {existing[0].dst}; "
                            f"pass --overwrite to replace them or --skip-existing to keep them")
        jobs = [j for j in jobs if not j.dst.exists()]
    check_writable_folder(out_dir, "-o")
    return jobs, len(existing) if skip_existing and not overwrite else 0
