"""The distillation trainer (sr3infer.train.distill) on a tiny random teacher: pairs, losses, the train/serve match."""

from __future__ import annotations

import json
import random
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from sr3infer.models.config import ModelConfig, Recipe
from sr3infer.train.distill import (DistillConfig, Pairs, distill_loss, main, pair_seed, precompute, start_noise,
                                    student_output, train)
from sr3infer.upscaler import Upscaler
from sr3infer.models.weights import build_model

from test_train import face_folder  # noqa: F401 (a fixture)

REPO = Path(__file__).resolve().parents[1]
TINY = {  # as tests/test_train.py's TINY_MODEL: v-prediction, residual, 8 -> 16 px
    "scale": 2, "lowres_size": 8, "prediction": "v", "residual": True,
    "unet": {"in_channels": 6, "out_channels": 3, "inner_channel": 8, "channel_mults": [1, 2], "num_res_blocks": 1,
             "attn_resolutions": [8], "dropout": 0.0, "norm_groups": 4, "image_size": 16},
    "sampling": {"sampler": "ancestral", "num_steps": 4, "spacing": "quadratic", "consistency": "every"},
}
TEACHER_RECIPE = {"sampler": "ddim", "num_steps": 4, "spacing": "quadratic", "consistency": "every", "eta": 0.0}


@pytest.fixture
def teacher_dir(tmp_path) -> Path:
    config = ModelConfig.from_dict(TINY)
    torch.manual_seed(1)
    return Upscaler(config, build_model(config), device="cpu").save_pretrained(tmp_path / "teacher")


def _config(tmp_path, face_folder, teacher_dir, **changes) -> DistillConfig:
    values = dict(name="tiny", data_kind="faces", data_root=str(face_folder), teacher=str(teacher_dir),
                  teacher_recipe=TEACHER_RECIPE, out_dir=str(tmp_path / "runs"), pairs=10, shard_size=4, teacher_batch=3,
                  teacher_dtype="fp32", batch_size=4, lr=1e-3, warmup_steps=1, max_steps=3, autocast="none", threads=1)
    values.update(changes)
    return DistillConfig(**values)


def test_precompute_writes_shards_resumes_and_is_deterministic(tmp_path, face_folder, teacher_dir):
    cfg = _config(tmp_path, face_folder, teacher_dir)
    folder = precompute(cfg)
    shards = sorted(folder.glob("*.safetensors"))
    assert [p.name for p in shards] == ["00000.safetensors", "00001.safetensors", "00002.safetensors"]
    last = load_file(shards[-1])
    assert last["z"].shape == (2, 3, 16, 16) and last["lowres"].shape == (2, 3, 8, 8) and last["hr"].dtype == torch.uint8
    assert last["seed"].tolist() == [pair_seed(0, 8), pair_seed(0, 9)]
    assert torch.equal(last["z"], start_noise(last["seed"].tolist(), (3, 16, 16)))
    cost = [json.loads(line) for line in (cfg.run_dir / "precompute.jsonl").read_text().splitlines()]
    assert [r["pairs"] for r in cost] == [4, 4, 2] and all(r["network_calls_per_pair"] == 4 for r in cost)

    shards[1].unlink()  # resume: only the missing shard is made again, with the same content
    stamp = shards[0].stat().st_mtime_ns
    precompute(cfg)
    assert shards[0].stat().st_mtime_ns == stamp and shards[1].exists()
    assert len((cfg.run_dir / "precompute.jsonl").read_text().splitlines()) == 4

    again = precompute(replace(cfg, out_dir=str(tmp_path / "again")))  # the same seed: the same pairs, bit for bit
    for path in shards:
        a, b = load_file(path), load_file(again / path.name)
        assert all(torch.equal(a[n], b[n]) for n in a)
    pairs = Pairs(folder)
    assert len(pairs) == 10
    batch = pairs.batch([0, 9])
    assert batch["hr"].min() >= -1 and batch["hr"].max() <= 1 and batch["teacher"].shape == (2, 3, 16, 16)


@pytest.mark.parametrize("steps", [1, 2])
def test_student_output_is_the_ddim_sampler(teacher_dir, steps):
    """The function the student is trained through is what `upscale_tensor` runs for its DDIM recipe and noise z."""
    upscaler = Upscaler.from_pretrained(teacher_dir, device="cpu", torch_dtype=torch.float32)
    lowres = torch.rand(3, 3, 8, 8) * 2 - 1
    seeds = [pair_seed(0, i) for i in range(3)]
    recipe = Recipe(sampler="ddim", num_steps=steps, spacing="trailing", consistency="every")
    served = upscaler.upscale_tensor(lowres, recipe=recipe, generator=[torch.Generator().manual_seed(s) for s in seeds],
                                     progress=False)
    ours = student_output(upscaler.model, upscaler.config, lowres, start_noise(seeds, (3, 16, 16)), steps=steps,
                          final=True)
    torch.testing.assert_close(ours, served, atol=1e-5, rtol=0)


def test_training_lowers_the_loss_exports_and_serves_as_trained(tmp_path, face_folder, teacher_dir):
    cfg = _config(tmp_path, face_folder, teacher_dir, pairs=8, shard_size=8, max_steps=30, lambda_gt=0.1)
    precompute(cfg)
    fixed = Pairs(cfg.run_dir / "pairs").batch(list(range(8)))

    def teacher_loss(model: torch.nn.Module, config: ModelConfig) -> float:
        with torch.no_grad():
            out = student_output(model, config, fixed["lowres"], fixed["z"])
        return distill_loss(cfg, out, fixed)[1]["loss_teacher"]

    start = Upscaler.from_pretrained(teacher_dir, device="cpu", torch_dtype=torch.float32)
    before = teacher_loss(start.model, start.config)
    export = train(cfg)
    assert torch.load(cfg.run_dir / "state.pt", weights_only=True)["step"] == 30
    served = Upscaler.from_pretrained(export, device="cpu", torch_dtype=torch.float32)
    assert served.config.sampling == Recipe(sampler="ddim", num_steps=1, spacing="trailing", consistency="every")
    assert served.config.task["distill_pairs"] == 8 and served.config.task["distill_steps"] == 30
    after = teacher_loss(served.model, served.config)
    print(f"loss to the teacher targets: {before:.5f} -> {after:.5f}")
    assert after < 0.7 * before, (before, after)

    # The train/serve match: the exported folder's default recipe reproduces the training-time output for the same z.
    gens = [torch.Generator().manual_seed(int(s)) for s in load_file(next((cfg.run_dir / "pairs").glob("*")))["seed"]]
    out = served.upscale_tensor(fixed["lowres"], generator=gens, progress=False)
    ours = student_output(served.model, served.config, fixed["lowres"], fixed["z"], final=True)
    torch.testing.assert_close(out, ours, atol=1e-5, rtol=0)

    cfg2 = replace(cfg, max_steps=32)  # resumes at step 30
    train(cfg2)
    assert torch.load(cfg.run_dir / "state.pt", weights_only=True)["step"] == 32
    assert len((cfg.run_dir / "log.jsonl").read_text().splitlines()) == 0  # logs every 50 steps


def test_command_line_runs_both_steps(tmp_path, face_folder, teacher_dir, capsys):
    cfg = _config(tmp_path, face_folder, teacher_dir, pairs=4, max_steps=2, student_steps=2)
    path = tmp_path / "distill.json"
    path.write_text(json.dumps(cfg.__dict__))
    assert main([str(path)]) == 0
    export = Path(capsys.readouterr().out.strip().splitlines()[-1])
    assert Upscaler.from_pretrained(export, device="cpu").config.sampling.num_steps == 2


def test_config_errors_name_the_key(tmp_path, face_folder, teacher_dir):
    with pytest.raises(ValueError, match="student_steps"):
        _config(tmp_path, face_folder, teacher_dir, student_steps=3)
    with pytest.raises(ValueError, match="gt_loss"):
        _config(tmp_path, face_folder, teacher_dir, gt_loss="l3")
    with pytest.raises(ValueError, match="num_steps"):
        _config(tmp_path, face_folder, teacher_dir, teacher_recipe={"sampler": "ddim", "num_steps": 0})
    path = tmp_path / "bad.json"
    path.write_text(json.dumps({"kind": "distill", "name": "x", "lambda_typo": 1}))
    with pytest.raises(ValueError, match="lambda_typo"):
        DistillConfig.from_json_file(path)


def test_shipped_distill_configs_read_prepared_data_then_shared():
    configs = sorted((REPO / "training" / "distill").glob("*.json"))
    assert len(configs) >= 2
    for path in configs:
        cfg = DistillConfig.from_json_file(path)
        folder = {"faces": "celeba/train", "natural": "natural/train"}[cfg.data_kind]
        # the prepared copy first (natural photos: the lossless set, then the JPEG one), the shared data last
        assert cfg.data_root[-2:] == [f".data/datasets/{folder}", f"../shared/datasets/{folder}"], path
        assert cfg.data_root[:-2] in ([], [".data/datasets/natural-lossless/train"]), path
        assert cfg.teacher in ("sr3-face-8x", "sr3-64-256") and cfg.card_notes, path
