"""Every examples/*.py runs with no arguments in a fresh clone: on the committed pictures, without ../shared."""

from __future__ import annotations

import dataclasses
import runpy
import shutil
import sys

import pytest
from PIL import Image

from sr3infer import Upscaler

from conftest import EXAMPLES

SCRIPTS = sorted(path.name for path in EXAMPLES.glob("*.py"))
WRITES = {  # what each example writes beside itself when run with no arguments
    "cascade.py": ["cascade.png", "cascade_0.png"],
    "face_grid.py": ["face_grid.png"],
    "uncertainty_faces.py": ["uncertainty_faces.png"],
    "upscale_photo.py": ["upscale_photo.png", "upscale_photo_comparison.png"],
}


@pytest.fixture
def one_step(monkeypatch):
    """Every recipe cut to one denoising step: the examples' own recipes (2-20 steps) take minutes on two CPU cores,
    and the step count changes nothing this test checks (arguments, files, sizes)."""
    resolve = Upscaler.sampling_recipe

    def quick(self, *args, **kwargs):
        return dataclasses.replace(resolve(self, *args, **kwargs), num_steps=1)

    monkeypatch.setattr(Upscaler, "sampling_recipe", quick)


def test_every_example_is_listed():
    assert SCRIPTS == sorted(WRITES)


@pytest.mark.parametrize("script", SCRIPTS)
def test_example_runs_with_no_arguments_in_a_fresh_clone(script, tmp_path, monkeypatch, capsys, one_step):
    """A copy of examples/ alone, so ../shared/datasets and the peer benchmark's work folder are not beside it."""
    folder = tmp_path / "clone" / "examples"
    shutil.copytree(EXAMPLES, folder, ignore=shutil.ignore_patterns("__pycache__"))
    before = {path.name: path.read_bytes() for path in folder.iterdir()}
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", [str(folder / script)])
    runpy.run_path(str(folder / script), run_name="__main__")
    out = capsys.readouterr().out
    assert "wrote" in out
    for name in WRITES[script]:
        with Image.open(folder / name) as image:
            assert image.width >= 128 and image.height >= 128, f"{script} wrote a {image.size} {name}"
    untouched = {name for name in before if name not in WRITES[script]}
    assert all((folder / name).read_bytes() == before[name] for name in untouched)


def test_upscale_photo_says_what_to_pass_for_a_missing_photo(tmp_path, monkeypatch):
    monkeypatch.setattr(sys, "argv", ["upscale_photo.py", str(tmp_path / "nope.jpg")])
    with pytest.raises(SystemExit, match=r"nope.jpg is not a file; pass the photo to upscale: python upscale_photo.py "
                                         r"PHOTO"):
        runpy.run_path(str(EXAMPLES / "upscale_photo.py"), run_name="__main__")
