"""Running jobs over files (planned by :mod:`fastnst.inference.planning`): images stylized in batches with
decoding in background threads, videos streamed frame by frame (:mod:`fastnst.inference.video`); every output
written atomically; a bad file is reported and skipped, never fatal."""

from __future__ import annotations

import itertools
import os
import sys
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from fastnst.errors import UserError
from fastnst.fileio import atomic_write
from fastnst.inference.devices import out_of_memory
from fastnst.inference.options import StylizeOptions, VideoOptions
from fastnst.inference.planning import Job
from fastnst.inference.runners import InferenceError
from fastnst.inference.style_outputs import compose_sheet
from fastnst.inference.stylizer import Stylizer
from fastnst.inference.video import stylize_video
from fastnst.media.encoding import EncodeSettings
from fastnst.media.image import (Animation, is_animated, load_animation, load_image, pil_to_tensor, resize_longer,
                                 save_animation, save_image, tensor_to_pil)
from fastnst.media.limits import FLAG, HELD_RESIZED, HELD_STYLIZED, PixelBudget
from fastnst.media.video import is_video_path

def save_atomic(t: torch.Tensor, path: Path) -> None:
    """Save [3, H, W] in [0, 1] atomically (:func:`fastnst.fileio.atomic_write`): an interrupted run never
    leaves a truncated image. ``t`` is clamped and scaled in place (no full-size float temporaries: a
    50-megapixel float image is 600 MB)."""
    arr = t.detach().clamp_(0, 1).mul_(255).round_().to(torch.uint8).permute(1, 2, 0).contiguous().numpy()
    img = Image.fromarray(arr, "RGB")
    atomic_write(path, lambda tmp: save_image(img, tmp))


# --------------------------------------------------------------------------------------------- runs

@dataclass
class JobsReport:
    """What a :func:`stylize_files` call wrote, what failed (with why), how long it took."""

    written: list[Path] = field(default_factory=list)
    failed: list[tuple[Path, str]] = field(default_factory=list)
    skipped_existing: int = 0
    seconds: float = 0.0
    frames: int = 0  # video frames written


def content_budget(max_size: int | None, copies: int = 1) -> PixelBudget:
    """What stylizing one input holds per pixel of it (decoded, then downscaled by ``--max-size``, or stylized at
    full size, in tiles where the network would not fit), with ``copies`` inputs in memory at once."""
    return PixelBudget(HELD_RESIZED if max_size else HELD_STYLIZED, FLAG, copies, "stylizing it")


def load_content(job: Job, max_size: int | None, copies: int = 1) -> torch.Tensor | Animation:
    """The job's image as [1, 3, H, W] in [0, 1], or all frames of an animated GIF / WebP / PNG; an image too large
    for the memory available (with ``copies`` inputs held at once) is refused before it is decoded."""
    budget = content_budget(max_size, copies)
    if is_animated(job.src):
        if job.dst.suffix.lower() not in (".gif", ".webp", ".png"):
            raise UserError(f"{job.src} is animated and {job.dst.suffix} holds one frame; write it as .gif, .webp "
                            f"or .png (-o NAME.gif, or --ext gif) to keep every frame")
        # every frame is held, as RGB in and out, while each is stylized in turn
        anim = load_animation(job.src, "image", PixelBudget(2 * HELD_RESIZED, FLAG, copies, "stylizing it"))
        if max_size:
            anim.frames = [resize_longer(f, max_size) for f in anim.frames]
        _check_size(job, anim.size)
        return anim
    img = load_image(job.src, "image", budget)
    if max_size:
        img = resize_longer(img, max_size)
    _check_size(job, img.size)
    return pil_to_tensor(img).unsqueeze(0)


def _check_size(job: Job, size: tuple[int, int]) -> None:
    if min(size) < 5:
        raise UserError(f"image {job.src} is {size[0]}x{size[1]} px; both sides need at least 5 px")


def _not_written(group: Sequence[Job]) -> str:
    """The end of a failed input's error line: which of the requested outputs are missing."""
    names = ", ".join(str(j.dst) for j in group)
    return f"{names} {'was' if len(group) == 1 else 'were'} not written"


def _prefetch(fn: Callable[[Job], Any], jobs: Iterable[Job], depth: int) -> Iterator[tuple[Job, Future]]:
    """Decode the next ``depth`` images in background threads while the model runs (Pillow frees the GIL)."""
    if depth <= 0:
        for job in jobs:
            fut: Future = Future()
            try:
                fut.set_result(fn(job))
            except Exception as exc:  # noqa: BLE001 - handed to the caller, which reports it
                fut.set_exception(exc)
            yield job, fut
        return
    with ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 1)) as pool:
        queue: deque[tuple[Job, Future]] = deque()
        it = iter(jobs)
        for job in it:
            queue.append((job, pool.submit(fn, job)))
            if len(queue) >= depth:
                break
        while queue:
            item = queue.popleft()
            nxt = next(it, None)
            if nxt is not None:
                queue.append((nxt, pool.submit(fn, nxt)))
            yield item


def stylize_files(model: Stylizer, jobs: Sequence[Job], options: StylizeOptions | None = None, *,
                  weights: torch.Tensor | None = None, styles: Sequence[torch.Tensor | None] | None = None,
                  sheet: Sequence[str] | None = None, batch_size: int = 1, max_size: int | None = None,
                  progress: bool = True, log: Callable[[str], None] | None = None,
                  encode: EncodeSettings | None = None, temporal_blend: float = 0.0) -> JobsReport:
    """Stylize every job's image or video and write it; a bad file is reported through ``log`` and skipped.

    ``styles``: the run's style choices ([S] weights each, None for a one-style model; default ``[weights]``);
    each job uses ``styles[job.style]``, and an input with several jobs is read once. ``sheet``: labels of
    the choices; each job's output is then one labelled sheet of the photo and every choice side by side.
    Videos are encoded as ``encode`` says, with ``temporal_blend`` (see
    :class:`fastnst.inference.video.TemporalBlend`), after the images.
    """
    opts = options or StylizeOptions()
    opts.validate()
    video = VideoOptions(batch_size=batch_size, max_size=max_size, temporal_blend=temporal_blend,
                         encode=encode or EncodeSettings(), progress=progress)
    video.validate()
    choices = list(styles) if styles is not None else [weights]
    from tqdm import tqdm

    report = JobsReport()
    start = time.perf_counter()
    videos = [j for j in jobs if is_video_path(j.src)]
    jobs = [j for j in jobs if not is_video_path(j.src)]
    bar = tqdm(total=len(jobs), unit="img", disable=not progress or not jobs, file=sys.stderr, dynamic_ncols=True)
    say = log or (lambda msg: tqdm.write(msg, file=sys.stderr))
    # Jobs of one input (one per style) are planned next to each other: the input is decoded once.
    groups = [list(g) for _, g in itertools.groupby(jobs, key=lambda j: j.src)]

    def fail(group: list[Job], msg: str) -> None:
        for job in group:
            report.failed.append((job.src, msg))
        say(f"fastnst: error: {msg}; {_not_written(group)}")
        bar.update(len(group))

    def write(job: Job, y: torch.Tensor | Image.Image) -> None:
        try:
            if isinstance(y, Image.Image):
                atomic_write(job.dst, lambda tmp: save_image(y, tmp))
            else:
                save_atomic(y, job.dst)
        except (OSError, ValueError) as exc:
            fail([job], f"cannot write {job.dst} ({exc})")
            return
        report.written.append(job.dst)
        bar.update(1)

    def run(batch: list[tuple[list[Job], torch.Tensor]]) -> None:
        x = batch[0][1] if len(batch) == 1 else torch.cat([t for _, t in batch])  # no full-size copy of one image
        needed = range(len(choices)) if sheet else sorted({j.style for group, _ in batch for j in group})
        outs: dict[int, torch.Tensor] = {}
        try:
            for k in needed:
                outs[k] = model.stylize_tensor(x, choices[k], opts).cpu()
                if sheet:  # one image at a time: keep 8-bit panels, not S float copies
                    outs[k] = outs[k].clamp(0, 1).mul(255).round().to(torch.uint8)
        except (UserError, InferenceError) as exc:
            for group, _ in batch:
                fail(group, f"{group[0].src}: {exc}")
            return
        except RuntimeError as exc:
            if not out_of_memory(exc):
                raise
            h, w = x.shape[-2:]
            for group, _ in batch:
                fail(group, f"ran out of memory stylizing {group[0].src} ({w}x{h} px, batch of {len(batch)}); "
                            f"use --tile 512, --max-size or a smaller --batch-size")
            return
        for i, (group, content) in enumerate(batch):
            if sheet:
                write(group[0], compose_sheet(content[0], [outs[k][i] for k in needed], sheet))
            else:
                for job in group:
                    write(job, outs[job.style][i])

    def run_animation(group: list[Job], anim: Animation) -> None:
        """Every frame, in batches, then one animated file per style with the input's durations and loop count."""
        if sheet:
            fail(group, f"{group[0].src} is animated and --sheet makes one still image; stylize it without --sheet")
            return
        for job in group:
            frames: list[Image.Image] = []
            for i in range(0, len(anim.frames), per_batch):
                x = torch.stack([pil_to_tensor(f) for f in anim.frames[i:i + per_batch]])
                try:
                    y = model.stylize_tensor(x, choices[job.style], opts).cpu()
                except (UserError, InferenceError) as exc:
                    fail([job], f"{job.src}: {exc}")
                    break
                frames += [tensor_to_pil(f) for f in y]
            else:
                try:
                    atomic_write(job.dst, lambda tmp: save_animation(frames, tmp, anim.durations, anim.loop))
                except (OSError, ValueError) as exc:
                    fail([job], f"cannot write {job.dst} ({exc})")
                    continue
                report.written.append(job.dst)
                bar.update(1)

    tiled = opts.tile is not None
    per_batch = 1 if tiled or sheet else batch_size
    buckets: dict[tuple[int, int], list[tuple[list[Job], torch.Tensor]]] = {}
    pending = 0
    try:
        depth = 0 if tiled else 2 * per_batch
        # the images being decoded ahead and the batch being stylized are in memory together
        copies = 1 if len(groups) == 1 else min(len(groups), depth + per_batch)
        loads = _prefetch(lambda j: load_content(j, max_size, copies), [g[0] for g in groups], depth)
        for group, (_, fut) in zip(groups, loads):
            try:
                content = fut.result()
            except UserError as exc:
                fail(group, str(exc))
                continue
            if isinstance(content, Animation):
                run_animation(group, content)
                continue
            key = (content.shape[-2], content.shape[-1])
            buckets.setdefault(key, []).append((group, content))
            pending += 1
            if len(buckets[key]) >= per_batch:
                pending -= len(buckets[key])
                run(buckets.pop(key))
            elif pending > 2 * per_batch:  # many sizes: bound the memory held in partial batches
                fullest = max(buckets, key=lambda k: len(buckets[k]))
                pending -= len(buckets[fullest])
                run(buckets.pop(fullest))
        for key in list(buckets):
            run(buckets.pop(key))
    finally:
        bar.close()
    for job in videos:
        if sheet:
            report.failed.append((job.src, f"{job.src} is a video and --sheet makes one still image"))
            say(f"fastnst: error: {job.src} is a video and --sheet makes one still image (stylize it without --sheet); "
                f"{_not_written([job])}")
            continue
        try:
            done = stylize_video(model, job.src, job.dst, opts, video, weights=choices[job.style], log=say)
        except (UserError, InferenceError) as exc:
            message = str(exc) if str(job.src) in str(exc) else f"{job.src}: {exc}"
            report.failed.append((job.src, message))
            say(f"fastnst: error: {message}; {_not_written([job])}")
            continue
        except RuntimeError as exc:
            if not out_of_memory(exc):
                raise
            report.failed.append((job.src, f"ran out of memory stylizing {job.src}"))
            say(f"fastnst: error: ran out of memory stylizing the video {job.src} (batch of {batch_size} frames; "
                f"use a smaller --batch-size, --max-size or --tile 512); {_not_written([job])}")
            continue
        report.written.append(job.dst)
        report.frames += done.frames
    report.seconds = time.perf_counter() - start
    return report
