"""Stylize a video file: decode, stylize and encode run at the same time (a decoding thread, the model in the
calling thread, an encoding thread) with bounded queues between them, so memory does not grow with the clip's
length and the model never waits for FFmpeg once the queues are full.

The output is written under a temporary name and renamed when complete: Ctrl-C or a failure leaves nothing
under the output's name. Frames are stylized upright (the display rotation applied, as EXIF orientation is
for photos) and stored back in the source's orientation, so the copied display matrix shows them correctly.
"""

from __future__ import annotations

import queue
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
import torch.nn.functional as F

from fastnst.errors import UserError
from fastnst.fileio import atomic_write
from fastnst.inference.options import StylizeOptions, VideoOptions
from fastnst.media.encoding import OutputPlan, VideoWriter, plan_output
from fastnst.media.limits import FLAG, HELD_STYLIZED, PixelBudget
from fastnst.media.video import VideoInfo, decode_frames, ffmpeg_reason, probe_video, pyav

_DONE = object()  # end of a queue's stream
FRAME_HELD = HELD_STYLIZED + 30  # per output pixel of each frame of a batch: queues (8-bit in, float out) and stylizing
DECODER_HELD = 24  # per stored pixel: the decoder's frames in flight (YUV 4:2:0, threads and reordering)
BLEND_CHANGE = 0.08  # input luma change (locally averaged) at which --temporal-blend stops blending a pixel


class FrameModel(Protocol):
    """What the video pipeline needs of a model (a :class:`fastnst.Stylizer` is one): a compiled model wants
    every batch at full size, so that it never recompiles for the last one."""

    compiled: bool

    def stylize_tensor(self, x: torch.Tensor, weights: torch.Tensor | None = None,
                       options: StylizeOptions | None = None) -> torch.Tensor: ...


@dataclass
class VideoReport:
    """What :func:`stylize_video` wrote: frames, seconds, frames per second, the plan and its notes."""

    path: Path
    frames: int
    seconds: float
    plan: OutputPlan
    info: VideoInfo
    notes: list[str] = field(default_factory=list)

    @property
    def fps(self) -> float:
        return self.frames / max(self.seconds, 1e-9)


class TemporalBlend:
    """``--temporal-blend A``: each stylized frame is pulled towards the previous output by up to ``A`` where
    the input did not change, ``out_t = lerp(stylized_t, out_{t-1}, A * m)``, with ``m`` = 1 where the input's
    locally averaged luma is unchanged falling to 0 at a change of :data:`BLEND_CHANGE`.

    It removes flicker where the picture is still and leaves moving edges alone; the cost is a trail of the
    previous frame in smooth regions that move slowly (measured by ``fastnst.evaluate --video``)."""

    def __init__(self, amount: float) -> None:
        if not 0.0 <= amount < 1.0:
            raise UserError(f"--temporal-blend must be in [0, 1), got {amount}")
        self.amount = amount
        self._prev_out: torch.Tensor | None = None
        self._prev_luma: torch.Tensor | None = None

    def __call__(self, stylized: torch.Tensor, content: torch.Tensor) -> torch.Tensor:
        """[1, 3, H, W] stylized and content frames in [0, 1], in order -> the blended frame."""
        luma = F.avg_pool2d((content * content.new_tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)).sum(1, True),
                            3, 1, 1, count_include_pad=False)
        out = stylized
        if self._prev_out is not None and self._prev_out.shape == stylized.shape and self.amount > 0:
            m = (1 - (luma - self._prev_luma).abs() / BLEND_CHANGE).clamp_(0, 1).mul_(self.amount)
            out = torch.lerp(stylized, self._prev_out, m)
        self._prev_out, self._prev_luma = out, luma
        return out


def output_size(width: int, height: int, max_size: int | None) -> tuple[int, int]:
    """The frame size after ``--max-size`` (longer side at most ``max_size``, never upscaled; even sides when
    scaling, so that yuv420p needs no padding)."""
    if not max_size or max(width, height) <= max_size:
        return width, height
    s = max_size / max(width, height)
    even = lambda v: max(6, int(round(v * s / 2)) * 2)  # noqa: E731
    return even(width), even(height)


class _Stage(threading.Thread):
    """A pipeline thread whose exception is handed to the model's thread instead of being printed."""

    def __init__(self, name: str, target: Callable[[], None]) -> None:
        super().__init__(name=name, daemon=True)
        self._target_fn, self.error = target, None  # type: BaseException | None

    def run(self) -> None:
        try:
            self._target_fn()
        except BaseException as exc:  # noqa: BLE001 - re-raised in the model's thread
            self.error = exc


def _put(q: queue.Queue, item: Any, stop: threading.Event, stages: tuple[_Stage, ...] = ()) -> bool:
    """Put ``item`` unless the pipeline stops first (False); a failed stage's error is raised here."""
    while not stop.is_set():
        try:
            q.put(item, timeout=0.1)
            return True
        except queue.Full:
            for s in stages:
                if s.error is not None:
                    raise s.error
    return False


def _get(q: queue.Queue, stop: threading.Event, stages: tuple[_Stage, ...] = ()) -> Any:
    """The next item; a failed stage's error, or a stop, is raised here instead of waiting forever."""
    while True:
        try:
            return q.get(timeout=0.1)
        except queue.Empty:
            for s in stages:
                if s.error is not None:
                    raise s.error
            if stop.is_set():
                raise RuntimeError("pipeline stopped")


def _upright(x: torch.Tensor, rotation: int) -> torch.Tensor:
    return torch.rot90(x, k=(rotation // 90) % 4, dims=(2, 3)) if rotation % 90 == 0 and rotation % 360 else x


def _stored(x: torch.Tensor, rotation: int) -> torch.Tensor:
    return torch.rot90(x, k=-(rotation // 90) % 4, dims=(2, 3)) if rotation % 90 == 0 and rotation % 360 else x


class FrameLoop:
    """Frames in display order -> stylized frames, as every video is stylized (infer.py, :meth:`fastnst.Stylizer.
    stylize_video`, the flicker measurement): up to ``video.batch_size`` frames per model call with the style
    ``weights`` ([S], None for a one-style model) and ``options``, the temporal blend, 8-bit out. A compiled model
    gets every batch at full size (the last one padded), so that it never recompiles for it."""

    def __init__(self, model: FrameModel, weights: torch.Tensor | None = None, options: StylizeOptions | None = None,
                 video: VideoOptions | None = None) -> None:
        video = video or VideoOptions()
        self.model, self.weights, self.options = model, weights, options or StylizeOptions()
        self.batch_size, self.pad = video.batch_size, model.compiled
        self.blend = TemporalBlend(video.temporal_blend) if video.temporal_blend else None

    @torch.inference_mode()
    def __call__(self, frames: Sequence[np.ndarray] | np.ndarray, rotation: int = 0) -> np.ndarray:
        """The next uint8 frames [N, H, W, 3] (N <= batch size), stored with display ``rotation`` (degrees) ->
        their stylizations, uint8 [N, H, W, 3] in the same orientation. Frames are stylized upright."""
        x = torch.from_numpy(np.stack(frames)).permute(0, 3, 1, 2).float().div_(255)
        x = _upright(x, rotation)
        n = x.shape[0]
        if self.pad and n < self.batch_size:
            x = torch.cat([x, x[-1:].expand(self.batch_size - n, -1, -1, -1)])
        y = self.model.stylize_tensor(x, self.weights, self.options)[:n].float().cpu()
        if self.blend is not None:
            y = torch.cat([self.blend(y[i:i + 1], x[i:i + 1]) for i in range(n)])
        out = _stored(y, rotation).clamp_(0, 1).mul_(255).round_().to(torch.uint8)
        return out.permute(0, 2, 3, 1).contiguous().numpy()

    def clip(self, frames: np.ndarray) -> np.ndarray:
        """Every frame of uint8 [T, H, W, 3], in order (upright), batch by batch -> uint8 [T, H, W, 3]."""
        return np.concatenate([self(frames[i:i + self.batch_size]) for i in range(0, len(frames), self.batch_size)])


def first_frame(src: Path, max_size: int | None = None) -> torch.Tensor:
    """The first frame of a video as [1, 3, H, W] float32 in [0, 1], upright, after ``max_size``."""
    info = probe_video(src)
    w, h = output_size(info.width, info.height, max_size)
    check_frame_memory(src, info, w, h, 1)
    frame = next(decode_frames(info, None if (w, h) == (info.width, info.height) else (w, h)))
    return _upright(torch.from_numpy(frame.rgb).permute(2, 0, 1)[None].float().div_(255), info.rotation)


def check_frame_memory(src: Path, info: VideoInfo, width: int, height: int, batch_size: int) -> None:
    """Refuse, before the first frame, a video whose frames cannot be held in the memory available: the decoder's
    frames at the stored size, and per frame of a batch at the output size the queued frames, the frame being
    stylized (tiled where the network would not fit) and the encoder's copy."""
    PixelBudget(FRAME_HELD, FLAG, batch_size, "stylizing its frames").check(width, height, f"video {src}", "YCbCr")
    if (width, height) != (info.width, info.height):
        PixelBudget(DECODER_HELD, FLAG, 1, "decoding it").check(info.width, info.height, f"video {src}", "YCbCr")


def _batches(frames: Iterator[Any], size: int) -> Iterator[list[Any]]:
    batch: list[Any] = []
    for f in frames:
        batch.append(f)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def stylize_video(model: FrameModel, src: str | Path, dst: str | Path, options: StylizeOptions | None = None,
                  video: VideoOptions | None = None, *, weights: torch.Tensor | None = None,
                  log: Callable[[str], None] | None = None) -> VideoReport:
    """Stylize the video ``src`` into ``dst`` (its extension picks the container) with the style ``weights``
    ([S], None for a one-style model), ``options`` (tiling, colour, strength) per frame and ``video`` (frames per
    model call, size, temporal blend, encoding, progress; see :class:`FrameLoop`). Everything about the input and
    output is checked before the first frame; the output appears complete or not at all."""
    opts = options or StylizeOptions()
    opts.validate()
    video = video or VideoOptions()
    video.validate()
    loop = FrameLoop(model, weights, opts, video)
    batch_size, progress = video.batch_size, video.progress
    src, dst = Path(src).expanduser(), Path(dst).expanduser()
    info = probe_video(src)
    width, height = output_size(info.width, info.height, video.max_size)
    if min(width, height) < 5:
        raise UserError(f"video {src} is {width}x{height} px; both sides need at least 5 px")
    check_frame_memory(src, info, width, height, batch_size)
    plan = plan_output(dst, info, width, height, video.encode)
    say = log or (lambda msg: print(msg, file=sys.stderr))
    if progress:
        say(f"fastnst: {src}: {info.describe()} -> {dst.name}: {plan.describe()}")
    for note in plan.notes:
        say(f"fastnst: note: {src.name}: {note}")
    from tqdm import tqdm

    start = time.perf_counter()
    written = 0

    def pipeline(tmp: Path) -> None:
        nonlocal written
        stop = threading.Event()
        decoded: queue.Queue = queue.Queue(maxsize=2 * batch_size)
        encoded: queue.Queue = queue.Queue(maxsize=2 * batch_size)
        writer = VideoWriter(tmp, info, plan)

        def decode() -> None:
            size = None if (width, height) == (info.width, info.height) else (width, height)
            for frame in decode_frames(info, size):
                if not _put(decoded, frame, stop):
                    return
            _put(decoded, _DONE, stop)

        def encode_frames() -> None:
            while True:
                item = _get(encoded, stop)
                if item is _DONE:
                    writer.close()
                    return
                for rgb, pts in item:
                    writer.write(rgb, pts)

        stages = (_Stage("fastnst-decode", decode), _Stage("fastnst-encode", encode_frames))
        bar = tqdm(total=info.frames or None, unit="frame", desc=src.name, disable=not progress, file=sys.stderr,
                   dynamic_ncols=True, leave=False)
        try:
            for s in stages:
                s.start()

            def frames() -> Iterator[Any]:
                while (item := _get(decoded, stop, stages)) is not _DONE:
                    yield item

            for batch in _batches(frames(), batch_size):
                out = loop([f.rgb for f in batch], info.rotation)
                if not _put(encoded, [(out[i], f.pts) for i, f in enumerate(batch)], stop, stages):
                    break
                written += len(batch)
                bar.update(len(batch))
            _put(encoded, _DONE, stop, stages)
            stages[1].join()
            if stages[1].error is not None:
                raise stages[1].error
        except BaseException:
            stop.set()
            for s in stages:  # the encoder thread must be out of FFmpeg before the writer is closed under it
                s.join()
            writer.abort()
            raise
        finally:
            bar.close()
        stop.set()
        stages[0].join()
        if written == 0:
            raise UserError(f"input {src} has a video stream but no frame of it could be decoded; nothing to stylize")

    try:
        atomic_write(dst, pipeline)
    except OSError as exc:  # also FFmpeg's I/O errors (a full disk while encoding)
        raise UserError(f"cannot write {dst} ({exc.strerror or exc})") from None
    except pyav().error.FFmpegError as exc:
        raise UserError(f"encoding {dst} failed ({ffmpeg_reason(exc)}); nothing was written under that name") from None
    return VideoReport(dst, written, time.perf_counter() - start, plan, info, list(plan.notes))
