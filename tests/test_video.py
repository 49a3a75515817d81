"""sr3infer.video: frame count, rate, size, audio, same-seed frames, atomic output, one-line errors (tiny model, x2)."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

av = pytest.importorskip("av")

from sr3infer.video import VIDEO_SUFFIXES, VideoResult, is_video_path, upscale_video  # noqa: E402

FPS, SAMPLE_RATE = 24, 44100


def frame(i: int, width: int = 16, height: int = 12) -> np.ndarray:
    """A small RGB frame that changes with i: a red level and a moving white column."""
    rgb = np.zeros((height, width, 3), np.uint8)
    rgb[..., 0] = (i * 16) % 256
    rgb[:, i % width] = 255
    rgb[:, :, 2] = np.linspace(0, 255, width, dtype=np.uint8)
    return rgb


def write_clip(path: Path, frames: list[np.ndarray], *, audio: bool = True) -> Path:
    """H.264 at 24 fps (+ a 440 Hz mono AAC track over the same time) with PyAV."""
    with av.open(str(path), "w") as out:
        video = out.add_stream("libx264", rate=FPS)
        video.height, video.width = frames[0].shape[:2] if frames else (12, 16)
        video.pix_fmt = "yuv420p"
        if audio:
            sound = out.add_stream("aac", rate=SAMPLE_RATE)
            sound.layout = "mono"
            t = np.arange(SAMPLE_RATE * max(len(frames), FPS) // FPS) / SAMPLE_RATE
            tone = av.AudioFrame.from_ndarray((0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)[None],
                                              format="fltp", layout="mono")
            tone.sample_rate = SAMPLE_RATE
            for packet in [*sound.encode(tone), *sound.encode(None)]:
                out.mux(packet)
        for rgb in frames:
            for packet in video.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")):
                out.mux(packet)
        for packet in video.encode(None):
            out.mux(packet)
    return path


def read_video(path: Path) -> dict:
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        info = {"rate": stream.average_rate, "time_base": stream.time_base,
                "size": (stream.codec_context.width, stream.codec_context.height),
                "audio": [(a.codec_context.name, a.rate) for a in container.streams.audio]}
        decoded = list(container.decode(stream))
        info["frames"] = [f.to_ndarray(format="rgb24") for f in decoded]
        info["colorspace"] = {(f.colorspace, f.color_range) for f in decoded}
    with av.open(str(path)) as container:
        info["samples"] = [sum(f.samples for f in container.decode(a)) for a in container.streams.audio]
    return info


@pytest.fixture
def clip(tmp_path) -> Path:
    return write_clip(tmp_path / "clip.mp4", [frame(i) for i in range(16)])


def test_clip_keeps_frames_rate_time_base_and_audio(tiny_upscaler, clip, tmp_path, capsys):
    out = tmp_path / "clip_x2.mp4"
    result = upscale_video(tiny_upscaler, clip, out)
    assert "16/16" in capsys.readouterr().err  # the tqdm bar counts frames
    source, written = read_video(clip), read_video(out)
    assert isinstance(result, VideoResult) and result.path == out
    assert (result.frames, result.fps, result.size) == (16, Fraction(FPS), (32, 24))
    assert len(written["frames"]) == 16 and written["frames"][0].shape == (24, 32, 3)
    assert (written["rate"], written["time_base"], written["size"]) == (source["rate"], source["time_base"], (32, 24))
    assert written["audio"] == source["audio"] == [("aac", SAMPLE_RATE)] and result.audio == ("aac copied",)
    assert written["samples"] == source["samples"]  # the packets, copied as they are
    assert written["colorspace"] == {(1, 1)}  # BT.709, limited range, tagged
    assert "16 frames, 32x24 at 24 fps, audio aac copied" in result.line()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clip.mp4", "clip_x2.mp4"]  # no temporary file left


def test_each_frame_keeps_its_timestamp(tiny_upscaler, tmp_path):
    """A variable frame rate stays variable: the output's timestamps are the input's (Matroska, 1 ms ticks)."""
    source, stamps = tmp_path / "vfr.mkv", [0, 40, 100, 130, 250]
    with av.open(str(source), "w") as out:
        video = out.add_stream("libx264", rate=FPS)
        video.width, video.height, video.pix_fmt = 16, 12, "yuv420p"
        video.time_base = video.codec_context.time_base = Fraction(1, 1000)
        for i, pts in enumerate(stamps):
            picture = av.VideoFrame.from_ndarray(frame(i), format="rgb24")
            picture.pts, picture.time_base = pts, Fraction(1, 1000)
            for packet in video.encode(picture):
                out.mux(packet)
        for packet in video.encode(None):
            out.mux(packet)
    upscale_video(tiny_upscaler, source, tmp_path / "vfr_x2.mkv", progress=False, num_steps=1)
    for path in (source, tmp_path / "vfr_x2.mkv"):
        with av.open(str(path)) as container:
            assert [f.pts for f in container.decode(video=0)] == stamps, path.name


def test_audio_the_container_cannot_hold_is_reencoded(tiny_upscaler, clip, tmp_path):
    result = upscale_video(tiny_upscaler, clip, tmp_path / "clip.webm", progress=False, num_steps=1)
    written = read_video(tmp_path / "clip.webm")
    assert result.audio == ("aac -> libopus",) and written["audio"] == [("opus", 48000)]
    assert len(written["frames"]) == 16 and written["rate"] == FPS


def test_same_seed_every_frame_gives_identical_frames_for_identical_inputs(tiny_upscaler, tmp_path):
    """Lossless output (FFV1, RGB): equal inputs give bit-equal outputs, equal to upscale() with the seed."""
    frames = [frame(3), frame(3), Image.fromarray(frame(5))]
    lossless = {"codec": "ffv1", "progress": False}
    upscale_video(tiny_upscaler, frames, tmp_path / "fixed.mkv", fps=12, seed=7, **lossless)
    fixed = read_video(tmp_path / "fixed.mkv")
    assert fixed["rate"] == 12 and len(fixed["frames"]) == 3
    np.testing.assert_array_equal(fixed["frames"][0], fixed["frames"][1])
    direct = [tiny_upscaler.upscale(frame(i), seed=7, progress=False) for i in (3, 5)]
    np.testing.assert_array_equal(fixed["frames"][0], direct[0])
    np.testing.assert_array_equal(fixed["frames"][2], direct[1])
    upscale_video(tiny_upscaler, iter(frames), tmp_path / "fresh.mkv", fps=Fraction(30000, 1001), seed=7,
                  fresh_noise=True, **lossless)
    fresh = read_video(tmp_path / "fresh.mkv")
    assert fresh["rate"] == Fraction(30000, 1001)
    assert not np.array_equal(fresh["frames"][0], fresh["frames"][1])  # seed 7 and seed 8
    np.testing.assert_array_equal(fresh["frames"][1], tiny_upscaler.upscale(frame(3), seed=8, progress=False))


def test_a_warning_is_said_once_per_video_not_once_per_frame(tiny_upscaler, tmp_path):
    with pytest.warns(UserWarning, match="trained on 8x8 inputs; got 6x4") as caught:
        upscale_video(tiny_upscaler, [frame(i, 6, 4) for i in range(3)], tmp_path / "small.mkv", fps=24,
                      progress=False, num_steps=1)
    assert len([w for w in caught if "trained on" in str(w.message)]) == 1


@pytest.mark.parametrize("interrupt", [RuntimeError("boom"), KeyboardInterrupt()])
def test_failure_mid_clip_leaves_no_file(tiny_upscaler, clip, tmp_path, monkeypatch, interrupt):
    upscale, calls = tiny_upscaler.upscale, []

    def fail_on_fourth(*args, **kwargs):
        calls.append(1)
        if len(calls) == 4:
            raise interrupt
        return upscale(*args, **kwargs)

    monkeypatch.setattr(tiny_upscaler, "upscale", fail_on_fourth)
    with pytest.raises(type(interrupt)):
        upscale_video(tiny_upscaler, clip, tmp_path / "out.mp4", progress=False, num_steps=1)
    assert len(calls) == 4
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clip.mp4"]


def test_existing_output_refused_before_decoding_and_replaced_with_overwrite(tiny_upscaler, clip, tmp_path,
                                                                             monkeypatch):
    out = tmp_path / "out.mp4"
    out.write_bytes(b"keep me")
    monkeypatch.setattr(tiny_upscaler, "upscale", lambda *a, **k: pytest.fail("decoded before refusing"))
    with pytest.raises(FileExistsError, match="already exists; pass --overwrite"):
        upscale_video(tiny_upscaler, clip, out)
    assert out.read_bytes() == b"keep me"
    monkeypatch.undo()
    upscale_video(tiny_upscaler, [frame(0)], out, fps=24, overwrite=True, progress=False, num_steps=1)
    assert len(read_video(out)["frames"]) == 1


def test_frames_too_large_by_header_are_refused_before_decoding(tiny_upscaler, clip, tmp_path, monkeypatch):
    monkeypatch.setattr(tiny_upscaler, "upscale", lambda *a, **k: pytest.fail("decoded before the size check"))
    words = r"has 16x12 frames \(by its header\), 32x24 = 768 pixels per frame at x2, over max_output_pixels = 700"
    with pytest.raises(ValueError, match=words) as err:
        upscale_video(tiny_upscaler, clip, tmp_path / "out.mp4", max_output_pixels=700)
    assert "\n" not in str(err.value) and "scale the video down first" in str(err.value).lower()
    assert not (tmp_path / "out.mp4").exists()


def test_zero_frames(tiny_upscaler, tmp_path):
    """A Matroska file whose video track has no frame (its audio has some), and an empty iterable."""
    empty = tmp_path / "empty.mkv"
    with av.open(str(empty), "w") as out:
        video = out.add_stream("libx264", rate=FPS)
        video.width, video.height, video.pix_fmt = 16, 12, "yuv420p"
        sound = out.add_stream("aac", rate=SAMPLE_RATE)
        sound.layout = "mono"
        silence = av.AudioFrame.from_ndarray(np.zeros((1, 4096), np.float32), format="fltp", layout="mono")
        silence.sample_rate = SAMPLE_RATE
        for packet in [*sound.encode(silence), *sound.encode(None)]:
            out.mux(packet)
    with pytest.raises(ValueError, match="has a video stream but no frames could be read from it"):
        upscale_video(tiny_upscaler, empty, tmp_path / "out.mp4", progress=False)
    with pytest.raises(ValueError, match="Got no frames"):
        upscale_video(tiny_upscaler, [], tmp_path / "out.mp4", fps=24)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty.mkv"]


def test_bad_inputs_get_one_line_errors(tiny_upscaler, tmp_path):
    out = tmp_path / "out.mp4"
    text = tmp_path / "notes.mp4"
    text.write_text("these are notes, not a video\n" * 20)
    png = tmp_path / "still.png"
    Image.fromarray(frame(0)).save(png)
    cases = {
        text: (ValueError, r"is not a video FFmpeg can read \(Invalid data found when processing input\); "
                           r"expected a video file"),
        png: (ValueError, r"is a still image \(png_pipe\), not a video; upscale it with upscale\(\)"),
        tmp_path / "missing.mp4": (FileNotFoundError, "does not exist"),
        tmp_path: (IsADirectoryError, "Expected a video file, got the directory"),
    }
    audio_only = tmp_path / "tone.m4a"
    with av.open(str(audio_only), "w") as container:
        sound = container.add_stream("aac", rate=SAMPLE_RATE)
        tone = av.AudioFrame.from_ndarray(np.zeros((1, 4096), np.float32), format="fltp", layout="mono")
        tone.sample_rate = SAMPLE_RATE
        for packet in [*sound.encode(tone), *sound.encode(None)]:
            container.mux(packet)
    cases[audio_only] = (ValueError, r"has no video stream \(streams: audio\)")
    for source, (kind, words) in cases.items():
        with pytest.raises(kind, match=words) as err:
            upscale_video(tiny_upscaler, source, out, progress=False)
        assert "\n" not in str(err.value)
    assert not out.exists()


def test_bad_arguments(tiny_upscaler, clip, tmp_path):
    out = tmp_path / "out.mp4"
    with pytest.raises(TypeError, match="does not take generator=: each frame's noise comes from seed="):
        upscale_video(tiny_upscaler, clip, out, generator=None)
    with pytest.raises(TypeError, match="does not take output_type="):
        upscale_video(tiny_upscaler, clip, out, output_type="np")
    with pytest.raises(ValueError, match="Cannot tell the video format of the output .* from its suffix '.png'"):
        upscale_video(tiny_upscaler, clip, tmp_path / "out.png")
    with pytest.raises(ValueError, match="seed must be an integer"):
        upscale_video(tiny_upscaler, clip, out, seed=None)
    with pytest.raises(ValueError, match="fps= is for an iterable of frames"):
        upscale_video(tiny_upscaler, clip, out, fps=24)
    with pytest.raises(ValueError, match="fps= is needed"):
        upscale_video(tiny_upscaler, [frame(0)], out)
    with pytest.raises(TypeError, match="got one image; for a single image use upscale"):
        upscale_video(tiny_upscaler, frame(0), out, fps=24)
    with pytest.raises(TypeError, match=r"Frame 1 is a float32 array of shape \(12, 16, 3\)"):
        upscale_video(tiny_upscaler, [frame(0), frame(1).astype(np.float32)], out, fps=24, progress=False)
    with pytest.raises(ValueError, match="Frame 1 is 8x12, frame 0 16x12; expected frames of one size"):
        upscale_video(tiny_upscaler, [frame(0), frame(1, width=8)], out, fps=24, progress=False, num_steps=1)
    assert not out.exists()


def test_is_video_path():
    assert is_video_path("clip.MP4") and is_video_path(Path("a/b.mkv")) and ".webm" in VIDEO_SUFFIXES
    assert not is_video_path("photo.png") and not is_video_path("video")


def test_cli_and_upscaler_method(tiny_upscaler, tiny_model_dir, clip, tmp_path, capsys):
    """`sr3infer clip.mp4 -o out.mp4` and `Upscaler.upscale_video`."""
    from sr3infer import cli

    out = tmp_path / "clip_x2.mp4"
    assert cli.main([str(clip), "-o", str(out), "--model", str(tiny_model_dir), "--steps", "1", "--threads", "1"]) == 0
    assert "sr3infer: wrote clip_x2.mp4: 16 frames, 32x24 at 24 fps, audio aac copied" in capsys.readouterr().err
    assert len(read_video(out)["frames"]) == 16
    assert cli.main([str(clip), "-o", str(out), "--model", str(tiny_model_dir)]) == 1  # exists: a runtime failure
    assert "already exists; pass --overwrite" in capsys.readouterr().err
    assert cli.main([str(clip), "-o", str(tmp_path / "x.png"), "--model", str(tiny_model_dir)]) == 2
    result = tiny_upscaler.upscale_video([frame(0), frame(0)], tmp_path / "api.mkv", fps=24, progress=False,
                                         num_steps=1, codec="ffv1")
    assert result.frames == 2 and result.size == (32, 24)
