"""Fast paths: compile / CUDA-graph switches and their fallbacks, bf16 on CPU, fp16 numerics and syncs on CUDA."""

from __future__ import annotations

import logging
import os

import pytest
import torch

from sr3infer.runtime.fastpath import FastModel
from sr3infer.sampling.samplers import SAMPLERS
from sr3infer.upscaler import Upscaler
from sr3infer.models.weights import build_model

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (run scripts/gpu_checks.sh there)")


def _upscale(up: Upscaler, lowres: torch.Tensor, seed: int = 1, steps: int = 3, sampler: str = "ddim") -> torch.Tensor:
    return up.upscale_tensor(lowres, num_steps=steps, sampler=sampler, progress=False,
                             generator=torch.Generator("cpu").manual_seed(seed))


@pytest.fixture
def tiny_unet_model(tiny_config) -> torch.nn.Module:
    return build_model(tiny_config)


@pytest.fixture
def lowres() -> torch.Tensor:
    return torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(3)) * 2 - 1


# Compile switch and its fallback.


def _failing_compile(calls: list[str]):
    def fake_compile(model, **kwargs):
        def compiled(*args, **kw):
            calls.append("compiled call")
            raise RuntimeError("InvalidCxxCompiler: No working C++ compiler found")

        return compiled

    return fake_compile


def test_compile_failure_falls_back_to_eager_once(tiny_upscaler, lowres, monkeypatch, caplog):
    expected = _upscale(tiny_upscaler, lowres)
    calls: list[str] = []
    monkeypatch.setattr(torch, "compile", _failing_compile(calls))
    tiny_upscaler.enable_compile()
    with caplog.at_level(logging.WARNING, logger="sr3infer.runtime.fastpath"):
        got = _upscale(tiny_upscaler, lowres)
    assert torch.equal(got, expected)
    assert calls == ["compiled call"], "after the first failure the compiled function must not be tried again"
    assert not tiny_upscaler.fast_path.compile_active
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "No working C++ compiler" in warnings[0] and "eagerly" in warnings[0]


def test_compile_unsupported_interpreter_never_calls_compile(tiny_upscaler, lowres, monkeypatch, caplog):
    import torch._dynamo

    expected = _upscale(tiny_upscaler, lowres)
    monkeypatch.setattr(torch._dynamo, "is_dynamo_supported", lambda: False)

    def must_not_run(*args, **kwargs):
        raise AssertionError("torch.compile was called although dynamo reports it unsupported")

    monkeypatch.setattr(torch, "compile", must_not_run)
    with caplog.at_level(logging.WARNING, logger="sr3infer.runtime.fastpath"):
        got = _upscale(tiny_upscaler.enable_compile(), lowres)
    assert torch.equal(got, expected)
    assert any("does not support torch.compile" in r.getMessage() for r in caplog.records)


def test_model_errors_are_not_hidden_by_the_compile_fallback(tiny_unet_model):
    def broken(x: torch.Tensor, level: torch.Tensor) -> torch.Tensor:
        raise RuntimeError("compiled code broke")

    fast = FastModel(tiny_unet_model, compile=True)
    fast._compiled = broken
    wrong_channels = torch.zeros(1, 5, 16, 16)
    with pytest.raises(RuntimeError, match="expected input.*6 channels"):
        fast(wrong_channels, torch.ones(1))


def test_moving_the_upscaler_recompiles(tiny_upscaler, lowres, monkeypatch):
    compiled_models: list[object] = []

    def counting_compile(model, **kwargs):
        compiled_models.append(model)
        return model

    monkeypatch.setattr(torch, "compile", counting_compile)
    tiny_upscaler.enable_compile()
    _upscale(tiny_upscaler, lowres)
    _upscale(tiny_upscaler, lowres)
    assert len(compiled_models) == 1
    tiny_upscaler.to("cpu", torch.float32)
    _upscale(tiny_upscaler, lowres)
    assert len(compiled_models) == 2, "code compiled for the old device/dtype must be dropped by .to()"


def test_dynamo_traces_the_unet_and_matches_eager(tiny_upscaler, lowres):
    """A real torch.compile trace of the U-Net (dynamo, eager backend: no C compiler needed)."""
    expected = _upscale(tiny_upscaler, lowres)
    got = _upscale(tiny_upscaler.enable_compile(backend="eager"), lowres)
    assert tiny_upscaler.fast_path.compile_active, "dynamo failed to trace the U-Net and fell back"
    torch.testing.assert_close(got, expected, atol=1e-6, rtol=0)


@pytest.mark.skipif(not (torch.cuda.is_available() or os.environ.get("SR3INFER_TEST_INDUCTOR")),
                    reason="opt-in on CPU: inductor compiles C++ for tens of seconds, more than the whole suite can "
                           "spare; set SR3INFER_TEST_INDUCTOR=1 (runs by default on CUDA)")
def test_inductor_compile_matches_eager(tiny_config, lowres):
    """A real inductor compile matches eager; the default CPU suite covers the dynamo trace (eager backend) instead."""
    device = "cuda" if torch.cuda.is_available() else "cpu"
    up = Upscaler(tiny_config, build_model(tiny_config), device=device, torch_dtype="fp32")
    # True fp32 on both sides: cuDNN's default TF32 convolutions differ from inductor's kernels by ~1e-3 per
    # call, enough to move 2% of the pixels by 0.03 after 3 steps on the H200 (what this test compares is the
    # compile, not TF32).
    cudnn_tf32, matmul_precision = torch.backends.cudnn.allow_tf32, torch.get_float32_matmul_precision()
    torch.backends.cudnn.allow_tf32 = False
    torch.set_float32_matmul_precision("highest")
    try:
        expected = _upscale(up, lowres)
        got = _upscale(up.enable_compile(), lowres)
    finally:
        torch.backends.cudnn.allow_tf32 = cudnn_tf32
        torch.set_float32_matmul_precision(matmul_precision)
    assert up.fast_path.compile_active, "inductor compile failed and fell back to eager"
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=0)


def test_graph_capture_calls_the_compiled_module_without_truth_testing_it(tiny_unet_model):
    """`compiled or model` called len() on the OptimizedModule and broke every compile+CUDA-graphs capture (H200)."""
    from sr3infer.runtime.fastpath import FastModel

    fast = FastModel(tiny_unet_model, compile=True, compile_backend="eager")
    target = fast._call_target()
    assert target is not tiny_unet_model and fast.compile_active
    with pytest.raises(TypeError):
        bool(target)  # why the old `or` failed: this must stay a test of the real OptimizedModule
    assert FastModel(tiny_unet_model)._call_target() is tiny_unet_model


def test_compile_mode_that_captures_graphs_cannot_be_combined_with_cuda_graphs(tiny_unet_model):
    fast = FastModel(tiny_unet_model)
    with pytest.raises(ValueError, match="captures CUDA graphs itself"):
        fast.configure(compile=True, compile_mode="reduce-overhead", cuda_graphs=True)


# CUDA-graph switch on CPU.


def test_cuda_graphs_on_cpu_is_a_clear_error(tiny_upscaler):
    with pytest.raises(ValueError, match=r"CUDA graphs need a CUDA device.*on cpu.*\.to\('cuda'\)"):
        tiny_upscaler.enable_cuda_graphs()
    assert not tiny_upscaler.fast_path.cuda_graphs
    assert tiny_upscaler.enable_cuda_graphs(False) is tiny_upscaler


def test_graphs_requested_but_cpu_inputs_run_eagerly(tiny_unet_model, caplog):
    x, level = torch.randn(1, 6, 16, 16), torch.rand(1)
    fast = FastModel(tiny_unet_model, cuda_graphs=True)
    with caplog.at_level(logging.WARNING, logger="sr3infer.runtime.fastpath"), torch.inference_mode():
        first, second, expected = fast(x, level), fast(x, level), tiny_unet_model(x, level)
    assert torch.equal(first, expected) and torch.equal(second, expected)
    assert sum("CUDA inputs only" in r.getMessage() for r in caplog.records) == 1


# bf16 on CPU.


def test_bf16_upscaler_on_cpu_keeps_noise_embedding_fp32_and_stays_close(tiny_config, lowres):
    torch.manual_seed(0)
    model = build_model(tiny_config)
    fp32 = Upscaler(tiny_config, model, device="cpu")
    expected = _upscale(fp32, lowres)
    bf16 = Upscaler(tiny_config, build_model(tiny_config, model.state_dict()), device="cpu", torch_dtype="bf16")
    assert bf16.model.downs[0].weight.dtype == torch.bfloat16
    assert bf16.model.noise_level_mlp[1].weight.dtype == torch.float32
    bf16.to("cpu")  # a move keeps the dtype, and the modules the U-Net keeps in float32 (`_keep_in_fp32_modules`)
    assert bf16.dtype == bf16.model.downs[0].weight.dtype == torch.bfloat16
    assert bf16.model.noise_level_mlp[1].weight.dtype == torch.float32
    got = _upscale(bf16, lowres)
    assert got.dtype == torch.float32 and torch.isfinite(got).all()
    diff = (got - expected).abs().mean().item() * 127.5  # in 8-bit levels ([-1, 1] spans 255)
    assert 0 < diff < 4.0, f"bf16 vs fp32 mean abs difference {diff:.2f}/255 (expected > 0 and < 4/255)"
    assert bf16.to("cpu", None).dtype == torch.float32  # dtype=None: the device's default
    assert bf16.model.downs[0].weight.dtype == torch.float32


def test_bf16_autocast_unet_on_cpu(tiny_unet_model):
    x, level = torch.randn(2, 6, 16, 16), torch.rand(2)
    with torch.inference_mode():
        expected = tiny_unet_model(x, level)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            got = tiny_unet_model(x.contiguous(memory_format=torch.channels_last), level)
    assert got.dtype == torch.bfloat16, "autocast should run the convolutions in bf16"
    rel = ((got.float() - expected).norm() / expected.norm()).item()
    assert 0 < rel < 0.05, f"bf16 autocast relative error {rel:.4f} (expected > 0 and < 0.05)"


# CUDA only (scripts/gpu_checks.sh runs these on the GPU machine).


def _numerics_upscaler(device: str, dtype: str) -> Upscaler:
    """The trained face model when it is installed, else its architecture with seeded random weights."""
    try:
        return Upscaler.from_pretrained(os.environ.get("SR3INFER_NUMERICS_MODEL", "sr3-face-8x"), device=device,
                                        torch_dtype=dtype, local_files_only=True)
    except Exception:  # noqa: BLE001 - no weights here: the architecture alone still tests fp16 numerics
        import json
        from pathlib import Path

        from sr3infer.models.config import ModelConfig

        data = json.loads((Path(__file__).resolve().parents[1] / "training" / "sr3-face-8x.json").read_text())
        config = ModelConfig.from_dict(data["model"])
        torch.manual_seed(0)
        return Upscaler(config, build_model(config), device=device, torch_dtype=dtype)


@cuda
@pytest.mark.parametrize("sampler", ["ddim", "ancestral"])
def test_cuda_fp16_within_2_of_255_of_fp32(sampler):
    lowres = torch.rand(4, 3, 16, 16, generator=torch.Generator().manual_seed(5)) * 2 - 1
    outs = {}
    for dtype in ("fp32", "fp16"):
        up = _numerics_upscaler("cuda", dtype)
        outs[dtype] = _upscale(up, lowres, seed=7, steps=20, sampler=sampler).cpu()
    diff = (outs["fp16"] - outs["fp32"]).abs().mean().item() * 127.5
    print(f"\nfp16 vs fp32 ({sampler}, 20 steps, {up.source or 'random weights'}): mean abs diff {diff:.3f}/255")
    assert diff <= 2.0, f"fp16 output differs from fp32 by {diff:.3f}/255 on average; expected at most 2/255"


@cuda
@pytest.mark.parametrize("dtype", ["fp16", "bf16", "fp32"])
def test_cuda_graphs_match_eager(tiny_config, lowres, dtype):
    up = Upscaler(tiny_config, build_model(tiny_config), device="cuda", torch_dtype=dtype)
    expected = _upscale(up, lowres)
    got = _upscale(up.enable_cuda_graphs(), lowres)
    assert up.fast_path.cuda_graphs_active and len(up.fast_path._graphs) == 1
    torch.testing.assert_close(got, expected, atol=2e-3, rtol=0)
    again = _upscale(up, lowres)
    assert torch.equal(again, got), "replaying the captured graph must be deterministic"


@cuda
def test_cuda_graph_capture_failure_falls_back(tiny_config, lowres, monkeypatch, caplog):
    up = Upscaler(tiny_config, build_model(tiny_config), device="cuda", torch_dtype="fp32")
    expected = _upscale(up, lowres)

    def broken_graph(*args, **kwargs):
        raise RuntimeError("operation not permitted when stream is capturing")

    monkeypatch.setattr(torch.cuda, "graph", broken_graph)
    with caplog.at_level(logging.WARNING, logger="sr3infer.runtime.fastpath"):
        got = _upscale(up.enable_cuda_graphs(), lowres)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)
    assert not up.fast_path.cuda_graphs_active
    assert any("CUDA graph capture failed" in r.getMessage() for r in caplog.records)


@cuda
@pytest.mark.parametrize("graphs", [False, True])
@pytest.mark.parametrize("sampler", sorted(SAMPLERS))
def test_no_host_device_sync_inside_the_sampling_loop(tiny_config, sampler, graphs):
    from sr3infer.images.resample import bicubic

    up = Upscaler(tiny_config, build_model(tiny_config), device="cuda")
    if graphs:
        up.enable_cuda_graphs()
    lowres = torch.rand(2, 3, 8, 8, device="cuda") * 2 - 1
    with torch.inference_mode():
        cond = bicubic(lowres, (16, 16))
        denoise = up.make_denoiser(cond, lowres)
        gammas = up.config.schedule.inference_grid(4)
        x = torch.randn(cond.shape, device="cuda")
        SAMPLERS[sampler](denoise, x, gammas, generator=torch.Generator("cpu").manual_seed(0), disable=True)  # warm-up
        torch.cuda.synchronize()
        torch.cuda.set_sync_debug_mode("error")
        try:
            out = SAMPLERS[sampler](denoise, x, gammas, generator=torch.Generator("cpu").manual_seed(0), disable=True)
        finally:
            torch.cuda.set_sync_debug_mode("default")
    assert out.shape == x.shape and torch.isfinite(out).all()
