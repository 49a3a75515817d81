"""Peak CPU memory per output pixel: the numbers behind `sr3infer.size_guard`' memory model.

`limits.estimate_run` prices a run as `pixels * STATE_BYTES_PER_PIXEL` (the sampler's state: x, the
condition, the U-Net input and output, x0, noise, temporaries) plus `U-Net pixels *
UNET_MAPS_PER_CHANNEL * inner_channel * element size` (the U-Net's activations). This program
measures both for the bundled models, and checks the sum against whole `upscale_tensor` calls:

- state: an untiled `upscale_tensor` call with the U-Net swapped for a stub that returns zeros, so
  only the sampler, the denoiser wrapper, the condition and the input stack allocate; bytes per output
  pixel. Untiled, this includes the U-Net's input (the 6-channel concatenation and its channels_last
  copy, 48 B per pixel), which `estimate_run` counts with the U-Net call.
- tiled_state: the same, tiled (256 px tiles, first model only): the U-Net inputs are per tile call
  and the marginal bytes per pixel between two sizes are the per-image state `STATE_BYTES_PER_PIXEL` prices.
- unet: one fp32 U-Net forward (inference mode, channels_last input already allocated); peak bytes per
  pixel divided by `inner_channel * 4`, i.e. in feature maps of `inner_channel` channels.
- call: a real untiled `upscale_tensor` call, measured peak beside `Upscaler.estimate(...).peak_bytes`.

Each case runs in a fresh process with one thread. The peak is the process's high-water resident
set (VmHWM), reset just before the measured call (`/proc/self/clear_refs`, Linux only), minus the
resident set just before it; glibc is told to mmap every block over 128 KiB so that freed tensors
leave the resident set instead of hiding later allocations.

    python benchmarks/memory_per_pixel.py                 # ~2-3 min on one loaded core
    python benchmarks/memory_per_pixel.py --unet-sizes 128 256 --state-sizes 512
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
MODELS = ("sr3-64-256", "sr3-face-8x")
SAMPLERS = ("ancestral", "ddim", "dpmpp_2m")


def _rss_kib(field: str) -> int:
    status = Path("/proc/self/status").read_text()
    return int(re.search(rf"{field}:\s+(\d+) kB", status).group(1))


def _measure(call) -> tuple[object, int, float]:
    """Run `call()`; return its result, the peak rise of the resident set in bytes, and the seconds."""
    Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to the current resident set
    before = _rss_kib("VmRSS")
    started = time.perf_counter()
    result = call()
    seconds = time.perf_counter() - started
    return result, (_rss_kib("VmHWM") - before) * 1024, seconds


def child(spec: dict) -> dict:
    """One case in this (fresh) process."""
    import torch

    from sr3infer.upscaler import Upscaler

    torch.set_num_threads(1)
    upscaler = Upscaler.from_pretrained(str(REPO / "sr3infer" / "bundled" / spec["model"]), device="cpu",
                                        torch_dtype="fp32")
    config = upscaler.config
    side = spec["size"]
    row = {"kind": spec["kind"], "model": spec["model"], "output": f"{side}x{side}", "pixels": side * side}
    if spec["kind"] == "unet":
        inputs = torch.randn(1, config.network.in_channels, side, side).contiguous(memory_format=torch.channels_last)
        noise_level = torch.full((1,), 0.5)
        with torch.inference_mode():
            out, peak, seconds = _measure(lambda: upscaler.model(inputs, noise_level))
        del out
        per_pixel = peak / (side * side)
        row.update(peak_mib=round(peak / 2**20, 1), bytes_per_pixel=round(per_pixel, 1),
                   maps_per_channel=round(per_pixel / (config.network.inner_channel * 4), 1), seconds=round(seconds, 2))
        return row
    lowres = torch.rand(1, 3, side // config.scale, side // config.scale,
                        generator=torch.Generator().manual_seed(0)) * 2 - 1
    if spec["kind"] in ("state", "tiled_state"):
        out_channels = config.network.out_channels

        def stub(inputs, noise_level):  # stands in for the U-Net: allocates only its output
            return torch.zeros(inputs.shape[0], out_channels, *inputs.shape[-2:], dtype=inputs.dtype)

        upscaler.fast_path = stub
    options = dict(num_steps=spec["steps"], sampler=spec["sampler"], consistency="every", tile_size=spec.get("tile", 0),
                   num_samples=1, progress=False, generator=torch.Generator().manual_seed(0))
    out, peak, seconds = _measure(lambda: upscaler.upscale_tensor(lowres, **options))
    assert out.shape[-1] == side
    row.update(sampler=spec["sampler"], steps=spec["steps"], peak_mib=round(peak / 2**20, 1),
               bytes_per_pixel=round(peak / (side * side), 1), seconds=round(seconds, 2))
    if spec["kind"] == "call":
        estimate = upscaler.estimate(tuple(lowres.shape[-2:]), num_steps=spec["steps"], tile_size=0).peak_bytes
        row.update(estimate_mib=round(estimate / 2**20, 1), estimate_over_measured=round(estimate / peak, 2))
    return row


def run_case(spec: dict) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1",
               MALLOC_MMAP_THRESHOLD_="131072", MALLOC_TRIM_THRESHOLD_="131072")
    done = subprocess.run([sys.executable, __file__, "--child", json.dumps(spec)], capture_output=True, text=True,
                          env=env, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"case {spec} failed:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def summarise(rows: list[dict]) -> dict:
    """The ranges the constants in sr3infer/size_guard.py are checked against."""
    import torch

    from sr3infer import size_guard as limits

    state = [r["bytes_per_pixel"] for r in rows if r["kind"] in ("state", "tiled_state")]
    maps = [r["maps_per_channel"] for r in rows if r["kind"] == "unet"]
    marginal = {}  # per pixel between the smallest and the largest size of a case: fixed overheads cancel
    for key in sorted({(r["kind"], r["model"], r.get("sampler", "")) for r in rows if r["kind"] != "call"}):
        same = sorted((r for r in rows if (r["kind"], r["model"], r.get("sampler", "")) == key),
                      key=lambda r: r["pixels"])
        if len(same) > 1:
            first, last = same[0], same[-1]
            slope = (last["peak_mib"] - first["peak_mib"]) * 2**20 / (last["pixels"] - first["pixels"])
            marginal[" ".join(filter(None, key))] = round(slope, 1)
    ratios = [r["estimate_over_measured"] for r in rows if r["kind"] == "call"]
    return {
        "state_bytes_per_pixel": [min(state), max(state)] if state else None,
        "STATE_BYTES_PER_PIXEL": limits.STATE_BYTES_PER_PIXEL,
        "unet_maps_per_channel": [min(maps), max(maps)] if maps else None,
        "UNET_MAPS_PER_CHANNEL": limits.UNET_MAPS_PER_CHANNEL,
        "estimate_over_measured": [min(ratios), max(ratios)] if ratios else None,
        "marginal_bytes_per_pixel": marginal,
        # What the constants bound: the per-image state is the tiled marginal (untiled runs add the U-Net's
        # input, 48 B per pixel, which estimate_run counts with the U-Net call); the U-Net maps per channel.
        "state_constant_covers_tiled_marginal": all(v <= limits.STATE_BYTES_PER_PIXEL for k, v in marginal.items()
                                                    if k.startswith("tiled_state")) if marginal else None,
        "unet_constant_covers_measured_maps": max(maps) <= limits.UNET_MAPS_PER_CHANNEL if maps else None,
        "torch": torch.__version__,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="*", default=list(MODELS))
    parser.add_argument("--state-sizes", type=int, nargs="*", default=[512, 1024], help="output sides, stub U-Net")
    parser.add_argument("--unet-sizes", type=int, nargs="*", default=[128, 256, 512], help="U-Net input sides")
    parser.add_argument("--tiled-sizes", type=int, nargs="*", default=[1024, 1536],
                        help="output sides, stub U-Net, 256 px tiles, first model, ancestral and ddim")
    parser.add_argument("--call-sizes", type=int, nargs="*", default=[256], help="output sides, whole calls")
    parser.add_argument("--steps", type=int, default=3, help="steps of the sampler cases (dpmpp_2m keeps history from 2)")
    parser.add_argument("--output", type=Path, default=RESULTS / "memory_per_pixel.json")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        print(json.dumps(child(json.loads(args.child))))
        return
    if not Path("/proc/self/clear_refs").exists():
        sys.exit("This benchmark reads Linux's /proc/self/status and resets its peak through /proc/self/clear_refs.")
    specs = []
    for model in args.models:
        specs += [{"kind": "state", "model": model, "size": s, "sampler": sampler, "steps": args.steps}
                  for s in args.state_sizes for sampler in SAMPLERS]
        specs += [{"kind": "unet", "model": model, "size": s} for s in args.unet_sizes]
        specs += [{"kind": "call", "model": model, "size": s, "sampler": "ddim", "steps": 2} for s in args.call_sizes]
    specs += [{"kind": "tiled_state", "model": args.models[0], "size": s, "sampler": sampler, "steps": args.steps,
               "tile": 256} for s in args.tiled_sizes for sampler in ("ancestral", "ddim")]
    rows = []
    for spec in specs:
        rows.append(run_case(spec))
        print(json.dumps(rows[-1]), file=sys.stderr)
    report = {
        "what": "peak resident-set rise per output pixel of the sampler state (stub U-Net), of one fp32 U-Net "
                "forward (also in inner_channel feature maps) and of whole untiled upscale_tensor calls beside "
                "limits.estimate_run; each case in a fresh process, 1 thread, consistency='every'",
        "machine": platform.machine(), "cpu_count": os.cpu_count(), "threads": 1,
        "summary": summarise(rows), "rows": rows,
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(report, indent=2) + "\n")
    print_table(rows, report["summary"])
    print(f"wrote {args.output}")


def print_table(rows: list[dict], summary: dict) -> None:
    print(f"{'kind':>11} {'model':>12} {'output':>10} {'sampler':>9} {'peak MiB':>9} {'B/pixel':>8} "
          f"{'maps/ch':>7} {'estimate MiB':>12} {'s':>6}")
    for r in rows:
        print(f"{r['kind']:>11} {r['model']:>12} {r['output']:>10} {r.get('sampler', '-'):>9} {r['peak_mib']:>9.1f} "
              f"{r['bytes_per_pixel']:>8.1f} {r.get('maps_per_channel', '-'):>7} {r.get('estimate_mib', '-'):>12} "
              f"{r['seconds']:>6.1f}")
    print(f"state bytes/pixel {summary['state_bytes_per_pixel']} (STATE_BYTES_PER_PIXEL = "
          f"{summary['STATE_BYTES_PER_PIXEL']}); U-Net maps/channel {summary['unet_maps_per_channel']} "
          f"(UNET_MAPS_PER_CHANNEL = {summary['UNET_MAPS_PER_CHANNEL']}); estimate/measured "
          f"{summary['estimate_over_measured']}")
    for case, slope in summary["marginal_bytes_per_pixel"].items():
        print(f"marginal bytes/pixel, {case}: {slope}")
    print(f"STATE_BYTES_PER_PIXEL covers the tiled marginal: {summary['state_constant_covers_tiled_marginal']}; "
          f"UNET_MAPS_PER_CHANNEL covers the measured maps: {summary['unet_constant_covers_measured_maps']}")


if __name__ == "__main__":
    main()
