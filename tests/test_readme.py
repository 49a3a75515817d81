"""The shell commands of README.md and the docs pages run verbatim, one after another, in one fresh folder, as a
newcomer would run them.

The folder is a copy of the checkout's files (what a clone holds: tracked files and new ones git does not ignore),
with stand-ins for the files the README says are the reader's own (`STAND_INS`). Every command of every ```bash
block runs there in order, README.md first and then the docs pages in the order `PAGES` lists (the order the
sections had in README.md before they moved to docs/), but those in `SKIPPED`, each with its reason. The changes, said here and nowhere hidden:
a command that samples runs with `--steps 1` (its `--steps` value replaced, or the option added), and the one in
`FEWER_SAMPLES` with fewer samples, since the README's step counts take minutes to hours on two CPU cores and
neither changes what this test checks (that the command runs, and that no command trips over another's outputs).
Network access is off (HF_HUB_OFFLINE=1), the Hugging Face cache is a new empty one, and the CPU dtype is the
default a reader gets (the suite's SR3INFER_CPU_BF16=0 is not passed on).
"""

from __future__ import annotations

import hashlib
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image, ImageOps

from conftest import EXAMPLES, REPO

README = REPO / "README.md"
PAGES = [README] + [REPO / "docs" / name for name in (  # read in this order; every docs/*.md page is listed
    "getting-started.md", "python-api.md", "cli.md", "models.md", "cascades.md", "uncertainty.md",
    "performance.md", "many-machines.md", "video.md", "training.md", "limits.md", "ARCHITECTURE.md")]
FEWER_STEPS = 1
FEWER_SAMPLES = {  # command -> what is added: four 1024 px outputs are 100 tile calls even at one step
    "python examples/cascade.py --stages 2 --noise-level 0.02": "--count 1",
}
NOT_SAMPLING = {"download", "models", "publish", "convert", "demo", "eval", "train"}  # sr3infer subcommands
SKIPPED = {  # the command (comment cut) -> why this test does not run it
    "python3 -m venv .venv && . .venv/bin/activate": "install: the test runs in the project's environment",
    "pip install torch==2.13.0": "install (network)",
    'pip install -e ".[dev]"': "install (network)",
    'pip install -e ".[demo]"': "install (network)",
    'pip install -e ".[video]"': "install (network)",
    "sr3infer clip.mp4 -o clip_x4.mp4": "a video of the reader's; tests/test_video.py runs this command on a clip it makes",
    "python -m pytest -q": "the test suite, which holds this test",
    'python -m pytest -q -m "not slow and not network"': "the test suite, which holds this test",
    "sr3infer demo": "a server that runs until stopped; tests/test_demo_browser.py starts it and drives the page",
    "sr3infer convert I640000_E37_gen.pth -o sr3-16-128/":
        "needs a community checkpoint, downloaded from Janspiry's repository (network); tests/test_convert.py "
        "converts a vendored small one",
    "sr3infer convert I830000_E32_gen.pth -o sr3-64-512/ --norm-groups 16 --image-size 512 --scale 8":
        "needs a community checkpoint (network), as above",
    "sr3infer examples/face_16.png -o face_sr3-16-128.png --model sr3-16-128/":
        "needs the folder that the skipped convert command writes",
    "sr3infer publish sr3infer/bundled/sr3-face-8x --repo-id sr3infer/sr3-face-8x":
        "uploads to the Hugging Face Hub (network, a write token); its --dry-run runs here",
    "python benchmarks/tiling_memory.py": "a benchmark of minutes per case (the 512 px one alone ~270 s)",
    "python benchmarks/tiling_memory.py --device cuda": "needs a CUDA GPU",
    "pip install diffusers && python examples/cascade.py --diffusers google/ddpm-cifar10-32 --base-steps 100":
        "install, and a pipeline from the Hugging Face Hub (network)",
    "python benchmarks/uncertainty.py": "hours, and the validation datasets (not in a clone)",
    "python benchmarks/uncertainty.py --domains faces --limit 8 --k 4 --json /tmp/u.json":
        "needs the validation faces (not in a clone; test_benchmarks_without_the_datasets_say_what_is_missing "
        "checks what it says then)",
    "python benchmarks/sampling_quality.py --limit 8 --steps 1 2 5 10 20 50 100 250 1000 2000":
        "about 4 CPU-hours, and the validation faces",
    "python benchmarks/sampling_quality.py --limit 8 --search --steps 5 20": "hours, and the validation faces",
    "python benchmarks/sampling_quality.py --report": "needs matplotlib, which is no dependency of the package",
    "python benchmarks/unet_speed.py": "a benchmark of about 6 minutes on two idle cores",
    "python benchmarks/unet_speed.py --compile": "minutes of compiling per shape",
    "python benchmarks/unet_speed.py --device cuda": "needs a CUDA GPU",
    "bash scripts/gpu_checks.sh": "needs a CUDA GPU",
    "torchrun --standalone --nproc-per-node 4 -m sr3infer.cli INPUT_DIR -o OUT_DIR --steps 50 --batch-size 16":
        "four processes for a folder of the reader's; tests/test_folder_runs_on_ranks.py runs the command with two ranks",
    "python -m sr3infer.train training/sr3-face-8x.json": "CPU-hours of training on the datasets (not in a clone)",
    "torchrun --nproc-per-node 8 -m sr3infer.train training/sr3-64-256.json": "eight processes, hours of training",
    "sr3infer eval sr3-face-8x ../shared/datasets/celeba/val --protocol faces --json face.json":
        "needs the validation faces (not in a clone)",
    "sr3infer eval sr3-64-256 ../shared/datasets/natural/val --protocol natural":
        "needs the validation photos (not in a clone)",
}


def _photo(size: tuple[int, int]) -> Image.Image:
    with Image.open(EXAMPLES / "photo_64.png") as photo:
        return photo.convert("RGB").resize(size, Image.Resampling.BICUBIC)


def _face(mirror: bool) -> Image.Image:
    with Image.open(EXAMPLES / "face_16.png") as face:
        return ImageOps.mirror(face) if mirror else face.copy()


STAND_INS = {  # the reader's own files the README names -> a stand-in made from the committed examples
    "photo.jpg": lambda: _photo((96, 80)),         # any photo; 384x320 out: 2x2 tiles of 256 px
    "my_photo.jpg": lambda: _photo((384, 320)),    # a larger one to shrink 4x (--downscale 4)
    "faces/a.png": lambda: _face(False),           # a folder of 16x16 faces
    "faces/b.png": lambda: _face(True),
    "samples/a.png": lambda: _photo((64, 64)),     # 64x64 base-generator samples (one: stage 2 is 25 tiles each)
}


def cut_comment(line: str) -> str:
    """`line` without its shell comment (a # at a word's start, outside quotes)."""
    quote = None
    for i, char in enumerate(line):
        if quote:
            quote = None if char == quote else quote
        elif char in "'\"":
            quote = char
        elif char == "#" and (i == 0 or line[i - 1].isspace()):
            return line[:i].rstrip()
    return line.rstrip()


def readme_commands(text: str) -> list[str]:
    """The commands of every ```bash block, in order: comments cut, backslash-continued lines joined."""
    commands: list[str] = []
    inside, pending = False, ""
    for line in text.splitlines():
        if line.strip().startswith("```"):
            inside = not inside and line.strip() == "```bash"
            continue
        if not inside:
            continue
        code = cut_comment(line)
        if code.endswith("\\"):
            pending += code[:-1].strip() + " "
            continue
        command, pending = " ".join((pending + code).split()), ""
        if command:
            commands.append(command)
    return commands


def all_commands() -> list[str]:
    """The commands of README.md and then of the docs pages, in the order of `PAGES`."""
    return [command for page in PAGES for command in readme_commands(page.read_text(encoding="utf-8"))]


def samples(command: str) -> bool:
    """Whether `command` runs the sampler: an upscale, a cascade or an example script."""
    words = [word for word in shlex.split(command) if not re.fullmatch(r"[A-Z_]+=\S*", word)]
    if words[0] == "sr3infer":
        return len(words) < 2 or words[1] not in NOT_SAMPLING
    return words[0] == "python" and words[1].startswith("examples/")


def with_fewer_steps(command: str) -> str:
    """`command` with every `--steps` value cut to FEWER_STEPS, or `--steps FEWER_STEPS` added (and FEWER_SAMPLES)."""
    if command in FEWER_SAMPLES:
        command = f"{command} {FEWER_SAMPLES[command]}"
    if "--steps" not in command:
        return f"{command} --steps {FEWER_STEPS}"
    return re.sub(r"--steps (\d+(?:,\d+)*)",
                  lambda m: "--steps " + ",".join(str(FEWER_STEPS) for _ in m.group(1).split(",")), command)


def clone_files() -> list[str]:
    """The checkout's files a clone of it would hold (tracked, and new ones not ignored), relative to REPO."""
    if shutil.which("git") is None or not (REPO / ".git").exists():
        pytest.skip("not a git checkout: the fresh folder is a copy of the checkout's files")
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=REPO,
                            capture_output=True, check=True).stdout.decode().split("\0")
    return [name for name in listed if name and (REPO / name).is_file()]


def digest(folder: Path, names: list[str]) -> dict[str, str]:
    return {name: hashlib.sha256((folder / name).read_bytes()).hexdigest() for name in names}


def test_the_readme_commands_are_found():
    commands = all_commands()
    assert len(commands) > 40 and "sr3infer examples/face_16.png -o face_128.png" in commands
    assert not any(command.startswith("--") or command.endswith("\\") for command in commands)
    stale = sorted((set(SKIPPED) | set(FEWER_SAMPLES)) - set(commands))
    assert stale == [], f"this test lists commands that are no longer in README.md or the docs pages: {stale}"


def test_every_docs_page_is_read():
    """A new page under docs/ has its commands run too: it must be placed in `PAGES`."""
    assert sorted((REPO / "docs").glob("*.md")) == sorted(PAGES[1:])


def test_torch_is_installed_first_and_as_the_cpu_build():
    """A `pip install -e .` that finds no torch pulls PyPI's default torch, the CUDA build on Linux."""
    installs = [c for c in readme_commands(README.read_text(encoding="utf-8")) if c.startswith("pip install")]
    assert installs[0].startswith("pip install torch==") and "cpu" in README.read_text(encoding="utf-8").lower(), installs


@pytest.mark.slow
def test_every_readme_command_runs_in_order_in_a_fresh_folder(tmp_path):
    clone = tmp_path / "clone"
    names = clone_files()
    for name in names:
        (clone / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / name, clone / name)
    for name, make in STAND_INS.items():
        (clone / name).parent.mkdir(parents=True, exist_ok=True)
        make().save(clone / name)
    before = digest(clone, names)
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
           "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf-home")}
    for name in ("HF_HUB_CACHE", "SR3INFER_CPU_BF16"):
        env.pop(name, None)
    ran = []
    for command in all_commands():
        if command in SKIPPED:
            continue
        run = with_fewer_steps(command) if samples(command) else command
        result = subprocess.run(["bash", "-c", run], cwd=clone, env=env, capture_output=True, text=True, timeout=600)
        assert result.returncode == 0, (f"README or docs command failed (exit {result.returncode}), after {len(ran)} others:"
                                        f"\n  {run}\n{result.stderr[-3000:]}{result.stdout[-1000:]}")
        ran.append(run)
    assert len(ran) >= 20, ran
    changed = sorted(name for name, sha in digest(clone, names).items() if before[name] != sha)
    assert changed == [], f"README and docs commands rewrote files of the checkout: {changed}"


BENCHMARKS = {  # the benchmarks that read ../shared/datasets through bench_data -> arguments of a run
    "bf16_cpu.py": [], "calibrate_madeup.py": [], "noise_level_probe.py": ["sr3-face-8x"],
    "preset_search.py": ["sr3-face-8x"], "sampling_quality.py": [], "step_diagnostic.py": ["sr3-face-8x"],
    "uncertainty.py": ["--domains", "faces", "--limit", "8", "--k", "4", "--json", "u.json"],
}


@pytest.mark.slow
@pytest.mark.parametrize("script", sorted(BENCHMARKS))
def test_benchmarks_without_the_datasets_say_what_is_missing(script, tmp_path):
    """In a clone with neither ../shared/datasets nor .data/datasets: one line, no traceback."""
    shutil.copytree(REPO / "benchmarks", tmp_path / "repo" / "benchmarks",
                    ignore=shutil.ignore_patterns("__pycache__", "node_modules", "work"))
    result = subprocess.run([sys.executable, str(tmp_path / "repo" / "benchmarks" / script), *BENCHMARKS[script]],
                            cwd=tmp_path, capture_output=True, text=True, timeout=300)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 1 and len(lines) == 1, result.stderr[-2000:]
    assert lines[0].startswith(f"{script}: the dataset folder {tmp_path / 'shared' / 'datasets'}")
    assert "does not exist" in lines[0] and "python scripts/prepare_datasets.py" in lines[0]
