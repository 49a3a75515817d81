"""The SR3 training loop: resumable, EMA, warm-up, clipping, autocast, optional DDP under torchrun;
run by `python -m sr3infer.train CONFIG.json` (or `sr3infer train CONFIG.json`)."""

from __future__ import annotations

import copy
import json
import logging
import math
import os
import random
import re
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import cast

import numpy as np
import torch
from torch import Tensor

from ..models.config import ModelConfig
from ..models.unet import UNet, UNetConfig
from ..runtime.distributed import DistContext, init_from_env, launched_by_torchrun
from ..errors import dataclass_from_dict
from ..sampling.prediction import training_target
from ..images.resample import bicubic, spatial_size
from ..models.weights import WEIGHTS_NAME, build_model, load_weights, read_config, save_model_folder
from .data import FaceImages, NaturalImages, make_lowres, random_patches, resolve_data_root
from .degrade import Degradation, degrade
from .grow import grow_res_blocks
from .losses import LOSS_WEIGHTINGS, LOSSES, min_snr_weights, training_loss
from .noise_levels import EDM_LOG_MEAN, EDM_LOG_STD, NOISE_SAMPLINGS, NoiseLevelSampler
from .stopping import StopOnSignal

log = logging.getLogger("sr3infer.train")


AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "none": None}
DATASETS = {"faces": FaceImages, "natural": NaturalImages}


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
    whole_image_fraction: float = 0.0         # share of steps that train on whole images instead of patches
    lr: float = 2e-4
    warmup_steps: int = 200
    lr_decay_from: int = 0                    # with lr_decay_to > 0: a cosine from lr at this step ...
    lr_decay_to: int = 0                      # ... down to lr_final at this step, held after; 0 = lr throughout
    lr_final: float = 0.0
    ema_decay: float = 0.999
    grad_clip: float = 1.0
    loss: str = "l1"                          # "l1" (SR3) or "l2"
    loss_weighting: str = "none"              # "none" or "min_snr" (Min-SNR-γ, γ = 5)
    noise_sampling: str = "sr3"               # "sr3" (t uniform) or "lognormal" (EDM, on sigma / sigma_data): noise_levels.py
    sigma_data: float = 0.0                   # spread of the diffusion target; 0 = measured on 64 training images at start
    noise_log_mean: float = EDM_LOG_MEAN      # lognormal: mean of ln(sigma / sigma_data)
    noise_log_std: float = EDM_LOG_STD        # lognormal: its standard deviation
    noise_uniform_fraction: float = 0.25      # lognormal: share of each batch still drawn SR3's way
    blur_prob: float = 0.0                    # conditioning augmentation: blur the high-res before downsampling
    blur_sigma_max: float = 0.6               # in low-res pixels
    degradation: dict | None = None           # real-world inputs: a `degrade.Degradation` block ({} = its defaults)
    crop_size: int = 0                        # high-res crops degraded whole before patching; 0 = the model's size
    crop_scale_min: float = 1.0               # natural photos: downscale by U(this, 1) before cropping (multi-scale)
    data_exclude: list = field(default_factory=list)  # file-name globs left out of data_root (e.g. one source)
    max_steps: int = 1_000_000
    max_minutes: float = 60.0
    checkpoint_minutes: float = 5.0
    export_minutes: float = 10.0
    threads: int = 0                          # CPU threads; 0 = torch default
    autocast: str = "bf16"                    # "bf16", "fp16" (CUDA only) or "none"
    channels_last: bool = True                # NHWC activations (faster convolutions on CPU and CUDA)
    compile: bool = False                     # torch.compile the training network (inductor)
    seed: int = 0
    init_from: str | None = None              # an exported model folder: weights only, fresh optimiser
    init_grow: bool = False                   # init_from has fewer res blocks per level: grow.py deepens it
    card_notes: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        _check_types(self)
        for key, allowed in (("data_kind", tuple(DATASETS)), ("loss", LOSSES), ("loss_weighting", LOSS_WEIGHTINGS),
                             ("noise_sampling", NOISE_SAMPLINGS), ("autocast", tuple(AUTOCAST_DTYPES))):
            value = getattr(self, key)
            if value not in allowed:
                raise ValueError(f"Training config {key!r} must be one of {', '.join(map(repr, allowed))}, got {value!r}.")
        fraction = self.whole_image_fraction
        if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not 0 <= fraction <= 1:
            raise ValueError(f"Training config 'whole_image_fraction' must be a number from 0 to 1, got {fraction!r}.")
        if fraction > 0 and not self.patch_size:
            raise ValueError(f"Training config 'whole_image_fraction' is {fraction} but 'patch_size' is 0, so every step "
                             "already trains on whole images; set patch_size, or whole_image_fraction to 0.")

    @classmethod
    def from_json_file(cls, path: str | Path) -> TrainConfig:
        """Read and check a training config; every error names the file and the key."""
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
            raise ValueError(f"Training config {str(path)!r} could not be read as JSON: {err}") from None
        if not isinstance(data, dict):
            raise ValueError(f"Training config {str(path)!r} must be a JSON object, got {type(data).__name__}.")
        try:
            return dataclass_from_dict(cls, data, "training config")
        except ValueError as err:
            raise ValueError(f"{path}: {err}") from None


# key: (type, lowest, highest); None: no bound. Integers are whole numbers, floats any number (not true/false).
_BOUNDS: dict[str, tuple[type, float | None, float | None]] = {
    "batch_size": (int, 1, None), "patch_size": (int, 0, None), "warmup_steps": (int, 0, None),
    "max_steps": (int, 1, None), "threads": (int, 0, None), "seed": (int, 0, None),
    "lr": (float, 0, 1), "ema_decay": (float, 0, 1), "grad_clip": (float, 0, None), "blur_prob": (float, 0, 1),
    "blur_sigma_max": (float, 0, None), "max_minutes": (float, 0, None), "checkpoint_minutes": (float, 0, None),
    "export_minutes": (float, 0, None), "sigma_data": (float, 0, None), "noise_log_mean": (float, None, None),
    "noise_log_std": (float, 0.01, None), "noise_uniform_fraction": (float, 0, 1),
    "crop_scale_min": (float, 0.05, 1), "crop_size": (int, 0, None), "lr_decay_from": (int, 0, None),
    "lr_decay_to": (int, 0, None), "lr_final": (float, 0, 1),
}
MAX_THREADS = 1024
_PLAIN_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


def _check_types(cfg: TrainConfig) -> None:
    """Type and range of every key; `name` a plain folder name (the run goes to out_dir/name)."""
    if not isinstance(cfg.name, str) or not _PLAIN_NAME.fullmatch(cfg.name) or ".." in cfg.name:
        raise ValueError(f"Training config 'name' must be a plain folder name (letters, digits, '.', '_', '-'; no '/' "
                         f"or '..'), got {cfg.name!r}; the run is written to out_dir/name.")
    for key, (kind, low, high) in _BOUNDS.items():
        value = getattr(cfg, key)
        number = isinstance(value, (int, float)) and not isinstance(value, bool)
        if not number or (kind is int and not isinstance(value, int)) or not math.isfinite(value) \
                or (low is not None and value < low) or (high is not None and value > high):
            span = f"from {low} to {high}" if high is not None else f"of at least {low}" if low is not None else ""
            raise ValueError(f"Training config {key!r} must be {'a whole' if kind is int else 'a'} number"
                             f"{' ' + span if span else ''}, got {value!r}.")
    if cfg.lr_decay_to and not (cfg.lr_decay_from < cfg.lr_decay_to and cfg.lr_final <= cfg.lr):
        raise ValueError(f"Training config 'lr_decay_to' ({cfg.lr_decay_to}) must come after 'lr_decay_from' "
                         f"({cfg.lr_decay_from}), with 'lr_final' ({cfg.lr_final:g}) at most 'lr' ({cfg.lr:g}); "
                         "set lr_decay_to to 0 for a constant learning rate.")
    if cfg.lr == 0 and cfg.max_steps:
        log.warning("Training config 'lr' is 0: the weights will not change.")
    roots = cfg.data_root if isinstance(cfg.data_root, list) else [cfg.data_root]
    for key, ok, expected in (
        ("data_root", bool(roots) and all(isinstance(r, str) and r for r in roots), "a folder or a list of folders"),
        ("out_dir", isinstance(cfg.out_dir, str) and bool(cfg.out_dir), "a folder"),
        ("model", isinstance(cfg.model, dict), "a model config object"),
        ("init_from", cfg.init_from is None or isinstance(cfg.init_from, str), "a model folder or null"),
        ("card_notes", isinstance(cfg.card_notes, dict), "an object"),
        ("channels_last", isinstance(cfg.channels_last, bool), "true or false"),
        ("compile", isinstance(cfg.compile, bool), "true or false"),
        ("init_grow", isinstance(cfg.init_grow, bool) and (not cfg.init_grow or cfg.init_from is not None),
         "true or false, and true only with init_from"),
        ("degradation", cfg.degradation is None or isinstance(cfg.degradation, dict), "an object or null"),
        ("data_exclude", isinstance(cfg.data_exclude, list) and all(isinstance(g, str) and g for g in cfg.data_exclude),
         "a list of file-name globs"),
    ):
        if not ok:
            value = getattr(cfg, key)
            raise ValueError(f"Training config {key!r} must be {expected}, got {value!r}.")
    if cfg.threads > MAX_THREADS:
        raise ValueError(f"Training config 'threads' must be at most {MAX_THREADS}, got {cfg.threads}; "
                         f"this machine has {os.cpu_count()} CPU threads.")
    if cfg.degradation is not None:
        Degradation.from_dict(cfg.degradation)


@dataclass
class TrainingRun:
    """Everything a step needs: model and EMA, optimiser, data, this rank's RNG and place."""

    cfg: TrainConfig
    dist: DistContext
    device: torch.device
    model_config: ModelConfig
    model: torch.nn.Module
    ema: torch.nn.Module
    optimizer: torch.optim.Optimizer
    data: FaceImages | NaturalImages
    rng: random.Random
    run_dir: Path
    noise_sampler: NoiseLevelSampler = field(default_factory=NoiseLevelSampler)
    degradation: Degradation | None = None  # the config's block, parsed once
    step: int = 0
    steps_before: int = 0  # training steps already in the `init_from` weights (the lineage), added on export

    @property
    def state_path(self) -> Path:
        return self.run_dir / "state.pt"

    @property
    def export_dir(self) -> Path:
        return self.run_dir / "export"


def _training_device(dist: DistContext) -> torch.device:
    device = torch.device(dist.device or "cpu")
    if device.type == "cuda":
        if device.index is None:
            device = torch.device("cuda", dist.local_rank)
        torch.cuda.set_device(device)
    return device


def setup(cfg: TrainConfig) -> TrainingRun:
    """Join the torchrun job if any; build the model (from `init_from`), EMA, Adam and data."""
    dist = init_from_env("cuda" if torch.cuda.is_available() else "cpu")
    device = _training_device(dist)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    model_config = ModelConfig.from_dict(cfg.model)
    data_root = resolve_data_root(cfg.data_root)
    log.info("training data: %s", data_root)
    run_dir = Path(cfg.out_dir) / cfg.name
    run_dir.mkdir(parents=True, exist_ok=True)

    model = build_model(model_config).train()
    steps_before = 0
    if cfg.init_from and not (run_dir / "state.pt").exists():
        init_weights = Path(cfg.init_from) / WEIGHTS_NAME
        init_config = read_config(init_weights)
        model.load_state_dict(_initial_state(cfg, model_config, init_weights, init_config))
        steps_before = int(init_config.task.get("training_steps", 0))
        log.info("initialised weights from %s (%d training steps%s)", cfg.init_from, steps_before,
                 ", grown deeper with identity blocks" if cfg.init_grow else "")
    # Module.to takes memory_format (documented); torch's overloads for it leave it out
    model = model.to(device, memory_format=torch.channels_last if cfg.channels_last else torch.contiguous_format)  # type: ignore[call-overload]
    ema = copy.deepcopy(model).eval().requires_grad_(False)
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    rng = random.Random(cfg.seed + dist.rank)
    torch.manual_seed(cfg.seed + dist.rank)
    crop = cfg.crop_size or model_config.out_size
    data = (NaturalImages(data_root, crop, min_scale=cfg.crop_scale_min, exclude=cfg.data_exclude)
            if cfg.data_kind == "natural" else DATASETS[cfg.data_kind](data_root, model_config.out_size,
                                                                        exclude=cfg.data_exclude))
    noise_sampler = NoiseLevelSampler()
    if cfg.noise_sampling != "sr3":
        sigma_data = cfg.sigma_data or measure_sigma_data(data, model_config, random.Random(cfg.seed + 7919))
        noise_sampler = NoiseLevelSampler(cfg.noise_sampling, sigma_data, cfg.noise_log_mean, cfg.noise_log_std,
                                          cfg.noise_uniform_fraction)
        log.info("noise levels: %s, sigma_data %.4f%s", cfg.noise_sampling, sigma_data,
                 "" if cfg.sigma_data else " (measured on 64 training images)")
    degradation = None if cfg.degradation is None else Degradation.from_dict(cfg.degradation)
    return TrainingRun(cfg, dist, device, model_config, model, ema, optimizer, data, rng, run_dir, noise_sampler,
                       degradation=degradation, steps_before=steps_before)


def _initial_state(cfg: TrainConfig, model_config: ModelConfig, weights: Path,
                   init_config: ModelConfig) -> dict[str, Tensor]:
    """`init_from`'s weights (config `init_config`) in float32; with `init_grow`, deepened to `model_config`'s first."""
    state = {k: v.float() for k, v in load_weights(weights).items()}
    if not cfg.init_grow:
        return state
    small = build_model(init_config, state)
    if not isinstance(small, UNet) or not isinstance(model_config.network, UNetConfig):
        raise ValueError(f"Training config 'init_grow' deepens an SR3 U-Net; {weights} holds a "
                         f"{type(small).__name__}.")
    wanted = model_config.network.num_res_blocks
    if replace(small.config, num_res_blocks=wanted) != model_config.network:
        raise ValueError(f"Training config 'init_grow': {weights}'s U-Net must differ from the config's only in "
                         f"num_res_blocks (here {small.config.num_res_blocks} -> {wanted}); got "
                         f"{small.config.to_dict()} against {model_config.network.to_dict()}.")
    return grow_res_blocks(small, wanted).state_dict()


def measure_sigma_data(data: FaceImages | NaturalImages, model_config: ModelConfig, rng: random.Random,
                       count: int = 64) -> float:
    """The std of the diffusion target (residual over bicubic, or image) over `count` samples."""
    hr = torch.stack([data.sample(rng) for _ in range(count)])
    cond = bicubic(make_lowres(hr, model_config.scale), spatial_size(hr))
    return float((hr - cond if model_config.residual else hr).std())


def resume(run: TrainingRun) -> None:
    """Continue from `state.pt` when the run has one: weights, EMA, optimiser, step and RNG."""
    if not run.state_path.exists():
        return
    state = torch.load(run.state_path, map_location="cpu", weights_only=True)
    run.model.load_state_dict(state["model"])
    run.ema.load_state_dict(state["ema"])
    run.optimizer.load_state_dict(state["optimizer"])
    run.step = int(state["step"])
    run.steps_before = int(state.get("steps_before", 0))
    torch.set_rng_state(state["torch_rng"])
    run.rng.seed(run.cfg.seed + run.dist.rank + run.step)
    log.info("resumed %s at step %d", run.state_path, run.step)


def save_state(run: TrainingRun) -> None:
    """Write `state.pt` atomically."""
    state = {
        "model": run.model.state_dict(), "ema": run.ema.state_dict(), "optimizer": run.optimizer.state_dict(),
        "step": run.step, "steps_before": run.steps_before, "torch_rng": torch.get_rng_state(),
    }
    tmp = run.state_path.with_suffix(".tmp")
    torch.save(state, tmp)
    os.replace(tmp, run.state_path)


def export(run: TrainingRun) -> None:
    """The EMA weights as a model folder, with the lineage's total steps in the config's task."""
    config = run.model_config.replace(task={**run.model_config.task, "training_steps": run.steps_before + run.step})
    save_model_folder(run.export_dir, config, run.ema.state_dict())


def whole_image_step(cfg: TrainConfig, step: int) -> bool:
    """Whether `step` trains on whole images (probability `whole_image_fraction`), not patches; by
    (seed, step) alone, so every rank agrees and a resumed run repeats it."""
    if cfg.whole_image_fraction <= 0:
        return False
    return random.Random(cfg.seed * 1_000_003 + step).random() < cfg.whole_image_fraction


def training_batch(run: TrainingRun) -> tuple[Tensor, Tensor]:
    """(high-res target, bicubic conditioning) on the CPU: random patches, or whole images."""
    cfg = run.cfg
    hr = torch.stack([run.data.sample(run.rng) for _ in range(cfg.batch_size)])
    if run.degradation is not None:
        rng = np.random.default_rng([cfg.seed, run.dist.rank, run.step])  # a resumed run repeats its inputs
        lowres = degrade(hr, run.model_config.scale, rng, run.degradation)
    else:
        blur = None
        if cfg.blur_prob > 0:
            use = torch.rand(hr.shape[0]) < cfg.blur_prob
            blur = torch.where(use, torch.rand(hr.shape[0]) * cfg.blur_sigma_max, torch.zeros(hr.shape[0]))
        lowres = make_lowres(hr, run.model_config.scale, blur)
    cond = bicubic(lowres, spatial_size(hr))
    if cfg.patch_size and not whole_image_step(cfg, run.step):
        hr, cond = random_patches(hr, cond, cfg.patch_size, run.rng)
    return hr, cond


def learning_rate(cfg: TrainConfig, step: int) -> float:
    """The learning rate of optimiser step `step`: a linear warm-up to `lr`, then, when `lr_decay_to` is set, a
    cosine down to `lr_final` between `lr_decay_from` and `lr_decay_to` (absolute steps, so a resumed run keeps it)."""
    warm_up = min(1.0, (step + 1) / max(1, cfg.warmup_steps))
    if not cfg.lr_decay_to or step <= cfg.lr_decay_from:
        return cfg.lr * warm_up
    progress = min(1.0, (step - cfg.lr_decay_from) / (cfg.lr_decay_to - cfg.lr_decay_from))
    return warm_up * (cfg.lr_final + (cfg.lr - cfg.lr_final) * 0.5 * (1 + math.cos(math.pi * progress)))


def train_step(run: TrainingRun, net: torch.nn.Module) -> dict[str, float]:
    """One optimiser step on a fresh batch, then the EMA update: the loss, gradient norm and lr."""
    cfg, model_config = run.cfg, run.model_config
    hr, cond = training_batch(run)
    hr, cond = hr.to(run.device), cond.to(run.device)
    x0 = hr - cond if model_config.residual else hr
    noise_level = run.noise_sampler.sample(model_config.schedule, hr.shape[0], device=run.device)
    eps = torch.randn_like(x0)
    g = noise_level.view(-1, 1, 1, 1)
    x_noisy = g * x0 + (1 - g * g).sqrt() * eps
    target = training_target(model_config.prediction, x0, eps, noise_level)
    inputs = torch.cat([cond, x_noisy], dim=1)
    if cfg.channels_last:
        inputs = inputs.contiguous(memory_format=torch.channels_last)
    lr = learning_rate(cfg, run.step)
    for group in run.optimizer.param_groups:
        group["lr"] = lr
    amp_dtype = AUTOCAST_DTYPES[cfg.autocast]
    with torch.autocast(run.device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
        out = net(inputs, noise_level)
    weights = min_snr_weights(noise_level, model_config.prediction) if cfg.loss_weighting == "min_snr" else None
    loss = training_loss(out.float(), target, cfg.loss, weights)
    run.optimizer.zero_grad(set_to_none=True)
    loss.backward()
    grad_norm = torch.nn.utils.clip_grad_norm_(run.model.parameters(), cfg.grad_clip)
    run.optimizer.step()
    run.step += 1
    decay = min(cfg.ema_decay, (1 + run.step) / (10 + run.step))
    with torch.no_grad():
        for p_ema, p in zip(run.ema.parameters(), run.model.parameters()):
            p_ema.lerp_(p, 1 - decay)
    return {"loss": loss.item(), "grad_norm": float(grad_norm), "lr": lr}


def training_network(run: TrainingRun) -> torch.nn.Module:
    """The module the steps call: the model, or its `torch.compile`d wrapper."""
    # cast: torch.compile of a Module returns a Module (OptimizedModule); its stubs say only Callable
    return cast(torch.nn.Module, torch.compile(run.model)) if run.cfg.compile else run.model


def train(cfg: TrainConfig) -> Path:
    """Train until `max_steps` or `max_minutes`; returns the exported model folder."""
    run = setup(cfg)
    try:
        resume(run)
        net = training_network(run)
        if run.dist.world_size > 1:
            device_ids = [run.device.index] if run.device.type == "cuda" else None
            net = torch.nn.parallel.DistributedDataParallel(run.model, device_ids=device_ids)
        _train_until_done(run, net)
    finally:
        run.dist.close()
    return run.export_dir


def _train_until_done(run: TrainingRun, net: torch.nn.Module) -> None:
    """Steps until `max_steps`, `max_minutes` or a stop signal, all ranks stopping together."""
    cfg, is_main = run.cfg, run.dist.rank == 0
    started = time.time()
    last_ckpt = last_export = started
    losses: list[float] = []
    with (run.run_dir / "log.jsonl").open("a") as log_file, StopOnSignal() as stop:
        while not run.dist.any_rank(run.step >= cfg.max_steps or time.time() - started >= cfg.max_minutes * 60
                                    or stop.requested):
            stats = train_step(run, net)
            losses.append(stats["loss"])
            if run.step % 50 == 0 and is_main:
                record = {"step": run.step, "loss": sum(losses) / len(losses), "grad_norm": stats["grad_norm"],
                          "lr": stats["lr"], "minutes": round((time.time() - started) / 60, 2)}
                log_file.write(json.dumps(record) + "\n")
                log_file.flush()
                log.info("step %d loss %.4f grad %.3f", run.step, record["loss"], record["grad_norm"])
                losses.clear()
            now = time.time()
            if is_main and now - last_ckpt > cfg.checkpoint_minutes * 60:
                save_state(run)
                last_ckpt = now
            if is_main and now - last_export > cfg.export_minutes * 60:
                export(run)
                last_export = now
        if is_main:
            save_state(run)
            export(run)
            log.info("%s at step %d after %.1f min; exported %s", "stopped by signal" if stop.requested else "finished",
                     run.step, (time.time() - started) / 60, run.export_dir)
        # Leave together, after rank 0 has written its files (main() then ends each rank without a teardown).
        run.dist.barrier()


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="sr3infer train", description="Train an SR3 upscaler from a JSON config.")
    parser.add_argument("config", help="training config JSON (see training/ in the repository)")
    parser.add_argument("--max-minutes", type=float, help="override the config's time budget")
    parser.add_argument("--out-dir", help="override where runs are written")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    cfg = TrainConfig.from_json_file(args.config)  # a bad file: ValueError naming it (the CLI's exit 1)
    overrides = {k: v for k, v in (("max_minutes", args.max_minutes), ("out_dir", args.out_dir)) if v is not None}
    try:
        cfg = replace(cfg, **overrides)  # overrides pass the same checks as the file's values
    except ValueError as err:
        parser.error(str(err).replace("Training config 'max_minutes'", "--max-minutes"))
    train(cfg)
    if launched_by_torchrun():
        leave_without_teardown()
    return 0


def leave_without_teardown(code: int = 0) -> None:
    """End a finished torchrun rank now: freeing DDP's gloo group at shutdown sometimes aborts a
    rank, and every file is written and the ranks have met at a barrier, so nothing is lost."""
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
