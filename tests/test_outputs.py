"""sr3infer.outputs: the one output converter and grouping shared by Upscaler, Cascade and the CLI."""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

from sr3infer.images import io as imageio
from sr3infer.outputs import UpscaleOutput, consistency_error, group_like, to_caller_kind, stack_if_same
from sr3infer.images.resample import bicubic, project_onto_input


def test_convert_gives_each_result_back_in_the_kind_and_depth_of_its_input():
    inputs = [np.zeros((2, 2, 3), np.uint16), Image.new("LA", (2, 2)), torch.zeros(3, 2, 2, dtype=torch.bfloat16)]
    prepared = [imageio.prepare(item)[0] for item in inputs]
    results = [torch.full((1, 3, 4, 4), 0.5) for _ in inputs]  # 0.75 in [0, 1]
    deep, gray_alpha, tensor = to_caller_kind(results, prepared, None)
    assert deep.dtype == np.uint16 and deep.shape == (4, 4, 3) and int(deep[0, 0, 0]) == round(0.75 * 65535)
    assert gray_alpha.mode == "LA" and gray_alpha.size == (4, 4)
    assert tensor.dtype == torch.bfloat16 and tensor.shape == (3, 4, 4)
    as_np = to_caller_kind(results[:1], prepared[:1], "np")[0]
    assert as_np.dtype == np.uint16  # output_type changes the kind, never the bit depth


def test_group_like_puts_per_image_values_back_per_input_item():
    batch, single = np.zeros((2, 4, 4, 3), np.uint8), np.zeros((4, 4, 3), np.uint8)
    images = [np.full((8, 8, 3), k, np.uint8) for k in range(3)]
    grouped = group_like([batch, single], [2, 1], images)
    assert grouped[0].shape == (2, 8, 8, 3) and grouped[1] is images[2]
    assert group_like([single], [1], images[:1], single=True) is images[0]
    numbers = group_like([batch, single], [2, 1], [0.1, 0.2, 0.3], "consistency")
    assert isinstance(numbers[0], np.ndarray) and numbers[0].tolist() == [0.1, 0.2] and numbers[1] == 0.3
    samples = group_like([batch], [2], [images[:2], images[1:]], "samples")
    assert samples[0].shape == (2, 2, 8, 8, 3)


def test_stack_if_same_stacks_only_alike_arrays():
    a, b = np.zeros((2, 2), np.uint8), np.zeros((2, 2), np.uint16)
    assert stack_if_same([a, a]).shape == (2, 2, 2)
    assert isinstance(stack_if_same([a, b]), list) and isinstance(stack_if_same([a, a[:1]]), list)
    assert stack_if_same([torch.zeros(3), torch.ones(3)]).shape == (2, 3)
    pil = [Image.new("RGB", (1, 1))]
    assert stack_if_same(pil) is pil


def test_consistency_error_is_the_rms_of_the_downsampled_output_minus_the_input():
    lowres = torch.rand(1, 3, 4, 4) * 0.5  # mid-range: an in-range output can explain it exactly
    exact = project_onto_input(bicubic(lowres, (8, 8)), lowres)
    assert consistency_error(exact, lowres) < 1e-3
    shifted = exact + 0.2  # 0.1 in [0, 1] units everywhere, before the downsampling
    error = consistency_error(shifted, lowres)
    expected = float(((bicubic(shifted, (4, 4)) - lowres) / 2).pow(2).mean().sqrt())
    assert abs(error - expected) < 1e-7 and 0.05 < error < 0.15


def test_upscale_output_defaults():
    out = UpscaleOutput(images=[])
    assert (out.uncertainty, out.samples, out.consistency) == (None, None, None) and out.seconds == 0.0
