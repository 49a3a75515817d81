"""Folder runs across ranks and the speed flags of the CLI: torchrun sharding (gloo, 2 CPU processes), per-file failures, --threads."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from sr3infer.cli import main
from sr3infer.runtime.distributed import init_from_env, shard_indices

pytestmark = pytest.mark.slow  # torchrun processes

REPO = Path(__file__).resolve().parents[1]


def _write_images(folder: Path, names: list[str], size: int = 8) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for name in names:
        Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(folder / name)


def _pixels(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"), dtype=np.int16)


@pytest.mark.parametrize("world_size", [1, 2, 3, 4])
def test_shards_cover_every_file_exactly_once(world_size):
    for count in range(0, 9):
        shards = [shard_indices(count, rank, world_size) for rank in range(world_size)]
        flat = sorted(i for shard in shards for i in shard)
        assert flat == list(range(count)), f"count {count}, world {world_size}: {shards}"
        assert max(map(len, shards)) - min(map(len, shards)) <= 1


def test_shard_rejects_a_rank_outside_the_world():
    with pytest.raises(ValueError, match="rank must be in 0..1 for world_size 2, got rank 2"):
        shard_indices(5, 2, 2)


def test_no_process_group_without_torchrun(monkeypatch):
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    assert not init_from_env("cpu").distributed
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "1")
    context = init_from_env(None)
    assert not context.distributed and context.rank == 0 and context.world_size == 1


def _torchrun_two_ranks(*cli_args: str) -> tuple[int, str]:
    """`sr3infer ...` under torchrun with 2 gloo CPU ranks; (exit code, stderr + stdout)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
           "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
         "-m", "sr3infer.cli", *cli_args], cwd=REPO, env=env, capture_output=True, text=True, timeout=300,
    )
    return proc.returncode, proc.stderr + proc.stdout


def test_torchrun_two_ranks_shard_a_folder_with_a_corrupt_file(tmp_path, tiny_model_dir):
    """2 gloo ranks: each good file written once, the corrupt one reported, same pixels as one process."""
    good = ["a.png", "b.png", "c.png", "d.png", "e.png"]
    inputs = tmp_path / "in"
    _write_images(inputs, good)
    (inputs / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\n this is not really a PNG")
    common = ["--model", str(tiny_model_dir), "--steps", "2", "--device", "cpu", "--seed", "3"]
    code, log = _torchrun_two_ranks(str(inputs), "-o", str(tmp_path / "out"), "--batch-size", "2", *common)
    assert code != 0, f"a failed file must make the job fail:\n{log}"
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == good, log
    wrote = re.findall(r"sr3infer\[rank (\d)\]: wrote \S*/(\w+\.png)", log)
    assert sorted(name for _, name in wrote) == good, f"every file written exactly once:\n{log}"
    assert {rank for rank, _ in wrote} == {"0", "1"}, f"both ranks must get work:\n{log}"
    assert len(re.findall(r"skipped \S*bad\.png", log)) == 1, log
    assert "5 written, 1 failed of 6 files (2 ranks: rank 0: 2 written, 1 failed; rank 1: 3 written, 0 failed)" in log, log

    # One process, one image per call: the same seeds per file, so the same pixels up to rounding.
    assert main([str(inputs), "-o", str(tmp_path / "single"), "--batch-size", "1", "--quiet", *common]) == 1
    for name in good:
        diff = np.abs(_pixels(tmp_path / "out" / name) - _pixels(tmp_path / "single" / name)).max()
        assert diff <= 1, f"{name}: sharded and single-process outputs differ by {diff} levels"


def test_torchrun_two_ranks_shard_a_cascade(tmp_path, tiny_model_dir):
    """`sr3infer cascade` shards like the main command: each good file written once, file k seeded --seed + k."""
    good = ["a.png", "b.png", "c.png"]
    inputs = tmp_path / "in"
    _write_images(inputs, good)
    (inputs / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\n this is not really a PNG")
    common = ["--stages", str(tiny_model_dir), "--steps", "1", "--device", "cpu", "--seed", "3"]
    code, log = _torchrun_two_ranks("cascade", str(inputs), "-o", str(tmp_path / "out"), *common)
    assert code != 0, f"a failed file must make the job fail:\n{log}"
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == good, log
    wrote = re.findall(r"sr3infer\[rank (\d)\]: wrote \S*/(\w+\.png)", log)
    assert sorted(name for _, name in wrote) == good and {rank for rank, _ in wrote} == {"0", "1"}, log
    assert "3 written, 1 failed of 4 files (2 ranks:" in log, log
    assert main(["cascade", str(inputs), "-o", str(tmp_path / "single"), "--batch-size", "1", "--quiet", *common]) == 1
    for name in good:
        assert np.abs(_pixels(tmp_path / "out" / name) - _pixels(tmp_path / "single" / name)).max() <= 1, name


def test_a_failing_image_in_a_batch_does_not_sink_the_others(tmp_path, tiny_model_dir, monkeypatch, capsys):
    from sr3infer.upscaler import Upscaler

    inputs = tmp_path / "in"
    _write_images(inputs, ["a.png", "c.png"])
    _write_images(inputs, ["b.png"], size=9)
    original = Upscaler.upscale

    def upscale_failing_on_9px(self, images, **kwargs):
        if any(image.size == (9, 9) for image in images):
            raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return original(self, images, **kwargs)

    monkeypatch.setattr(Upscaler, "upscale", upscale_failing_on_9px)
    code = main([str(inputs), "-o", str(tmp_path / "out"), "--model", str(tiny_model_dir), "--steps", "1",
                 "--batch-size", "3", "--device", "cpu"])
    err = capsys.readouterr().err
    assert code == 1
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a.png", "c.png"]
    assert re.search(r"failed \S*b\.png: CUDA out of memory.*try --batch-size 1", err), err
    assert "2 written, 1 failed of 3 files" in err


def test_two_inputs_with_one_output_name_are_a_usage_error(tmp_path, tiny_model_dir, capsys):
    inputs = tmp_path / "in"
    _write_images(inputs, ["face.png", "face.jpg"])
    code = main([str(inputs), "-o", str(tmp_path / "out"), "--model", str(tiny_model_dir), "--steps", "1"])
    err = capsys.readouterr().err
    assert code == 2
    assert "would both be written to" in err and "face.png" in err and "rename one" in err
    assert not (tmp_path / "out").exists()


def test_threads_flag_sets_torch_threads(tmp_path, tiny_model_dir):
    _write_images(tmp_path, ["x.png"])
    before = torch.get_num_threads()
    wanted = before + 1  # differs from the current setting, so the assertion can fail
    try:
        code = main([str(tmp_path / "x.png"), "-o", str(tmp_path / "y.png"), "--model", str(tiny_model_dir),
                     "--steps", "1", "--threads", str(wanted), "--quiet", "--device", "cpu"])
        assert code == 0 and torch.get_num_threads() == wanted
    finally:
        torch.set_num_threads(before)
    assert main([str(tmp_path / "x.png"), "-o", str(tmp_path / "z.png"), "--threads", "0"]) == 2


def test_cuda_graphs_flag_on_cpu_fails_with_advice(tmp_path, tiny_model_dir, capsys):
    _write_images(tmp_path, ["x.png"])
    code = main([str(tmp_path / "x.png"), "-o", str(tmp_path / "y.png"), "--model", str(tiny_model_dir),
                 "--steps", "1", "--device", "cpu", "--cuda-graphs"])
    assert code == 1
    assert "CUDA graphs need a CUDA device" in capsys.readouterr().err
    assert not (tmp_path / "y.png").exists()


def test_compile_flag_falls_back_and_gives_the_eager_result(tmp_path, tiny_model_dir, monkeypatch):
    _write_images(tmp_path, ["x.png"])
    args = [str(tmp_path / "x.png"), "--model", str(tiny_model_dir), "--steps", "2", "--device", "cpu", "--quiet"]
    assert main([*args, "-o", str(tmp_path / "eager.png")]) == 0

    def no_compiler(model, **kwargs):
        def compiled(*a, **kw):
            raise RuntimeError("InvalidCxxCompiler: No working C++ compiler found")

        return compiled

    monkeypatch.setattr(torch, "compile", no_compiler)
    assert main([*args, "-o", str(tmp_path / "compiled.png"), "--compile"]) == 0
    assert np.array_equal(_pixels(tmp_path / "eager.png"), _pixels(tmp_path / "compiled.png"))
