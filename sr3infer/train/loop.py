"""The SR3 training loop: resumable, EMA, warm-up, clipping, autocast, optional DDP under torchrun.

Run: `python -m sr3infer.train CONFIG.json` (or `sr3infer train CONFIG.json`).
"""

from __future__ import annotations

import copy
import json
import logging
import math
import os
import random
import time
from dataclasses import dataclass, field, fields
from pathlib import Path

import torch
import torch.nn.functional as F

from ..config import ModelConfig
from ..prediction import training_target
from ..resample import bicubic
from ..weights import WEIGHTS_NAME, build_model, load_weights, save_model_folder
from .data import FaceImages, NaturalImages, make_lowres, random_patches, resolve_data_root

log = logging.getLogger("sr3infer.train")


@dataclass
class TrainConfig:
    """A training run, read from JSON; `model` is a `config.json`-style model config."""

    name: str
    data_kind: str                            # "faces" or "natural"
    data_root: str | list[str]                # a folder, or folders to try in order (first existing wins)
    model: dict
    out_dir: str = "runs"
    batch_size: int = 16
    patch_size: int = 64                      # train on random high-res patches; 0 = full images
    lr: float = 2e-4
    warmup_steps: int = 200
    ema_decay: float = 0.999
    grad_clip: float = 1.0
    loss: str = "l1"                          # "l1" (SR3) or "l2"
    blur_prob: float = 0.0                    # conditioning augmentation: blur the high-res before downsampling
    blur_sigma_max: float = 0.6               # in low-res pixels
    max_steps: int = 1_000_000
    max_minutes: float = 60.0
    checkpoint_minutes: float = 5.0
    export_minutes: float = 10.0
    threads: int = 0                          # CPU threads; 0 = torch default
    autocast: str = "bf16"                    # "bf16", "fp16" (CUDA only) or "none"
    seed: int = 0
    init_from: str | None = None              # an exported model folder: weights only, fresh optimiser
    card_notes: dict = field(default_factory=dict)

    @classmethod
    def from_json_file(cls, path: str | Path) -> TrainConfig:
        data = json.loads(Path(path).read_text())
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"Unknown training config keys {unknown}; expected a subset of {sorted(known)}.")
        return cls(**data)


def _distributed() -> tuple[int, int]:
    if "RANK" in os.environ and "WORLD_SIZE" in os.environ:
        import torch.distributed as dist

        if not dist.is_initialized():
            dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def train(cfg: TrainConfig) -> Path:
    """Train until `max_steps` or `max_minutes`; returns the exported model folder."""
    rank, world = _distributed()
    device = torch.device(f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}" if torch.cuda.is_available() else "cpu")
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    model_config = ModelConfig.from_dict(cfg.model)
    data_root = resolve_data_root(cfg.data_root)
    log.info("training data: %s", data_root)
    run_dir = Path(cfg.out_dir) / cfg.name
    state_path, export_dir = run_dir / "state.pt", run_dir / "export"
    run_dir.mkdir(parents=True, exist_ok=True)

    model = build_model(model_config).train()
    if cfg.init_from and not state_path.exists():
        model.load_state_dict({k: v.float() for k, v in load_weights(Path(cfg.init_from) / WEIGHTS_NAME).items()})
        log.info("initialised weights from %s", cfg.init_from)
    model = model.to(device, memory_format=torch.channels_last)
    ema = copy.deepcopy(model).eval().requires_grad_(False)
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    step, rng = 0, random.Random(cfg.seed + rank)
    torch.manual_seed(cfg.seed + rank)
    if state_path.exists():
        state = torch.load(state_path, map_location="cpu", weights_only=True)
        model.load_state_dict(state["model"])
        ema.load_state_dict(state["ema"])
        optimizer.load_state_dict(state["optimizer"])
        step = int(state["step"])
        torch.set_rng_state(state["torch_rng"])
        rng.seed(cfg.seed + rank + step)
        log.info("resumed %s at step %d", state_path, step)
    net = model
    if world > 1:
        net = torch.nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)

    scale, out_size = model_config.scale, model_config.out_size
    data = FaceImages(data_root, out_size) if cfg.data_kind == "faces" else NaturalImages(data_root, out_size)
    schedule = model_config.schedule
    amp_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(cfg.autocast)
    started = time.time()
    last_ckpt = last_export = started
    log_file = (run_dir / "log.jsonl").open("a")
    losses: list[float] = []

    def save_state() -> None:
        state = {
            "model": model.state_dict(), "ema": ema.state_dict(), "optimizer": optimizer.state_dict(),
            "step": step, "torch_rng": torch.get_rng_state(),
        }
        tmp = state_path.with_suffix(".tmp")
        torch.save(state, tmp)
        os.replace(tmp, state_path)

    def export() -> None:
        config = model_config.replace(task={**model_config.task, "training_steps": step})
        save_model_folder(export_dir, config, ema.state_dict())

    while step < cfg.max_steps and (time.time() - started) < cfg.max_minutes * 60:
        hr = torch.stack([data.sample(rng) for _ in range(cfg.batch_size)])
        blur = None
        if cfg.blur_prob > 0:
            use = torch.rand(hr.shape[0]) < cfg.blur_prob
            blur = torch.where(use, torch.rand(hr.shape[0]) * cfg.blur_sigma_max, torch.zeros(hr.shape[0]))
        lowres = make_lowres(hr, scale, blur)
        cond = bicubic(lowres, tuple(hr.shape[-2:]))
        hr, cond = random_patches(hr, cond, cfg.patch_size, rng) if cfg.patch_size else (hr, cond)
        hr, cond = hr.to(device), cond.to(device)
        x0 = hr - cond if model_config.residual else hr
        noise_level = schedule.sample_training_noise_levels(hr.shape[0], device=device)
        eps = torch.randn_like(x0)
        g = noise_level.view(-1, 1, 1, 1)
        x_noisy = g * x0 + (1 - g * g).sqrt() * eps
        target = training_target(model_config.prediction, x0, eps, noise_level)
        inputs = torch.cat([cond, x_noisy], dim=1).contiguous(memory_format=torch.channels_last)
        lr = cfg.lr * min(1.0, (step + 1) / max(1, cfg.warmup_steps))
        for group in optimizer.param_groups:
            group["lr"] = lr
        with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
            out = net(inputs, noise_level)
        out = out.float()
        loss = F.l1_loss(out, target) if cfg.loss == "l1" else F.mse_loss(out, target)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        optimizer.step()
        step += 1
        decay = min(cfg.ema_decay, (1 + step) / (10 + step))
        with torch.no_grad():
            for p_ema, p in zip(ema.parameters(), model.parameters()):
                p_ema.lerp_(p, 1 - decay)
        losses.append(loss.item())
        if step % 50 == 0 and rank == 0:
            elapsed = time.time() - started
            record = {"step": step, "loss": sum(losses) / len(losses), "grad_norm": float(grad_norm), "lr": lr,
                      "minutes": round(elapsed / 60, 2)}
            log_file.write(json.dumps(record) + "\n")
            log_file.flush()
            log.info("step %d loss %.4f grad %.3f", step, record["loss"], record["grad_norm"])
            losses.clear()
        now = time.time()
        if rank == 0 and now - last_ckpt > cfg.checkpoint_minutes * 60:
            save_state()
            last_ckpt = now
        if rank == 0 and now - last_export > cfg.export_minutes * 60:
            export()
            last_export = now
    if rank == 0:
        save_state()
        export()
        log.info("finished at step %d after %.1f min; exported %s", step, (time.time() - started) / 60, export_dir)
    return export_dir


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="sr3infer train", description="Train an SR3 upscaler from a JSON config.")
    parser.add_argument("config", help="training config JSON (see training/ in the repository)")
    parser.add_argument("--max-minutes", type=float, help="override the config's time budget")
    parser.add_argument("--out-dir", help="override where runs are written")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    cfg = TrainConfig.from_json_file(args.config)
    if args.max_minutes is not None:
        cfg.max_minutes = args.max_minutes
    if args.out_dir:
        cfg.out_dir = args.out_dir
    train(cfg)
    return 0
