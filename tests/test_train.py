"""The training loop: a few real steps on a tiny model, resuming, exporting, and DDP with two CPU ranks."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from sr3infer import Upscaler
from sr3infer.train.data import FaceImages, gaussian_blur, make_lowres, resolve_data_root
from sr3infer.train.loop import TrainConfig, train

from conftest import REPO

TINY_MODEL = {
    "scale": 2, "lowres_size": 8, "prediction": "v", "residual": True,
    "unet": {"in_channels": 6, "out_channels": 3, "inner_channel": 8, "channel_mults": [1, 2], "num_res_blocks": 1,
             "attn_resolutions": [8], "dropout": 0.0, "norm_groups": 4, "image_size": 16},
}


@pytest.fixture
def face_folder(tmp_path):
    folder = tmp_path / "faces"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(3):
        Image.fromarray(rng.integers(0, 255, (218, 178, 3), dtype=np.uint8)).save(folder / f"{i:06d}.jpg")
    return folder


def _config(tmp_path, face_folder, **changes) -> TrainConfig:
    values = dict(name="tiny", data_kind="faces", data_root=str(face_folder), model=TINY_MODEL, out_dir=str(tmp_path / "runs"),
                  batch_size=2, patch_size=8, max_steps=3, max_minutes=5, threads=1, autocast="none", warmup_steps=2)
    values.update(changes)
    return TrainConfig(**values)


def test_training_steps_export_and_resume(tmp_path, face_folder):
    export = train(_config(tmp_path, face_folder))
    state = torch.load(tmp_path / "runs" / "tiny" / "state.pt", weights_only=True)
    assert state["step"] == 3
    upscaler = Upscaler.from_pretrained(export, device="cpu")
    assert upscaler.config.task["training_steps"] == 3
    assert upscaler.model.state_dict()["downs.0.weight"].dtype == torch.float32  # built in fp32 from fp16 files
    before = state["model"]["downs.0.weight"].clone()
    train(_config(tmp_path, face_folder, max_steps=5))  # resumes at step 3
    state = torch.load(tmp_path / "runs" / "tiny" / "state.pt", weights_only=True)
    assert state["step"] == 5 and not torch.equal(state["model"]["downs.0.weight"], before)


def test_training_can_start_from_an_exported_model_folder(tmp_path, face_folder):
    first = train(_config(tmp_path, face_folder, name="first"))
    second = _config(tmp_path, face_folder, name="second", init_from=str(first), max_steps=1, lr=0.0)
    export = train(second)
    a = Upscaler.from_pretrained(first, device="cpu").model.state_dict()
    b = Upscaler.from_pretrained(export, device="cpu").model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)  # lr 0: the weights came through unchanged
    steps = [json.loads((folder / "config.json").read_text())["task"]["training_steps"] for folder in (first, export)]
    assert steps[1] == steps[0] + 1  # the export counts the steps of its whole lineage


def test_training_config_rejects_unknown_keys(tmp_path):
    path = tmp_path / "cfg.json"
    path.write_text(json.dumps({"name": "x", "data_kind": "faces", "data_root": ".", "model": TINY_MODEL, "lr_typo": 1}))
    with pytest.raises(ValueError, match="lr_typo"):
        TrainConfig.from_json_file(path)


def test_data_root_is_the_first_existing_folder(tmp_path, face_folder):
    not_built, no_shared = tmp_path / "not-built", tmp_path / "no-shared"
    assert resolve_data_root([str(not_built), str(face_folder)]) == face_folder
    assert resolve_data_root(str(face_folder)) == face_folder
    with pytest.raises(FileNotFoundError, match="scripts/prepare_datasets.py") as error:
        resolve_data_root([str(not_built), str(no_shared)])
    assert str(not_built) in str(error.value) and str(no_shared) in str(error.value)


def test_training_configs_read_prepared_data_then_shared():
    configs = sorted(p for p in (REPO / "training").rglob("*.json")
                     if "history" not in p.parts and "records" not in p.parts  # run logs and distill records
                     and json.loads(p.read_text()).get("kind") != "distill")  # distill configs: tests/test_distill.py
    assert configs
    for path in configs:
        cfg = TrainConfig.from_json_file(path)
        folder = {"faces": "celeba/train", "natural": "natural/train"}[cfg.data_kind]
        prepared = {f".data/datasets/{folder}", ".data/datasets/natural-lossless/train"}  # lossless: real-photo runs
        assert cfg.data_root[0] in prepared, path
        assert cfg.data_root[1:] == [f"../shared/datasets/{folder}"], path


def test_low_res_inputs_are_made_like_inference_inputs(face_folder):
    import random

    hr = torch.stack([FaceImages(face_folder, 16).sample(random.Random(0)) for _ in range(2)])
    lowres = make_lowres(hr, 2)
    assert lowres.shape == (2, 3, 8, 8)
    assert torch.allclose((lowres + 1) * 127.5, ((lowres + 1) * 127.5).round(), atol=1e-4)  # 8-bit grid
    blurred = gaussian_blur(hr, torch.tensor([0.0, 2.0]))
    assert torch.allclose(blurred[0], hr[0], atol=1e-6) and not torch.allclose(blurred[1], hr[1], atol=1e-2)


@pytest.mark.slow
def test_ddp_with_two_cpu_ranks(tmp_path, face_folder):
    cfg = _config(tmp_path, face_folder, name="ddp", max_steps=2)
    path = tmp_path / "ddp.json"
    path.write_text(json.dumps(cfg.__dict__))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
               "-m", "sr3infer.train", str(path)]
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=180)
    if result.returncode != 0 and "SIGABRT" in result.stderr:
        # The CI flake of 2026-12-04 (a rank aborting in the interpreter's teardown, DDP keeping the gloo group
        # alive) is cured by `leave_without_teardown`; this one clean retry stays as a safety net. Any other failure,
        # or a second abort, still fails the test.
        shutil.rmtree(tmp_path / "runs" / "ddp", ignore_errors=True)
        result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=180)
    assert result.returncode == 0, result.stderr[-2000:]
    state = torch.load(tmp_path / "runs" / "ddp" / "state.pt", weights_only=True)
    assert state["step"] == 2
    assert (tmp_path / "runs" / "ddp" / "export" / "model.safetensors").is_file()


def _eval_folder(tmp_path) -> "Path":
    """Two good 16x16 images, one 24x24, one 3x3, one truncated PNG and one text file named .png."""
    folder = tmp_path / "val"
    folder.mkdir()
    rng = np.random.default_rng(1)
    for name, side in (("a.png", 16), ("b.png", 16), ("c_bigger.png", 24), ("d_tiny.png", 3)):
        Image.fromarray(rng.integers(0, 255, (side, side, 3), dtype=np.uint8)).save(folder / name)
    data = (folder / "a.png").read_bytes()
    (folder / "e_truncated.png").write_bytes(data[: len(data) // 2])
    (folder / "f_text.png").write_text("not an image")
    return folder


def test_eval_skips_bad_files_by_the_stated_rule_and_names_them(tmp_path, tiny_model_dir, capsys):
    """mixed sizes, a 3x3 image and a truncated file stopped `sr3infer eval` with a raw message."""
    from sr3infer.cli import main

    folder = _eval_folder(tmp_path)
    out = tmp_path / "result.json"
    assert main(["eval", str(tiny_model_dir), str(folder), "--protocol", "plain", "--no-fid", "--steps", "1",
                 "--json", str(out)]) == 0
    err = capsys.readouterr().err
    for name, reason in (("c_bigger.png", "24x24 differs from the first image's 16x16"),
                         ("d_tiny.png", "3x3 is too small"), ("e_truncated.png", "truncated or corrupt"),
                         ("f_text.png", "is not an image")):
        assert f"sr3infer eval: skipped {folder / name}: " in err and reason in err
    result = json.loads(out.read_text())
    assert result["images"] == 2 and len(result["skipped"]) == 4


def test_eval_faces_protocol_skips_small_images_and_stops_when_none_is_left(tmp_path, tiny_model_dir, capsys):
    from sr3infer.cli import main
    from sr3infer.train.evaluate import load_eval_set

    folder = _eval_folder(tmp_path)
    with pytest.raises(ValueError, match=r"No usable image in .* for the faces protocol; 6 skipped \(a\.png: 16x16 "
                                         r"is smaller than the faces protocol's crop box 178x198"):
        load_eval_set(folder, "faces", 16)
    assert main(["eval", str(tiny_model_dir), str(folder), "--no-fid", "--steps", "1"]) != 0
    err = capsys.readouterr().err
    assert "No usable image" in err and "Traceback" not in err


def test_training_on_degraded_inputs_runs_and_checks_its_block(tmp_path, face_folder):
    from sr3infer.train.loop import setup, training_batch

    run = setup(_config(tmp_path, face_folder, degradation={"clean_prob": 0.0}))
    hr, cond = training_batch(run)
    assert hr.shape == cond.shape == (2, 3, 8, 8)
    assert train(_config(tmp_path, face_folder, name="real", degradation={})).is_dir()
    with pytest.raises(ValueError, match="clean_prob must be a probability"):
        _config(tmp_path, face_folder, degradation={"clean_prob": 5})


def test_multi_scale_crops_cover_more_of_the_photo(tmp_path):
    import random

    from sr3infer.train.data import NaturalImages

    folder = tmp_path / "photos"
    folder.mkdir()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(folder / "a.png")
    plain, multi = NaturalImages(folder, 32), NaturalImages(folder, 32, min_scale=0.5)
    rng = random.Random(0)
    assert plain.sample(rng).shape == multi.sample(rng).shape == (3, 32, 32)
    # a downscaled crop is smoother than a full-resolution one of white noise
    assert float(multi.sample(random.Random(1)).diff(dim=-1).abs().mean()) < \
        float(plain.sample(random.Random(1)).diff(dim=-1).abs().mean())


def _two_images(tmp_path) -> "Path":
    folder = tmp_path / "val2"
    folder.mkdir()
    rng = np.random.default_rng(2)
    for name in ("a.png", "b.png"):
        Image.fromarray(rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)).save(folder / name)
    return folder


def _eval(model_dir, data, *extra) -> int:
    from sr3infer.cli import main

    return main(["eval", str(model_dir), str(data), "--protocol", "plain", "--no-fid", "--steps", "1", *extra])


def test_eval_save_dir_never_replaces_a_file_unasked(tmp_path, tiny_model_dir, capsys):
    data, saved = _two_images(tmp_path), tmp_path / "saved"
    saved.mkdir()
    (saved / "0001.png").write_bytes(b"the user's picture")
    (saved / "notes.txt").write_text("kept")
    assert _eval(tiny_model_dir, data, "--save-dir", str(saved)) == 2
    out, err = capsys.readouterr()
    assert f"--save-dir {str(saved)!r} already holds 0001.png (1 of the 2 names this run writes); pass --overwrite" \
        in err and len(err.strip().splitlines()) == 1 and "| method |" not in out  # refused before the evaluation
    assert sorted(p.name for p in saved.iterdir()) == ["0001.png", "notes.txt"]
    assert (saved / "0001.png").read_bytes() == b"the user's picture"
    assert _eval(tiny_model_dir, data, "--save-dir", str(saved), "--overwrite") == 0
    assert Image.open(saved / "0001.png").size == (16, 16) and Image.open(saved / "0000.png").size == (16, 16)
    assert sorted(p.name for p in saved.iterdir()) == ["0000.png", "0001.png", "notes.txt"]  # no temporary files


def test_eval_json_is_a_new_file_unless_overwrite_never_written_through_a_symlink(tmp_path, tiny_model_dir, capsys):
    data, config = _two_images(tmp_path), tiny_model_dir / "config.json"
    before = config.read_bytes()
    assert _eval(tiny_model_dir, data, "--json", str(config)) == 2
    err = capsys.readouterr().err
    assert f"--json {str(config)!r} already exists; pass --overwrite" in err and len(err.strip().splitlines()) == 1
    assert config.read_bytes() == before
    link, dangling = tmp_path / "result.json", tmp_path / "dangling.json"
    link.symlink_to(config)
    dangling.symlink_to(tmp_path / "nowhere.json")
    assert _eval(tiny_model_dir, data, "--json", str(dangling)) == 2 and not (tmp_path / "nowhere.json").exists()
    assert _eval(tiny_model_dir, data, "--json", str(link), "--overwrite") == 0
    assert config.read_bytes() == before and not link.is_symlink() and json.loads(link.read_text())["images"] == 2
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []  # no temporary file left
    saved = tmp_path / "saved"
    assert _eval(tiny_model_dir, data, "--save-dir", str(saved), "--json", str(saved / "0001.png")) == 2
    assert "is also one of the images --save-dir writes" in capsys.readouterr().err and not saved.exists()
    assert _eval(tiny_model_dir, data, "--json", str(config / "result.json")) == 2
    assert f"is under {str(config)!r}, which is a file" in capsys.readouterr().err


def test_eval_scores_a_degraded_val_kind_against_the_same_bicubic(tmp_path, tiny_model_dir):
    from sr3infer.cli import main

    folder = tmp_path / "val"
    folder.mkdir()
    for i in range(2):
        Image.fromarray(np.random.default_rng(i).integers(0, 255, (16, 16, 3), dtype=np.uint8)).save(folder / f"{i}.png")
    scores = {}
    for kind in (None, "jpeg", "jpeg"):
        out = tmp_path / f"{kind}-{len(scores)}.json"
        extra = ["--degrade", kind] if kind else []
        assert main(["eval", str(tiny_model_dir), str(folder), "--protocol", "plain", "--no-fid", "--steps", "1",
                     "--json", str(out), *extra]) == 0
        scores[out.name] = json.loads(out.read_text())
    clean, first, again = scores.values()
    assert first["degradation"] == "jpeg" and first["bicubic"] == again["bicubic"]  # fixed seed per kind
    assert first["bicubic"]["psnr"] != clean["bicubic"]["psnr"]


def test_training_can_grow_an_exported_model_deeper(tmp_path, face_folder):
    first = train(_config(tmp_path, face_folder, name="first"))
    deeper = {**TINY_MODEL, "unet": {**TINY_MODEL["unet"], "num_res_blocks": 2}}
    export = train(_config(tmp_path, face_folder, name="deeper", model=deeper, init_from=str(first), init_grow=True,
                           max_steps=1, lr=0.0))
    small = Upscaler.from_pretrained(first, device="cpu").model
    big = Upscaler.from_pretrained(export, device="cpu").model
    assert big.config.num_res_blocks == 2
    x, level = torch.randn(1, 6, 16, 16), torch.tensor([0.5])
    with torch.no_grad():
        assert torch.allclose(big(x, level), small(x, level), atol=1e-5)  # lr 0: the grown start, fp16 files


def test_growing_needs_the_same_network_but_its_depth(tmp_path, face_folder):
    first = train(_config(tmp_path, face_folder, name="first"))
    wider = {**TINY_MODEL, "unet": {**TINY_MODEL["unet"], "num_res_blocks": 2, "inner_channel": 16}}
    with pytest.raises(ValueError, match="only in num_res_blocks"):
        train(_config(tmp_path, face_folder, name="wider", model=wider, init_from=str(first), init_grow=True))
    with pytest.raises(ValueError, match="init_grow"):
        _config(tmp_path, face_folder, init_grow=True)
