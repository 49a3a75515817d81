"""Distilling an SR3 teacher into a one- (or two-) call student: `python -m sr3infer.train.distill CONFIG.json`.

A config of "kind": "distill" runs two resumable steps under out_dir/name:

precompute: `pairs` training crops (as `loop.py` makes them), each with a seeded start noise z
    and its low-res input; the teacher's recipe (e.g. DDIM eta=0, or a K-sample mean) runs from
    z, and (lowres, z, teacher, hr) go to pairs/NNNNN.safetensors, `shard_size` pairs a shard.
train: the student starts from the teacher's weights and computes `student_output` (what the
    DDIM eta=0 sampler does in `student_steps` steps from z); loss = MSE(student, teacher) +
    lambda_gt * L1 or MSE(student, hr). Exported to export/ (fp16) with that recipe as default.
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import math
import os
import random
import re
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors import safe_open
from safetensors.torch import save_file
from torch import Tensor

from ..models.registry import get_architecture
from ..models.config import CONSISTENCY_MODES, ModelConfig, Recipe, ReportSettings
from ..errors import dataclass_from_dict
from ..sampling.prediction import eps_from_x0, to_x0
from ..images.resample import bicubic, consistency_projection, project_onto_input
from ..sampling.schedule import SPACINGS
from ..upscaler import Upscaler
from ..models.weights import save_model_folder
from .data import FaceImages, NaturalImages, make_lowres, resolve_data_root
from .loop import AUTOCAST_DTYPES, MAX_THREADS
from .stopping import StopOnSignal

log = logging.getLogger("sr3infer.train.distill")

# key: (type, lowest, highest), as loop.py's bounds; None: no bound.
_BOUNDS: dict[str, tuple[type, float | None, float | None]] = {
    "pairs": (int, 1, None), "shard_size": (int, 1, None), "teacher_batch": (int, 1, None),
    "student_steps": (int, 1, 2), "batch_size": (int, 1, None), "warmup_steps": (int, 0, None),
    "max_steps": (int, 0, None), "threads": (int, 0, MAX_THREADS), "seed": (int, 0, 2**20),
    "lr": (float, 0, 1), "ema_decay": (float, 0, 1), "grad_clip": (float, 0, None), "lambda_gt": (float, 0, None),
    "max_minutes": (float, 0, None), "checkpoint_minutes": (float, 0, None), "crop_scale_min": (float, 0.05, 1),
}
_CHOICES = {"kind": ("distill",), "data_kind": ("faces", "natural"), "gt_loss": ("l1", "l2"),
            "student_spacing": SPACINGS, "consistency": CONSISTENCY_MODES, "teacher_dtype": ("auto", "fp32", "bf16", "fp16"),
            "autocast": tuple(AUTOCAST_DTYPES)}


@dataclass
class DistillConfig:
    """A distillation run, read from JSON (`"kind": "distill"`); `teacher` is a model name or folder."""

    name: str
    data_kind: str                        # "faces" (CelebA crops, FaceImages) or "natural" (NaturalImages)
    data_root: str | list[str]            # a folder, or folders to try in order (first existing wins)
    teacher: str
    teacher_recipe: dict                  # a config.json recipe: {"sampler": "ddim", "num_steps": 20, ...}
    kind: str = "distill"
    out_dir: str = "runs"
    pairs: int = 1024
    shard_size: int = 64
    teacher_batch: int = 8                # images per teacher call while precomputing
    teacher_dtype: str = "auto"           # the teacher's dtype ("auto": bf16 on a CPU that has it, as served)
    crop_scale_min: float = 1.0           # natural photos: multi-scale crops, as loop.py
    student_steps: int = 1                # 1: one network call from z; 2: z -> one intermediate level -> image
    student_spacing: str = "trailing"     # 2 steps: trailing stops at t=999 (noise level 0.29); linear and quadratic
                                          # at t=0 (0.001), a second step with nothing left to do. 1 step: all the same
    consistency: str = "every"            # the student recipe's low-res projection (as the teacher presets)
    lambda_gt: float = 0.0
    gt_loss: str = "l1"
    batch_size: int = 8
    lr: float = 2e-5
    warmup_steps: int = 100
    ema_decay: float = 0.999
    grad_clip: float = 1.0
    max_steps: int = 3000
    max_minutes: float = 600.0
    checkpoint_minutes: float = 5.0
    threads: int = 0
    autocast: str = "bf16"
    seed: int = 0
    card_notes: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", self.name) or ".." in self.name:
            raise ValueError(f"Distill config 'name' must be a plain folder name, got {self.name!r}.")
        for key, (kind, low, high) in _BOUNDS.items():
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or (kind is int and not isinstance(value, int)) \
                    or not math.isfinite(value) or (low is not None and value < low) or (high is not None and value > high):
                span = f" from {low} to {high}" if high is not None else f" of at least {low}" if low is not None else ""
                raise ValueError(f"Distill config {key!r} must be {'a whole' if kind is int else 'a'} number{span}, "
                                 f"got {value!r}.")
        for key, allowed in _CHOICES.items():
            if getattr(self, key) not in allowed:
                raise ValueError(f"Distill config {key!r} must be one of {', '.join(map(repr, allowed))}, "
                                 f"got {getattr(self, key)!r}.")
        roots = self.data_root if isinstance(self.data_root, list) else [self.data_root]
        for key, ok, expected in (
            ("teacher", isinstance(self.teacher, str) and bool(self.teacher), "a model name or folder"),
            ("data_root", bool(roots) and all(isinstance(r, str) and r for r in roots), "a folder or a list of folders"),
            ("out_dir", isinstance(self.out_dir, str) and bool(self.out_dir), "a folder"),
            ("teacher_recipe", isinstance(self.teacher_recipe, dict), "a recipe object"),
            ("card_notes", isinstance(self.card_notes, dict), "an object"),
        ):
            if not ok:
                raise ValueError(f"Distill config {key!r} must be {expected}, got {getattr(self, key)!r}.")
        Recipe.from_dict(self.teacher_recipe)  # a bad recipe is refused here, naming its key

    @classmethod
    def from_json_file(cls, path: str | Path) -> DistillConfig:
        """Read and check a distill config; every error names the file and the key."""
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
            if not isinstance(data, dict):
                raise ValueError("a distill config must be a JSON object")
            return dataclass_from_dict(cls, data, "distill config")
        except (OSError, ValueError) as err:
            raise ValueError(f"{path}: {err}") from None

    @property
    def run_dir(self) -> Path:
        return Path(self.out_dir) / self.name

    def student_recipe(self) -> Recipe:
        """The exported student's default recipe: DDIM, eta 0, `student_steps` steps."""
        return Recipe(sampler="ddim", num_steps=self.student_steps, spacing=self.student_spacing,
                      consistency=self.consistency, options={"eta": 0.0})


def pair_seed(seed: int, index: int, sample: int = 0) -> int:
    """The generator seed of pair `index` (sample j of a K-sample teacher); sample 0 draws z."""
    return (seed << 40) + (index << 8) + sample


def start_noise(seeds: list[int], shape: tuple[int, ...]) -> Tensor:
    """z for each seed, drawn as `Upscaler.upscale_tensor` draws its first noise."""
    return torch.cat([torch.randn((1, *shape), generator=torch.Generator().manual_seed(s)) for s in seeds])


def _dataset(cfg: DistillConfig, config: ModelConfig) -> FaceImages | NaturalImages:
    root = resolve_data_root(cfg.data_root)
    if cfg.data_kind == "natural":
        return NaturalImages(root, config.out_size, min_scale=cfg.crop_scale_min)
    return FaceImages(root, config.out_size)


def _to_u8(x: Tensor) -> Tensor:
    return ((x + 1) * 127.5).round().to(torch.uint8)  # exact for 8-bit images (hr crops, quantized low-res)


def _from_u8(x: Tensor) -> Tensor:
    return x.float() / 127.5 - 1


def precompute(cfg: DistillConfig) -> Path:
    """Write the missing pair shards of the run; returns the pairs folder."""
    device = "cuda" if torch.cuda.is_available() else "cpu"
    teacher = Upscaler.from_pretrained(cfg.teacher, device=device, torch_dtype=cfg.teacher_dtype)
    recipe = Recipe.from_dict(cfg.teacher_recipe)
    k, scale, size = recipe.num_samples, teacher.config.scale, teacher.config.out_size
    folder = cfg.run_dir / "pairs"
    folder.mkdir(parents=True, exist_ok=True)
    data: FaceImages | NaturalImages | None = None
    for shard in range(math.ceil(cfg.pairs / cfg.shard_size)):
        path = folder / f"{shard:05d}.safetensors"
        if path.exists():
            continue
        if data is None:
            data = _dataset(cfg, teacher.config)
        started = time.time()
        first, count = shard * cfg.shard_size, min(cfg.shard_size, cfg.pairs - shard * cfg.shard_size)
        rng = random.Random(cfg.seed * 1_000_003 + shard)  # a shard's crops depend on (seed, shard) only
        hr = torch.stack([data.sample(rng) for _ in range(count)])
        lowres = make_lowres(hr, scale)
        seeds = [pair_seed(cfg.seed, first + i) for i in range(count)]
        outputs = []
        for start in range(0, count, cfg.teacher_batch):
            stop = min(start + cfg.teacher_batch, count)
            gens = [torch.Generator().manual_seed(pair_seed(cfg.seed, first + i, j)) for i in range(start, stop)
                    for j in range(k)]
            outputs.append(teacher.upscale_tensor(lowres[start:stop], recipe=recipe, generator=gens,
                                                  progress=False).float().cpu())
        tensors = {"lowres": _to_u8(lowres), "hr": _to_u8(hr), "z": start_noise(seeds, (3, size, size)),
                   "teacher": torch.cat(outputs), "seed": torch.tensor(seeds, dtype=torch.int64)}
        tmp = path.with_suffix(".tmp")
        save_file({n: t.contiguous() for n, t in tensors.items()}, str(tmp), metadata={"recipe": json.dumps(recipe.to_dict())})
        os.replace(tmp, path)
        seconds = time.time() - started
        record = {"shard": shard, "pairs": count, "seconds": round(seconds, 2), "seconds_per_pair": round(seconds / count, 3),
                  "network_calls_per_pair": recipe.num_steps * k, "device": f"{device}, {teacher.dtype}"}
        with (cfg.run_dir / "precompute.jsonl").open("a") as handle:
            handle.write(json.dumps(record) + "\n")
        log.info("shard %d: %d pairs in %.1f s", shard, count, seconds)
    return folder


class Pairs:
    """The precomputed pairs of a run, read row by row from the memory-mapped shards."""

    def __init__(self, folder: Path) -> None:
        self.handles = [safe_open(str(p), framework="pt") for p in sorted(folder.glob("*.safetensors"))]
        self.rows = [(h, i) for h in self.handles for i in range(h.get_slice("seed").get_shape()[0])]
        if not self.rows:
            raise FileNotFoundError(f"No pair shards in {folder}; run the precompute step first.")

    def __len__(self) -> int:
        return len(self.rows)

    def batch(self, indices: list[int]) -> dict[str, Tensor]:
        """lowres, z, teacher, hr of the rows `indices`, float32."""
        out = {n: torch.cat([h.get_slice(n)[i : i + 1] for h, i in (self.rows[j] for j in indices)])
               for n in ("lowres", "z", "teacher", "hr")}
        return {**out, "lowres": _from_u8(out["lowres"]), "hr": _from_u8(out["hr"])}


def student_output(model: torch.nn.Module, config: ModelConfig, lowres: Tensor, z: Tensor, *, steps: int = 1,
                   spacing: str = "trailing", consistency: str = "every", final: bool = False) -> Tensor:
    """What `Upscaler`'s DDIM (eta 0) sampler makes from start noise z in `steps` steps (with grad);
    `final=True` adds the last projection, as `upscale_tensor` (training regresses before it)."""
    cond = bicubic(lowres, (lowres.shape[-2] * config.scale, lowres.shape[-1] * config.scale))
    condition = get_architecture(config.architecture).condition
    gammas = config.schedule.inference_grid(steps, spacing=spacing)
    x = z
    for i in range(steps):
        g, g_next = gammas[i], gammas[i + 1]
        level = g.sqrt().expand(x.shape[0]).contiguous().to(x.device)
        out = model(condition(cond, x).contiguous(memory_format=torch.channels_last), level.float()).float()
        image = to_x0(config.prediction, x, out, level) + (cond if config.residual else 0)
        if consistency == "every":
            image = consistency_projection(image, lowres)
        x0 = image.clamp(-1, 1) - (cond if config.residual else 0)
        eps = eps_from_x0(x, x0, level)
        x = g_next.sqrt().to(x.dtype) * x0 + (1 - g_next).clamp_min(0).sqrt().to(x.dtype) * eps
    image = x + cond if config.residual else x
    if not final:
        return image
    return project_onto_input(image, lowres) if consistency in ("final", "every") else image.clamp(-1, 1)


def distill_loss(cfg: DistillConfig, output: Tensor, batch: dict[str, Tensor]) -> tuple[Tensor, dict[str, float]]:
    """MSE to the teacher + lambda_gt * L1 or MSE to the ground truth: the total and its parts."""
    to_teacher = F.mse_loss(output, batch["teacher"])
    to_gt = (F.l1_loss if cfg.gt_loss == "l1" else F.mse_loss)(output, batch["hr"])
    total = to_teacher + cfg.lambda_gt * to_gt if cfg.lambda_gt else to_teacher
    return total, {"loss": total.item(), "loss_teacher": to_teacher.item(), "loss_gt": to_gt.item()}


def train(cfg: DistillConfig) -> Path:
    """Train the student on the run's pairs until max_steps, max_minutes or a signal."""
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    teacher = Upscaler.from_pretrained(cfg.teacher, device="cpu", torch_dtype=torch.float32)
    config = teacher.config
    # Eval mode: no dropout, the student regresses a deterministic map; gradients on.
    # Module.to takes memory_format (documented); torch's overloads for it leave it out
    model = teacher.model.to(device, memory_format=torch.channels_last).eval().requires_grad_(True)  # type: ignore[call-overload]
    ema = copy.deepcopy(model).requires_grad_(False)
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    pairs = Pairs(cfg.run_dir / "pairs")
    state_path, step = cfg.run_dir / "state.pt", 0
    if state_path.exists():
        state = torch.load(state_path, map_location="cpu", weights_only=True)
        model.load_state_dict(state["model"])
        ema.load_state_dict(state["ema"])
        optimizer.load_state_dict(state["optimizer"])
        step = int(state["step"])
        log.info("resumed %s at step %d", state_path, step)
    rng = random.Random(cfg.seed + step)
    amp = AUTOCAST_DTYPES[cfg.autocast]
    started = last_save = time.time()
    sums: dict[str, float] = {}
    with (cfg.run_dir / "log.jsonl").open("a") as log_file, StopOnSignal() as stop:
        while step < cfg.max_steps and time.time() - started < cfg.max_minutes * 60 and not stop.requested:
            batch = {n: t.to(device) for n, t in pairs.batch([rng.randrange(len(pairs)) for _ in range(cfg.batch_size)]).items()}
            lr = cfg.lr * min(1.0, (step + 1) / max(1, cfg.warmup_steps))
            for group in optimizer.param_groups:
                group["lr"] = lr
            with torch.autocast(device.type, dtype=amp, enabled=amp is not None):
                output = student_output(model, config, batch["lowres"], batch["z"], steps=cfg.student_steps,
                                        spacing=cfg.student_spacing, consistency=cfg.consistency)
            loss, parts = distill_loss(cfg, output.float(), batch)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            grad_norm = float(torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip))
            optimizer.step()
            step += 1
            decay = min(cfg.ema_decay, (1 + step) / (10 + step))
            with torch.no_grad():
                for p_ema, p in zip(ema.parameters(), model.parameters()):
                    p_ema.lerp_(p, 1 - decay)
            for name, value in parts.items():
                sums[name] = sums.get(name, 0.0) + value
            sums["n"] = sums.get("n", 0) + 1
            if step % 50 == 0:
                record = {"step": step, **{n: v / sums["n"] for n, v in sums.items() if n != "n"}, "grad_norm": grad_norm,
                          "lr": lr, "minutes": round((time.time() - started) / 60, 2)}
                log_file.write(json.dumps(record) + "\n")
                log_file.flush()
                log.info("step %d loss %.5f (teacher %.5f, gt %.4f)", step, record["loss"], record["loss_teacher"],
                         record["loss_gt"])
                sums.clear()
            if time.time() - last_save > cfg.checkpoint_minutes * 60:
                _save_state(state_path, model, ema, optimizer, step)
                last_save = time.time()
    _save_state(state_path, model, ema, optimizer, step)
    return export(cfg, config, ema, step, len(pairs))


def _save_state(path: Path, model: torch.nn.Module, ema: torch.nn.Module, optimizer: torch.optim.Optimizer, step: int) -> None:
    tmp = path.with_suffix(".tmp")
    torch.save({"model": model.state_dict(), "ema": ema.state_dict(), "optimizer": optimizer.state_dict(), "step": step}, tmp)
    os.replace(tmp, path)


def export(cfg: DistillConfig, teacher_config: ModelConfig, ema: torch.nn.Module, step: int, pairs: int) -> Path:
    """The EMA student as run_dir/export (fp16): the teacher's config with the student recipe as its
    default, without the teacher's presets and made-up-mask calibration."""
    cost = [json.loads(line) for line in (cfg.run_dir / "precompute.jsonl").read_text().splitlines() if line.strip()] \
        if (cfg.run_dir / "precompute.jsonl").exists() else []
    task = {**teacher_config.task, "distilled_from": cfg.teacher, "teacher_recipe": Recipe.from_dict(cfg.teacher_recipe).to_dict(),
            "distill_steps": step, "distill_pairs": pairs, "teacher_seconds": round(sum(r["seconds"] for r in cost), 1),
            "distill_losses": {"teacher": "mse", "gt": cfg.gt_loss, "lambda_gt": cfg.lambda_gt}}
    config = teacher_config.replace(sampling=cfg.student_recipe(), presets={}, report=ReportSettings(), task=task)
    return save_model_folder(cfg.run_dir / "export", config, ema.state_dict())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sr3infer.train.distill", description=__doc__.splitlines()[0])
    parser.add_argument("config", help="distill config JSON (training/distill/)")
    parser.add_argument("--step", choices=["precompute", "train", "all"], default="all")
    parser.add_argument("--max-minutes", type=float, help="override the config's training time budget")
    parser.add_argument("--out-dir", help="override where runs are written")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    try:
        cfg = DistillConfig.from_json_file(args.config)
        overrides = {k: v for k, v in (("max_minutes", args.max_minutes), ("out_dir", args.out_dir)) if v is not None}
        cfg = replace(cfg, **overrides)
    except ValueError as err:
        parser.error(str(err))
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    if args.step in ("precompute", "all"):
        precompute(cfg)
    if args.step in ("train", "all"):
        print(train(cfg))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
