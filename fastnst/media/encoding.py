"""Write video files with PyAV: choose and check the encoding of an output before any work
(:func:`plan_output`), then encode RGB frames with the source's timestamps, size, rotation, pixel aspect and
colour tags, with its audio copied (or re-encoded where the container cannot hold it) and interleaved by time
(:class:`VideoWriter`). See :mod:`fastnst.media.video` for what is kept and why.
"""

from __future__ import annotations

import contextlib
import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from fastnst.errors import UserError
from fastnst.media.video import (
    CONTAINERS,
    ENCODER_OF,
    EVEN_ONLY_CODECS,
    ODD_FALLBACK_PIX_FMT,
    VideoInfo,
    ffmpeg_reason,
    find_encoder,
    open_input,
    pyav,
)


@dataclass
class EncodeSettings:
    """How to encode: ``codec`` (an FFmpeg encoder name; None: H.264 where the container holds it, else the
    container's own), ``crf`` (constant quality; None: the encoder's default), ``pix_fmt`` (None: yuv420p,
    or yuv444p for an odd side under H.264/HEVC/MPEG-2 unless ``even_size``), ``even_size`` (pad odd sides
    by one replicated row/column so yuv420p fits), ``audio`` (copy or re-encode the audio streams)."""

    codec: str | None = None
    crf: float | None = None
    pix_fmt: str | None = None
    even_size: bool = False
    audio: bool = True


@dataclass
class OutputPlan:
    """The concrete encoding of one output: format, encoder, pixel format, coded size, per-audio-stream
    action (``copy`` or an encoder name) and notes for the user."""

    format: str
    encoder: str
    codec: str
    pix_fmt: str
    width: int
    height: int
    options: dict[str, str]
    audio: list[tuple[str, int]]  # per source audio stream: ("copy", rate), (encoder, rate) or ("drop", 0)
    notes: list[str] = field(default_factory=list)

    def describe(self) -> str:
        audio = ", ".join("audio copied" if a == "copy" else "audio dropped" if a == "drop" else f"audio as {a}"
                          for a, _ in self.audio) or "no audio"
        quality = " ".join(f"{k}={v}" for k, v in self.options.items())
        return f"{self.encoder} {self.pix_fmt} {self.width}x{self.height}{' ' + quality if quality else ''}, {audio}"


def container_format(path: Path) -> str:
    fmt = CONTAINERS.get(path.suffix.lower())
    if fmt is None:
        raise UserError(f"output {path} has no video container extension; use one of {', '.join(sorted(CONTAINERS))}")
    return fmt


def check_encoder(name: str) -> Any:
    """The FFmpeg video encoder ``name`` (an ``av.codec.Codec``), or a UserError naming the ones there are."""
    codec = find_encoder(name)
    if codec is None:
        usable = [c for c in ("libx264", "libx265", "libvpx-vp9", "libsvtav1", "mpeg4") if find_encoder(c) is not None]
        raise UserError(f"--video-codec {name}: the FFmpeg that PyAV bundles has no such encoder; use one of "
                        f"{', '.join(usable)}")
    if codec.type != "video":
        raise UserError(f"--video-codec {name} is a {codec.type} encoder; name a video encoder such as libx264")
    return codec


def _crf_options(codec: str, crf: float | None) -> dict[str, str]:
    if codec in ("libx264", "libx265", "libsvtav1", "libvpx-vp9", "libvpx", "h264_nvenc", "hevc_nvenc"):
        if codec in ("libvpx-vp9", "libvpx"):  # libvpx is bitrate-driven by default: constant quality needs b=0
            return {"crf": str(int(crf if crf is not None else 32)), "b": "0" if codec == "libvpx-vp9" else "10M"}
        if crf is None:
            return {}
        return {"cq": str(int(crf))} if codec.endswith("nvenc") else {"crf": f"{crf:g}"}
    if crf is not None:
        raise UserError(f"--crf does not apply to the encoder {codec}; drop --crf or use --video-codec libx264")
    return {}


def plan_output(dst: Path, info: VideoInfo, width: int, height: int, settings: EncodeSettings) -> OutputPlan:
    """Choose and check the encoding of ``dst`` before any frame is stylized: an unknown or unavailable
    encoder, a container that cannot hold it, or settings the encoder refuses are one sentence each. The
    check opens the encoder and writes the container header in memory with the real settings."""
    av = pyav()
    fmt = container_format(dst)
    with av.open(io.BytesIO(), "w", format=fmt) as probe:
        supported, default = probe.supported_codecs, probe.default_video_codec
    encoder = settings.codec or ("libx264" if "h264" in supported else ENCODER_OF.get(default, default))
    codec = check_encoder(encoder)
    notes: list[str] = []
    pix_fmt = settings.pix_fmt or "yuv420p"
    odd = width % 2 or height % 2
    if odd and codec.canonical_name in EVEN_ONLY_CODECS and pix_fmt.startswith(("yuv420", "yuv422", "nv12")):
        if settings.even_size:
            notes.append(f"{width}x{height} padded to {width + width % 2}x{height + height % 2} "
                         f"(--even-size: {codec.canonical_name} {pix_fmt} needs even sides)")
            width, height = width + width % 2, height + height % 2
        elif settings.pix_fmt is None:
            pix_fmt = ODD_FALLBACK_PIX_FMT
            notes.append(f"{width}x{height} has an odd side, which {codec.canonical_name} cannot code in yuv420p, so the output is "
                         f"{codec.canonical_name} {pix_fmt} at the exact size; browsers, QuickTime and phones do not play that: "
                         f"pass --even-size (pads one pixel, yuv420p) or write a .webm (VP9 keeps odd sizes)")
    options = _crf_options(encoder, settings.crf)
    with av.open(io.BytesIO(), "w", format=fmt) as out:
        try:
            stream = out.add_stream(encoder, rate=info.average_rate or 25, options=dict(options))
        except ValueError:
            holds = [c for c in ("h264", "vp9", "av1", "hevc", "mpeg4") if c in supported]
            raise UserError(f"the {dst.suffix} container cannot hold {codec.canonical_name} video; "
                            + (f"use --video-codec {ENCODER_OF.get(holds[0], holds[0])} " if holds else "")
                            + "or an .mp4 or .mkv output") from None
        _configure_video(stream, info, width, height, pix_fmt)
        try:
            out.start_encoding()
        except (av.error.FFmpegError, ValueError) as exc:
            raise UserError(f"the encoder {encoder} refused {width}x{height} {pix_fmt} "
                            f"({ffmpeg_reason(exc)}); use --video-codec libx264 or another --pix-fmt") from None
    audio = _plan_audio(info, fmt, dst.suffix, supported, notes) if settings.audio else []
    if info.dropped:
        notes.append(f"{', '.join(info.dropped)} not copied (only video and audio are)")
    return OutputPlan(fmt, encoder, codec.canonical_name, pix_fmt, width, height, options, audio, notes)


def _add_audio(out: Any, source: Any, action: tuple[str, int]) -> Any:
    """An output stream for the source audio stream: a copy of its codec, or an encoder at a sample rate."""
    if action[0] == "copy":
        return out.add_stream_from_template(source)
    return out.add_stream(action[0], rate=action[1], layout=source.layout.name)


def _plan_audio(info: VideoInfo, fmt: str, suffix: str, supported: set[str], notes: list[str]) -> list[tuple[str, int]]:
    """Per source audio stream: ``("copy", rate)`` where the container holds its codec, else an encoder the
    container holds at a rate it takes, else ``("drop", 0)``; each is tried on an in-memory header."""
    av = pyav()
    plan: list[tuple[str, int]] = []
    with open_input(info.path) as src:
        for a in src.streams.audio:
            name = a.codec_context.name if a.codec_context else "an unknown codec"
            fallback = "aac" if "aac" in supported else None
            if fallback is None:
                with av.open(io.BytesIO(), "w", format=fmt) as probe:
                    fallback = ENCODER_OF.get(probe.default_audio_codec, probe.default_audio_codec)
            enc = find_encoder(fallback) if a.codec_context is not None else None
            rates = list(getattr(enc, "audio_rates", None) or []) if enc is not None else []
            rate = a.rate if not rates or a.rate in rates else min(rates, key=lambda r: (abs(r - a.rate), -r))
            for action in (("copy", a.rate), (fallback, rate)):
                if action[0] != "copy" and enc is None:
                    continue
                try:
                    with av.open(io.BytesIO(), "w", format=fmt) as probe:
                        _add_audio(probe, a, action)
                        probe.start_encoding()
                except (av.error.FFmpegError, ValueError):
                    continue
                plan.append(action)
                if action[0] != "copy":
                    notes.append(f"audio stream #{a.index} ({name}) cannot be copied into {suffix}; re-encoded as "
                                 f"{action[0]} at {action[1]} Hz")
                break
            else:
                plan.append(("drop", 0))
                notes.append(f"audio stream #{a.index} ({name}) can neither be copied into {suffix} nor re-encoded; "
                             f"dropped")
    return plan


def _configure_video(stream: Any, info: VideoInfo, width: int, height: int, pix_fmt: str) -> None:
    ctx = stream.codec_context
    stream.width, stream.height, stream.pix_fmt = width, height, pix_fmt
    ctx.time_base = info.time_base  # frames keep the source's timestamps: variable frame rates stay variable
    stream.time_base = info.time_base
    if info.sample_aspect_ratio:
        ctx.sample_aspect_ratio = info.sample_aspect_ratio
    for key, value in info.colors.items():
        if value and hasattr(ctx, key):
            with contextlib.suppress(AttributeError, ValueError, TypeError):
                setattr(ctx, key, value)
    if info.display_matrix:
        stream.set_display_matrix(info.display_matrix)


class VideoWriter:
    """Encode RGB frames into ``path`` as :func:`plan_output` planned, with the source's audio interleaved by
    time. ``write(rgb, pts)`` takes [H, W, 3] uint8 (the planned size, or one less per odd side when the plan
    pads) and a timestamp in the source's time base; ``close()`` flushes; ``abort()`` closes without caring."""

    def __init__(self, path: Path, info: VideoInfo, plan: OutputPlan) -> None:
        av = pyav()
        self.info, self.plan = info, plan
        self.out = av.open(str(path), "w", format=plan.format)
        self.video = self.out.add_stream(plan.encoder, rate=info.average_rate or 25, options=dict(plan.options))
        _configure_video(self.video, info, plan.width, plan.height, plan.pix_fmt)
        self.video.thread_type = "AUTO"
        self._src = None
        self._audio: dict[int, Any] = {}  # source stream index -> output stream
        self._encoders: dict[int, Any] = {}  # source index -> output stream that re-encodes
        if any(action != "drop" for action, _ in plan.audio):
            self._src = open_input(info.path)
            for a, action in zip(self._src.streams.audio, plan.audio):
                if action[0] != "drop":
                    (self._audio if action[0] == "copy" else self._encoders)[a.index] = _add_audio(self.out, a, action)
            streams = [a for a in self._src.streams.audio if a.index in self._audio or a.index in self._encoders]
            self._packets = self._src.demux(streams) if streams else iter(())
        else:
            self._packets = iter(())
        self._pending: Any = None  # the next audio packet, read ahead
        kw = {k: v for k, v in info.colors.items() if k in ("colorspace", "color_range") and v}
        self._reformat = {"dst_colorspace": kw.get("colorspace"), "dst_color_range": kw.get("color_range")}
        self.frames = 0

    def _audio_until(self, seconds: float | None) -> None:
        """Mux the source's audio up to ``seconds`` (all of it for None): the muxer sees both streams in time order."""
        while True:
            if self._pending is None:
                self._pending = next(self._packets, None)
                if self._pending is None:
                    return
            p = self._pending
            if p.dts is None and p.pts is None:  # demuxer flush packets
                self._pending = None
                continue
            t = float((p.dts if p.dts is not None else p.pts) * p.time_base)
            if seconds is not None and t > seconds:
                return
            self._pending = None
            if p.stream.index in self._audio:
                p.stream = self._audio[p.stream.index]
                self.out.mux(p)
            else:
                enc = self._encoders[p.stream.index]
                for frame in p.decode():
                    frame.pts = None  # the encoder's resampler numbers samples itself
                    self.out.mux(enc.encode(frame))

    def write(self, rgb: np.ndarray, pts: int) -> None:
        av = pyav()
        h, w = rgb.shape[:2]
        if (w, h) != (self.plan.width, self.plan.height):  # --even-size: replicate the last row / column
            rgb = np.pad(rgb, ((0, self.plan.height - h), (0, self.plan.width - w), (0, 0)), mode="edge")
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
        frame = frame.reformat(format=self.plan.pix_fmt, **self._reformat)
        frame.pts, frame.time_base = pts, self.info.time_base
        self._audio_until(float(pts * self.info.time_base))
        self.out.mux(self.video.encode(frame))
        self.frames += 1

    def close(self) -> None:
        self.out.mux(self.video.encode(None))
        self._audio_until(None)
        for enc in self._encoders.values():
            self.out.mux(enc.encode(None))
        self.out.close()
        if self._src is not None:
            self._src.close()

    def abort(self) -> None:
        for c in (self.out, self._src):
            with contextlib.suppress(Exception):
                if c is not None:
                    c.close()
