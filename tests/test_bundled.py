"""End to end with the real bundled weights: the trained models must beat bicubic on real validation data."""

from __future__ import annotations

import json

import pytest
import torch
from PIL import Image

from sr3infer import Upscaler
from sr3infer.models.config import Recipe
from sr3infer.cli import main
from sr3infer.images.resample import bicubic
from sr3infer.quality import metrics
from sr3infer.train.data import make_lowres, to_unit_tensor

from conftest import EXAMPLES, REPO, example_faces, require

pytestmark = pytest.mark.slow  # the bundled weights


@pytest.fixture(scope="module")
def face_upscaler() -> Upscaler:
    return Upscaler.from_pretrained("sr3-face-8x", device="cpu")


def test_face_model_is_trained_and_bundled(face_upscaler):
    assert not face_upscaler.config.task.get("untrained")
    assert face_upscaler.config.task.get("training_steps", 0) > 1000
    assert (face_upscaler.config.lowres_size, face_upscaler.config.out_size) == (16, 128)


def test_example_faces_are_the_committed_validation_face():
    """examples/face_16.png is validation face 000900 made low-res: the first of the example faces, to the bit."""
    face_16 = to_unit_tensor(Image.open(require(EXAMPLES / "face_16.png")))
    assert torch.equal(make_lowres(example_faces()[:1], 8)[0], face_16)


def test_face_model_beats_bicubic_on_validation_faces(face_upscaler):
    """The validation faces of examples/face_grid.png (its original column), made low-res as at training."""
    torch.set_num_threads(2)
    hr = example_faces()
    lowres = make_lowres(hr, 8)
    out = face_upscaler.upscale_tensor(lowres, generator=[torch.Generator().manual_seed(k) for k in range(len(hr))],
                                       progress=False)
    baseline = bicubic(lowres, 128).clamp(-1, 1)
    assert out.shape == hr.shape
    assert metrics.psnr(out, hr).mean() > metrics.psnr(baseline, hr).mean()
    assert metrics.consistency(out, lowres).mean() < 0.5 * metrics.consistency(baseline, lowres).mean()


def test_natural_model_upscales_a_photo_crop():
    """examples/photo_64.png: a real photo (scikit-image's chelsea), bicubic-downsampled 4x to the model's input size."""
    torch.set_num_threads(2)
    upscaler = Upscaler.from_pretrained("sr3-64-256", device="cpu")
    lowres = to_unit_tensor(Image.open(require(EXAMPLES / "photo_64.png")))[None]
    out = upscaler.upscale_tensor(lowres, generator=torch.Generator().manual_seed(0), progress=False)
    assert out.shape == (1, 3, 256, 256)
    baseline = bicubic(lowres, 256).clamp(-1, 1)
    assert metrics.consistency(out, lowres).mean() < metrics.consistency(baseline, lowres).mean()


def test_cli_quickstart_with_the_default_model(tmp_path):
    out = tmp_path / "face_128.png"
    assert main([str(REPO / "examples" / "face_16.png"), "-o", str(out), "--quiet"]) == 0
    assert Image.open(out).size == (128, 128)


@pytest.mark.parametrize("name", ["sr3-face-8x", "sr3-64-256"])
def test_presets_are_the_searched_ones(name):
    """benchmarks/preset_search.py measured the bundled weights on all val images; each preset in config.json must
    be the one its rule picks from that JSON (re-applied here), and the default recipe must be `realism`."""
    from sr3infer.sampling import preset_rule as presets
    from sr3infer.hub.manifest import sha256_file

    search = json.loads((REPO / "benchmarks" / "results" / name / "preset_search.json").read_text())
    weights = REPO / "sr3infer" / "bundled" / name / "model.safetensors"
    assert search["weights_sha256"] == sha256_file(weights), "search on other weights"
    config = Upscaler.from_pretrained(name, device="cpu").config
    min_psnr_db = presets.REALISM_MIN_PSNR_DB.get(name)
    assert search["rule"] == presets.rule(min_psnr_db), "the JSON's rule is stale: re-run preset_search.py --report"
    chosen = presets.choose(search["runs"], min_psnr_db)
    assert set(config.presets) - {"fast"} == set(chosen) == {"fidelity", "realism"}  # fast: a student's, not searched
    for preset, row in chosen.items():
        assert config.presets[preset] == Recipe.from_dict(presets.recipe_of(row)), preset
    assert config.sampling == config.presets["realism"]
    assert all(r["model"]["consistency_1e5"] <= 1.0 for r in chosen.values())


# teacher: (student, example input, val images, PSNR floor, KID ceiling x1e-3) of its release rule
# (training/distill/<student>.md)
STUDENTS = {"sr3-64-256": ("sr3-64-256-fast", "photo_64.png", 24, 32.3, 14.0),
            "sr3-face-8x": ("sr3-face-8x-fast", "face_16.png", 50, 23.7, 30.0)}


@pytest.mark.parametrize("teacher_name", sorted(STUDENTS))
def test_each_models_fast_preset_is_its_released_student(teacher_name):
    """The teacher's fast preset runs its bundled student in one network call; the score JSON, measured on those
    weights through preset="fast" on all val images, holds the release rule's bounds."""
    from sr3infer.hub.manifest import load_manifest, sha256_file

    name, example, images, min_psnr, max_kid = STUDENTS[teacher_name]
    score = json.loads((REPO / "benchmarks" / "results" / teacher_name / "fast_preset.json").read_text())
    student_file = REPO / "sr3infer" / "bundled" / name / "model.safetensors"
    assert score["student_weights_sha256"] == sha256_file(student_file), "scored on other weights"
    fast = score["presets"]["fast"]
    assert fast["network_calls"] == 1 and fast["images"] == images
    assert fast["model"]["psnr"] >= min_psnr and fast["model"]["kid_1e3"] <= max_kid
    assert fast["model"]["consistency_1e5"] <= 1
    assert load_manifest().models[name].student_of == teacher_name
    teacher = Upscaler.from_pretrained(teacher_name, device="cpu")
    assert teacher.config.presets["fast"].weights == name
    image = Image.open(EXAMPLES / example)
    student = teacher.weights_for(teacher.config.presets["fast"])
    calls = []
    student.model.register_forward_hook(lambda module, args, out: calls.append(args[0].shape[0]))
    fast_image = teacher.upscale(image, preset="fast", seed=0, progress=False)
    assert calls == [1]  # one network call for one image
    assert fast_image.size == (image.width * teacher.config.scale, image.height * teacher.config.scale)
    assert fast_image.tobytes() != teacher.upscale(image, preset="realism", seed=0, progress=False).tobytes()

