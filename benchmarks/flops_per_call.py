"""FLOPs of one network call at a model's trained output size, counted by `torch.utils.flop_counter` (not timed).

Reads training configs (their "model") or model folders (their config.json); counts the convolutions, matmuls and
attention of one forward on a (1, 6, out_size, out_size) input, built on the meta device (nothing allocated,
nothing run). Multiply-adds count as 2 FLOPs, as the counter does. GroupNorm, SiLU and the pixel shuffles are not
counted (they are a few per cent of a call).

    python benchmarks/flops_per_call.py training/ab/sr3-64-256-ab-*.json \
        --json benchmarks/results/sr3-64-256/train_ab_flops.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from sr3infer.models.config import ModelConfig
from sr3infer.models.weights import build_model


def read_model_config(path: Path) -> ModelConfig:
    """The model config of a training config (its "model") or of a model folder / config.json."""
    if path.is_dir():
        path = path / "config.json"
    data = json.loads(path.read_text(encoding="utf-8"))
    return ModelConfig.from_dict(data.get("model", data) if "network" not in data else data, source=path)


def flops_per_call(config: ModelConfig, side: int | None = None) -> dict:
    """FLOPs, parameters and fp16 MiB of one network call on a `side` (default: the trained output size) square."""
    side = side or config.out_size
    with torch.device("meta"):
        model = build_model(config).eval()
        x = torch.zeros(1, 2 * config.channels, side, side)
        level = torch.full((1,), 0.5)
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            model(x, level)
    params = sum(p.numel() for p in model.parameters())
    return {"side": side, "gflops_per_call": round(counter.get_total_flops() / 1e9, 3), "parameters": params,
            "fp16_mib": round(params * 2 / 2**20, 1), "network": config.network.to_dict()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("configs", nargs="+", type=Path, help="training configs, model folders or config.json files")
    parser.add_argument("--size", type=int, help="square side of the call (default: each model's trained out_size)")
    parser.add_argument("--json", type=Path, help="also write the rows to this JSON file")
    args = parser.parse_args()
    rows = {str(path): flops_per_call(read_model_config(path), args.size) for path in args.configs}
    for name, row in rows.items():
        print(f"{name}: {row['gflops_per_call']:.2f} GFLOP per call at {row['side']}x{row['side']}, "
              f"{row['parameters'] / 1e6:.2f}M parameters, {row['fp16_mib']} MiB fp16")
    if args.json:
        args.json.write_text(json.dumps({"counter": "torch.utils.flop_counter.FlopCounterMode, torch "
                                         + torch.__version__, "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
