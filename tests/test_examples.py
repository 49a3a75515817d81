"""Every examples/*.py runs with no arguments in a fresh clone: on the committed pictures, without ../shared, writing
only into examples/out/, which git ignores (running the examples leaves the checkout clean)."""

from __future__ import annotations

import dataclasses
import runpy
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from sr3infer import Upscaler

from conftest import EXAMPLES

pytestmark = pytest.mark.slow  # the examples run on the bundled weights

SCRIPTS = sorted(path.name for path in EXAMPLES.glob("*.py"))
WRITES = {  # what each example writes into examples/out/ (ignored by git) when run with no arguments
    "cascade.py": ["cascade.png", "cascade_0.png", "cascade_1.png", "cascade_2.png", "cascade_3.png"],
    "face_grid.py": ["face_grid.png"],
    "uncertainty_faces.py": ["uncertainty_faces.png"],
    "upscale_photo.py": ["upscale_photo.png", "upscale_photo_comparison.png"],
}


def files(folder: Path) -> dict[str, bytes]:
    """Every file under `folder` (relative path -> bytes), but the examples' output folder and Python's caches."""
    return {str(path.relative_to(folder)): path.read_bytes() for path in sorted(folder.rglob("*"))
            if path.is_file() and not {"out", "__pycache__"} & set(path.relative_to(folder).parts)}


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
def test_example_runs_with_no_arguments_in_a_fresh_clone_and_writes_only_into_examples_out(script, tmp_path,
                                                                                          monkeypatch, capsys, one_step):
    """A copy of examples/ alone, so ../shared/datasets and the peer benchmark's work folder are not beside it; the
    copy holds no out/ folder, whatever earlier runs left in the checkout's."""
    folder = tmp_path / "clone" / "examples"
    shutil.copytree(EXAMPLES, folder, ignore=shutil.ignore_patterns("__pycache__", "out"))
    before = files(folder)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", [str(folder / script)])
    runpy.run_path(str(folder / script), run_name="__main__")
    out = capsys.readouterr().out
    assert "wrote" in out
    assert files(folder) == before, f"{script} changed or added files outside examples/out/"
    assert sorted(path.name for path in (folder / "out").iterdir()) == sorted(WRITES[script])
    for name in WRITES[script]:
        with Image.open(folder / "out" / name) as image:
            assert image.width >= 128 and image.height >= 128, f"{script} wrote a {image.size} {name}"
    assert not (tmp_path / "out").exists()


def test_the_examples_output_folder_is_ignored_by_git():
    if shutil.which("git") is None or not (EXAMPLES.parent / ".git").exists():
        pytest.skip("not a git checkout")
    names = [f"examples/out/{name}" for written in WRITES.values() for name in written]
    result = subprocess.run(["git", "check-ignore", "--no-index", *names], cwd=EXAMPLES.parent,
                            capture_output=True, text=True)
    assert result.stdout.split() == names, f"not ignored by .gitignore: {sorted(set(names) - set(result.stdout.split()))}"


def test_upscale_photo_says_what_to_pass_for_a_missing_photo(tmp_path, monkeypatch):
    monkeypatch.setattr(sys, "argv", ["upscale_photo.py", str(tmp_path / "nope.jpg")])
    with pytest.raises(SystemExit, match=r"nope.jpg is not a file; pass the photo to upscale: python upscale_photo.py "
                                         r"PHOTO"):
        runpy.run_path(str(EXAMPLES / "upscale_photo.py"), run_name="__main__")
