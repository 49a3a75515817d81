"""Cascade: input forms, per-stage options, seeding (batch == one by one), and the `sr3infer cascade` CLI."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from sr3infer.cascade import Cascade
from sr3infer.cli import EXIT_FAILURE, EXIT_OK, EXIT_USAGE, main
from sr3infer.upscaler import Upscaler
from sr3infer.models.weights import build_model


@pytest.fixture
def cascade(tiny_config) -> Cascade:
    """Two tiny x2 stages, 8 -> 16 -> 32; the second one tiles (its output is larger than 16)."""
    torch.manual_seed(0)
    first = Upscaler(tiny_config, build_model(tiny_config), device="cpu")
    second_config = tiny_config.replace(prediction="v", residual=True)
    second = Upscaler(second_config, build_model(second_config), device="cpu")
    return Cascade([first, second])


@pytest.fixture
def samples() -> np.ndarray:
    """Four 8x8 uint8 RGB 'base generator samples'."""
    return np.random.default_rng(0).integers(0, 256, (4, 8, 8, 3), dtype=np.uint8)


FAST = dict(num_steps=2, progress=False)


def test_every_input_form_gives_the_same_images(cascade, samples):
    reference = cascade(samples, seed=3, **FAST)
    assert isinstance(reference, np.ndarray) and reference.shape == (4, 32, 32, 3) and reference.dtype == np.uint8
    unit = torch.from_numpy(samples).permute(0, 3, 1, 2).float() / 255
    forms = {
        "pil": [Image.fromarray(a) for a in samples],
        "tensor [0, 1]": unit,
        "tensor [-1, 1], auto": unit * 2 - 1,
        "tensor [-1, 1], explicit": unit * 2 - 1,
        "numpy float [0, 1]": samples.astype(np.float32) / 255,
        "uint8 tensor": torch.from_numpy(samples).permute(0, 3, 1, 2).contiguous(),
    }
    for name, images in forms.items():
        value_range = (-1, 1) if name.endswith("explicit") else "auto"
        out = cascade(images, seed=3, value_range=value_range, output_type="np", **FAST)
        assert out.shape == (4, 32, 32, 3), name
        # Like Upscaler.upscale: 8-bit inputs give uint8, float inputs float32 in [0, 1].
        assert out.dtype == (np.uint8 if name in ("pil", "uint8 tensor") else np.float32), name
        unit = out / 255 if out.dtype == np.uint8 else out
        assert np.abs(unit - reference / 255).max() <= 1 / 255 + 1e-6, name
    pil = cascade(forms["pil"], seed=3, **FAST)
    assert isinstance(pil, list) and len(pil) == 4 and pil[0].size == (32, 32) and pil[0].mode == "RGB"
    pt = cascade(forms["tensor [0, 1]"], seed=3, **FAST)
    assert pt.shape == (4, 3, 32, 32) and pt.dtype == torch.float32 and 0 <= pt.min() and pt.max() <= 1


def test_value_range_is_checked(cascade, samples):
    unit = torch.from_numpy(samples).permute(0, 3, 1, 2).float() / 255
    with pytest.raises(ValueError, match=r"Expected float images in \[0, 1\]"):
        cascade(unit * 2 - 1, value_range=(0, 1), **FAST)
    with pytest.raises(ValueError, match="value_range"):
        cascade(unit, value_range="0-1", **FAST)
    with pytest.raises(ValueError, match="NaN"):
        cascade(unit * float("nan"), **FAST)
    with pytest.raises(ValueError, match="channels first"):
        cascade(unit.permute(0, 2, 3, 1), **FAST)
    with pytest.raises(TypeError, match="Expected a list of PIL images"):
        cascade("not images", **FAST)


def test_callable_base_generator_and_all_stages(cascade, samples):
    calls = []

    def base(count: int) -> np.ndarray:
        calls.append(count)
        return samples[:count]

    stages = cascade(base, count=3, seed=1, return_all_stages=True, output_type="pt", **FAST)
    assert calls == [3]
    assert [tuple(s.shape) for s in stages] == [(3, 3, 16, 16), (3, 3, 32, 32)]
    final = cascade(samples[:3], seed=1, output_type="pt", **FAST)
    torch.testing.assert_close(stages[-1], final)
    with pytest.raises(ValueError, match="count="):
        cascade(base, **FAST)


def test_a_batch_and_the_same_images_one_by_one_agree(cascade, samples):
    kwargs = dict(noise_level=[0.05, 0.02], num_steps=[2, 1], output_type="pt", progress=False, batch_size=4)
    batch = cascade(samples, seed=10, **kwargs)
    for k in range(len(samples)):
        one = cascade(samples[k : k + 1], seed=10 + k, **kwargs)
        torch.testing.assert_close(one, batch[k : k + 1], rtol=0, atol=1e-4)


def test_a_stage_can_be_rerun_alone(cascade, samples):
    stages = cascade(samples, seed=5, noise_level=0.03, return_all_stages=True, output_type="pt", **FAST)
    second = Cascade([cascade.upscalers[1]])
    rerun = second(stages[0], seed=Cascade.stage_seed(5, 1), noise_level=0.03, value_range=(0, 1),
                   output_type="pt", **FAST)
    torch.testing.assert_close(rerun, stages[1], rtol=0, atol=1e-4)


def test_seed_and_noise_level_change_the_result(cascade, samples):
    base = cascade(samples[:1], seed=0, output_type="pt", **FAST)
    torch.testing.assert_close(cascade(samples[:1], seed=0, output_type="pt", **FAST), base, rtol=0, atol=0)
    assert (cascade(samples[:1], seed=1, output_type="pt", **FAST) - base).abs().max() > 1e-3
    noisy = cascade(samples[:1], seed=0, noise_level=[0.2, 0.0], output_type="pt", **FAST)
    assert (noisy - base).abs().max() > 1e-3


def test_per_stage_options_are_checked(cascade, samples):
    with pytest.raises(ValueError, match="3 values for 2 stages"):
        cascade(samples, num_steps=[1, 2, 3], progress=False)
    with pytest.raises(ValueError, match="noise_level for stage 1"):
        cascade(samples, noise_level=[0.0, -0.1], **FAST)
    with pytest.raises(ValueError, match="Unknown sampler 'nope'"):
        cascade(samples, sampler=["ddim", "nope"], num_steps=[2, 10**9], progress=False)  # fails before stage 0 runs
    with pytest.raises(TypeError, match="expected an Upscaler"):
        Cascade(["sr3-64-256"])
    with pytest.raises(ValueError, match="at least one"):
        Cascade([])


def test_a_stage_is_an_upscale_call_with_every_recipe_option(cascade, samples):
    first = cascade.upscalers[0]
    unit = torch.from_numpy(samples).permute(0, 3, 1, 2).float() / 255
    recipe = dict(num_steps=2, sampler="ddim", spacing="quadratic", consistency="final", eta=0.5)
    steps: list[dict] = []
    staged = Cascade([first])(unit, seed=7, callback=steps.append, output_type="pt", progress=False, **recipe)
    direct = first.upscale(unit, generator=[torch.Generator().manual_seed(7 + k) for k in range(4)], output_type="pt",
                           progress=False, **recipe)
    torch.testing.assert_close(staged, direct, rtol=0, atol=1e-5)
    assert [s["i"] for s in steps] == [0, 1]
    other = Cascade([first])(unit, seed=7, output_type="pt", progress=False, **{**recipe, "consistency": "none"})
    assert (other - staged).abs().max() > 1e-3  # the option reaches the stage
    per_stage = cascade(samples, seed=1, spacing=["quadratic", "linear"], eta=[0.5, None], sampler="ddim",
                        output_type="pt", **FAST)
    assert per_stage.shape == (4, 3, 32, 32)
    by_generators = Cascade([first])(unit, generator=[torch.Generator().manual_seed(7 + k) for k in range(4)],
                                     output_type="pt", progress=False, **recipe)
    torch.testing.assert_close(by_generators, staged, rtol=0, atol=0)
    one = [Cascade([first])(unit, generator=torch.Generator().manual_seed(3), noise_level=0.05, output_type="pt",
                            progress=False, **recipe) for _ in range(2)]
    torch.testing.assert_close(one[0], one[1], rtol=0, atol=0)  # a single generator draws all the noise in turn
    with pytest.raises(ValueError, match="either generator or seed"):
        cascade(samples, seed=1, generator=torch.Generator(), **FAST)
    with pytest.raises(ValueError, match="3 generators for 4 images"):
        cascade(samples, generator=[torch.Generator()] * 3, **FAST)
    by_object = Cascade([first])(unit, seed=7, recipe=first.config.recipe(None, **recipe), output_type="pt",
                                 progress=False)
    torch.testing.assert_close(by_object, staged, rtol=0, atol=0)
    with pytest.raises(ValueError, match="Unknown consistency 'sometimes'"):
        cascade(samples, consistency=[None, "sometimes"], **FAST)
    with pytest.raises(ValueError, match="Unknown preset 'fidelity'"):
        cascade(samples, preset="fidelity", **FAST)


def test_cli_cascade_takes_the_shared_recipe_options(tmp_path, tiny_model_dir, samples, capsys):
    inputs = tmp_path / "samples"
    inputs.mkdir()
    for k, array in enumerate(samples[:2]):
        Image.fromarray(array).save(inputs / f"sample{k}.png")
    stages = f"{tiny_model_dir},{tiny_model_dir}"
    argv = ["cascade", str(inputs), "-o", str(tmp_path / "out"), "--stages", stages, "--steps", "2", "--sampler", "ddim",
            "--spacing", "quadratic,linear", "--consistency", "final", "--eta", "0.5,0", "--seed", "4", "--quiet"]
    assert main(argv) == EXIT_OK
    cascade = Cascade.from_pretrained([tiny_model_dir, tiny_model_dir], device="cpu")
    api = cascade([Image.open(inputs / "sample1.png").convert("RGB")], num_steps=2, sampler="ddim",
                  spacing=["quadratic", "linear"], consistency="final", eta=[0.5, 0.0], seed=5, output_type="np",
                  progress=False)[0]
    assert np.abs(api.astype(int) - np.asarray(Image.open(tmp_path / "out" / "sample1.png"), dtype=int)).max() <= 1
    common = ["cascade", str(inputs), "-o", str(tmp_path / "x"), "--stages", stages]
    assert main(common + ["--consistency", "final,sometimes"]) == EXIT_USAGE
    assert "invalid choice: 'sometimes'" in capsys.readouterr().err
    assert main(common + ["--preset", "fidelity"]) == EXIT_USAGE
    assert "has no such preset" in capsys.readouterr().err
    assert main(common + ["--eta", "2"]) == EXIT_USAGE


def test_cli_cascade(tmp_path, tiny_model_dir, samples):
    inputs = tmp_path / "samples"
    inputs.mkdir()
    for k, array in enumerate(samples[:3]):
        Image.fromarray(array).save(inputs / f"sample{k}.png")
    out = tmp_path / "out"
    stages = f"{tiny_model_dir},{tiny_model_dir}"
    argv = ["cascade", str(inputs), "-o", str(out), "--stages", stages, "--steps", "2,1", "--noise-level", "0.02",
            "--seed", "4", "--batch-size", "2", "--all-stages", "--quiet"]
    assert main(argv) == EXIT_OK
    finals = sorted(p.name for p in out.glob("*.png"))
    assert finals == ["sample0.png", "sample1.png", "sample2.png"]
    assert Image.open(out / "sample2.png").size == (32, 32)
    assert Image.open(out / "stage1" / "sample2.png").size == (16, 16)
    # File k has seed --seed + k whatever the batching: the API with that seed gives the same image.
    cascade = Cascade.from_pretrained([tiny_model_dir, tiny_model_dir], device="cpu")
    api = cascade([Image.open(inputs / "sample2.png").convert("RGB")], num_steps=[2, 1], noise_level=0.02, seed=6,
                  output_type="np", progress=False)[0]
    assert np.abs(api.astype(int) - np.asarray(Image.open(out / "sample2.png"), dtype=int)).max() <= 1
    assert main(argv) == EXIT_FAILURE  # outputs exist, no --overwrite: a runtime failure, as README says
    assert main(argv + ["--overwrite"]) == EXIT_OK
    assert main(["cascade", str(inputs), "-o", str(out), "--stages", stages, "--steps", "1,2,3"]) == EXIT_USAGE
    assert main(["cascade", str(inputs), "-o", str(out), "--stages", stages, "--noise-level", "-1"]) == EXIT_USAGE
    assert main(["cascade", str(inputs), "-o", str(out), "--stages", stages, "--tile", "-4"]) == EXIT_USAGE


def test_cli_upscale_tile_flags(tmp_path, tiny_model_dir, capsys):
    source = tmp_path / "wide.png"
    Image.fromarray(np.random.default_rng(1).integers(0, 256, (9, 40, 3), dtype=np.uint8)).save(source)
    out = tmp_path / "wide_x2.png"
    common = [str(source), "--model", str(tiny_model_dir), "--steps", "2", "--quiet"]
    assert main(common + ["-o", str(out), "--tile", "16", "--tile-overlap", "4"]) == EXIT_OK
    assert Image.open(out).size == (80, 18)
    untiled = tmp_path / "wide_untiled.png"
    capsys.readouterr()
    assert main(common + ["-o", str(untiled), "--tile", "0"]) == EXIT_OK
    warned = [line for line in capsys.readouterr().err.splitlines() if "trained on 8x8" in line]
    assert len(warned) == 1 and warned[0].startswith("sr3infer: warning: ")  # untiled, the off-size input is warned about
    assert not np.array_equal(np.asarray(Image.open(out)), np.asarray(Image.open(untiled)))
    assert main(common + ["-o", str(tmp_path / "x.png"), "--tile", "-1"]) == EXIT_USAGE
    assert main(common + ["-o", str(tmp_path / "y.png"), "--tile", "16", "--tile-overlap", "16"]) != EXIT_OK


def test_16_bit_and_alpha_are_kept_through_the_stages(cascade):
    # One converter for Upscaler and Cascade (imageio.restore): a uint16 RGBA batch stays uint16 RGBA.
    batch = np.random.default_rng(2).integers(0, 65536, (2, 8, 8, 4), dtype=np.uint16)
    out = cascade(batch, seed=0, **FAST)
    assert out.dtype == np.uint16 and out.shape == (2, 32, 32, 4)
    assert len(np.unique(out[..., :3] % 257)) > 1  # not 8-bit values scaled up
    stages = cascade(list(batch), seed=0, return_all_stages=True, **FAST)
    assert [s.shape for s in stages] == [(2, 16, 16, 4), (2, 32, 32, 4)] and np.array_equal(stages[-1], out)
