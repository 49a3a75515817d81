"""Training config checks and the two optional levers: Min-SNR-γ loss weighting and a share of whole-image steps."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from sr3infer.train.losses import min_snr_weights, training_loss
from sr3infer.train.loop import TrainConfig, setup, train, training_batch, whole_image_step

from test_train import TINY_MODEL, _config, face_folder  # noqa: F401 (face_folder is a fixture)


@pytest.mark.parametrize("key, value, message", [
    ("loss", "mse", "'loss' must be one of 'l1', 'l2', got 'mse'"),
    ("data_kind", "face", "'data_kind' must be one of 'faces', 'natural', got 'face'"),
    ("autocast", "fp32", "'autocast' must be one of 'bf16', 'fp16', 'none', got 'fp32'"),
    ("autocast", None, "'autocast' must be one of .*, got None"),
    ("loss_weighting", "snr", "'loss_weighting' must be one of 'none', 'min_snr', got 'snr'"),
    ("whole_image_fraction", 1.5, "'whole_image_fraction' must be a number from 0 to 1, got 1.5"),
    ("whole_image_fraction", "half", "'whole_image_fraction' must be a number from 0 to 1, got 'half'"),
])
def test_config_load_rejects_unknown_values(tmp_path, key, value, message):
    """Values that used to fall through silently (to MSE, natural images, fp32) now stop the run at load time."""
    path = tmp_path / "cfg.json"
    path.write_text(json.dumps({"name": "x", "data_kind": "faces", "data_root": ".", "model": TINY_MODEL, key: value}))
    with pytest.raises(ValueError, match=message):
        TrainConfig.from_json_file(path)


def test_whole_image_fraction_needs_patches(tmp_path, face_folder):
    with pytest.raises(ValueError, match="'patch_size' is 0"):
        _config(tmp_path, face_folder, patch_size=0, whole_image_fraction=0.5)


def _levels_with_snr(snr: list[float]) -> torch.Tensor:
    snr_t = torch.tensor(snr, dtype=torch.float64)
    return (snr_t / (1 + snr_t)).sqrt().float()  # g with g^2 / (1 - g^2) = snr


def test_min_snr_weights_match_the_paper():
    """Hang et al. 2023, γ = 5: min(SNR, γ) on x0, min(SNR, γ)/SNR on eps, min(SNR, γ)/(SNR + 1) on v."""
    level = _levels_with_snr([0.25, 1.0, 10.0])
    torch.testing.assert_close(min_snr_weights(level, "x0"), torch.tensor([0.25, 1.0, 5.0]), rtol=1e-5, atol=0)
    torch.testing.assert_close(min_snr_weights(level, "eps"), torch.tensor([1.0, 1.0, 0.5]), rtol=1e-5, atol=0)
    torch.testing.assert_close(min_snr_weights(level, "v"), torch.tensor([0.2, 0.5, 5 / 11]), rtol=1e-5, atol=0)
    ends = min_snr_weights(torch.tensor([0.0, 1.0]), "eps")  # SNR 0 and infinity stay finite
    assert torch.isfinite(ends).all() and ends.tolist() == [1.0, 0.0]
    with pytest.raises(ValueError, match="expected eps, v or x0"):
        min_snr_weights(level, "score")


@pytest.mark.parametrize("prediction", ["eps", "v"])
def test_min_snr_weighted_loss_is_min_snr_in_x0_space(prediction):
    """The weights make every target's squared error equal to min(SNR, γ) times the implied x0 error."""
    torch.manual_seed(0)
    level = torch.rand(64, dtype=torch.float64).clamp(0.05, 0.95)
    g, s = level.view(-1, 1), (1 - level * level).sqrt().view(-1, 1)
    x0, eps = torch.randn(64, 12, dtype=torch.float64), torch.randn(64, 12, dtype=torch.float64)
    x_t = g * x0 + s * eps
    guess = torch.randn(64, 12, dtype=torch.float64)  # the network's output, read as eps or as v
    target = eps if prediction == "eps" else g * eps - s * x0
    x0_hat = (x_t - s * guess) / g if prediction == "eps" else g * x_t - s * guess
    snr = level**2 / (1 - level**2)
    per_sample = ((guess - target) ** 2).mean(1) * min_snr_weights(level, prediction).double()
    torch.testing.assert_close(per_sample, snr.clamp(max=5) * ((x0_hat - x0) ** 2).mean(1), rtol=1e-4, atol=1e-9)


def test_training_loss_without_weights_is_the_plain_mean():
    out, target = torch.randn(3, 3, 4, 4), torch.randn(3, 3, 4, 4)
    assert torch.equal(training_loss(out, target, "l1"), F.l1_loss(out, target))
    assert torch.equal(training_loss(out, target, "l2"), F.mse_loss(out, target))
    torch.testing.assert_close(training_loss(out, target, "l2", torch.ones(3)), F.mse_loss(out, target))
    weighted = training_loss(out, target, "l1", torch.tensor([1.0, 0.0, 0.0]))
    torch.testing.assert_close(weighted, (out[0] - target[0]).abs().mean() / 3)


@pytest.mark.parametrize("lever", [{"loss_weighting": "min_snr"}, {"noise_sampling": "lognormal"}])
def test_a_training_lever_runs_and_changes_the_updates(tmp_path, face_folder, lever):
    plain = train(_config(tmp_path, face_folder, name="plain", max_steps=2))
    changed = train(_config(tmp_path, face_folder, name="lever", max_steps=2, **lever))
    a = torch.load(plain.parent / "state.pt", weights_only=True)["model"]
    b = torch.load(changed.parent / "state.pt", weights_only=True)["model"]
    assert all(torch.isfinite(v).all() for v in b.values())
    assert not all(torch.equal(a[k], b[k]) for k in a)  # same seed and data: only the lever differs


def test_whole_image_steps_have_the_configured_share():
    cfg = TrainConfig(name="x", data_kind="faces", data_root=".", model=TINY_MODEL, whole_image_fraction=0.25)
    share = np.mean([whole_image_step(cfg, step) for step in range(4000)])
    assert abs(share - 0.25) < 0.03, share
    assert [whole_image_step(cfg, step) for step in range(50)] == [whole_image_step(cfg, step) for step in range(50)]
    for fraction, expected in ((0.0, False), (1.0, True)):
        cfg.whole_image_fraction = fraction
        assert all(whole_image_step(cfg, step) is expected for step in range(200))


def test_whole_image_batches_are_full_size(tmp_path, face_folder):
    for fraction, side in ((0.0, 8), (1.0, 16)):  # patch 8, model out_size 16
        run = setup(_config(tmp_path, face_folder, whole_image_fraction=fraction))
        hr, cond = training_batch(run)
        assert hr.shape == cond.shape == (2, 3, side, side)
    export = train(_config(tmp_path, face_folder, name="mixed", whole_image_fraction=0.5, max_steps=4))
    assert torch.load(export.parent / "state.pt", weights_only=True)["step"] == 4


@pytest.mark.parametrize("key, value, message", [
    ("batch_size", 0, "'batch_size' must be a whole number of at least 1, got 0"),
    ("batch_size", 2.5, "'batch_size' must be a whole number of at least 1, got 2.5"),
    ("lr", "fast", "'lr' must be a number from 0 to 1, got 'fast'"),
    ("lr", float("nan"), "'lr' must be a number from 0 to 1, got nan"),
    ("max_steps", True, "'max_steps' must be a whole number of at least 1, got True"),
    ("name", "../../escaped_run", "'name' must be a plain folder name .* got '../../escaped_run'"),
    ("name", "/tmp/abs", "'name' must be a plain folder name"),
    ("data_root", 5, "'data_root' must be a folder or a list of folders, got 5"),
    ("channels_last", "false", "'channels_last' must be true or false, got 'false'"),
    ("threads", 100000, "'threads' must be at most 1024, got 100000"),
    ("degradation", [1], "'degradation' must be an object or null"),
])
def test_config_types_ranges_and_names_are_checked_at_load(tmp_path, key, value, message):
    """batch_size 0 crashed in torch.stack after making the run folder; lr "fast" raised a
    TypeError; a name with '..' wrote outside out_dir. Now each stops at load, naming the file and the key."""
    path = tmp_path / "cfg.json"
    values = {"name": "x", "data_kind": "faces", "data_root": ".", "model": TINY_MODEL, "out_dir": str(tmp_path / "runs")}
    path.write_text(json.dumps({**values, key: value}))
    with pytest.raises(ValueError, match=rf"cfg\.json: Training config {message}"):
        TrainConfig.from_json_file(path)
    assert not (tmp_path / "runs").exists() and not (tmp_path.parent / "escaped_run").exists()


def test_config_file_that_is_not_a_json_object(tmp_path):
    path = tmp_path / "cfg.json"
    path.write_text("[1, 2]")
    with pytest.raises(ValueError, match="cfg.json' must be a JSON object, got list"):
        TrainConfig.from_json_file(path)
    path.write_text("{oops")
    with pytest.raises(ValueError, match="cfg.json' could not be read as JSON"):
        TrainConfig.from_json_file(path)
    path.write_text(json.dumps({"name": "x"}))
    with pytest.raises(ValueError, match=r"missing required key\(s\) \['data_kind', 'data_root', 'model'\]"):
        TrainConfig.from_json_file(path)


@pytest.mark.parametrize("flag, value, message", [
    ("--max-minutes", "nan", "--max-minutes must be a number of at least 0, got nan"),
    ("--max-minutes", "-5", "--max-minutes must be a number of at least 0, got -5"),
])
def test_command_line_overrides_pass_the_config_bounds(tmp_path, capsys, flag, value, message):
    from sr3infer.train.loop import main

    path = tmp_path / "cfg.json"
    path.write_text(json.dumps({"name": "x", "data_kind": "faces", "data_root": ".", "model": TINY_MODEL,
                                "out_dir": str(tmp_path / "runs")}))
    with pytest.raises(SystemExit) as exit_info:
        main([str(path), flag, value])
    assert exit_info.value.code == 2 and message in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()


def test_data_exclude_leaves_out_files_by_glob(tmp_path):
    from PIL import Image

    from sr3infer.train.data import NaturalImages, list_images

    for name in ("stars_1.png", "stars_2.png", "city.png"):
        Image.new("RGB", (32, 32), (10, 20, 30)).save(tmp_path / name)
    assert [p.name for p in list_images(tmp_path, ["stars_*"])] == ["city.png"]
    assert len(NaturalImages(tmp_path, 16, exclude=["stars_*"])) == 1
    with pytest.raises(ValueError, match=r"left by data_exclude \['\*\.png'\]"):
        list_images(tmp_path, ["*.png"])


def test_data_exclude_must_be_a_list_of_globs(tmp_path):
    from sr3infer.train.loop import TrainConfig

    base = {"name": "x", "data_kind": "natural", "data_root": str(tmp_path), "model": {}}
    path = tmp_path / "c.json"
    path.write_text(json.dumps({**base, "data_exclude": "stars_*"}))
    with pytest.raises(ValueError, match="data_exclude.*list of file-name globs"):
        TrainConfig.from_json_file(path)


def test_the_learning_rate_warms_up_then_decays_on_a_cosine_to_its_final_value():
    from sr3infer.train.loop import learning_rate

    base = {"name": "x", "data_kind": "faces", "data_root": ".", "model": TINY_MODEL, "lr": 2e-4, "warmup_steps": 10}
    constant = TrainConfig(**base)
    assert learning_rate(constant, 4) == pytest.approx(1e-4) and learning_rate(constant, 10**6) == 2e-4
    decaying = TrainConfig(**base, lr_decay_from=100, lr_decay_to=300, lr_final=2e-5)
    assert learning_rate(decaying, 100) == 2e-4
    assert learning_rate(decaying, 200) == pytest.approx(1.1e-4)  # halfway down the cosine
    assert learning_rate(decaying, 300) == pytest.approx(2e-5) and learning_rate(decaying, 5000) == pytest.approx(2e-5)
    rates = [learning_rate(decaying, s) for s in range(100, 301)]
    assert all(a >= b for a, b in zip(rates, rates[1:]))


@pytest.mark.parametrize("values", [{"lr_decay_from": 300, "lr_decay_to": 100},
                                    {"lr_decay_to": 100, "lr_final": 1e-3}])
def test_a_decay_that_runs_backwards_or_upwards_is_refused_at_load(tmp_path, values):
    path = tmp_path / "cfg.json"
    path.write_text(json.dumps({"name": "x", "data_kind": "faces", "data_root": ".", "model": TINY_MODEL, **values}))
    with pytest.raises(ValueError, match="'lr_decay_to' .* must come after 'lr_decay_from' .* at most 'lr'"):
        TrainConfig.from_json_file(path)
