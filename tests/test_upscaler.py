"""`Upscaler`: loading, input kinds in and out, reproducibility, prediction/residual variants, options, bad input."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from sr3infer.models.config import ModelConfig
from sr3infer.models.checkpoints import load_community_checkpoint
from sr3infer.sampling.prediction import to_x0, training_target
from sr3infer.images.resample import bicubic, consistency_projection
from sr3infer.sampling.samplers import SAMPLERS, sample_ddim
from sr3infer.upscaler import Upscaler
from sr3infer.models.weights import build_model

from conftest import FIXTURES, image_in_mode, require

RNG = np.random.default_rng(0)


def _rgb(size: int = 8) -> np.ndarray:
    return RNG.integers(0, 256, (size, size, 3), dtype=np.uint8)


def run(upscaler: Upscaler, images, **kwargs):
    kwargs = {"num_steps": 2, "seed": 0, "progress": False, **kwargs}
    return upscaler.upscale(images, **kwargs)


# The community checkpoint through the public API.


def test_community_checkpoint_upscales_16_to_32_end_to_end():
    path = require(FIXTURES / "tiny_gen.safetensors")
    upscaler = Upscaler.from_pretrained(path, scale=2, device="cpu")
    assert (upscaler.config.lowres_size, upscaler.config.out_size, upscaler.config.scale) == (16, 32, 2)
    image = Image.fromarray(RNG.integers(0, 256, (16, 16, 3), dtype=np.uint8))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the trained size: no off-size warning
        result = upscaler.upscale(image, num_steps=3, sampler="ddim", seed=3, progress=False)
    assert isinstance(result, Image.Image) and result.size == (32, 32) and result.mode == "RGB"

    # The same numbers as the documented manual route and as a hand-written SR3 loop.
    config, state = load_community_checkpoint(path, scale=2)
    manual = Upscaler(config, build_model(config, state), device="cpu")
    again = manual.upscale(image, num_steps=3, sampler="ddim", seed=3, progress=False)
    assert np.array_equal(np.asarray(result), np.asarray(again))

    lowres = torch.from_numpy(np.array(image)).permute(2, 0, 1)[None].float() / 127.5 - 1
    cond = bicubic(lowres, 32)
    noise = torch.randn(cond.shape, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        def denoise(x, level):  # the eps-prediction U-Net, its eps turned into the clean estimate
            return to_x0("eps", x, manual.model(torch.cat([cond, x], dim=1), level.float()), level)

        expected = sample_ddim(denoise, noise, config.schedule.inference_grid(3), disable=True).clamp(-1, 1)
    got = manual.upscale_tensor(lowres, num_steps=3, sampler="ddim", generator=torch.Generator().manual_seed(3),
                                progress=False)
    assert (got - expected).abs().max() <= 1e-5


def test_scale_must_match_an_sr3infer_model(tiny_model_dir):
    assert Upscaler.from_pretrained(tiny_model_dir, scale=2, device="cpu").config.scale == 2
    with pytest.raises(ValueError, match="scale=4 was requested.*x2 model"):
        Upscaler.from_pretrained(tiny_model_dir, scale=4, device="cpu")


# Saving, loading, reproducibility.


def test_save_then_load_gives_the_same_config_and_bitwise_the_same_output(tiny_upscaler, tmp_path):
    folder = tiny_upscaler.save_pretrained(tmp_path / "model")
    loaded = Upscaler.from_pretrained(folder, device="cpu")
    assert loaded.config == tiny_upscaler.config
    single = Upscaler.from_pretrained(folder / "model.safetensors", device="cpu")  # config from the metadata
    assert single.config == tiny_upscaler.config
    image = _rgb()
    for sampler in sorted(SAMPLERS):
        expected = run(tiny_upscaler, image, sampler=sampler, output_type="pt", seed=11)
        assert torch.equal(run(loaded, image, sampler=sampler, output_type="pt", seed=11), expected)
        assert torch.equal(run(single, image, sampler=sampler, output_type="pt", seed=11), expected)


def test_same_seed_same_output_and_a_new_seed_changes_it(tiny_upscaler):
    image = _rgb()
    first = run(tiny_upscaler, image, sampler="ancestral", seed=1, output_type="pt")
    assert torch.equal(first, run(tiny_upscaler, image, sampler="ancestral", seed=1, output_type="pt"))
    assert not torch.allclose(first, run(tiny_upscaler, image, sampler="ancestral", seed=2, output_type="pt"))
    generator_result = run(tiny_upscaler, image, sampler="ancestral", seed=None, output_type="pt",
                           generator=torch.Generator().manual_seed(1))
    assert torch.equal(first, generator_result)  # seed s for image 0 is a generator seeded with s


def test_a_batch_equals_the_images_one_by_one(tiny_upscaler):
    images = [RNG.random((8, 8, 3), dtype=np.float32) for _ in range(3)]
    together = run(tiny_upscaler, images, sampler="ancestral", num_steps=3, seed=5, batch_size=3)
    chunked = run(tiny_upscaler, images, sampler="ancestral", num_steps=3, seed=5, batch_size=2)
    for k, image in enumerate(images):
        alone = run(tiny_upscaler, image, sampler="ancestral", num_steps=3, seed=5 + k)
        assert np.abs(together[k] - alone).max() <= 1e-4
        assert np.abs(chunked[k] - alone).max() <= 1e-4
    assert not np.allclose(together[0], together[1], atol=1e-2)  # each image has its own noise


# Input kinds: the same kind, count, mode/dtype come back, `scale` times larger.


@pytest.mark.parametrize("mode, out_mode", [
    ("RGB", "RGB"), ("L", "L"), ("RGBA", "RGBA"), ("LA", "LA"), ("I;16", "I;16"), ("F", "F"),
    ("P", "RGB"), ("CMYK", "RGB"), ("1", "L"), ("YCbCr", "RGB"),
])
def test_pil_modes(tiny_upscaler, mode, out_mode):
    result = run(tiny_upscaler, image_in_mode(mode, RNG))
    assert isinstance(result, Image.Image)
    assert result.mode == out_mode and result.size == (16, 16)


@pytest.mark.parametrize("array, shape, dtype", [
    (_rgb(), (16, 16, 3), np.uint8),
    (_rgb()[..., 0], (16, 16), np.uint8),
    (_rgb()[..., :1], (16, 16, 1), np.uint8),
    (RNG.integers(0, 256, (8, 8, 4), dtype=np.uint8), (16, 16, 4), np.uint8),
    (RNG.integers(0, 65536, (8, 8, 3), dtype=np.uint16), (16, 16, 3), np.uint16),
    (RNG.random((8, 8, 3), dtype=np.float32), (16, 16, 3), np.float32),
    (RNG.random((8, 8)), (16, 16), np.float64),
    (RNG.integers(0, 256, (2, 8, 8, 3), dtype=np.uint8), (2, 16, 16, 3), np.uint8),
])
def test_numpy_inputs(tiny_upscaler, array, shape, dtype):
    result = run(tiny_upscaler, array)
    assert isinstance(result, np.ndarray)
    assert result.shape == shape and result.dtype == dtype
    # The values: upscale_tensor on the same pixels (channels-first, [-1, 1]) and seeds, converted back.
    top = {np.uint8: 255, np.uint16: 65535}.get(dtype, 1)
    batch = array if array.ndim == 4 else array[None]
    unit = torch.from_numpy(np.asarray(batch, dtype=np.float64) / top).float()
    unit = unit[..., None] if unit.dim() == 3 else unit
    expected = _expected_unit(tiny_upscaler, unit.permute(0, 3, 1, 2)).permute(0, 2, 3, 1).numpy()
    got = (np.asarray(result, dtype=np.float64) / top).reshape(expected.shape)
    assert np.abs(got - expected).max() <= 0.5 / top + 1e-5


def _expected_unit(upscaler: Upscaler, unit: torch.Tensor) -> torch.Tensor:
    """What `run` should give for (N, C, h, w) in [0, 1]: gray as 3 equal channels then their mean, alpha resized."""
    channels = unit.shape[1]
    colour = unit[:, :3] if channels in (3, 4) else unit[:, :1].expand(-1, 3, -1, -1)
    generators = [torch.Generator().manual_seed(k) for k in range(len(unit))]  # run(): seed 0, image k: seed k
    out = (upscaler.upscale_tensor(colour * 2 - 1, num_steps=2, generator=generators, progress=False) + 1) / 2
    if channels in (1, 2):
        out = out.mean(1, keepdim=True)
    if channels in (2, 4):
        out = torch.cat([out, bicubic(unit[:, -1:], tuple(out.shape[-2:])).clamp(0, 1)], dim=1)
    return out.double()


@pytest.mark.parametrize("tensor, shape, dtype", [
    (torch.rand(3, 8, 8), (3, 16, 16), torch.float32),
    (torch.rand(1, 8, 8), (1, 16, 16), torch.float32),
    (torch.rand(4, 8, 8), (4, 16, 16), torch.float32),
    (torch.rand(2, 3, 8, 8), (2, 3, 16, 16), torch.float32),
    (torch.randint(0, 256, (3, 8, 8), dtype=torch.uint8), (3, 16, 16), torch.uint8),
])
def test_torch_inputs(tiny_upscaler, tensor, shape, dtype):
    result = run(tiny_upscaler, tensor)
    assert isinstance(result, torch.Tensor)
    assert result.shape == shape and result.dtype == dtype
    top = 255 if dtype == torch.uint8 else 1
    batch = tensor if tensor.dim() == 4 else tensor[None]
    expected = _expected_unit(tiny_upscaler, batch.double().div(top).float())
    assert (result.double().div(top).reshape(expected.shape) - expected).abs().max() <= 0.5 / top + 1e-5


def test_paths_and_lists(tiny_upscaler, tmp_path):
    path = tmp_path / "in.png"
    Image.fromarray(_rgb()).save(path)
    result = run(tiny_upscaler, str(path))
    assert isinstance(result, Image.Image) and result.size == (16, 16)
    assert isinstance(run(tiny_upscaler, path), Image.Image)  # pathlib.Path too

    mixed = [Image.fromarray(_rgb()), _rgb(), torch.rand(3, 8, 8), str(path)]
    results = run(tiny_upscaler, mixed)
    assert isinstance(results, list) and len(results) == 4
    assert [type(r) for r in results] == [type(mixed[0]), np.ndarray, torch.Tensor, type(mixed[0])]
    assert isinstance(run(tiny_upscaler, (_rgb(),)), list)
    assert run(tiny_upscaler, []) == []


@pytest.mark.parametrize("output_type, kind", [("pil", Image.Image), ("np", np.ndarray), ("pt", torch.Tensor)])
def test_output_type_overrides_the_kind(tiny_upscaler, output_type, kind):
    assert isinstance(run(tiny_upscaler, torch.rand(3, 8, 8), output_type=output_type), kind)


def test_grayscale_in_grayscale_out(tiny_upscaler):
    gray = _rgb()[..., 0]
    as_rgb = np.repeat(gray[..., None], 3, axis=-1)
    out_gray = run(tiny_upscaler, Image.fromarray(gray))
    out_rgb = np.asarray(run(tiny_upscaler, Image.fromarray(as_rgb)), dtype=np.float64)
    assert out_gray.mode == "L"
    # The single channel is the mean of the model's three, which see the gray image as RGB.
    assert np.abs(np.asarray(out_gray, dtype=np.float64) - out_rgb.mean(axis=-1)).max() <= 1


def test_rgba_keeps_its_alpha_upscaled_separately(tiny_upscaler):
    rgb = _rgb()
    alpha = np.zeros((8, 8), dtype=np.uint8)
    alpha[:, 4:] = 255
    rgba = Image.fromarray(np.dstack([rgb, alpha]), mode="RGBA")
    result = np.asarray(run(tiny_upscaler, rgba))
    assert result.shape == (16, 16, 4)
    assert (result[:, :6, 3] == 0).all() and (result[:, 10:, 3] == 255).all()
    unit = torch.from_numpy(alpha / 255.0).float()[None, None]
    expected = (bicubic(unit, 16).clamp(0, 1) * 255).round()[0, 0].numpy()
    assert np.abs(result[..., 3] - expected).max() <= 1
    # The colour channels do not see the alpha.
    assert np.array_equal(result[..., :3], np.asarray(run(tiny_upscaler, Image.fromarray(rgb))))


def test_16_bit_inputs_keep_16_bits(tiny_upscaler):
    result = run(tiny_upscaler, image_in_mode("I;16", RNG))
    values = np.asarray(result)
    assert result.mode == "I;16" and values.dtype == np.uint16
    assert values.max() > 255 and (values % 257 != 0).any()  # real 16-bit values, not 8-bit ones scaled
    array = run(tiny_upscaler, RNG.integers(0, 65536, (8, 8, 3), dtype=np.uint16))
    assert array.dtype == np.uint16 and array.max() > 255 and (array % 257 != 0).any()


def test_off_size_input_warns_and_is_still_upscaled(tiny_upscaler):
    with pytest.warns(UserWarning, match="trained on 8x8 inputs; got 6x6"):
        result = run(tiny_upscaler, RNG.integers(0, 256, (6, 6, 3), dtype=np.uint8))
    assert result.shape == (12, 12, 3)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        run(tiny_upscaler, _rgb(8))
    with pytest.warns(UserWarning, match="got 7x5"):  # width x height
        assert run(tiny_upscaler, RNG.random((5, 7, 3))).shape == (10, 14, 3)


# Predictions, residual models and options, against a model that knows the answer.


class _Oracle(nn.Module):
    """What a perfect model of the single image `hr` predicts: its eps, v or x0 (of hr - cond if residual)."""

    def __init__(self, hr: torch.Tensor, config: ModelConfig) -> None:
        super().__init__()
        self.noise_level_mlp = nn.Linear(1, 1)  # the Upscaler keeps this module in float32
        self.hr, self.prediction, self.residual = hr.double(), config.prediction, config.residual

    def forward(self, inputs: torch.Tensor, noise_level: torch.Tensor) -> torch.Tensor:
        cond, x = inputs[:, :3].double(), inputs[:, 3:].double()
        x0 = self.hr - cond if self.residual else self.hr
        g = noise_level.double().view(-1, 1, 1, 1)
        eps = (x - g * x0) / (1 - g * g).sqrt()
        return training_target(self.prediction, x0, eps, noise_level.double().view(-1)).float()


@pytest.mark.parametrize("sampler", sorted(SAMPLERS))
@pytest.mark.parametrize("prediction, residual", [
    ("eps", False), ("v", False), ("x0", False), ("eps", True), ("v", True), ("x0", True),
])
def test_every_prediction_and_residual_mode_reaches_the_answer(tiny_config, prediction, residual, sampler):
    config = tiny_config.replace(prediction=prediction, residual=residual)
    hr = torch.rand(1, 3, 16, 16) * 1.8 - 0.9
    upscaler = Upscaler(config, _Oracle(hr, config), device="cpu")
    lowres = torch.rand(1, 3, 8, 8) * 2 - 1
    out = upscaler.upscale_tensor(lowres, num_steps=5, sampler=sampler, generator=torch.Generator().manual_seed(0),
                                  progress=False)
    assert out.shape == hr.shape
    assert (out - hr).abs().max() <= 1e-3
    truncated = upscaler.upscale_tensor(lowres, num_steps=3, sampler=sampler, start_noise_level=0.5,
                                        generator=torch.Generator().manual_seed(0), progress=False)
    assert (truncated - hr).abs().max() <= 1e-3


@pytest.mark.parametrize("prediction, residual", [("v", True), ("x0", False), ("eps", True)])
def test_prediction_and_residual_configs_run_with_a_real_unet(tiny_config, prediction, residual, tmp_path):
    config = tiny_config.replace(prediction=prediction, residual=residual)
    upscaler = Upscaler(config, build_model(config), device="cpu")
    result = run(upscaler, torch.rand(2, 3, 8, 8), sampler="ancestral")
    assert result.shape == (2, 3, 16, 16) and torch.isfinite(result).all()
    # One DDIM step from pure noise returns the network's clean estimate: compute it by hand, by the paper's
    # formulas for this prediction (eps, v, x0), in residual space or not, and compare.
    lowres = torch.rand(1, 3, 8, 8) * 2 - 1
    out = upscaler.upscale_tensor(lowres, num_steps=1, sampler="ddim", consistency="none", spacing="linear",
                                  start_noise_level=None, generator=torch.Generator().manual_seed(4), progress=False)
    gamma = config.schedule.inference_grid(1, spacing="linear")[0].float()
    cond = bicubic(lowres, 16)
    x = torch.randn(cond.shape, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        net = upscaler.model(torch.cat([cond, x], 1), gamma.sqrt().expand(1)).float()
    x0 = {"eps": (x - (1 - gamma).sqrt() * net) / gamma.sqrt(),
          "v": gamma.sqrt() * x - (1 - gamma).sqrt() * net, "x0": net}[prediction]
    expected = ((x0 + cond).clamp(-1, 1) - cond if residual else x0.clamp(-1, 1)) + (cond if residual else 0)
    assert (out - expected.clamp(-1, 1)).abs().max() <= 1e-4
    reloaded = Upscaler.from_pretrained(upscaler.save_pretrained(tmp_path / "m"), device="cpu")
    assert (reloaded.config.prediction, reloaded.config.residual) == (prediction, residual)


def test_start_noise_level_starts_the_grid_there(tiny_upscaler):
    levels: list[float] = []
    result = run(tiny_upscaler, _rgb(), num_steps=3, start_noise_level=0.5,
                 callback=lambda step: levels.append(step["noise_level"]))
    assert result.shape == (16, 16, 3)
    assert len(levels) == 3 and levels[0] <= 0.5 and levels == sorted(levels)
    with pytest.raises(ValueError, match="start_noise_level"):
        run(tiny_upscaler, _rgb(), start_noise_level=1.5)


def test_consistency_projection_pulls_the_output_onto_the_input(tiny_upscaler):
    lowres = torch.rand(2, 3, 8, 8) * 1.6 - 0.8

    def error(consistency: str) -> float:
        out = tiny_upscaler.upscale_tensor(lowres, num_steps=3, consistency=consistency, progress=False,
                                           generator=torch.Generator().manual_seed(0))
        return (bicubic(out, 8) - lowres).abs().mean().item()

    none, final, every = error("none"), error("final"), error("every")
    # The final projection alternates back-projection and clamping until the input is matched.
    assert final < 1e-3 < 0.1 * none, (none, final)
    assert every < 1e-3, (none, every)
    with pytest.raises(ValueError, match="Unknown consistency 'all'; expected one of none, final, every"):
        error("all")


# Bad input: each gets a clear error.


@pytest.mark.parametrize("bad, error, message", [
    (np.full((8, 8, 3), np.nan, dtype=np.float32), ValueError, "NaN or Inf"),
    (torch.full((3, 8, 8), float("inf")), ValueError, "NaN or Inf"),
    (torch.rand(1, 1, 3, 8, 8), ValueError, r"\(C, H, W\) or \(N, C, H, W\)"),
    (torch.rand(8), ValueError, r"\(C, H, W\) or \(N, C, H, W\)"),
    (torch.rand(5, 8, 8), ValueError, "1, 2, 3 or 4 channels"),
    (np.zeros((8, 8, 6), dtype=np.uint8), ValueError, "channels last"),
    (np.zeros((2, 2, 8, 8, 3), dtype=np.uint8), ValueError, r"\(H, W\), \(H, W, C\)"),
    (np.zeros((0, 8, 3), dtype=np.uint8), ValueError, "at least 1x1"),
    (torch.zeros(3, 8, 0), ValueError, "at least 1x1"),
    (np.zeros((0, 8, 8, 3), dtype=np.uint8), ValueError, "empty batch"),
    (torch.zeros(0, 3, 8, 8), ValueError, "empty batch"),
    (np.full((8, 8, 3), 255.0), ValueError, r"\[0, 1\]"),
    (torch.rand(3, 8, 8) * 2 - 1, ValueError, r"\[0, 1\]"),
    (np.zeros((8, 8, 3), dtype=np.int32), ValueError, "uint8, uint16 or float"),
    ({"image": 1}, TypeError, "PIL image, a numpy array, a torch tensor or a file path"),
])
def test_bad_images(tiny_upscaler, bad, error, message):
    with pytest.raises(error, match=message):
        run(tiny_upscaler, bad)


def test_bad_tensor_for_upscale_tensor(tiny_upscaler):
    with pytest.raises(ValueError, match=r"shape \(B, 3, h, w\)"):
        tiny_upscaler.upscale_tensor(torch.zeros(3, 8, 8), num_steps=1, progress=False)
    with pytest.raises(ValueError, match=r"shape \(B, 3, h, w\)"):
        tiny_upscaler.upscale_tensor(torch.zeros(1, 4, 8, 8), num_steps=1, progress=False)
    with pytest.raises(ValueError, match="NaN or Inf"):
        tiny_upscaler.upscale_tensor(torch.full((1, 3, 8, 8), float("nan")), num_steps=1, progress=False)


@pytest.mark.parametrize("options, message", [
    ({"num_steps": 0}, "'num_steps' must be an integer from 1 to 100,000, got 0"),  # the recipe's own bound
    ({"num_steps": -1}, "'num_steps' must be an integer from 1"),
    ({"num_steps": 2001}, "between 1 and the schedule's 2000, got 2001"),
    ({"num_steps": 2.0}, "integer"),
    ({"sampler": "euler"}, "Unknown sampler 'euler'; expected one of ancestral, ddim, dpmpp_2m"),
    ({"spacing": "cosine"}, "Unknown spacing 'cosine'; expected one of linear, quadratic, trailing"),
    ({"batch_size": 0}, "batch_size must be a positive integer"),
    ({"output_type": "jpg"}, "Unknown output_type 'jpg'"),
    ({"generator": torch.Generator()}, "either generator or seed"),
    ({"seed": None, "generator": [torch.Generator()] * 2}, "2 generators for 1 images"),
])
def test_bad_options(tiny_upscaler, options, message):
    with pytest.raises(ValueError, match=message):
        run(tiny_upscaler, _rgb(), **options)


def test_help_shows_the_left_out_start_noise_level_by_name(tiny_upscaler):
    import copy
    import inspect
    import pickle
    import pydoc

    from sr3infer.models.config import UNSET

    text = pydoc.render_doc(Upscaler.upscale, renderer=pydoc.plaintext)
    assert "start_noise_level: 'float | None' = UNSET" in text and "object at 0x" not in text
    assert inspect.signature(Upscaler.upscale).parameters["start_noise_level"].default is UNSET
    assert copy.deepcopy(UNSET) is UNSET and pickle.loads(pickle.dumps(UNSET)) is UNSET


def test_sampling_errors_count_one_step_in_the_singular(tiny_upscaler):
    with torch.no_grad():
        next(tiny_upscaler.model.parameters()).fill_(float("nan"))
    with pytest.raises(RuntimeError, match=r"\(ddim, 1 step\): the model's weights"):
        run(tiny_upscaler, _rgb(), num_steps=1)


def test_unknown_model_name_is_named_in_the_error():
    with pytest.raises((ValueError, KeyError), match="no-such-sr3-model"):
        Upscaler.from_pretrained("no-such-sr3-model", device="cpu")


def test_missing_model_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        Upscaler.from_pretrained(tmp_path / "missing.safetensors", device="cpu")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="model.safetensors"):
        Upscaler.from_pretrained(tmp_path / "empty", device="cpu")


def test_weights_that_do_not_match_their_config_are_refused(tiny_model_dir):
    config_path = tiny_model_dir / "config.json"
    config = json.loads(config_path.read_text())
    config["network"]["inner_channel"] = 16
    config_path.write_text(json.dumps(config))
    with pytest.raises(ValueError, match="do not match the model config.*shape mismatches"):
        Upscaler.from_pretrained(tiny_model_dir, device="cpu")
    config["network"]["inner_channel"] = 8
    config["network"]["channel_mults"] = [1, 2, 2]
    config_path.write_text(json.dumps(config))
    with pytest.raises(ValueError, match="missing"):
        Upscaler.from_pretrained(tiny_model_dir, device="cpu")


def test_broken_model_files_are_refused(tiny_model_dir):
    (tiny_model_dir / "config.json").write_text('{"unet": {"inner_channel": 8, "colour": 1}}')
    with pytest.raises(ValueError, match="Unknown U-Net config keys \\['colour'\\]"):
        Upscaler.from_pretrained(tiny_model_dir, device="cpu")
    (tiny_model_dir / "config.json").write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        Upscaler.from_pretrained(tiny_model_dir, device="cpu")
    (tiny_model_dir / "config.json").unlink()
    weights = tiny_model_dir / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    with pytest.raises(ValueError, match="not a readable safetensors file"):
        Upscaler.from_pretrained(tiny_model_dir, device="cpu")


def test_bad_device_and_dtype(tiny_upscaler):
    with pytest.raises(ValueError, match="Unknown dtype 'fp64'"):
        tiny_upscaler.to("cpu", "fp64")
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="CUDA was requested"):
            tiny_upscaler.to("cuda")


def test_final_projection_is_in_range_and_matches_the_input():
    from sr3infer.images.resample import project_onto_input

    generator = torch.Generator().manual_seed(0)
    truth = torch.rand(2, 3, 64, 64, generator=generator) * 2 - 1  # an in-range image that matches the input
    lowres = bicubic(truth, 8)
    x = bicubic(lowres, 64) + 0.8 * torch.randn(2, 3, 64, 64, generator=generator)  # overshoots [-1, 1] a lot
    once = consistency_projection(x, lowres).clamp(-1, 1)
    out = project_onto_input(x, lowres)
    assert out.abs().max() <= 1
    assert (bicubic(out, 8) - lowres).abs().max() < 1e-3 < (bicubic(once, 8) - lowres).abs().max()


def test_upscale_reads_minus_one_to_one_tensors_as_the_cascade_does(tiny_upscaler):
    unit = torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    kwargs = dict(num_steps=2, seed=1, progress=False)
    expected = tiny_upscaler.upscale(unit, **kwargs)
    for value_range in ((-1, 1), "auto"):
        got = tiny_upscaler.upscale(unit * 2 - 1, value_range=value_range, **kwargs)
        torch.testing.assert_close(got, expected, rtol=0, atol=1e-5)
    with pytest.raises(ValueError, match=r"Expected float images in \[0, 1\].*value_range=\(-1, 1\)"):
        tiny_upscaler.upscale(unit * 2 - 1, **kwargs)


def test_one_recipe_object_for_every_entry_point(tiny_upscaler):
    from dataclasses import replace

    from sr3infer.models.config import UNSET

    config = tiny_upscaler.config
    recipe = config.recipe(None, num_steps=3, sampler="ancestral", spacing="quadratic")
    assert recipe == replace(config.sampling, num_steps=3, sampler="ancestral", spacing="quadratic")
    assert config.recipe(None, num_steps=None, start_noise_level=UNSET) is config.sampling  # None / UNSET: not given
    assert config.recipe(None, start_noise_level=0.5).start_noise_level == 0.5
    with pytest.raises(ValueError, match=r"Unknown sampling setting keys \['steps'\]"):
        config.recipe(None, steps=3)
    lowres = torch.rand(1, 3, 8, 8, generator=torch.Generator().manual_seed(2)) * 2 - 1
    by_object = tiny_upscaler.upscale_tensor(lowres, recipe=recipe, generator=torch.Generator().manual_seed(0),
                                             progress=False)
    by_arguments = tiny_upscaler.upscale_tensor(lowres, num_steps=3, sampler="ancestral", spacing="quadratic",
                                                generator=torch.Generator().manual_seed(0), progress=False)
    assert torch.equal(by_object, by_arguments)
    with pytest.raises(ValueError, match="either recipe or preset"):
        tiny_upscaler.upscale_tensor(lowres, recipe=recipe, preset="fidelity")


# One output object.


def test_return_dict_gives_one_output_object_grouped_like_the_images(tiny_upscaler):
    from sr3infer.outputs import UpscaleOutput

    batch = np.random.default_rng(1).integers(64, 192, (2, 8, 8, 3), dtype=np.uint8)  # mid-range: can be matched
    plain = tiny_upscaler.upscale(batch, num_steps=2, seed=0, progress=False)
    out = tiny_upscaler.upscale(batch, num_steps=2, seed=0, progress=False, return_dict=True)
    assert isinstance(out, UpscaleOutput) and np.array_equal(out.images, plain)
    assert out.uncertainty is None and out.samples.shape == (2, 1, 16, 16, 3) and out.seconds > 0
    assert out.consistency.shape == (2,)
    # consistency is the RMS of (bicubic-downsampled output - input) in [0, 1] units: recompute it for image 0.
    down = bicubic(torch.from_numpy(plain[:1]).permute(0, 3, 1, 2).double() / 255, (8, 8))
    expected = float((down - torch.from_numpy(batch[:1]).permute(0, 3, 1, 2).double() / 255).pow(2).mean().sqrt())
    assert abs(out.consistency[0] - expected) < 3e-3 and out.consistency[0] > 0.01  # a random model: far from 0
    projected = tiny_upscaler.upscale(list(batch), num_steps=2, seed=0, progress=False, return_dict=True,
                                      consistency="final")
    assert isinstance(projected.consistency, list) and max(projected.consistency) < 3e-3  # projected onto the input
    assert min(out.consistency) > 3 * max(projected.consistency)


def test_fp16_and_bf16_tensors_come_back_in_their_dtype(tiny_upscaler):
    for dtype in (torch.float16, torch.bfloat16):
        out = tiny_upscaler.upscale(torch.rand(3, 8, 8).to(dtype), num_steps=1, seed=0, progress=False)
        assert out.dtype == dtype and out.shape == (3, 16, 16)


def test_meta_device_is_refused_clearly(tiny_upscaler):
    with pytest.raises(ValueError, match="'meta' holds shapes but no data"):
        tiny_upscaler.to("meta")
    assert tiny_upscaler.device.type == "cpu"  # left where it was


# Public arguments by type, sizes by arithmetic, estimates with time.


@pytest.mark.parametrize("options, error, message", [
    ({"max_output_pixels": float("nan")}, ValueError, "max_output_pixels must be a finite number of pixels >= 1"),
    ({"max_output_pixels": 0}, ValueError, "max_output_pixels must be a finite number"),
    ({"max_output_pixels": "100"}, TypeError, r"max_output_pixels must be a positive number of pixels or None .*'100' \(str\)"),
    ({"max_output_pixels": True}, TypeError, "max_output_pixels must be"),
    ({"seed": None, "generator": [1, 2]}, TypeError, "generator must be a torch.Generator or a list of them .* list holding int"),
    ({"seed": None, "generator": 7}, TypeError, "got int; for a number use seed= instead"),
])
def test_public_arguments_are_checked_by_type(tiny_upscaler, options, error, message):
    image = np.zeros((8, 8, 3), np.uint8)
    with pytest.raises(error, match=message):
        tiny_upscaler.upscale(image, progress=False, **{"seed": 0, **options})
    assert tiny_upscaler.upscale(image, num_steps=1, seed=0, progress=False, max_output_pixels=256.0).shape == (16, 16, 3)


def test_the_size_guard_is_arithmetic_only(tiny_upscaler):
    import time

    view = np.broadcast_to(np.zeros((1, 1, 3), np.uint8), (1, 10**9, 3))  # a view: no memory behind it
    start = time.monotonic()
    with pytest.raises(ValueError, match="The output would be 2000000000x2 = 4,000.0 MP per image"):
        tiny_upscaler.upscale(view, progress=False)
    run = tiny_upscaler.estimate((10**9, 10**9))
    assert run.tiles_per_image == 166_666_667**2 and run.output_pixels == 4 * 10**18  # counted, never listed
    assert time.monotonic() - start < 2


def test_estimate_and_tile_plan_name_their_sizes_and_estimate_gives_seconds(tiny_config):
    import inspect

    up = Upscaler(tiny_config, build_model(tiny_config), device="cpu")
    assert list(inspect.signature(up.estimate).parameters)[0] == "input_size"
    assert list(inspect.signature(up.tile_plan).parameters)[0] == "output_size"
    assert up.estimate((8, 8), num_steps=2).seconds is None  # unknown before the first run on this device
    up.upscale(np.zeros((8, 8, 3), np.uint8), num_steps=2, seed=0, progress=False)
    two, four = up.estimate((8, 8), num_steps=2).seconds, up.estimate((8, 8), num_steps=4).seconds
    assert two > 0 and four == pytest.approx(2 * two)
    tiled = up.estimate((16, 16), num_steps=2)  # 32x32 output: 9 tiles of 16 px, 2.25x the pixels of one image
    assert tiled.tiles_per_image == 9 and tiled.seconds == pytest.approx(9 * two)


@pytest.mark.slow
def test_the_size_guard_refuses_a_broadcast_view_fast_under_4_gib(tiny_model_dir):
    """Item 4, in a process limited to 4 GiB of address space: refused with the numbers, within 10 s."""
    import os
    import resource
    import subprocess
    import sys
    from pathlib import Path

    script = (
        "import sys, time, numpy as np; from sr3infer import Upscaler\n"
        "up = Upscaler.from_pretrained(sys.argv[1], device='cpu'); t = time.monotonic()\n"
        "run = up.estimate((10**9, 10**9))\n"
        "try:\n"
        "    up.upscale(np.broadcast_to(np.zeros((1, 1, 3), np.uint8), (1, 10**9, 3)), progress=False)\n"
        "except ValueError as err:\n"
        "    print(f'{time.monotonic() - t:.2f} {run.output_pixels} {err}')\n"
    )

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (4 * 2**30, 4 * 2**30))

    proc = subprocess.run([sys.executable, "-c", script, str(tiny_model_dir)], preexec_fn=limit, capture_output=True,
                          text=True, timeout=240, env={**os.environ, "OMP_NUM_THREADS": "1",
                                                       "PYTHONPATH": str(Path(__file__).resolve().parents[1])})
    assert proc.returncode == 0 and proc.stdout, proc.stderr
    seconds, pixels, message = proc.stdout.split(" ", 2)
    assert float(seconds) < 10 and int(pixels) == 4 * 10**18
    assert "The output would be 2000000000x2 = 4,000.0 MP per image, over max_output_pixels" in message


def test_the_removed_tuple_returns_still_work_with_a_future_warning(tiny_upscaler):
    image = torch.rand(3, 8, 8)
    with pytest.warns(FutureWarning, match=r"return_uncertainty=\.\.\.\) is deprecated .* 0\.3\.0.*return_dict=True"):
        result, uncertainty = tiny_upscaler.upscale(image, num_samples=2, num_steps=1, seed=0, progress=False,
                                                    return_uncertainty=True)
    expected = tiny_upscaler.upscale(image, num_samples=2, num_steps=1, seed=0, progress=False, return_dict=True)
    assert torch.equal(result, expected.images) and np.array_equal(uncertainty, expected.uncertainty)
    with pytest.warns(FutureWarning):
        _, _, samples = tiny_upscaler.upscale(image, num_samples=2, num_steps=1, seed=0, progress=False,
                                              return_uncertainty=True, return_samples=True)
    assert len(samples) == 2
    with pytest.raises(TypeError, match="unexpected keyword argument 'return_everything'"):
        tiny_upscaler.upscale(image, return_everything=True)
