"""Video: decode a clip frame by frame, upscale each with the same noise, encode, copy the audio.

Needs PyAV (`pip install "sr3infer[video]"`), imported only when used. One frame is in flight at a
time, so memory does not grow with the clip; the same seed on every frame keeps the noise still
(docs/video.md). Timing and audio are kept; the file appears only when complete.
"""

from __future__ import annotations

import math
import numbers
import os
import time
import warnings
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import IO, Any, Callable, Iterable, Iterator, Protocol, cast

import numpy as np
from PIL import Image

from .errors import first_line
from .images.io import check_input_file, write_atomically
from .seeding import MAX_SEED
from .size_guard import DEFAULT_MAX_OUTPUT_PIXELS



class Upscales(Protocol):
    """What a video run needs of its model (an `sr3infer.Upscaler`)."""

    config: Any

    def sampling_recipe(self, recipe: Any = None, preset: str | None = None, **settings: Any) -> Any: ...

    def upscale(self, images: Any, **kwargs: Any) -> Any: ...

__all__ = ["VIDEO_SUFFIXES", "VideoResult", "is_video_path", "upscale_video"]

VIDEO_SUFFIXES = (".mp4", ".m4v", ".mov", ".mkv", ".webm", ".avi")
"""Output suffixes `upscale_video` writes (and the ones the CLI treats as video inputs)."""

# suffix -> (FFmpeg muxer, video encoders to try in order, audio encoder where copying fails)
_CONTAINERS: dict[str, tuple[str, tuple[str, ...], str]] = {
    ".mp4": ("mp4", ("libx264", "libopenh264", "mpeg4"), "aac"),
    ".m4v": ("mp4", ("libx264", "libopenh264", "mpeg4"), "aac"),
    ".mov": ("mov", ("libx264", "libopenh264", "mpeg4"), "aac"),
    ".mkv": ("matroska", ("libx264", "libopenh264", "mpeg4"), "aac"),
    ".webm": ("webm", ("libvpx-vp9", "libvpx"), "libopus"),
    ".avi": ("avi", ("mpeg4", "libx264"), "libmp3lame"),
}

_DEFAULT_OPTIONS = {
    "libx264": {"crf": "18"},
    "libvpx-vp9": {"crf": "24", "b": "0"},
    "mpeg4": {"flags": "+qscale", "global_quality": "236"},  # ffmpeg's -q:v 2 (2 x FF_QP2LAMBDA)
}
"""Encoder settings unless `codec_options` says otherwise: high quality, as upscaling costs more.
PyAV silently ignores options an encoder lacks: each of these was checked to change the output."""

_RGB_FORMATS = ("rgb24", "bgr0", "gbrp", "yuv444p")  # without 4:2:0 (ffv1: bgr0)

_NOT_PASSED_ON = {
    "images": "the frames come from `source`",
    "seed": None,  # a named argument of upscale_video
    "generator": "each frame's noise comes from seed= (the same seed for every frame, or seed + i * K with "
                 "fresh_noise=True); a generator would draw different noise for every frame. Pass seed= instead",
    "output_type": "upscale_video writes the frames to a file",
    "return_dict": "upscale_video writes the frames to a file and returns a VideoResult",
    "return_report": "upscale_video writes the frames to a file; upscale frames one by one for their reports",
}


def is_video_path(path: str | os.PathLike) -> bool:
    """True when the name ends in one of `VIDEO_SUFFIXES` (how the CLI tells a video)."""
    return Path(path).suffix.lower() in VIDEO_SUFFIXES


@dataclass(frozen=True)
class VideoResult:
    """What `upscale_video` wrote."""

    path: Path
    frames: int
    fps: Fraction                   # the input's average rate, or `fps`
    size: tuple[int, int]           # output (width, height)
    audio: tuple[str, ...]          # per audio stream: "aac copied", "pcm_s16le -> aac", ...
    seconds: float

    def line(self) -> str:
        """One line for a log, e.g. "x4.mp4: 48 frames, 640x480 at 24 fps, no audio, 12 s"."""
        audio = f"audio {', '.join(self.audio)}" if self.audio else "no audio"
        rate = f"{float(self.fps):g}" if self.fps.denominator != 1001 else f"{self.fps.numerator}/1001"
        minutes, seconds = divmod(round(self.seconds), 60)
        took = f"{minutes} min {seconds} s" if minutes else f"{self.seconds:.1f} s"
        return f"{self.path.name}: {self.frames} frames, {self.size[0]}x{self.size[1]} at {rate} fps, {audio}, {took}"


def upscale_video(
    upscaler: Upscales,
    source: str | os.PathLike | Iterable[Any],
    output_path: str | os.PathLike,
    *,
    fps: float | Fraction | None = None,
    seed: int = 0,
    fresh_noise: bool = False,
    overwrite: bool = False,
    progress: bool = True,
    codec: str | None = None,
    codec_options: dict[str, str] | None = None,
    pix_fmt: str | None = None,
    **upscale_kwargs: Any,
) -> VideoResult:
    """Upscale every frame of a video with `upscaler.upscale`, keeping the input's audio and timing.

    Args:
        upscaler: the model (`Upscaler.from_pretrained(...)`).
        source: a video file FFmpeg reads, or an iterable of same-size PIL images or uint8 (H, W, 3)
            arrays with `fps`.
        output_path: the video to write; its suffix (`VIDEO_SUFFIXES`) picks container and encoder.
        fps: frames per second of a frame iterable (e.g. Fraction(30000, 1001)), not of a file.
        seed: the seed of every frame's noise (0 to 2**64 - 1).
        fresh_noise: give frame i the seed `seed + i * K` instead (new noise, more flicker).
        overwrite: replace an existing `output_path`.
        progress: a tqdm bar in frames.
        codec, codec_options, pix_fmt: another FFmpeg encoder (e.g. "ffv1" in .mkv), its options
            (e.g. {"crf": "23"}) and pixel format; default by suffix.
        **upscale_kwargs: passed to `upscaler.upscale` for every frame (preset, num_steps, outscale,
            ...; not generator, output_type, return_dict, return_report).

    Returns:
        A `VideoResult`: path, frames, frame rate, size, each audio stream's fate, seconds.

    Raises:
        ModuleNotFoundError: PyAV is not installed.
        FileNotFoundError: no such input.
        FileExistsError: the output exists and `overwrite` is False.
        ValueError: not a video, no frames, frames over `max_output_pixels` by the header, frames of
            different sizes, or an output suffix that is not a video's.
    """
    started = time.perf_counter()
    _check_upscale_kwargs(upscale_kwargs)
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or not 0 <= seed <= MAX_SEED:
        raise ValueError(f"seed must be an integer from 0 to 2**64 - 1 (every frame's noise comes from it), "
                         f"got {seed!r}.")
    output_path = Path(output_path)
    muxer, encoders, audio_encoder = _output_plan(output_path)
    av = _import_av()
    video_codec = _pick_encoder(av, codec, encoders, output_path)
    if not overwrite and os.path.lexists(output_path):  # checked again at the end
        raise FileExistsError(f"{str(output_path)!r} already exists; pass --overwrite (overwrite=True) to replace it.")
    stride = upscaler.sampling_recipe(upscale_kwargs.get("recipe"), upscale_kwargs.get("preset"),
                                      num_samples=upscale_kwargs.get("num_samples")).num_samples
    max_pixels = upscale_kwargs.get("max_output_pixels", DEFAULT_MAX_OUTPUT_PIXELS)
    with _open_source(av, source, fps) as src:
        _check_frame_size(src.width, src.height, upscaler.config.scale, max_pixels, src.name)
        writer = _Writer(av, src, muxer, video_codec, audio_encoder, codec_options, pix_fmt)

        def frame_seed(index: int) -> int:
            if not fresh_noise:
                return seed
            if seed + index * stride > MAX_SEED:
                raise ValueError(f"With fresh_noise=True frame {index} would get the seed {seed} + {index * stride}, "
                                 "over 2**64 - 1; use a smaller seed.")
            return seed + index * stride

        def write(handle: IO[bytes]) -> None:
            writer.run(handle, lambda index, rgb: _upscale_frame(upscaler, rgb, frame_seed(index), upscale_kwargs,
                                                                 writer.seen_warnings), progress)

        write_atomically(output_path, write, overwrite=overwrite)
    return VideoResult(path=output_path, frames=writer.frames, fps=src.rate, size=writer.size or (0, 0),
                       audio=tuple(writer.audio_notes), seconds=time.perf_counter() - started)


# Checks before anything is decoded.

def _import_av() -> Any:
    try:
        import av
    except ImportError:
        raise ModuleNotFoundError("Video needs PyAV, which is not installed; install it with "
                                  "pip install \"sr3infer[video]\" (or pip install av).") from None
    return av


def _check_upscale_kwargs(kwargs: dict[str, Any]) -> None:
    for name, why in _NOT_PASSED_ON.items():
        if name in kwargs and why is not None:
            raise TypeError(f"upscale_video() does not take {name}=: {why}.")


def _output_plan(path: Path) -> tuple[str, tuple[str, ...], str]:
    suffix = path.suffix.lower()
    if suffix not in _CONTAINERS:
        raise ValueError(f"Cannot tell the video format of the output {str(path)!r} from its suffix "
                         f"{suffix or '(none)'!r}; expected one of {', '.join(VIDEO_SUFFIXES)}.")
    return _CONTAINERS[suffix]


def _pick_encoder(av: Any, codec: str | None, candidates: tuple[str, ...], path: Path) -> str:
    names = (codec,) if codec is not None else candidates
    for name in names:
        try:
            if av.codec.Codec(name, "w").type == "video":
                return name
        except Exception:  # noqa: BLE001 - UnknownCodecError / ValueError
            continue
    wanted = f"the video encoder {codec!r}" if codec is not None else f"any of the encoders {', '.join(candidates)}"
    raise ValueError(f"This PyAV build has no {wanted} for {str(path)!r}; pick another codec= (e.g. 'mpeg4', "
                     "'ffv1' in .mkv) or output suffix.")


def _check_frame_size(width: int, height: int, scale: int, max_output_pixels: Any, name: str) -> None:
    """Refuse frames whose upscaled size is over `max_output_pixels`, from the header."""
    if width < 1 or height < 1:
        raise ValueError(f"{name} gives no frame size ({width}x{height}) in its header; expected a video with "
                         "frames of a known size. Is it truncated or corrupt?")
    if isinstance(max_output_pixels, bool) or not isinstance(max_output_pixels, numbers.Real):
        return  # None: no limit; a wrong type is refused by upscale() with its own message
    pixels = width * height * scale * scale
    if pixels > cast(float, max_output_pixels):
        raise ValueError(
            f"{name} has {width}x{height} frames (by its header), {width * scale}x{height * scale} = "
            f"{_pixels(pixels)} per frame at x{scale}, over max_output_pixels = {_pixels(cast(float, max_output_pixels))}; "
            "expected smaller frames. Scale the video down first (e.g. ffmpeg -vf scale=iw/2:-2), or raise the limit "
            "(max_output_pixels=, --max-output-pixels) on a machine with that much memory."
        )


def _pixels(count: float) -> str:
    return f"{count / 1e6:,.1f} MP" if count >= 1e6 else f"{int(count):,} pixels"


# Sources: a file through PyAV, or an iterable of frames.

@dataclass
class _Frame:
    rgb: np.ndarray            # (H, W, 3) uint8
    pts: int | None            # in the source's time base


class _Source:
    """Frames one at a time, plus (for a file) the audio streams and their packets in file order."""

    name: str
    width: int
    height: int
    rate: Fraction
    time_base: Fraction
    total: int | None
    audio_streams: list[Any]

    def __enter__(self) -> _Source:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def close(self) -> None:
        pass

    def items(self, on_audio: Callable[[Any], None]) -> Iterator[_Frame]:
        raise NotImplementedError


def _open_source(av: Any, source: Any, fps: Any) -> _Source:
    if isinstance(source, (str, os.PathLike)):
        if fps is not None:
            raise ValueError(f"fps= is for an iterable of frames; the video {str(source)!r} keeps its own frame rate.")
        return _FileSource(av, Path(source))
    if isinstance(source, (bytes, Image.Image, np.ndarray)) or not isinstance(source, Iterable):
        what = "one image" if isinstance(source, (Image.Image, np.ndarray)) else type(source).__name__
        raise TypeError(f"source must be a video file path or an iterable of frames (PIL images or (H, W, 3) uint8 "
                        f"arrays) with fps=, got {what}; for a single image use upscale().")
    return _FrameSource(source, fps)


class _FileSource(_Source):
    def __init__(self, av: Any, path: Path) -> None:
        check_input_file(path, "video", " Expected a video file (.mp4, .mkv, .mov, .webm, ...).")
        self.av, self.path, self.name = av, path, repr(str(path))
        try:
            self.container = av.open(str(path), "r")
        except av.EOFError:  # e.g. a Matroska header whose clusters never come
            raise ValueError(f"{self.name} ends before its first frame (0 frames); expected a video with at least one "
                             "frame. Is it truncated?") from None
        except av.FFmpegError as err:
            raise ValueError(f"{self.name} is not a video FFmpeg can read ({_ffmpeg_words(err)}); expected a video "
                             "file (.mp4, .mkv, .mov, .webm, ...).") from None
        try:
            self._probe()
        except BaseException:
            self.container.close()
            raise

    def _probe(self) -> None:
        container, name = self.container, self.name
        fmt = container.format.name
        if fmt == "image2" or fmt.endswith("_pipe"):  # a PNG or JPEG as a 1-frame "video"
            raise ValueError(f"{name} is a still image ({fmt}), not a video; upscale it with upscale() "
                             "(sr3infer IMAGE -o OUT).")
        videos = [s for s in container.streams.video if not _is_attached_picture(s)]
        if not videos:
            kinds = sorted({s.type for s in container.streams}) or ["none"]
            raise ValueError(f"{name} has no video stream (streams: {', '.join(kinds)}); expected a video file.")
        stream = self.stream = videos[0]
        self.width, self.height = stream.codec_context.width, stream.codec_context.height
        rate = stream.average_rate or stream.guessed_rate or stream.base_rate
        if not rate or rate <= 0:
            raise ValueError(f"{name} gives no frame rate for its video stream; expected a video with a frame rate. "
                             "Is it truncated or corrupt?")
        self.rate = Fraction(rate)
        self.time_base = Fraction(stream.time_base) if stream.time_base else 1 / self.rate
        self.total = stream.frames or None
        if self.total is None and stream.duration and stream.time_base:
            self.total = max(1, round(float(stream.duration * stream.time_base * self.rate)))
        self.audio_streams = list(container.streams.audio)

    def close(self) -> None:
        self.container.close()

    def items(self, on_audio: Callable[[Any], None]) -> Iterator[_Frame]:
        av, index = self.av, 0
        audio_ids = {s.index for s in self.audio_streams}
        try:
            for packet in self.container.demux(self.stream, *self.audio_streams):
                if packet.stream.index in audio_ids:
                    if packet.dts is not None:  # not the empty end-of-stream packets
                        on_audio(packet)
                    continue
                for frame in packet.decode():
                    # At the header's size: a stream that changes size mid-way stays one size.
                    rgb = frame.to_ndarray(format="rgb24", width=self.width, height=self.height)
                    yield _Frame(rgb, frame.pts)
                    index += 1
        except av.FFmpegError as err:
            raise ValueError(f"{self.name}: frame {index} could not be decoded ({_ffmpeg_words(err)}); is the video "
                             "truncated or corrupt?") from None


def _ffmpeg_words(err: Exception) -> str:
    """FFmpeg's reason ("Invalid data found ...") without PyAV's errno and file name."""
    return getattr(err, "strerror", None) or first_line(err)


def _is_attached_picture(stream: Any) -> bool:
    """A cover picture in an audio file is a 1-frame "video stream"; it is not a video."""
    import av

    flags = getattr(av.stream, "Disposition", None)  # PyAV >= 15; older: no cover check
    try:
        return flags is not None and bool(stream.disposition & flags.attached_pic)
    except AttributeError:
        return False


class _FrameSource(_Source):
    def __init__(self, frames: Iterable[Any], fps: Any) -> None:
        self.name = "the frames"
        self.rate = _check_fps(fps)
        self.time_base = 1 / self.rate
        self.total = len(frames) if hasattr(frames, "__len__") else None  # type: ignore[arg-type]
        self.audio_streams = []
        self._frames = iter(frames)
        try:
            self._first: np.ndarray | None = _frame_array(next(self._frames), 0)
        except StopIteration:
            raise ValueError("Got no frames (an empty iterable); expected at least one frame.") from None
        self.height, self.width = self._first.shape[:2]

    def items(self, on_audio: Callable[[Any], None]) -> Iterator[_Frame]:
        first, self._first = self._first, None
        if first is None:
            raise RuntimeError("An iterable of frames can be read once.")
        yield _Frame(first, 0)
        for index, item in enumerate(self._frames, start=1):
            rgb = _frame_array(item, index)
            if rgb.shape != first.shape:
                raise ValueError(f"Frame {index} is {rgb.shape[1]}x{rgb.shape[0]}, frame 0 {first.shape[1]}x"
                                 f"{first.shape[0]}; expected frames of one size (a video's frames are).")
            yield _Frame(rgb, index)


def _check_fps(fps: Any) -> Fraction:
    if fps is None:
        raise ValueError("fps= is needed with an iterable of frames (e.g. fps=24 or Fraction(30000, 1001)).")
    if isinstance(fps, bool) or not isinstance(fps, (numbers.Real, Fraction)):
        raise TypeError(f"fps must be a number of frames per second, got {type(fps).__name__}.")
    rate = cast(float, fps)
    if not math.isfinite(rate) or not 0 < rate <= 1000:
        raise ValueError(f"fps must be a number of frames per second above 0 and at most 1000, got {fps!r}.")
    return fps if isinstance(fps, Fraction) else Fraction(str(fps)) if isinstance(fps, float) else Fraction(cast(int, fps))


def _frame_array(item: Any, index: int) -> np.ndarray:
    if isinstance(item, Image.Image):
        return np.asarray(item.convert("RGB"))
    if isinstance(item, np.ndarray) and item.dtype == np.uint8 and item.ndim == 3 and item.shape[-1] == 3:
        return item
    got = (f"a {item.dtype} array of shape {item.shape}" if isinstance(item, np.ndarray) else type(item).__name__)
    raise TypeError(f"Frame {index} is {got}; expected a PIL image or an (H, W, 3) uint8 array.")


# Upscaling one frame.

def _upscale_frame(upscaler: Upscales, rgb: np.ndarray, seed: int, kwargs: dict[str, Any],
                   seen: set[str]) -> np.ndarray:
    """One frame through the public `upscale()`, each warning shown once per video."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = upscaler.upscale(rgb, seed=seed, progress=False, output_type="np", **kwargs)
    for warning in caught:
        text = str(warning.message)
        if text not in seen:
            seen.add(text)
            warnings.warn_explicit(warning.message, warning.category, warning.filename, warning.lineno)
    return out


# Writing.

class _Writer:
    """Encode upscaled frames and mux them with the source's audio into an open file."""

    def __init__(self, av: Any, src: _Source, muxer: str, video_codec: str, audio_encoder: str,
                 codec_options: dict[str, str] | None, pix_fmt: str | None) -> None:
        self.av, self.src, self.muxer = av, src, muxer
        self.video_codec, self.audio_encoder = video_codec, audio_encoder
        self.codec_options = dict(_DEFAULT_OPTIONS.get(video_codec, {}) if codec_options is None else codec_options)
        self.pix_fmt = pix_fmt
        self.frames = 0
        self.size: tuple[int, int] | None = None
        self.audio_notes: list[str] = []
        self.seen_warnings: set[str] = set()

    def run(self, handle: IO[bytes], upscale: Callable[[int, np.ndarray], np.ndarray], progress: bool) -> None:
        from tqdm.auto import tqdm

        av, src = self.av, self.src
        out = av.open(handle, "w", format=self.muxer)
        self.out = out
        self.video: Any = None  # the output's video stream, added with the first frame
        failed = True
        try:
            self.audio = {stream.index: self._add_audio(stream) for stream in src.audio_streams}
            self.pending: list[Any] = []  # audio read before the video stream exists
            bar = tqdm(total=src.total, unit="frame", desc="upscaling video", disable=not progress, dynamic_ncols=True)
            with bar:
                for frame in src.items(self._audio_packet):
                    result = upscale(self.frames, frame.rgb)
                    self._encode(result, frame.pts)
                    self.frames += 1
                    bar.update(1)
            if self.frames == 0:
                raise ValueError(f"{src.name} has a video stream but no frames could be read from it; expected a video "
                                 "with at least one frame. Is it truncated?")
            self._mux(cast(Any, self.video).encode(None))  # set by _encode on the first frame
            for copy in self.audio.values():
                copy.flush()
            failed = False
        finally:
            try:
                out.close()
            except Exception:  # noqa: BLE001 - the first error is reported
                if not failed:
                    raise

    def _mux(self, packets: Iterable[Any]) -> None:
        for packet in packets:
            self.out.mux(packet)

    def _add_video(self, width: int, height: int) -> None:
        av, src = self.av, self.src
        codec = av.codec.Codec(self.video_codec, "w")
        formats = [f.name for f in codec.video_formats or []]
        rgb = next((f for f in _RGB_FORMATS if f in formats), formats[0] if formats else "yuv420p")
        pix_fmt = self.pix_fmt or ("yuv420p" if "yuv420p" in formats and self.video_codec != "ffv1" else rgb)
        if pix_fmt.startswith(("yuv420", "yuvj420", "nv12")) and (width % 2 or height % 2):
            raise ValueError(f"The upscaled frames are {width}x{height}; {self.video_codec} in {pix_fmt} needs even "
                             "sides. Choose outscale=/size= giving even sides, or pix_fmt='yuv444p'.")
        stream = self.out.add_stream(self.video_codec, rate=src.rate)
        stream.width, stream.height, stream.pix_fmt = width, height, pix_fmt
        # The input's time base and timestamps where encoder and container take them (MPEG-4 part 2:
        # denominators up to 65535; AVI: one tick per frame).
        keep = src.time_base.denominator <= 65535 and self.muxer != "avi"
        self.time_base = src.time_base if keep else 1 / src.rate
        stream.time_base = self.time_base
        stream.codec_context.time_base = self.time_base
        stream.options = self.codec_options
        # YUV as BT.709, limited range, tagged in the stream: untagged, players guess by size.
        self.bt709 = pix_fmt.startswith(("yuv", "nv12")) and not pix_fmt.startswith("yuvj")
        if self.bt709:
            context = stream.codec_context
            context.colorspace = context.color_primaries = context.color_trc = 1  # AVCOL_*_BT709
            context.color_range = 1  # AVCOL_RANGE_MPEG
        self.video = stream
        self.size = (width, height)
        self.next_pts = 0
        for packet in self.pending:  # every stream exists now: the header can be written
            self._audio_packet(packet)
        self.pending = []

    def _encode(self, rgb: np.ndarray, pts: int | None) -> None:
        height, width = rgb.shape[:2]
        if self.video is None:
            self._add_video(width, height)
        frame = self.av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
        if self.bt709:
            frame = frame.reformat(format=self.video.pix_fmt, dst_colorspace="ITU709", dst_color_range="MPEG")
        if pts is None or self.time_base != self.src.time_base:  # else by the rate
            seconds = Fraction(self.frames) / self.src.rate if pts is None else pts * self.src.time_base
            pts = round(seconds / self.time_base)
        pts = max(pts, self.next_pts)  # strictly increasing, as encoders require
        self.next_pts = pts + 1
        frame.pts, frame.time_base = pts, self.time_base
        self._mux(self.video.encode(frame))

    def _add_audio(self, stream: Any) -> _Audio:
        name = stream.codec_context.name
        if name in self.out.supported_codecs:
            out_stream = self.out.add_stream_from_template(stream)
            self.audio_notes.append(f"{name} copied")
            return _Audio(self, stream, out_stream, reencode=False)
        codec = self.av.codec.Codec(self.audio_encoder, "w")
        rates = codec.audio_rates
        # the input's sample rate, else the encoder's nearest above (Opus: 48 kHz), else its highest
        rate = stream.rate if not rates or stream.rate in rates else min(
            rates, key=lambda r: (r < stream.rate, abs(r - stream.rate)))
        out_stream = self.out.add_stream(self.audio_encoder, rate=rate)
        layout = stream.layout.name if stream.layout is not None else "stereo"
        out_stream.layout = layout if stream.channels <= 2 or self.audio_encoder != "libmp3lame" else "stereo"
        self.audio_notes.append(f"{name} -> {codec.name}")
        return _Audio(self, stream, out_stream, reencode=True)

    def _audio_packet(self, packet: Any) -> None:
        if self.video is None:
            self.pending.append(packet)
            return
        self.audio[packet.stream.index].packet(packet)


class _Audio:
    """One audio stream: packets remuxed as they are, or decoded and re-encoded."""

    def __init__(self, writer: _Writer, source: Any, stream: Any, *, reencode: bool) -> None:
        self.writer, self.source, self.stream, self.reencode = writer, source, stream, reencode

    def packet(self, packet: Any) -> None:
        if not self.reencode:
            packet.stream = self.stream
            self.writer.out.mux(packet)
            return
        for frame in packet.decode():
            frame.pts = None  # the encoder numbers its own samples
            self.writer._mux(self.stream.encode(frame))

    def flush(self) -> None:
        if self.reencode:
            for frame in self.source.codec_context.decode(None):
                frame.pts = None
                self.writer._mux(self.stream.encode(frame))
            self.writer._mux(self.stream.encode(None))
