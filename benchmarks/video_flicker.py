"""Temporal stability and memory of `sr3infer.video.upscale_video` on a slow pan across a val photo.

The clip: a val photo (default the castle of ../shared/datasets/natural/val) reduced 4x (antialiased bicubic, so
its 160x120 windows look like the low-resolution photos the model was trained on), and a 160x120 window moving
1 px to the right per frame, 24 fps, with a 440 Hz sine as its audio (AAC). The flicker clip is 2 s, lossless
(FFV1 in .mkv) in and out, so that only the model changes the pixels.

Flicker of a clip = mean over frames t of mean |frame[t+1] - frame[t]| in 8-bit levels; the number reported is
that of the upscaled clip minus that of the bicubic-upscaled clip (the model's own conditioning,
`sr3infer.images.resample.bicubic`, rounded to 8 bits), for the same seed on every frame ("fixed") and seed + i on frame
i ("fresh"). Because the pan moves exactly 4 output pixels per frame, the same is also reported after undoing
the pan (frame[t+1][:, x] against frame[t][:, x + 4], 16 px margins left out): "pan-compensated", where the
bicubic clip's own change is near 0 and what remains is the model's instability.

Peak memory: each run is its own subprocess, which reports its resident set size after loading the model
(VmRSS), the high-water mark of its resident set size during the video run alone (VmHWM, reset after the model
is loaded; Linux), and the resident size left after each frame (first, last, max, every 24th). sr3-64-256 takes
7-19 s per 640x480 frame on one CPU thread (1 step), so a 20 s clip (480 frames) would take 1 to 2.5 hours:
memory against clip length is measured with a tiny random model of the same scale and tiling (x4, 64 -> 256 px
tiles, 640x480 output, H.264 in .mp4 + AAC copied) at 2 s and 20 s, and sr3-64-256's own peak at 2 s comes from
its flicker runs.

Every run: one torch thread, FFmpeg encoders on one thread, the model's default recipe (for sr3-64-256: DDIM,
1 step, consistency "every") unless --steps / --sampler say otherwise.

    nice -n 10 python benchmarks/video_flicker.py              # ~20 min on one free CPU thread
    nice -n 10 python benchmarks/video_flicker.py --sampler ancestral --steps 2 --seconds 1 --memory-seconds \
        --output benchmarks/results/video_flicker_ancestral2.json   # a sampler that draws noise at every step
    python benchmarks/video_flicker.py --model tiny-x4 --seconds 0.25 --memory-seconds 0.25 --output /tmp/q.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
PHOTO = REPO.parent / "shared" / "datasets" / "natural" / "val" / "palapeli-data__castle-maintenon.jpg"
RESULTS = REPO / "benchmarks" / "results"
FPS, WIDTH, HEIGHT, REDUCE, SAMPLE_RATE = 24, 160, 120, 4, 44100

# A random model of sr3-64-256's scale and tiling, tiny and fast: memory against clip length, not quality.
TINY_X4 = dict(inner_channel=8, channel_mults=(1, 1, 1, 1), num_res_blocks=1, attn_resolutions=(), norm_groups=4,
               image_size=256)


def _status_mib(field: str) -> float:
    """VmRSS (resident now) or VmHWM (its high-water mark) of this process image, from /proc/self/status.

    Not `ru_maxrss`: a child's ru_maxrss starts from its parent's resident size at fork, so it would count the
    parent's frames. VmHWM belongs to the process image exec made, and writing 5 to /proc/self/clear_refs resets it.
    """
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024  # kB
    raise SystemExit(f"no {field} in /proc/self/status: this benchmark's memory measure needs Linux")


def _reset_peak() -> None:
    Path("/proc/self/clear_refs").write_text("5")


# The clip.

def pan_frames(photo: Path, count: int) -> np.ndarray:
    """`count` 160x120 windows of the 4x-reduced photo, moving 1 px right per frame (back and forth at the edges)."""
    from PIL import Image

    image = Image.open(photo).convert("RGB")
    small = np.asarray(image.resize((image.width // REDUCE, image.height // REDUCE), Image.BICUBIC))
    span = small.shape[1] - WIDTH
    top = (small.shape[0] - HEIGHT) // 2
    if span < 1 or top < 0:
        raise SystemExit(f"{photo} reduced {REDUCE}x is {small.shape[1]}x{small.shape[0]}; it needs to be wider "
                         f"than {WIDTH} and at least {HEIGHT} high")
    lefts = [t % (2 * span) if t % (2 * span) <= span else 2 * span - t % (2 * span) for t in range(count)]
    return np.stack([small[top : top + HEIGHT, x : x + WIDTH] for x in lefts])


def write_clip(path: Path, frames: np.ndarray, lossless: bool) -> None:
    """frames as FFV1 (lossless RGB) or H.264, 24 fps, with a 440 Hz sine track as AAC."""
    import av

    with av.open(str(path), "w") as out:
        video = out.add_stream("ffv1" if lossless else "libx264", rate=FPS)
        video.width, video.height, video.pix_fmt = WIDTH, HEIGHT, "bgr0" if lossless else "yuv420p"
        video.options = {"threads": "1"}
        audio = out.add_stream("aac", rate=SAMPLE_RATE)
        audio.layout = "mono"
        t = np.arange(round(SAMPLE_RATE * len(frames) / FPS)) / SAMPLE_RATE
        tone = av.AudioFrame.from_ndarray((0.2 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)[None], format="fltp",
                                          layout="mono")
        tone.sample_rate = SAMPLE_RATE
        for packet in audio.encode(tone):
            out.mux(packet)
        for packet in audio.encode(None):
            out.mux(packet)
        for frame in frames:
            for packet in video.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                out.mux(packet)
        for packet in video.encode(None):
            out.mux(packet)


def read_clip(path: Path) -> tuple[np.ndarray, dict]:
    """All frames (N, H, W, 3) uint8 and what the file says (rate, time base, size, audio codecs)."""
    import av

    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        info = {"average_rate": str(stream.average_rate), "time_base": str(stream.time_base),
                "size": [stream.codec_context.width, stream.codec_context.height],
                "audio": [a.codec_context.name for a in container.streams.audio]}
        frames = np.stack([f.to_ndarray(format="rgb24") for f in container.decode(stream)])
    info["frames"] = len(frames)
    with av.open(str(path)) as container:  # the audio's length, from its decoded samples
        info["audio_seconds"] = [round(sum(f.samples for f in container.decode(a)) / a.rate, 3)
                                 for a in container.streams.audio]
    return frames, info


# The measures.

def flicker(frames: np.ndarray) -> float:
    """Mean over t of mean |frame[t+1] - frame[t]|, 8-bit levels."""
    f = frames.astype(np.float32)
    return float(np.abs(f[1:] - f[:-1]).mean())


def pan_flicker(frames: np.ndarray, shift: int, margin: int = 16) -> float:
    """The same after undoing a pan of `shift` px per frame to the right: frame[t+1][:, x] against
    frame[t][:, x + shift]."""
    f = frames.astype(np.float32)
    width = f.shape[2]
    later, earlier = f[1:, :, : width - shift], f[:-1, :, shift:]
    return float(np.abs(later - earlier)[:, margin:-margin, margin:-margin].mean())


def bicubic_clip(frames: np.ndarray, scale: int) -> np.ndarray:
    import torch

    from sr3infer.images.resample import bicubic

    x = torch.from_numpy(frames).permute(0, 3, 1, 2).float() / 127.5 - 1
    up = bicubic(x, (frames.shape[1] * scale, frames.shape[2] * scale)).clamp(-1, 1)
    return ((up + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()


# One run, in its own process.

def child(spec: dict) -> dict:
    import torch

    torch.set_num_threads(1)
    from sr3infer.upscaler import Upscaler
    from sr3infer.video import upscale_video

    if spec["model"] == "tiny-x4":
        from sr3infer.models.config import ModelConfig, Recipe
        from sr3infer.sampling.schedule import NoiseSchedule
        from sr3infer.models.unet import UNetConfig
        from sr3infer.models.weights import build_model

        config = ModelConfig(network=UNetConfig(**TINY_X4), schedule=NoiseSchedule(), scale=4, lowres_size=64,
                             sampling=Recipe(sampler="ddim", num_steps=1), task={"untrained": True})
        torch.manual_seed(0)
        upscaler = Upscaler(config, build_model(config), device="cpu")
    else:
        upscaler = Upscaler.from_pretrained(spec["model"], device="cpu")
    loaded, load_peak = _status_mib("VmRSS"), _status_mib("VmHWM")
    _reset_peak()  # from here VmHWM is the peak of the video run alone
    options = {key: spec[key] for key in ("num_steps", "sampler") if spec.get(key)}
    upscale, resident = upscaler.upscale, []

    def upscale_and_measure(*args, **kwargs):  # the resident size left after each frame: does it grow with length?
        out = upscale(*args, **kwargs)
        resident.append(_status_mib("VmRSS"))
        return out

    upscaler.upscale = upscale_and_measure
    result = upscale_video(upscaler, spec["source"], spec["output"], seed=0, fresh_noise=spec["fresh_noise"],
                           overwrite=True, progress=False, codec=spec.get("codec"),
                           codec_options=spec.get("codec_options"), **options)
    return {"frames": result.frames, "fps": str(result.fps), "size": list(result.size), "audio": list(result.audio),
            "seconds": round(result.seconds, 1), "seconds_per_frame": round(result.seconds / result.frames, 2),
            "rss_after_load_mib": round(loaded, 1), "rss_peak_while_loading_mib": round(load_peak, 1),
            "rss_peak_mib": round(_status_mib("VmHWM"), 1),
            "rss_after_frame_mib": {"first": round(resident[0], 1), "last": round(resident[-1], 1),
                                    "max": round(max(resident), 1),
                                    "every_24th": [round(r, 1) for r in resident[::24]]},
            "recipe": str(upscaler.sampling_recipe(None, None, **options)), "dtype": str(upscaler.dtype)}


def run_child(spec: dict) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONPATH=str(REPO))
    done = subprocess.run([sys.executable, __file__, "--child", json.dumps(spec)], env=env, capture_output=True,
                          text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"run {spec} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photo", type=Path, default=PHOTO)
    parser.add_argument("--model", default="sr3-64-256")
    parser.add_argument("--seconds", type=float, default=2.0, help="length of the flicker clip")
    parser.add_argument("--memory-seconds", type=float, nargs="*", default=[2.0, 20.0],
                        help="clip lengths of the tiny-model memory runs")
    parser.add_argument("--steps", type=int, default=None, help="denoising steps (default: the model's recipe)")
    parser.add_argument("--sampler", default=None, help="sampler, e.g. ancestral (default: the model's recipe)")
    parser.add_argument("--output", type=Path, default=RESULTS / "video_flicker.json")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(json.loads(args.child))))
        return

    started = time.time()
    results: dict = {"photo": str(args.photo.relative_to(REPO.parent)) if args.photo.is_relative_to(REPO.parent)
                     else str(args.photo), "clip": f"{WIDTH}x{HEIGHT}, {FPS} fps, pan 1 px/frame, 440 Hz AAC audio",
                     "model": args.model, "steps": args.steps, "sampler": args.sampler,
                     "machine": platform.processor() or platform.machine(),
                     "torch_threads": 1, "flicker": {}, "memory": {}}
    with tempfile.TemporaryDirectory(prefix="video_flicker.") as tmp:
        tmp_dir = Path(tmp)
        count = round(args.seconds * FPS)
        frames = pan_frames(args.photo, count)
        source = tmp_dir / "pan.mkv"
        write_clip(source, frames, lossless=True)
        decoded, source_info = read_clip(source)
        assert np.array_equal(decoded, frames), "the lossless source clip does not decode to its frames"
        scale = 4
        reference = bicubic_clip(frames, scale)
        base = {"bicubic": {"flicker": round(flicker(reference), 3),
                            "pan_compensated": round(pan_flicker(reference, scale), 3)}}
        results["flicker"] = {"frames": count, "seconds": args.seconds, "source": source_info, **base}
        bic = base["bicubic"]
        print(f"bicubic: flicker {bic['flicker']:.3f}, pan-compensated {bic['pan_compensated']:.3f}", flush=True)
        for mode, fresh in (("fixed", False), ("fresh", True)):
            output = tmp_dir / f"pan_{mode}.mkv"
            run = run_child({"model": args.model, "source": str(source), "output": str(output), "fresh_noise": fresh,
                             "num_steps": args.steps, "sampler": args.sampler, "codec": "ffv1",
                             "codec_options": {"threads": "1"}})
            upscaled, info = read_clip(output)
            raw, compensated = flicker(upscaled), pan_flicker(upscaled, scale)
            results["flicker"][mode] = {
                "flicker": round(raw, 3), "flicker_minus_bicubic": round(raw - base["bicubic"]["flicker"], 3),
                "pan_compensated": round(compensated, 3),
                "pan_compensated_minus_bicubic": round(compensated - base["bicubic"]["pan_compensated"], 3),
                "output": info, "run": run,
            }
            print(f"{mode} noise: flicker - bicubic = {raw - bic['flicker']:.3f}, pan-compensated - bicubic "
                  f"= {compensated - bic['pan_compensated']:.3f} ({run['seconds_per_frame']} s/frame, "
                  f"peak RSS {run['rss_peak_mib']} MiB; {info['frames']} frames, {info['size']}, rate "
                  f"{info['average_rate']}, audio {info['audio']})", flush=True)
        for seconds in args.memory_seconds:
            n = round(seconds * FPS)
            clip = tmp_dir / f"memory_{n}.mp4"
            write_clip(clip, pan_frames(args.photo, n), lossless=False)
            output = tmp_dir / f"memory_{n}_x4.mp4"
            run = run_child({"model": "tiny-x4", "source": str(clip), "output": str(output), "fresh_noise": False,
                             "codec_options": {"crf": "18", "threads": "1"}})
            _, info = read_clip(output)
            results["memory"][f"{seconds:g}s"] = {"frames": n, "output": info, "run": run}
            after = run["rss_after_frame_mib"]
            print(f"tiny-x4 {seconds:g} s ({n} frames): peak RSS {run['rss_peak_mib']} MiB (after load "
                  f"{run['rss_after_load_mib']} MiB; after frame 1 {after['first']}, after the last {after['last']}), "
                  f"{run['seconds_per_frame']} s/frame, {info['frames']} frames written at {info['average_rate']} fps, "
                  f"audio {info['audio']}", flush=True)
    results["wall_minutes"] = round((time.time() - started) / 60, 1)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
