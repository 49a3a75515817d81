"""Any output size: `outscale=` / `--outscale`, `size=` / `--size`, and passes above the model's scale."""

from __future__ import annotations

import warnings
from fractions import Fraction

import numpy as np
import pytest
import torch
from PIL import Image

from sr3infer.cli import main
from sr3infer.images.outscale import MAX_OUTSCALE, MAX_PASSES, num_passes, parse_size, size_plan, target_size
from sr3infer.upscaler import Upscaler
from sr3infer.models.weights import build_model

RNG = np.random.default_rng(0)


@pytest.fixture
def x4(tiny_config) -> Upscaler:
    """A tiny random x4 model (4 -> 16 px), trained-model flags off so the CLI prints only what a run reports."""
    config = tiny_config.replace(scale=4, lowres_size=4, task={})
    torch.manual_seed(0)
    return Upscaler(config, build_model(config), device="cpu")


def _png(path, width: int, height: int):
    Image.fromarray(RNG.integers(0, 256, (height, width, 3), dtype=np.uint8)).save(path)
    return path


def test_target_sizes_round_half_up_and_size_is_width_height():
    assert target_size((7, 5), outscale=2.5) == (18, 13)  # 17.5 -> 18, 12.5 -> 13
    assert target_size((7, 5), outscale=Fraction(5, 2)) == (18, 13)
    assert target_size((7, 5), size=(40, 30)) == (30, 40)
    assert target_size((3, 3), outscale=0.1) == (1, 1)
    assert parse_size("1920x1080") == (1920, 1080) and parse_size(" 7 X 3 ") == (7, 3)
    for bad in ("1920", "0x10", "-3x4", "axb", "1.5x2"):
        with pytest.raises(ValueError, match="WIDTHxHEIGHT|positive"):
            parse_size(bad)


def test_passes_cover_the_target_and_are_bounded():
    assert num_passes((16, 16), (128, 128), 8) == 1
    assert num_passes((16, 16), (129, 20), 8) == 2
    assert num_passes((4, 4), (64, 64), 4) == 2
    with pytest.raises(ValueError, match="not both"):
        size_plan([(4, 4)], 4, outscale=2, size=(8, 8))
    for bad in (0, -1, float("nan"), float("inf"), "2", True):
        with pytest.raises(ValueError, match="outscale must be a positive finite number"):
            size_plan([(4, 4)], 4, outscale=bad)
    with pytest.raises(ValueError, match=f"more than {MAX_PASSES} passes"):
        size_plan([(4, 4)], 2, outscale=2 ** (MAX_PASSES + 1))
    with pytest.raises(ValueError, match="more than"):  # a x1 model cannot enlarge: refused, not an endless loop
        size_plan([(4, 4)], 1, outscale=2)
    assert size_plan([(4, 4)], 4) is None


@pytest.mark.parametrize("bad", [10**400, -10**400, 2**1024, 10**5000, Fraction(10**400, 3), float("inf"), float("nan"),
                                 np.float64("nan"), MAX_OUTSCALE + 1],
                         ids=["1e400", "-1e400", "2**1024", "1e5000", "fraction", "inf", "nan", "np-nan", "max+1"])
def test_outscale_past_any_model_is_the_documented_value_error(x4, bad):
    """Integers and fractions past float's range are compared, never converted: a ValueError, not an OverflowError."""
    image = Image.fromarray(RNG.integers(0, 256, (4, 4, 3), dtype=np.uint8))
    with pytest.raises(ValueError, match=r"outscale must be a positive finite number up to 262,144, got .*; pass a "
                                         r"factor such as 2\.5"):
        x4.upscale(image, outscale=bad, num_steps=1, progress=False)


def test_outscale_below_native_gives_the_exact_size_in_every_kind(x4):
    image = Image.fromarray(RNG.integers(0, 256, (5, 7, 3), dtype=np.uint8))
    assert x4.upscale(image, outscale=2.5, seed=0, progress=False).size == (18, 13)
    wide = RNG.integers(0, 65536, (5, 7, 3), dtype=np.uint16)
    out = x4.upscale(wide, outscale=2.5, seed=0, progress=False)
    assert out.shape == (13, 18, 3) and out.dtype == np.uint16
    assert np.any(out % 257 != 0)  # resized on float data: all 16 bits, not 8 bits widened
    batch = x4.upscale(torch.rand(2, 3, 5, 7), outscale=1.5, seed=0, progress=False)
    assert batch.shape == (2, 3, 8, 11)


def test_outscale_at_native_scale_is_the_plain_result(x4):
    image = torch.rand(3, 4, 4)
    plain = x4.upscale(image, seed=3, progress=False)
    assert torch.equal(x4.upscale(image, seed=3, progress=False, outscale=4), plain)


def test_outscale_is_the_resized_native_output(x4):
    from sr3infer.images.resample import bicubic

    image = torch.rand(3, 6, 5)
    native = x4.upscale(image, seed=1, progress=False, tile_size=0)
    resized = x4.upscale(image, seed=1, progress=False, tile_size=0, outscale=2)
    expected = (bicubic(native[None] * 2 - 1, (12, 10)).clamp(-1, 1) + 1) / 2
    assert resized.shape == (3, 12, 10)
    torch.testing.assert_close(resized, expected[0], atol=1e-6, rtol=0)


def test_size_is_exact_even_against_the_aspect_ratio(x4):
    out = x4.upscale(Image.fromarray(RNG.integers(0, 256, (4, 4, 3), dtype=np.uint8)), size=(11, 7), seed=0,
                     progress=False)
    assert out.size == (11, 7)


def test_above_native_runs_the_model_again_and_warns(x4):
    image = torch.rand(3, 4, 4)
    with pytest.warns(UserWarning, match="not trained on its own outputs") as record:
        out = x4.upscale(image, outscale=6, seed=0, progress=False, return_dict=True, num_samples=2)
    assert out.images.shape == (3, 24, 24)
    assert out.uncertainty.shape == (24, 24)
    assert sum("not trained on its own outputs" in str(w.message) for w in record) == 1
    # Two passes: the second sees the first's 16x16 output, so the result differs from one pass resized.
    one_pass = x4.upscale(image, seed=0, progress=False, num_samples=2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        again = x4.upscale(image, outscale=6, seed=0, progress=False, num_samples=2)
    assert torch.equal(again, out.images)  # reproducible from the seed
    from sr3infer.images.resample import bicubic

    resized = (bicubic(one_pass[None] * 2 - 1, (24, 24)).clamp(-1, 1) + 1) / 2
    assert not torch.allclose(out.images, resized[0], atol=1e-3)


def test_seeds_of_later_passes_are_checked_before_any_work(x4):
    from sr3infer.seeding import STAGE_STRIDE

    seed = 2**64 - STAGE_STRIDE  # fine for one pass, over 2**64 - 1 in the second
    x4.upscale(torch.rand(3, 4, 4), seed=seed, progress=False, num_steps=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(ValueError, match="too large for 1 image over 2 stages or passes"):
            x4.upscale(torch.rand(3, 4, 4), seed=seed, progress=False, outscale=8, num_steps=1)


def test_consistency_is_against_the_input_at_the_final_size(x4):
    image = torch.rand(1, 3, 4, 4)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = x4.upscale(image, outscale=8, seed=0, progress=False, return_dict=True, consistency="final")
    from sr3infer.images.resample import bicubic

    down = bicubic(out.images * 2 - 1, (4, 4))
    expected = float(((down - (image * 2 - 1)) / 2).pow(2).mean().sqrt())
    assert out.images.shape == (1, 3, 32, 32)
    assert float(out.consistency[0]) == pytest.approx(expected, rel=1e-4, abs=1e-7)


@pytest.fixture
def x4_dir(tmp_path, x4) -> str:
    return str(x4.save_pretrained(tmp_path / "x4"))


def test_cli_outscale_2_on_a_4x_model_gives_exactly_twice_the_input(tmp_path, x4_dir, capsys):
    src = _png(tmp_path / "in.png", 7, 5)
    code = main([str(src), "-o", str(tmp_path / "out.png"), "--model", x4_dir, "--outscale", "2", "--quiet"])
    assert code == 0, capsys.readouterr().err
    assert Image.open(tmp_path / "out.png").size == (14, 10)


def test_cli_size_is_exact_and_above_native_warns(tmp_path, x4_dir, capsys):
    src = _png(tmp_path / "in.png", 4, 4)
    assert main([str(src), "-o", str(tmp_path / "a.png"), "--model", x4_dir, "--size", "13x9", "--quiet"]) == 0
    assert Image.open(tmp_path / "a.png").size == (13, 9)
    capsys.readouterr()
    assert main([str(src), "-o", str(tmp_path / "b.png"), "--model", x4_dir, "--outscale", "5", "--quiet"]) == 0
    assert Image.open(tmp_path / "b.png").size == (20, 20)
    assert "not trained on its own outputs" in capsys.readouterr().err


@pytest.mark.parametrize("args, message", [
    (["--outscale", "0"], "--outscale"),
    (["--size", "12"], "--size"),
    (["--outscale", "2", "--size", "8x8"], "not both"),
])
def test_cli_bad_sizes_are_usage_errors(tmp_path, x4_dir, capsys, args, message):
    src = _png(tmp_path / "in.png", 4, 4)
    assert main([str(src), "-o", str(tmp_path / "out.png"), "--model", x4_dir, *args]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert not (tmp_path / "out.png").exists()
