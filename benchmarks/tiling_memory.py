"""Peak memory of tiled upscaling against image size: it should stay bounded, set by the tile batch.

Each case runs in a fresh subprocess, so its peak is its own. On CPU the peak is the rise of the
process's maximum resident set size (`resource.getrusage(...).ru_maxrss`) from just before
`upscale_tensor` to just after; tracemalloc cannot see torch's allocator. On CUDA it is
`torch.cuda.max_memory_allocated()` over the call, minus what was allocated before it.

The model has the `sr3-64-256` architecture (x4, 64 -> 256, the same config.json the trained weights
use) with random weights unless `--model` names real ones: memory and time do not depend on the
values of the weights. Few steps (default 2) are enough, since every step is the same work.

    python benchmarks/tiling_memory.py                      # 64, 128, 256, 512 px inputs, tiled, + untiled small cases
    python benchmarks/tiling_memory.py --sizes 64 128 --untiled-sizes 64 128 --steps 1
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"

# The sr3-64-256 architecture (as in its config.json); used when --model is not given.
SR3_64_256 = {
    "scale": 4, "lowres_size": 64, "prediction": "v", "residual": True,
    "unet": {"in_channels": 6, "out_channels": 3, "inner_channel": 32, "channel_mults": [1, 2, 4, 4],
             "num_res_blocks": 1, "attn_resolutions": [], "dropout": 0.0, "norm_groups": 16, "image_size": 256},
    "schedule": {"kind": "linear", "num_steps": 2000, "beta_start": 1e-6, "beta_end": 1e-2},
}


def _rss_mib() -> float:
    """Peak resident set size of this process so far, in MiB (ru_maxrss is KiB on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024


def child(args: argparse.Namespace) -> None:
    """One case in this (fresh) process; prints one JSON line."""
    import torch

    from sr3infer.models.config import ModelConfig
    from sr3infer.upscaler import Upscaler
    from sr3infer.models.weights import build_model

    torch.set_num_threads(args.threads)
    if args.model:
        upscaler = Upscaler.from_pretrained(args.model, device=args.device, torch_dtype="fp32")
    else:
        config = ModelConfig.from_dict(SR3_64_256)
        torch.manual_seed(0)
        upscaler = Upscaler(config, build_model(config), device=args.device, torch_dtype="fp32")
    size = args.child
    lowres = torch.rand(1, 3, size, size, generator=torch.Generator().manual_seed(0)) * 2 - 1
    out_size = size * upscaler.config.scale
    tile_size = args.tile if args.tiled else 0
    plan = upscaler.tile_plan((out_size, out_size), tile_size, args.tile_overlap)
    tiles = 1
    if plan is not None:
        from sr3infer.sampling.tiling import tile_spans

        tiles = len(tile_spans(out_size, plan[0], plan[1], upscaler.config.scale)) ** 2
    cuda = upscaler.device.type == "cuda"
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated() / 2**20
    else:
        before = _rss_mib()
    started = time.perf_counter()
    out = upscaler.upscale_tensor(lowres, num_steps=args.steps, sampler="ddim", num_samples=1, progress=False,
                                  generator=torch.Generator().manual_seed(0), tile_size=tile_size,
                                  tile_overlap=args.tile_overlap, tile_batch_size=args.tile_batch_size)
    if cuda:
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated() / 2**20 - before
    else:
        peak = _rss_mib() - before
    seconds = time.perf_counter() - started
    assert out.shape[-1] == out_size
    print(json.dumps({
        "input": f"{size}x{size}", "output": f"{out_size}x{out_size}", "tiled": plan is not None,
        "tile": plan[0] if plan else None, "overlap": plan[1] if plan else None, "tiles_per_step": tiles,
        "tile_batch_size": args.tile_batch_size if plan else 1, "steps": args.steps,
        "peak_mib": round(peak, 1), "image_buffer_mib": round(3 * out_size * out_size * 4 / 2**20, 1),
        "seconds": round(seconds, 1),
    }))


def run_case(size: int, tiled: bool, args: argparse.Namespace) -> dict:
    command = [sys.executable, __file__, "--child", str(size), "--steps", str(args.steps), "--tile", str(args.tile),
               "--tile-batch-size", str(args.tile_batch_size), "--threads", str(args.threads), "--device", args.device]
    if args.tile_overlap is not None:
        command += ["--tile-overlap", str(args.tile_overlap)]
    if args.model:
        command += ["--model", args.model]
    if tiled:
        command.append("--tiled")
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads))
    done = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"case {size} px (tiled={tiled}) failed:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="*", default=[64, 128, 256, 512], help="input sides, tiled")
    parser.add_argument("--untiled-sizes", type=int, nargs="*", default=[64, 128, 256],
                        help="input sides run whole, for comparison (untiled 512 px needs ~20 GB: leave it out)")
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--tile", type=int, default=256, help="tile side in output pixels")
    parser.add_argument("--tile-overlap", type=int, default=None, help="default: a quarter of the tile")
    parser.add_argument("--tile-batch-size", type=int, default=4)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--model", help="model name or folder (default: random weights, sr3-64-256 architecture)")
    parser.add_argument("--output", type=Path, help="JSON path (default benchmarks/results/tiling_memory_<device>.json)")
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--tiled", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        child(args)
        return
    output = args.output or RESULTS / f"tiling_memory_{args.device.split(':')[0]}.json"
    rows: list[dict] = []
    cases = [(size, True) for size in args.sizes] + [(size, False) for size in args.untiled_sizes]
    for size, tiled in cases:
        rows.append(run_case(size, tiled, args))
        print(json.dumps(rows[-1]), file=sys.stderr)
        write_report(rows, args, output)  # after every case, so an interrupted run keeps what it measured
    print_table(rows, args.device)
    print(f"wrote {output}")


def write_report(rows: list[dict], args: argparse.Namespace, output: Path) -> None:
    import torch

    report = {
        "what": f"{_unit(args.device)} (MiB) of one upscale_tensor call, each case in a fresh process",
        "device": args.device, "torch": torch.__version__, "machine": platform.machine(),
        "cpu_count": os.cpu_count(), "threads": args.threads,
        "model": args.model or "random weights, sr3-64-256 architecture", "sampler": "ddim", "rows": rows,
    }
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(report, indent=2) + "\n")


def _unit(device: str) -> str:
    return "peak RSS rise" if device == "cpu" else "peak allocated"


def print_table(rows: list[dict], device: str) -> None:
    print(f"{'input':>9} {'output':>11} {'tiled':>5} {'tiles/step':>10} {_unit(device) + ' MiB':>20} "
          f"{'image MiB':>9} {'s':>7}")
    for r in rows:
        print(f"{r['input']:>9} {r['output']:>11} {str(r['tiled']):>5} {r['tiles_per_step']:>10} "
              f"{r['peak_mib']:>20.1f} {r['image_buffer_mib']:>9.1f} {r['seconds']:>7.1f}")


if __name__ == "__main__":
    main()
