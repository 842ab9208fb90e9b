"""Read and write video files with PyAV (FFmpeg's libraries): frames as uint8 RGB arrays [H, W, 3] with their
timestamps, and an output that keeps the source's timing, size, rotation, pixel aspect, colour tags and audio.

What is kept, and how: every decoded frame is written with its own presentation timestamp in the source's
time base (variable frame rate stays variable); the display matrix (rotation, flips) is copied as
container side data; the sample aspect ratio and the colour tags (matrix, range, primaries, transfer) are
copied to the encoder, and RGB <-> YUV conversions use the source's matrix and range both ways. Audio
packets are copied byte for byte when the output container can hold their codec, else re-encoded (a note
says so). Subtitle and data streams are not copied.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

from fastnst.errors import UserError

# Output container by extension; inputs are anything FFmpeg opens with these extensions.
CONTAINERS = {".mp4": "mp4", ".m4v": "mp4", ".mov": "mov", ".mkv": "matroska", ".webm": "webm", ".avi": "avi",
              ".ts": "mpegts", ".mts": "mpegts", ".m2ts": "mpegts", ".mpg": "mpeg", ".mpeg": "mpeg"}
VIDEO_EXTENSIONS = frozenset(CONTAINERS) | frozenset({".wmv", ".flv", ".3gp", ".ogv"})
# Encoders by codec name for the containers' own defaults (FFmpeg names codecs and encoders apart).
ENCODER_OF = {"h264": "libx264", "hevc": "libx265", "vp9": "libvpx-vp9", "vp8": "libvpx", "av1": "libsvtav1",
              "opus": "libopus", "mp3": "libmp3lame", "vorbis": "libvorbis"}
# 4:2:0 and 4:2:2 layouts halve the chroma width (and 4:2:0 the height): H.264, HEVC and MPEG-2 cannot code
# an odd side in them (the bitstream's crop window moves in chroma samples); VP9, AV1 and MPEG-4 part 2 can.
EVEN_ONLY_CODECS = frozenset({"h264", "hevc", "mpeg1video", "mpeg2video"})
ODD_FALLBACK_PIX_FMT = "yuv444p"


def is_video_path(path: str | os.PathLike[str]) -> bool:
    return Path(path).suffix.lower() in VIDEO_EXTENSIONS


def pyav() -> Any:
    import av  # imported here: images never need FFmpeg

    return av


@dataclass
class VideoInfo:
    """What a video file holds, as far as stylizing it is concerned.

    ``width`` x ``height`` is the stored frame size (before rotation); ``display_matrix`` the 9 int32 of the
    display matrix, None without one; ``rotation`` its counter-clockwise rotation in degrees; ``frames`` the
    container's frame count or an estimate (0: unknown); ``time_base`` the unit of the frame timestamps."""

    path: Path
    codec: str
    width: int
    height: int
    time_base: Fraction
    average_rate: Fraction | None
    frames: int
    duration: float | None  # seconds
    sample_aspect_ratio: Fraction | None
    colors: dict[str, int] = field(default_factory=dict)  # colorspace, color_range, color_primaries, color_trc
    display_matrix: list[int] | None = None
    rotation: int = 0
    audio: list[str] = field(default_factory=list)  # "codec, rate Hz" per audio stream
    dropped: list[str] = field(default_factory=list)  # streams that are not copied (subtitles, data)

    def describe(self) -> str:
        rot = f", rotated {self.rotation} deg" if self.rotation else ""
        fps = f", {float(self.average_rate):.3g} fps" if self.average_rate else ""
        n = f", {self.frames} frames" if self.frames else ""
        audio = f", audio: {'; '.join(self.audio)}" if self.audio else ", no audio"
        return f"{self.codec} {self.width}x{self.height}{fps}{n}{rot}{audio}"


def open_input(path: Path) -> Any:
    av = pyav()
    if not path.exists():
        raise UserError(f"input {path} does not exist")
    try:
        return av.open(str(path), "r", metadata_errors="ignore")
    except (av.error.FFmpegError, UnicodeDecodeError) as exc:
        raise UserError(f"input {path} is not a readable video ({ffmpeg_reason(exc)})") from None


def ffmpeg_reason(exc: BaseException) -> str:
    return getattr(exc, "strerror", None) or str(exc).split(":")[0] or type(exc).__name__


def _video_stream(container: Any, path: Path) -> Any:
    if not container.streams.video:
        kinds = sorted({s.type for s in container.streams})
        if not kinds:
            raise UserError(f"input {path} holds no streams at all (a recording of zero frames?); nothing to stylize")
        raise UserError(f"input {path} has no video stream (it holds {', '.join(kinds)}); pass a video file")
    stream = container.streams.video[0]
    if stream.codec_context is None:
        raise UserError(f"input {path}: its video codec cannot be decoded by the FFmpeg that PyAV bundles; convert it "
                        f"first, e.g. ffmpeg -i {path.name} -c:v libx264 -crf 16 -c:a copy {path.stem}.mp4")
    return stream


def _frame_matrix(frame: Any) -> list[int] | None:
    for sd in frame.side_data:
        if sd.type.name == "DISPLAYMATRIX":
            return [int(v) for v in np.frombuffer(bytes(sd), dtype=np.int32)[:9]]
    return None


def probe_video(path: str | os.PathLike[str]) -> VideoInfo:
    """Open ``path`` and decode its first frame: the facts :class:`VideoWriter` copies. A file that is not a
    video, has no video stream, an undecodable codec or no frame at all is a :class:`UserError`."""
    p = Path(path).expanduser()
    av = pyav()
    with open_input(p) as container:
        stream = _video_stream(container, p)
        ctx = stream.codec_context
        try:
            first = next(container.decode(stream), None)
        except av.error.FFmpegError as exc:
            raise UserError(f"input {p}: its {ctx.name} video cannot be decoded ({ffmpeg_reason(exc)})") from None
        if first is None:
            raise UserError(f"input {p} has a video stream but no frame of it could be decoded (an empty or "
                            f"truncated file?); nothing to stylize")
        rate = stream.average_rate or stream.guessed_rate
        duration = float(container.duration) / 1e6 if container.duration else None
        frames = int(stream.frames or 0) or (round(duration * float(rate)) if duration and rate else 0)
        audio = [f"{s.codec_context.name if s.codec_context else 'unknown codec'}, {s.rate} Hz"
                 for s in container.streams.audio]
        dropped = [f"{s.type} #{s.index}" for s in container.streams
                   if s.type not in ("video", "audio") or (s.type == "video" and s.index != stream.index)]
        matrix = _frame_matrix(first)
        return VideoInfo(
            path=p, codec=ctx.name, width=first.width, height=first.height,
            time_base=stream.time_base or Fraction(1, 90000), average_rate=Fraction(rate) if rate else None,
            frames=frames, duration=duration, sample_aspect_ratio=stream.sample_aspect_ratio or None,
            colors={k: int(getattr(first, k)) for k in ("colorspace", "color_range", "color_primaries", "color_trc")},
            display_matrix=matrix, rotation=int(first.rotation) if matrix else 0, audio=audio, dropped=dropped)


@dataclass(frozen=True)
class DecodedFrame:
    index: int
    pts: int  # in VideoInfo.time_base
    rgb: np.ndarray  # [H, W, 3] uint8, stored orientation


def decode_frames(info: VideoInfo, size: tuple[int, int] | None = None) -> Iterator[DecodedFrame]:
    """Every frame of ``info.path`` in presentation order as RGB, resized to ``size`` (width, height) if given.

    Timestamps are the stream's; a frame without one, or with one not after its predecessor's (broken files),
    gets the next free tick so the encoder accepts it. A frame of another size than the first is a UserError."""
    av = pyav()
    step = max(1, round(1 / (info.average_rate * info.time_base))) if info.average_rate else 1
    last: int | None = None
    with open_input(info.path) as container:
        stream = _video_stream(container, info.path)
        stream.thread_type = "AUTO"  # frame threads: decoding keeps up with the network on spare cores
        index = 0
        try:
            for frame in container.decode(stream):
                if (frame.width, frame.height) != (info.width, info.height):
                    raise UserError(
                        f"input {info.path}: frame {index} is {frame.width}x{frame.height} px but the clip started "
                        f"at {info.width}x{info.height}; fastnst needs one frame size per clip, so scale it first, e.g. "
                        f"ffmpeg -i {info.path.name} -vf scale={info.width}:{info.height} fixed.mp4")
                pts = frame.pts if frame.pts is not None else (0 if last is None else last + step)
                if last is not None and pts <= last:
                    pts = last + 1
                last = pts
                w, h = size or (frame.width, frame.height)
                kw: dict[str, Any] = {"src_color_range": frame.color_range or None}
                if (w, h) != (frame.width, frame.height):
                    kw["interpolation"] = "AREA" if w < frame.width else "BICUBIC"
                rgb = frame.reformat(width=w, height=h, format="rgb24", **kw).to_ndarray()
                yield DecodedFrame(index, pts, rgb)
                index += 1
        except av.error.FFmpegError as exc:
            raise UserError(f"input {info.path}: decoding failed at frame {index} ({ffmpeg_reason(exc)})") from None


def find_encoder(name: str) -> Any:
    """The FFmpeg encoder ``name`` (an ``av.codec.Codec``), None if this FFmpeg has none by that name."""
    av = pyav()
    try:
        return av.codec.Codec(name, "w")
    except (av.error.FFmpegError, ValueError):
        return None
