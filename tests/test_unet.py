"""The U-Net against the community SR3 test vectors: forward pass, key layout of the released models, training loss."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from sr3infer.models.checkpoints import (config_from_reference, config_from_state_dict, convert_state_dict,
                              load_community_checkpoint)
from sr3infer.sampling.prediction import eps_from_x0, to_x0, training_target
from sr3infer.models.unet import UNet, UNetConfig, pad_to_multiple
from sr3infer.models.weights import build_model

from conftest import FIXTURES, require

ATOL = 1e-5  # the fixture README's suggested float32 tolerance for forward outputs


@pytest.fixture(scope="module")
def reference_model() -> UNet:
    config, state = load_community_checkpoint(require(FIXTURES / "tiny_gen.safetensors"), scale=2)
    return build_model(config, state)


def _max_err(a: torch.Tensor, b: torch.Tensor) -> float:
    assert a.shape == b.shape, (a.shape, b.shape)
    return (a.float() - b.float()).abs().max().item()


def test_tiny_checkpoint_maps_to_the_reference_config():
    config, state = load_community_checkpoint(require(FIXTURES / "tiny_gen.safetensors"), scale=2)
    assert config.network == UNetConfig(
        in_channels=6, out_channels=3, inner_channel=8, channel_mults=(1, 2, 4), num_res_blocks=2,
        attn_resolutions=(8,), dropout=0.0, norm_groups=4, image_size=32,
    )
    assert (config.scale, config.lowres_size, config.prediction, config.residual) == (2, 16, "eps", False)
    # The documented mapping: `denoise_fn.<name>` -> `<name>`; the 12 schedule buffers are dropped.
    keys = [line.split("\t")[0] for line in require(FIXTURES / "keys_tiny.txt").read_text().splitlines()]
    assert len(keys) == 252
    assert sorted(state) == sorted(k[len("denoise_fn."):] for k in keys if k.startswith("denoise_fn."))
    assert sum(v.numel() for v in state.values()) == 240_371


def test_forward_matches_reference_square_and_non_square(reference_model):
    ref = load_file(str(require(FIXTURES / "tiny_forward.safetensors")))
    captured: dict[str, torch.Tensor] = {}
    mlp = reference_model.noise_level_mlp
    hooks = [
        mlp[0].register_forward_hook(lambda m, i, o: captured.setdefault("pos_enc", o)),
        mlp[3].register_forward_hook(lambda m, i, o: captured.setdefault("noise_emb", o)),
        reference_model.mid[1].register_forward_hook(lambda m, i, o: captured.setdefault("mid_out", o)),
    ]
    try:
        with torch.no_grad():
            eps = reference_model(ref["x"], ref["noise_level"])
    finally:
        for hook in hooks:
            hook.remove()
    assert _max_err(eps, ref["eps"]) <= ATOL
    for name in ("pos_enc", "noise_emb", "mid_out"):
        assert _max_err(captured[name], ref[name]) <= ATOL, name

    with torch.no_grad():
        eps_rect = reference_model(ref["x_rect"], ref["noise_level_rect"])
        eps_flat = reference_model(ref["x"], ref["noise_level"][:, 0])  # (B,) noise levels work too
    assert eps_rect.shape == (1, 3, 32, 48)
    assert _max_err(eps_rect, ref["eps_rect"]) <= ATOL
    assert _max_err(eps_flat, ref["eps"]) <= ATOL


def test_schedule_buffers_in_a_checkpoint_are_checked_then_dropped():
    state = load_file(str(require(FIXTURES / "tiny_gen.safetensors")))
    unet, schedule = convert_state_dict(state)
    assert schedule is not None and schedule.to_dict() == {
        "kind": "linear", "num_train_timesteps": 2000, "beta_start": 1e-6, "beta_end": 1e-2}
    assert not any(k in unet for k in ("betas", "alphas_cumprod", "posterior_variance"))

    bad_betas = dict(state, betas=state["betas"] ** 0.5)  # not linear any more
    with pytest.raises(ValueError, match="linear"):
        convert_state_dict(bad_betas)
    bad_ac = dict(state, alphas_cumprod=state["alphas_cumprod"] * 0.9)
    with pytest.raises(ValueError, match="alphas_cumprod"):
        convert_state_dict(bad_ac)
    with pytest.raises(ValueError, match="denoise_fn"):
        convert_state_dict({k: v for k, v in state.items() if not k.startswith("denoise_fn.")})


RELEASED = {
    # The configs of the released checkpoints, in the reference format (fixture README section 4.7).
    "keys_sr_sr3_16_128.txt": ({
        "unet": {"in_channel": 6, "out_channel": 3, "inner_channel": 64, "channel_multiplier": [1, 2, 4, 8, 8],
                 "attn_res": [16], "res_blocks": 2, "dropout": 0.2},  # norm_groups absent -> define_G's 32
        "diffusion": {"image_size": 128},
        "beta_schedule": {"val": {"n_timestep": 2000, "linear_start": 1e-6, "linear_end": 1e-2}},
    }, 97_807_491),
    "keys_sr_sr3_64_512.txt": ({
        "unet": {"in_channel": 6, "out_channel": 3, "inner_channel": 64, "norm_groups": 16,
                 "channel_multiplier": [1, 2, 4, 8, 16], "attn_res": [], "res_blocks": 1, "dropout": 0},
        "diffusion": {"image_size": 512},
        "beta_schedule": {"val": {"n_timestep": 2000, "linear_start": 1e-6, "linear_end": 1e-2}},
    }, 155_334_339),
}


@pytest.mark.parametrize("keys_file", sorted(RELEASED))
def test_every_released_key_maps_to_a_parameter_of_the_equivalent_config(keys_file):
    reference, num_params = RELEASED[keys_file]
    schedule_buffers = load_file(str(require(FIXTURES / "schedule_2000.safetensors")))
    state = {}
    for line in require(FIXTURES / keys_file).read_text().splitlines():
        key, shape, dtype = line.split("\t")
        assert dtype == "float32"
        if key in schedule_buffers:  # real values, so the buffer check in convert_state_dict runs
            assert list(schedule_buffers[key].shape) == json.loads(shape)
            state[key] = schedule_buffers[key]
        else:  # shapes only: no 100M-parameter allocation
            state[key] = torch.empty(json.loads(shape), device="meta")
    unet_state, schedule = convert_state_dict(state)
    unet_config, ref_schedule = config_from_reference({"model": reference})
    assert schedule == ref_schedule
    with torch.device("meta"):
        model = UNet(**unet_config.to_dict())
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert {k: tuple(v.shape) for k, v in unet_state.items()} == expected
    assert sum(p.numel() for p in model.parameters()) == num_params
    # Shapes alone give the same architecture, once told what they cannot show (norm_groups, image_size, dropout).
    inferred = config_from_state_dict(unet_state, norm_groups=unet_config.norm_groups, image_size=unet_config.image_size)
    assert inferred.to_dict() == {**unet_config.to_dict(), "dropout": 0.0}


@pytest.mark.parametrize("size", [(30, 30), (17, 23), (1, 1), (2, 5)])
def test_odd_sizes_are_padded_and_cropped_back(size, reference_model):
    x = torch.randn(1, 6, *size)
    level = torch.tensor([0.5])
    with torch.no_grad():
        out = reference_model(x, level)
        padded = reference_model(pad_to_multiple(x, 4), level)  # the tiny model halves twice
    assert out.shape == (1, 3, *size)
    assert torch.isfinite(out).all()
    assert torch.equal(out, padded[..., : size[0], : size[1]])
    if min(size) > 4:  # reflect, not zeros: the padded input's border mirrors the image
        assert torch.equal(pad_to_multiple(x, 4)[..., size[0], : size[1]], x[..., size[0] - 2, :])


def test_training_loss_matches_reference(reference_model):
    ref = load_file(str(require(FIXTURES / "tiny_train_loss.safetensors")))
    from sr3infer.sampling.schedule import NoiseSchedule

    levels = NoiseSchedule().noise_levels
    t = int(ref["t"])
    # SR3 draws sqrt(gamma) between the levels of steps t-1 and t (noise_levels[t-1], noise_levels[t]).
    assert levels[t - 1].item() == pytest.approx(ref["sqrt_gamma_low"].item(), abs=1e-12)
    assert levels[t].item() == pytest.approx(ref["sqrt_gamma_high"].item(), abs=1e-12)
    g = ref["sqrt_gamma"]  # (B, 1)
    assert ((g >= levels[t].float()) & (g <= levels[t - 1].float())).all()

    x0, cond, noise = ref["x_HR"], ref["x_SR"], ref["noise"]
    gb = g.view(-1, 1, 1, 1)
    x_noisy = gb * x0 + (1 - gb * gb).sqrt() * noise
    assert _max_err(x_noisy, ref["x_noisy"]) <= 1e-6
    with torch.no_grad():
        eps_pred = reference_model(torch.cat([cond, x_noisy], dim=1), g)
    assert _max_err(eps_pred, ref["eps_pred"]) <= ATOL
    target = training_target("eps", x0, noise, g[:, 0])
    loss_sum = (target - eps_pred).abs().sum()
    assert loss_sum.item() == pytest.approx(ref["loss_sum"].item(), rel=1e-5)
    assert (loss_sum / target.numel()).item() == pytest.approx(ref["loss_mean"].item(), rel=1e-5)


@pytest.mark.parametrize("prediction", ["eps", "v", "x0"])
def test_prediction_targets_convert_back_to_x0_and_eps(prediction):
    x0, eps = torch.rand(3, 3, 4, 4) * 2 - 1, torch.randn(3, 3, 4, 4)
    g = torch.tensor([0.05, 0.5, 0.95])
    x = g.view(-1, 1, 1, 1) * x0 + (1 - g.view(-1, 1, 1, 1) ** 2).sqrt() * eps
    target = training_target(prediction, x0, eps, g)
    assert torch.allclose(to_x0(prediction, x, target, g), x0, atol=1e-4)
    assert torch.allclose(eps_from_x0(x, x0, g), eps, atol=1e-4)
    with pytest.raises(ValueError, match="eps, v or x0"):
        training_target("score", x0, eps, g)
    with pytest.raises(ValueError, match="eps, v or x0"):
        to_x0("score", x, target, g)


def test_unet_config_rejects_bad_values():
    with pytest.raises(ValueError, match="norm_groups"):
        UNetConfig(inner_channel=8, channel_mults=(1, 3), norm_groups=16)
    with pytest.raises(ValueError, match="inner_channel"):
        UNetConfig(inner_channel=7, norm_groups=7, channel_mults=(1,))
    with pytest.raises(ValueError, match="Unknown U-Net config keys \\['channels'\\]"):
        UNetConfig.from_dict({"channels": 3})
