"""A `fast` preset runs a distilled student's weights: a recipe with "weights" naming another model folder."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from sr3infer import Upscaler
from sr3infer.models.config import ModelConfig, Recipe
from sr3infer.models.weights import build_model

FAST = Recipe(sampler="ddim", num_steps=1, consistency="every", weights="tiny-student")


@pytest.fixture()
def teacher_and_student(tmp_path, tiny_config):
    """A teacher folder whose `fast` preset names a student folder beside it (other random weights)."""
    torch.manual_seed(1)
    student = Upscaler(tiny_config, build_model(tiny_config), device="cpu")
    student.save_pretrained(tmp_path / "tiny-student")
    torch.manual_seed(0)
    config = dataclasses.replace(tiny_config, presets={"fast": FAST})
    teacher = Upscaler(config, build_model(config), device="cpu")
    return teacher.save_pretrained(tmp_path / "tiny-teacher"), tmp_path / "tiny-student"


def test_the_fast_preset_runs_the_students_weights(teacher_and_student):
    teacher_dir, student_dir = teacher_and_student
    teacher = Upscaler.from_pretrained(teacher_dir, device="cpu")
    assert teacher.config.presets["fast"].weights == "tiny-student"
    image = np.random.default_rng(0).integers(0, 256, (8, 8, 3), dtype=np.uint8)
    fast = teacher.upscale(image, preset="fast", seed=3, progress=False, output_type="np")
    own = dataclasses.replace(FAST, weights=None)
    by_student = Upscaler.from_pretrained(student_dir, device="cpu").upscale(image, recipe=own, seed=3, progress=False,
                                                                             output_type="np")
    by_teacher = teacher.upscale(image, recipe=own, seed=3, progress=False, output_type="np")
    assert np.array_equal(fast, by_student) and not np.array_equal(fast, by_teacher)
    assert list(teacher._students) == ["tiny-student"]  # loaded once
    teacher.upscale(image, preset="fast", seed=3, progress=False)
    assert len(teacher._students) == 1


def test_the_fast_preset_from_the_command_line(teacher_and_student, tmp_path):
    from PIL import Image

    from sr3infer.cli import main

    teacher_dir, _ = teacher_and_student
    Image.fromarray(np.full((8, 8, 3), 90, np.uint8)).save(tmp_path / "in.png")
    assert main([str(tmp_path / "in.png"), "-o", str(tmp_path / "out.png"), "--model", str(teacher_dir),
                 "--preset", "fast", "--quiet"]) == 0
    assert Image.open(tmp_path / "out.png").size == (16, 16)


def test_a_student_of_another_model_is_refused_before_any_work(teacher_and_student, tiny_config):
    teacher_dir, student_dir = teacher_and_student
    other = dataclasses.replace(tiny_config, scale=4, lowres_size=4)
    Upscaler(other, build_model(other), device="cpu").save_pretrained(student_dir)  # overwrite the student
    teacher = Upscaler.from_pretrained(teacher_dir, device="cpu")
    with pytest.raises(ValueError, match="do not share this model's scale"):
        teacher.upscale(np.zeros((8, 8, 3), np.uint8), preset="fast", progress=False)


def test_weights_are_written_only_when_set():
    assert "weights" not in Recipe().to_dict()
    assert Recipe.from_dict(FAST.to_dict()) == FAST
    with pytest.raises(ValueError, match="weights"):
        Recipe(weights="  ")
    assert isinstance(ModelConfig().recipe(), Recipe)
