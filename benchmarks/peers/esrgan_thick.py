"""Peer benchmark: the ESRGAN "thick" RRDN of the npm package @upscalerjs/esrgan-thick beside bicubic, on the val sets
and with the metrics of `sr3infer eval` (same high-res images, same `make_lowres` 8-bit inputs, same scoring code).

    (cd benchmarks/peers && npm ci)
    python benchmarks/peers/esrgan_thick.py                        # faces (x8, 16 -> 128) and natural (x4, 64 -> 256)
    python benchmarks/peers/esrgan_thick.py --domains faces --limit 8 --no-fid

The low-res inputs are written as PNG into an ignored work folder, upscaled by run_esrgan.mjs (Node, tfjs wasm backend),
read back and scored. KID and FID are against the train+val high-res images of the same domain. Before scoring, the
package's own fixture is upscaled and compared with the result images the package ships, which checks the whole
pipeline (input range, custom layers, weights). Prints a markdown table and writes benchmarks/results/peer_esrgan_thick.json.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from sr3infer.quality import metrics
from sr3infer.images.io import write_atomically
from sr3infer.images.resample import bicubic
from sr3infer.train.data import make_lowres, to_unit_tensor
from sr3infer.train.evaluate import load_eval_set, reference_features, score_images

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent


def _unet_speed() -> Any:
    """benchmarks/unet_speed.py (for its `cpu_name`), imported from its file (the importlib docs' recipe for a
    source file): this script lives one folder below it."""
    spec = importlib.util.spec_from_file_location("benchmarks_unet_speed", HERE.parent / "unet_speed.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


cpu_name = _unet_speed().cpu_name


def save(path: Path, data: dict) -> None:
    """The result JSON, written atomically (as the other benchmarks write theirs)."""
    write_atomically(path, lambda handle: handle.write((json.dumps(data, indent=2) + "\n").encode()), overwrite=True)

PEER = "@upscalerjs/esrgan-thick"
PEER_DIR = HERE / "node_modules" / "@upscalerjs" / "esrgan-thick"
DATASETS = REPO.parent / "shared" / "datasets"
BORDER = 4  # px; the peer's zero-padded convolutions err most near the image edges (reported beside the full PSNR)


@dataclass(frozen=True)
class Domain:
    data: Path
    reference: tuple[Path, ...]
    protocol: str
    out_size: int
    scale: int


DOMAINS = {
    "faces": Domain(DATASETS / "celeba" / "val", (DATASETS / "celeba" / "train", DATASETS / "celeba" / "val"), "faces", 128, 8),
    "natural": Domain(DATASETS / "natural" / "val", (DATASETS / "natural" / "train", DATASETS / "natural" / "val"), "natural", 256, 4),
}


def shown(path: Path) -> str:
    """A path as the README and JSON show it: relative to the repository root."""
    return os.path.relpath(path, REPO)


def to_png(image: Tensor, path: Path) -> None:
    """(3, H, W) in [-1, 1] -> 8-bit RGB PNG."""
    array = ((image.clamp(-1, 1) + 1) * 127.5).round().byte().permute(1, 2, 0).numpy()
    Image.fromarray(array).save(path)


def run_peer(scale: int, inputs: Path, outputs: Path, threads: int, node: str) -> dict:
    """Upscale every PNG in `inputs` into `outputs` with run_esrgan.mjs; returns its timings.json."""
    if not PEER_DIR.is_dir():
        raise SystemExit(f"{PEER} is not installed in {shown(HERE / 'node_modules')}; run `npm ci` in {shown(HERE)} first.")
    shutil.rmtree(outputs, ignore_errors=True)
    command = [node, str(HERE / "run_esrgan.mjs"), "--scale", str(scale), "--input", str(inputs),
               "--output", str(outputs), "--threads", str(threads)]
    try:
        subprocess.run(command, check=True, cwd=HERE)
    except FileNotFoundError:
        raise SystemExit(f"Node.js ({node!r}) was not found; install Node 20 or pass --node PATH.") from None
    except subprocess.CalledProcessError as error:
        raise SystemExit(f"run_esrgan.mjs failed (exit {error.returncode}); see its message above.") from None
    return json.loads((outputs / "timings.json").read_text())


def read_outputs(folder: Path, names: list[str], size: int) -> Tensor:
    images = []
    for name in names:
        image = to_unit_tensor(Image.open(folder / name))
        if tuple(image.shape[-2:]) != (size, size):
            raise SystemExit(f"{folder / name}: expected {size}x{size}, got {image.shape[-1]}x{image.shape[-2]}.")
        images.append(image)
    return torch.stack(images)


def fixture_check(scale: int, work: Path, threads: int, node: str) -> dict:
    """Upscale the package's fixture.png and compare with the result.png it ships for this scale (8-bit levels)."""
    inputs = work / "fixture" / "lowres"
    inputs.mkdir(parents=True, exist_ok=True)
    shutil.copy(PEER_DIR / "assets" / "fixture.png", inputs / "fixture.png")
    out = work / "fixture" / f"x{scale}"
    run_peer(scale, inputs, out, threads, node)
    ours = np.asarray(Image.open(out / "fixture.png").convert("RGB"), dtype=np.int16)
    shipped = np.asarray(Image.open(PEER_DIR / "assets" / "samples" / f"{scale}x" / "result.png").convert("RGB"), dtype=np.int16)
    if ours.shape != shipped.shape:
        return {"match": False, "shape": list(ours.shape), "shipped_shape": list(shipped.shape)}
    diff = np.abs(ours - shipped)
    return {"max_abs_diff": int(diff.max()), "mean_abs_diff": float(diff.mean()), "pixels_differing": float((diff > 0).mean())}


def contact_sheet(columns: list[Tensor], path: Path, rows: int = 8) -> None:
    """Rows of images side by side (input upsampled by nearest neighbour, bicubic, peer, original) for a visual check."""
    size = columns[-1].shape[-1]
    grid = []
    for i in range(min(rows, len(columns[-1]))):
        cells = [torch.nn.functional.interpolate(c[i : i + 1], size=(size, size), mode="nearest")[0] for c in columns]
        grid.append(torch.cat(cells, dim=-1))
    to_png(torch.cat(grid, dim=-2), path)


def run_domain(name: str, domain: Domain, args: argparse.Namespace) -> dict:
    hr = torch.stack(load_eval_set(domain.data, domain.protocol, domain.out_size, args.limit))
    lowres = make_lowres(hr, domain.scale)
    work = args.work / name
    inputs = work / "lowres"
    shutil.rmtree(inputs, ignore_errors=True)
    inputs.mkdir(parents=True)
    names = [f"{i:04d}.png" for i in range(len(lowres))]
    for image, file in zip(lowres, names):
        to_png(image, inputs / file)
    timings = run_peer(domain.scale, inputs, work / "peer", args.threads, args.node)
    peer = read_outputs(work / "peer", names, domain.out_size)
    bic = bicubic(lowres, domain.out_size).clamp(-1, 1)
    contact_sheet([lowres, bic, peer, hr], args.work / f"contact_{name}.png")

    reference = None
    if not args.no_fid and metrics.FID_AVAILABLE:
        reference = reference_features(list(domain.reference), domain.protocol, domain.out_size)
    result = {
        "data": shown(domain.data),
        "protocol": domain.protocol,
        "out_size": domain.out_size,
        "scale": domain.scale,
        "lowres_size": domain.out_size // domain.scale,
        "images": len(hr),
        "reference": [shown(r) for r in domain.reference] if reference is not None else None,
        "reference_images": len(reference) if reference is not None else None,
        "bicubic": score_images(bic, hr, lowres, reference),
        "peer": score_images(peer, hr, lowres, reference),
        "peer_model": timings["model_file"],
        "peer_input_range": timings["input_range"],
        "fixture_check": fixture_check(domain.scale, args.work, args.threads, args.node) if args.fixture_check else None,
    }
    result["peer"]["seconds_per_image"] = timings["seconds_per_image"]
    inner = (..., slice(BORDER, -BORDER), slice(BORDER, -BORDER))
    result[f"psnr_without_{BORDER}px_border"] = {
        method: float(metrics.psnr(pred[inner], hr[inner]).mean()) for method, pred in (("bicubic", bic), ("peer", peer))
    }
    result["timings"] = {k: timings[k] for k in ("backend", "threads", "versions")}
    return result


def table(domains: dict[str, dict]) -> str:
    columns = [("psnr", "PSNR", "{:.2f}"), ("ssim", "SSIM", "{:.3f}"), ("consistency_1e5", "consistency ×1e-5", "{:.1f}"),
               ("kid_1e3", "KID ×1e-3", "{:.0f}"), ("fid", "FID", "{:.1f}"), ("seconds_per_image", "s per image", "{:.3f}")]
    lines = ["| val set | method | " + " | ".join(title for _, title, _ in columns) + " |", "|---|---|" + "---|" * len(columns)]
    for name, result in domains.items():
        label = f"{name} {result['lowres_size']}→{result['out_size']} (×{result['scale']}, {result['images']} images)"
        for method in ("bicubic", "peer"):
            row = result[method]
            cells = [fmt.format(row[key]) if key in row else "–" for key, _, fmt in columns]
            lines.append(f"| {label} | {'ESRGAN thick' if method == 'peer' else 'bicubic'} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--domains", nargs="+", choices=list(DOMAINS), default=list(DOMAINS))
    parser.add_argument("--limit", type=int, help="only the first N val images of each set")
    parser.add_argument("--threads", type=int, default=1, help="threads for the peer (tfjs wasm) and for torch")
    parser.add_argument("--no-fid", action="store_true", help="skip KID and FID")
    parser.add_argument("--no-fixture-check", dest="fixture_check", action="store_false",
                        help="skip comparing the peer's output on its own fixture with the result it ships")
    parser.add_argument("--node", default="node", help="the Node.js executable (Node 20)")
    parser.add_argument("--work", type=Path, default=HERE / "work", help="folder for the PNGs (ignored by git)")
    parser.add_argument("--json", type=Path, default=REPO / "benchmarks" / "results" / "peer_esrgan_thick.json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if not args.no_fid and not metrics.FID_AVAILABLE:
        print("(KID and FID skipped: pip install 'sr3infer[fid]' to add them)")

    started = time.time()
    load = os.getloadavg()
    domains = {name: run_domain(name, DOMAINS[name], args) for name in args.domains}
    versions = next(iter(domains.values()))["timings"]["versions"]
    result = {
        "command": "python " + " ".join([shown(Path(__file__))] + sys.argv[1:]),
        "peer": {"package": f"{PEER}@{versions[PEER]}", "license": "MIT", "architecture": "RRDN (C4 D3 G32 G0 64 T10), DIV2K",
                 "runtime": f"Node {versions['node']}, @tensorflow/tfjs {versions['tfjs']} + "
                            f"@tensorflow/tfjs-backend-wasm {versions['tfjs-backend-wasm']}, pngjs {versions['pngjs']}"},
        "threads": args.threads,
        "device": f"CPU: {cpu_name()}, {os.cpu_count()} cores, load average {load[0]:.1f} at the start (shared machine)",
        "seconds_per_image_note": "wall time of one model.predict per image after a warm-up, excluding PNG I/O",
        "domains": {name: {k: v for k, v in r.items() if k != "timings"} for name, r in domains.items()},
        "seconds": round(time.time() - started, 1),
    }
    print(table(domains))
    for name, r in domains.items():
        print(f"{name}: fixture check {r['fixture_check']}; contact sheet {shown(args.work / f'contact_{name}.png')}")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    save(args.json, result)
    print(f"wrote {shown(args.json)}")


if __name__ == "__main__":
    main()
