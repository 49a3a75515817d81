"""Time the SR3 U-Net per call and per upscaled image against a plain eager float32 reference; print a table, write JSON.

One command each:

    python benchmarks/unet_speed.py                  # CPU: fp32 and bf16 (a few minutes on 2 cores)
    python benchmarks/unet_speed.py --device cuda    # GPU: fp32/fp16/bf16 x eager/CUDA graphs/compile + memory

Every variant is timed round-robin in the same run as the reference (the bare U-Net in float32,
NCHW, no_grad, the math attention kernel: every optimisation off), so the speed-ups are ratios
measured side by side, and background load hits all variants alike. Models use random weights;
speed does not depend on them. Results go to benchmarks/results/unet_speed_<device>.json.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import re
import statistics
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

import torch

from sr3infer.models.config import ModelConfig
from sr3infer.models.unet import UNet
from sr3infer.upscaler import Upscaler
from sr3infer.models.weights import build_model

REPO = Path(__file__).resolve().parents[1]

# The released community 16->128 checkpoint (Janspiry SR3, sr_sr3_16_128): 97.8M parameters.
COMMUNITY_16_128: dict[str, Any] = {
    "scale": 8,
    "lowres_size": 16,
    "prediction": "eps",
    "residual": False,
    "unet": {"in_channels": 6, "out_channels": 3, "inner_channel": 64, "channel_mults": [1, 2, 4, 8, 8],
             "num_res_blocks": 2, "attn_resolutions": [16], "dropout": 0.2, "norm_groups": 32, "image_size": 128},
}
BUNDLED = {"sr3-face-8x": "training/sr3-face-8x.json", "sr3-64-256": "training/sr3-64-256.json"}
DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
LOAD_NOTE = ("This machine ran other jobs during the measurement (see load_average); absolute times are "
             "inflated and noisy. Compare the ratios to the reference, measured round-robin in the same run.")


@dataclass(frozen=True)
class Variant:
    """One way of running the U-Net call."""

    name: str
    dtype: str = "fp32"                 # weights dtype ("fp32", "fp16", "bf16")
    autocast: str | None = None         # run under torch.autocast in this dtype (weights stay fp32)
    compile: bool = False               # Upscaler.enable_compile()
    cuda_graphs: bool = False           # Upscaler.enable_cuda_graphs()
    reference: bool = False             # the bare U-Net: fp32, NCHW, no_grad, math attention
    channels_last: bool = True          # False: the bare U-Net in NCHW under inference_mode (isolates the layout)


def model_configs(names: list[str]) -> dict[str, ModelConfig]:
    """The bundled models' configs (from the training recipes) and the community 16->128 architecture."""
    configs = {}
    for name in names:
        if name == "sr3-16-128-community":
            configs[name] = ModelConfig.from_dict(COMMUNITY_16_128)
        elif name in BUNDLED:
            data = json.loads((REPO / BUNDLED[name]).read_text(encoding="utf-8"))
            configs[name] = ModelConfig.from_dict(data["model"])
        else:
            known = ", ".join([*BUNDLED, "sr3-16-128-community"])
            raise SystemExit(f"unet_speed.py: unknown model {name!r}; expected one of {known}.")
    return configs


# The machine.


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def environment(device: torch.device) -> dict[str, Any]:
    env: dict[str, Any] = {
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_name(),
        "cpu": cpu_name(),
        "cpu_count": os.cpu_count(),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "load_average_at_start": [round(v, 2) for v in os.getloadavg()],
        "date": time.strftime("%Y-%m-%d %H:%M:%S %z"),
    }
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        env.update(cuda=torch.version.cuda, cudnn=torch.backends.cudnn.version(), gpu_memory_gib=round(props.total_memory / 2**30, 1),
                   sm_count=props.multi_processor_count, cudnn_allow_tf32=torch.backends.cudnn.allow_tf32,
                   matmul_allow_tf32=torch.backends.cuda.matmul.allow_tf32, cudnn_benchmark=torch.backends.cudnn.benchmark)
    return env


def device_slug(env: dict[str, Any]) -> str:
    if env["device"].startswith("cuda"):
        return "cuda_" + re.sub(r"[^a-z0-9]+", "-", env["device_name"].lower()).strip("-")
    return "cpu"


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def matmul_rate(device: torch.device, dtype: torch.dtype, n: int, repeats: int) -> float:
    """Measured dense matmul rate in TFLOP/s: the compute limit the U-Net is compared with."""
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    a @ b
    sync(device)
    start = time.perf_counter()
    for _ in range(repeats):
        a @ b
    sync(device)
    return 2 * n**3 * repeats / (time.perf_counter() - start) / 1e12


def flops_per_call(config: ModelConfig, size: int) -> int:
    """FLOPs of one U-Net call at batch 1 (convolutions, matmuls, attention), counted on the meta device."""
    from torch.utils.flop_counter import FlopCounterMode

    with torch.device("meta"):
        model = UNet(**config.network.to_dict()).eval()
        x, level = torch.zeros(1, 2 * config.channels, size, size), torch.ones(1)
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(x, level)
    return int(counter.get_total_flops())


# Variants.


def _math_attention() -> contextlib.AbstractContextManager:
    try:
        from torch.nn.attention import SDPBackend, sdpa_kernel

        return sdpa_kernel(SDPBackend.MATH)
    except ImportError:  # torch < 2.3: the default kernels stay on
        return contextlib.nullcontext()


def autocast_for(variant: Variant, device: torch.device) -> contextlib.AbstractContextManager:
    if variant.autocast is None:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=DTYPES[variant.autocast])


def build_call(variant: Variant, config: ModelConfig, weights: dict[str, torch.Tensor], device: torch.device,
               batch: int) -> tuple[Callable[[], torch.Tensor], Upscaler | None]:
    """`(one U-Net call, its Upscaler)` for `variant` on fixed random inputs of `batch` images."""
    gen = torch.Generator().manual_seed(0)
    size = config.out_size
    with torch.inference_mode():  # as inside upscale(); compiled code is specialised on inference tensors
        cond = (torch.rand(batch, config.channels, size, size, generator=gen) * 2 - 1).to(device)
        x = torch.randn(batch, config.channels, size, size, generator=gen).to(device)
        level = torch.rand(batch, generator=gen).to(device)
    if variant.reference:
        model = build_model(config, weights).to(device)

        def reference_call() -> torch.Tensor:
            with torch.no_grad(), _math_attention():
                return model(torch.cat([cond, x], dim=1), level)

        return reference_call, None
    if not variant.channels_last:
        model = build_model(config, weights).to(device, DTYPES[variant.dtype])

        def nchw_call() -> torch.Tensor:
            with torch.inference_mode():
                return model(torch.cat([cond, x], dim=1).to(DTYPES[variant.dtype]), level)

        return nchw_call, None
    up = Upscaler(config, build_model(config, weights), device=device, torch_dtype=variant.dtype)
    if variant.compile:
        up.enable_compile()
    if variant.cuda_graphs:
        up.enable_cuda_graphs()
    denoise = up.make_denoiser(cond)

    def call() -> torch.Tensor:
        with torch.inference_mode(), autocast_for(variant, device):
            return denoise(x, level)

    return call, up


def time_round_robin(calls: dict[str, Callable[[], Any]], device: torch.device, repeats: int,
                     inner: int) -> tuple[dict[str, list[float]], dict[str, list[float]]]:
    """Wall-clock and process-CPU seconds per call for each entry, sampled in turns so that slow
    phases of background load hit all entries alike. CPU seconds (all threads) hardly change when
    other processes take turns on the cores, so on a busy machine their ratios are the steadier."""
    wall: dict[str, list[float]] = {name: [] for name in calls}
    cpu: dict[str, list[float]] = {name: [] for name in calls}
    for _ in range(repeats):
        for name, fn in calls.items():
            sync(device)
            start, start_cpu = time.perf_counter(), time.process_time()
            for _ in range(inner):
                fn()
            sync(device)
            wall[name].append((time.perf_counter() - start) / inner)
            cpu[name].append((time.process_time() - start_cpu) / inner)
    return wall, cpu


def variants_for(device: torch.device, args: argparse.Namespace, model: str) -> list[Variant]:
    ref = Variant("reference fp32 eager", reference=True)
    if device.type == "cpu":
        out = [ref, Variant("fp32 NCHW", channels_last=False), Variant("fp32"), Variant("bf16", dtype="bf16"),
               Variant("fp32 + bf16 autocast", autocast="bf16")]
        if args.compile:
            out += [Variant("fp32 compile", compile=True), Variant("bf16 compile", dtype="bf16", compile=True)]
        return out
    out = [ref]
    for dtype in args.dtypes:
        out += [Variant(f"{dtype}", dtype=dtype), Variant(f"{dtype} graphs", dtype=dtype, cuda_graphs=True)]
        if args.compile and (model in args.compile_models or "all" in args.compile_models) and dtype in args.compile_dtypes:
            out += [Variant(f"{dtype} compile", dtype=dtype, compile=True),
                    Variant(f"{dtype} compile+graphs", dtype=dtype, compile=True, cuda_graphs=True)]
    return out


def image_variants(variants: list[Variant], device: torch.device) -> list[Variant]:
    """The variants also timed end to end (per upscaled image): the library's paths, not the bare reference."""
    if device.type == "cpu":
        return [v for v in variants if not v.reference and v.channels_last]
    return [v for v in variants if not v.reference and (v.cuda_graphs or not v.compile)]


# One model at one batch size.


def measure(name: str, config: ModelConfig, batch: int, device: torch.device, args: argparse.Namespace,
            env: dict[str, Any], flops: int, peaks: dict[str, float]) -> list[dict[str, Any]]:
    torch.manual_seed(0)
    weights = build_model(config).state_dict()
    variants = variants_for(device, args, name)
    calls: dict[str, Callable[[], Any]] = {}
    images: dict[str, Callable[[], Any]] = {}
    info: dict[str, dict[str, Any]] = {}
    want_images = {v.name for v in image_variants(variants, device)}
    for variant in variants:
        sync(device)
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device) if device.type == "cuda" else 0
        call, up = build_call(variant, config, weights, device, batch)
        start = time.perf_counter()
        try:
            for _ in range(args.warmup):
                call()
            sync(device)
        except Exception as err:  # noqa: BLE001 - report the variant as failed, go on with the rest
            info[variant.name] = {"error": f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"}
            print(f"  {variant.name}: FAILED ({info[variant.name]['error']})", flush=True)
            continue
        record: dict[str, Any] = {"warmup_s": round(time.perf_counter() - start, 3)}
        if device.type == "cuda":
            record["peak_mem_mib"] = round((torch.cuda.max_memory_allocated(device) - before) / 2**20, 1)
        if up is not None:
            record["compile_active"] = up.fast_path.compile_active if variant.compile else None
            record["cuda_graphs_active"] = up.fast_path.cuda_graphs_active if variant.cuda_graphs else None
        info[variant.name] = record
        calls[variant.name] = call
        if variant.name in want_images and up is not None:
            lowres = torch.rand(batch, config.channels, config.lowres_size, config.lowres_size,
                                generator=torch.Generator().manual_seed(1)) * 2 - 1

            def upscale(up: Upscaler = up, lowres: torch.Tensor = lowres, variant: Variant = variant) -> torch.Tensor:
                with autocast_for(variant, device):
                    return up.upscale_tensor(lowres, num_steps=args.image_steps, sampler="ddim", num_samples=1,
                                             progress=False, generator=torch.Generator().manual_seed(2)).cpu()

            up.upscale_tensor(lowres, num_steps=1, sampler="ddim", num_samples=1, progress=False)  # first-call cost
            images[variant.name] = upscale
    print(f"  timing {len(calls)} variants x {args.repeats} rounds ...", flush=True)
    load_before = os.getloadavg()[0]
    call_times, call_cpu = time_round_robin(calls, device, args.repeats, args.inner)
    image_times, image_cpu = time_round_robin(images, device, args.image_repeats, 1) if args.image_steps > 0 else ({}, {})
    load_after = os.getloadavg()[0]
    ref_name = next(v.name for v in variants if v.reference)
    ref_median = statistics.median(call_times[ref_name]) if ref_name in call_times else None
    ref_min = min(call_times[ref_name]) if ref_name in call_times else None
    ref_cpu = statistics.median(call_cpu[ref_name]) if ref_name in call_cpu else None
    fp32_image = statistics.median(image_times["fp32"]) if "fp32" in image_times else None
    fp32_image_cpu = statistics.median(image_cpu["fp32"]) if "fp32" in image_cpu else None
    records = []
    for variant in variants:
        record: dict[str, Any] = {
            "model": name, "batch": batch, "variant": variant.name,
            **{k: v for k, v in asdict(variant).items() if k != "name"},
            "device_name": env["device_name"], "torch": env["torch"], "threads": env["threads"],
            "load_average_1min": [round(load_before, 2), round(load_after, 2)], **info.get(variant.name, {}),
        }
        if variant.name in call_times:
            t = call_times[variant.name]
            median = statistics.median(t)
            record.update(
                call_s_median=round(median, 5), call_s_min=round(min(t), 5), call_s_all=[round(v, 5) for v in t],
                speedup_vs_reference=round(ref_median / median, 3) if ref_median else None,
                speedup_vs_reference_min=round(ref_min / min(t), 3) if ref_min else None,
                call_cpu_s_median=round(statistics.median(call_cpu[variant.name]), 5),
                speedup_vs_reference_cpu=round(ref_cpu / statistics.median(call_cpu[variant.name]), 3) if ref_cpu else None,
                tflops=round(flops * batch / median / 1e12, 4),
            )
            peak = peaks.get(peak_key(variant, device))
            if peak:
                record["fraction_of_matmul_peak"] = round(flops * batch / median / 1e12 / peak, 4)
        if variant.name in image_times:
            t = image_times[variant.name]
            median = statistics.median(t)
            record.update(
                image_steps=args.image_steps, image_sampler="ddim",
                upscale_s_median=round(median, 4), per_image_s=round(median / batch, 4),
                images_per_s=round(batch / median, 3),
                image_speedup_vs_fp32=round(fp32_image / median, 3) if fp32_image else None,
                upscale_cpu_s_median=round(statistics.median(image_cpu[variant.name]), 4),
                image_speedup_vs_fp32_cpu=(round(fp32_image_cpu / statistics.median(image_cpu[variant.name]), 3)
                                           if fp32_image_cpu else None),
                image_tflops=round(flops * batch * args.image_steps / median / 1e12, 4),
            )
            peak = peaks.get(peak_key(variant, device))
            if peak:
                record["image_fraction_of_matmul_peak"] = round(flops * batch * args.image_steps / median / 1e12 / peak, 4)
        records.append(record)
    return records


def peak_key(variant: Variant, device: torch.device) -> str:
    """Which measured matmul rate bounds this variant (fp32 convolutions use TF32 on CUDA when cuDNN allows it)."""
    dtype = variant.autocast or variant.dtype
    if dtype == "fp32" and device.type == "cuda" and torch.backends.cudnn.allow_tf32:
        return "tf32"
    return dtype


EXAMPLES = {"sr3-face-8x": "examples/face_16.png", "sr3-64-256": "examples/photo_64.png"}


def time_default_upscale(name: str, device: torch.device, budget_s: float) -> dict[str, Any]:
    """One `Upscaler.from_pretrained(name).upscale(example)` with the model's own default sampler and steps.

    Needs the trained weights installed (bundled or in the Hub cache; nothing is downloaded). When
    one step times the whole run above `budget_s`, only that estimate is recorded.
    """
    from PIL import Image

    record: dict[str, Any] = {"model": name, "example": EXAMPLES[name]}
    try:
        up = Upscaler.from_pretrained(name, device=device, local_files_only=True)
    except Exception as err:  # noqa: BLE001 - not installed here: say so in the results
        return {**record, "error": f"not available here ({type(err).__name__}: {str(err).splitlines()[0]})"}
    image = Image.open(REPO / EXAMPLES[name]).convert("RGB")
    defaults = up.config.sampling
    record.update(sampler=defaults.sampler, num_steps=defaults.num_steps, num_samples=defaults.num_samples,
                  dtype=str(up.dtype),
                  threads=torch.get_num_threads())
    start = time.perf_counter()
    up.upscale(image, num_steps=1, seed=0, progress=False)  # the default's K samples of one step
    one_step = time.perf_counter() - start
    if one_step * defaults.num_steps > budget_s:
        return {**record, "estimated_s": round(one_step * defaults.num_steps, 2),
                "note": f"one step took {one_step:.2f} s; the full run would exceed the {budget_s:.0f} s budget"}
    start, start_cpu = time.perf_counter(), time.process_time()
    up.upscale(image, seed=0, progress=False)
    return {**record, "seconds": round(time.perf_counter() - start, 3),
            "cpu_seconds": round(time.process_time() - start_cpu, 3)}


def table_rows(records: list[dict[str, Any]]) -> list[list[str]]:
    """The summary table: medians, and speed-ups as median, best-of and CPU-time ratios to the reference."""
    def num(value: Any, fmt: str) -> str:
        return "-" if value is None else format(value, fmt)

    rows = [["model", "batch", "variant", "ms/call", "x ref", "x ref (min)", "x ref (CPU s)", "TFLOP/s",
             "peak MiB", "s/image", "x fp32 (image)"]]
    for r in records:
        if "call_s_median" not in r:
            rows.append([r["model"], str(r["batch"]), r["variant"], r.get("error", "not measured")] + [""] * 7)
            continue
        rows.append([
            r["model"], str(r["batch"]), r["variant"], num(r["call_s_median"] * 1e3, ".1f"),
            num(r.get("speedup_vs_reference"), ".2f"), num(r.get("speedup_vs_reference_min"), ".2f"),
            num(r.get("speedup_vs_reference_cpu"), ".2f"), num(r.get("tflops"), ".3f"), num(r.get("peak_mem_mib"), ".0f"),
            num(r.get("per_image_s"), ".3f"), num(r.get("image_speedup_vs_fp32"), ".2f"),
        ])
    return rows


def print_table(records: list[dict[str, Any]], markdown: bool = False) -> None:
    rows = table_rows(records)
    if markdown:
        for i, row in enumerate(rows):
            print("| " + " | ".join(row) + " |")
            if i == 0:
                print("|" + "|".join("---" for _ in row) + "|")
        return
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for i, row in enumerate(rows):
        print("  ".join(cell.ljust(w) if j < 3 else cell.rjust(w) for j, (cell, w) in enumerate(zip(row, widths))))
        if i == 0:
            print("-" * (sum(widths) + 2 * (len(widths) - 1)))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu", help="cpu or cuda[:N] (default cpu)")
    parser.add_argument("--models", default="sr3-16-128-community,sr3-face-8x,sr3-64-256",
                        help="comma-separated: sr3-face-8x, sr3-64-256, sr3-16-128-community")
    parser.add_argument("--batches", help="comma-separated batch sizes, e.g. 1,4 (default CPU 1,2; CUDA 1,64, "
                        "scaled down by area for outputs larger than 128 px: 1,16 at 256 px)")
    parser.add_argument("--repeats", type=int, help="timed rounds per variant (default CPU 3, CUDA 10)")
    parser.add_argument("--inner", type=int, help="calls per timed sample (default CPU 1, CUDA 5)")
    parser.add_argument("--warmup", type=int, help="untimed calls first; compile/capture happen here (default CPU 1, CUDA 2)")
    parser.add_argument("--image-steps", type=int, help="DDIM steps per timed upscale (default CPU 4, CUDA 20; 0: skip)")
    parser.add_argument("--image-repeats", type=int, help="timed upscales per variant (default CPU 1, CUDA 3)")
    parser.add_argument("--dtypes", default="fp32,fp16,bf16", help="CUDA weight dtypes to time")
    parser.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None,
                        help="include torch.compile variants (default: on for CUDA, off for CPU: minutes per shape)")
    parser.add_argument("--compile-models", default="sr3-16-128-community",
                        help="CUDA: models with compile variants ('all' for every one)")
    parser.add_argument("--compile-dtypes", default="fp16", help="CUDA: dtypes with compile variants")
    parser.add_argument("--threads", type=int, help="torch.set_num_threads (default: torch's choice)")
    parser.add_argument("--cudnn-benchmark", action="store_true", help="torch.backends.cudnn.benchmark = True for all variants")
    parser.add_argument("--quick", action="store_true", help="one batch size (1), fewer repeats: a smoke test")
    parser.add_argument("--default-upscale-budget", type=float, default=120.0,
                        help="time one upscale of an example with each trained model's default steps when it "
                        "takes less than this many seconds (0: skip)")
    parser.add_argument("--note", default="", help="free text stored in the JSON (e.g. what else ran)")
    parser.add_argument("--out", type=Path, help="JSON path (default benchmarks/results/unet_speed_<device>.json)")
    parser.add_argument("--table", type=Path, help="print the table of an existing JSON (as markdown) and exit")
    args = parser.parse_args(argv)
    if args.table:
        print_table(json.loads(args.table.read_text(encoding="utf-8"))["records"], markdown=True)
        return 0

    device = torch.device(args.device)
    cuda = device.type == "cuda"
    if cuda and not torch.cuda.is_available():
        raise SystemExit("unet_speed.py: --device cuda was given but torch.cuda.is_available() is False; use --device cpu.")
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.backends.cudnn.benchmark = args.cudnn_benchmark
    args.compile = cuda if args.compile is None else args.compile
    args.dtypes = [d for d in args.dtypes.split(",") if d]
    unknown = [d for d in args.dtypes if d not in DTYPES]
    if unknown:
        raise SystemExit(f"unet_speed.py: unknown dtypes {unknown}; expected fp32, fp16, bf16.")
    args.compile_models = args.compile_models.split(",")
    args.compile_dtypes = args.compile_dtypes.split(",")
    args.repeats = args.repeats or (10 if cuda else 3)
    args.inner = args.inner or (5 if cuda else 1)
    args.warmup = (2 if cuda else 1) if args.warmup is None else args.warmup
    args.image_steps = (20 if cuda else 4) if args.image_steps is None else args.image_steps
    args.image_repeats = args.image_repeats or (3 if cuda else 1)
    batches = [int(b) for b in (args.batches or ("1,64" if cuda else "1,2")).split(",")]
    if args.quick:
        batches, args.repeats, args.image_repeats = [1], min(args.repeats, 3), 1
    try:  # many shapes x dtypes of one forward(): keep them all compiled rather than silently eager
        import torch._dynamo.config as dynamo_config

        dynamo_config.cache_size_limit = max(dynamo_config.cache_size_limit, 64)
    except (ImportError, AttributeError):
        pass

    env = environment(device)
    out_path = args.out or REPO / "benchmarks" / "results" / f"unet_speed_{device_slug(env)}.json"
    print(f"{env['device_name']} | torch {env['torch']} | {env['threads']} threads | load {env['load_average_at_start']}", flush=True)
    peaks: dict[str, float] = {}
    n, reps = (8192, 20) if cuda else (1024, 5)
    for dtype in (args.dtypes if cuda else ["fp32", "bf16"]):
        peaks[dtype] = round(matmul_rate(device, DTYPES[dtype], n, reps), 3)
    if cuda and "fp32" in args.dtypes:
        strict = torch.backends.cuda.matmul.allow_tf32
        torch.backends.cuda.matmul.allow_tf32 = True
        peaks["tf32"] = round(matmul_rate(device, torch.float32, n, reps), 3)
        torch.backends.cuda.matmul.allow_tf32 = strict
    env["matmul_tflops"] = peaks
    print(f"matmul rate (TFLOP/s): {peaks}", flush=True)
    result: dict[str, Any] = {
        "benchmark": "unet_speed", "environment": env, "note": args.note or (LOAD_NOTE if not cuda else ""),
        "settings": {k: v for k, v in vars(args).items() if k not in ("out",)},
        "reference": "bare U-Net call in float32, NCHW, torch.no_grad, math attention kernel, no compile/graphs",
        "variants_note": ("Other variants are the library's denoiser call (Upscaler.make_denoiser: concat, dtype "
                          "casts, channels_last, eps conversion) under torch.inference_mode, so ratios include "
                          "that small overhead. 'upscale' rows time Upscaler.upscale_tensor end to end."),
        "flops_per_call_batch1": {}, "records": [],
    }
    for name, config in model_configs(args.models.split(",")).items():
        size = config.out_size
        flops = flops_per_call(config, size)
        params = sum(p.numel() for p in UNet(**config.network.to_dict()).parameters())
        result["flops_per_call_batch1"][name] = flops
        result.setdefault("parameters", {})[name] = params
        model_batches = [max(1, b * 128 * 128 // (size * size)) if cuda and size > 128 else b for b in batches]
        for batch in dict.fromkeys(model_batches):
            print(f"{name} ({params / 1e6:.1f}M params, {size}x{size}, {flops / 1e9:.1f} GFLOP/call/image), batch {batch}",
                  flush=True)
            result["records"] += measure(name, config, batch, device, args, env, flops, peaks)
            env["load_average_at_end"] = [round(v, 2) for v in os.getloadavg()]
            out_path.parent.mkdir(parents=True, exist_ok=True)
            out_path.write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")  # partial results survive a timeout
            if cuda:
                torch.cuda.empty_cache()
    if args.default_upscale_budget > 0:
        for name in [m for m in args.models.split(",") if m in EXAMPLES]:
            record = time_default_upscale(name, device, args.default_upscale_budget)
            print(f"default upscale: {record}", flush=True)
            result.setdefault("default_upscale", []).append(record)
        out_path.write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
    print()
    print_table(result["records"])
    print(f"\nwrote {out_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
