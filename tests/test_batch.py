"""The batch runner (sr3infer.batch): files and folders in, outputs out, seeds, sharding, failure isolation,
skip-existing, summary; and a folder of size bombs refused file by file under a 4 GiB address-space limit."""

from __future__ import annotations

import os
import resource
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from sr3infer import batch

from sr3infer.images import io as imageio
from sr3infer.batch import BatchSummary, plan_jobs, run_jobs, upscale_files
from sr3infer.cascade import Cascade
from sr3infer.cli import main
from sr3infer.upscaler import Upscaler
from sr3infer.models.weights import build_model

REPO = Path(__file__).resolve().parents[1]
RNG = np.random.default_rng(0)
FAST = dict(num_steps=2, progress=False, quiet=True)


@pytest.fixture
def upscaler(tiny_config) -> Upscaler:
    torch.manual_seed(0)
    config = tiny_config.replace(task={})
    return Upscaler(config, build_model(config), device="cpu")


def _folder(path: Path, names: str = "abc") -> Path:
    path.mkdir(parents=True, exist_ok=True)
    for name in names:
        Image.fromarray(RNG.integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(path / f"{name}.png")
    return path


def test_a_folder_in_python_gives_what_upscale_gives_with_seed_plus_k(tmp_path, upscaler):
    source = _folder(tmp_path / "in")
    summary = upscale_files(upscaler, source, tmp_path / "out", seed=3, batch_size=2, **FAST)
    assert (summary.written, summary.failed, summary.skipped, summary.total) == (3, 0, 0, 3)
    assert summary.line() == "3 written, 0 failed of 3 files"
    for k, name in enumerate("abc"):
        expected = upscaler.upscale(Image.open(source / f"{name}.png"), num_steps=2, seed=3 + k, progress=False)
        assert np.array_equal(np.asarray(Image.open(tmp_path / "out" / f"{name}.png")), np.asarray(expected))


def test_skip_existing_runs_only_the_new_files(tmp_path, upscaler, capsys):
    source = _folder(tmp_path / "in", "ab")
    assert upscale_files(upscaler, source, tmp_path / "out", **FAST).written == 2
    before = (tmp_path / "out" / "a.png").stat().st_mtime_ns
    _folder(source, "c")
    with pytest.raises(FileExistsError, match="already exists; pass --overwrite to replace it or --skip-existing"):
        upscale_files(upscaler, source, tmp_path / "out", **FAST)
    summary = upscale_files(upscaler, source, tmp_path / "out", skip_existing=True, **FAST)
    assert (summary.written, summary.skipped) == (1, 2)
    assert summary.line() == "1 written, 0 failed, 2 skipped (existing) of 3 files"
    assert (tmp_path / "out" / "a.png").stat().st_mtime_ns == before and (tmp_path / "out" / "c.png").exists()
    # The command line: --skip-existing, and the summary says what was skipped.
    _folder(source, "d")
    model = upscaler.save_pretrained(tmp_path / "model")
    assert main([str(source), "-o", str(tmp_path / "out"), "--model", str(model), "--steps", "1", "--quiet",
                 "--skip-existing"]) == 0
    assert (tmp_path / "out" / "d.png").exists()
    assert main([str(source), "-o", str(tmp_path / "out"), "--model", str(model), "--skip-existing",
                 "--overwrite"]) == 2
    assert "contradict" in capsys.readouterr().err


def test_the_size_refusal_quotes_the_steps_asked_for(tmp_path, upscaler, capsys):
    source = _folder(tmp_path / "in", "ab")
    lines: list[str] = []
    summary = upscale_files(upscaler, source, tmp_path / "out", num_steps=3, max_output_pixels=100, log=lines.append,
                            progress=False)
    assert summary.failed == 2 and all("U-Net calls (3 steps x 1)" in line for line in lines), lines
    model = str(upscaler.save_pretrained(tmp_path / "model"))
    runs = {"1 step x 1": [source, "-o", tmp_path / "one", "--model", model, "--steps", 1],
            "2 steps x 1": ["cascade", source, "-o", tmp_path / "two", "--stages", f"{model},{model}", "--steps", "2,5"]}
    for steps, argv in runs.items():
        assert main([str(a) for a in argv] + ["--max-output-pixels", "100"]) == 1
        refused = [line for line in capsys.readouterr().err.splitlines() if "over max_output_pixels" in line]
        assert len(refused) == 2 and all(f"U-Net calls ({steps})" in line for line in refused), refused


def test_the_summary_counts_what_a_folder_run_left_alone(tmp_path, upscaler):
    source = _folder(tmp_path / "in", "a")
    (source / "sub").mkdir()
    (source / "notes.txt").write_text("not an image")
    (source / "data.csv").write_text("1,2")
    summary = upscale_files(upscaler, source, tmp_path / "out", **FAST)
    assert summary.ignored == (1, 2) and batch.ignored_entries(source / "a.png") == (0, 0)
    assert summary.line() == "1 written, 0 failed of 1 file; ignored 1 subfolder and 2 non-image files"


def test_a_memory_error_fails_one_file_and_the_others_go_on(tmp_path, upscaler, monkeypatch):
    source = _folder(tmp_path / "in", "abcd")
    read = imageio.read_image_and_metadata

    def out_of_memory_on_b(path, *args, **kwargs):
        if Path(path).name == "b.png":
            raise MemoryError("Unable to allocate 674. MiB for an array")
        return read(path, *args, **kwargs)

    monkeypatch.setattr(imageio, "read_image_and_metadata", out_of_memory_on_b)
    sample = Upscaler.sample_images

    def batches_run_out_of_memory(self, rgbs, *args, **kwargs):  # a batch fails; one file at a time fits
        if len(rgbs) > 1:
            raise MemoryError()
        return sample(self, rgbs, *args, **kwargs)

    monkeypatch.setattr(Upscaler, "sample_images", batches_run_out_of_memory)
    lines: list[str] = []
    summary = upscale_files(upscaler, source, tmp_path / "out", batch_size=4, log=lines.append, num_steps=1,
                            progress=False)
    assert (summary.written, summary.failed) == (3, 1)
    assert sorted(os.listdir(tmp_path / "out")) == ["a.png", "c.png", "d.png"]
    failed = [line for line in lines if "b.png" in line]
    assert len(failed) == 1 and "Unable to allocate 674. MiB" in failed[0] and "(out of memory: try" in failed[0]


def test_ranks_share_the_files_and_give_the_same_pixels(tmp_path, upscaler):
    source = _folder(tmp_path / "in", "abcde")
    files = batch.collect_inputs(source)
    alone = run_jobs(upscaler, plan_jobs(files, source, tmp_path / "one"), seed=5, **FAST)
    jobs = plan_jobs(files, source, tmp_path / "two")
    per_rank = [run_jobs(upscaler, jobs, seed=5, rank=r, world_size=2, **FAST) for r in range(2)]
    assert alone.written == 5 and [s.written for s in per_rank] == [3, 2]
    for name in "abcde":
        one, two = (np.asarray(Image.open(tmp_path / d / f"{name}.png"), dtype=int) for d in ("one", "two"))
        assert np.abs(one - two).max() <= 1  # batching changes float rounding only
    merged = BatchSummary(written=5, failed=0, total=5, per_rank=[[3, 0, 0], [2, 0, 0]])
    assert merged.line() == "5 written, 0 failed of 5 files (2 ranks: rank 0: 3 written, 0 failed; rank 1: 2 written, 0 failed)"


def test_a_cascade_runs_through_the_same_runner(tmp_path, upscaler):
    source = _folder(tmp_path / "in", "ab")
    cascade = Cascade([upscaler, upscaler])
    summary = upscale_files(cascade, source, tmp_path / "out", all_stages=True, seed=2, **FAST)
    assert summary.written == 2
    assert Image.open(tmp_path / "out" / "b.png").size == (32, 32)
    assert Image.open(tmp_path / "out" / "stage1" / "b.png").size == (16, 16)
    expected = cascade([Image.open(source / "b.png")], seed=3, num_steps=2, progress=False)[0]
    assert np.array_equal(np.asarray(Image.open(tmp_path / "out" / "b.png")), np.asarray(expected))


def test_the_cli_cascade_keeps_16_bit_colour(tmp_path, upscaler):
    # One reader (read_image) for both commands: a 16-bit RGB PNG gives a 16-bit PNG through the cascade too.
    source = tmp_path / "in"
    source.mkdir()
    array = RNG.integers(0, 65536, (8, 8, 3), dtype=np.uint16)
    imageio.save_image(array, source / "deep.png")
    model = upscaler.save_pretrained(tmp_path / "model")
    argv = ["cascade", str(source), "-o", str(tmp_path / "out"), "--stages", f"{model},{model}", "--steps", "1",
            "--quiet"]
    assert main(argv) == 0
    out = imageio.read_image(tmp_path / "out" / "deep.png")
    assert isinstance(out, np.ndarray) and out.dtype == np.uint16 and out.shape == (32, 32, 3)
    assert len(np.unique(out % 257)) > 1  # all 16 bits, not 8 scaled up


# A folder of size bombs: every file is refused from its header, one at a time, in seconds,
# under a 4 GiB address-space limit. Before, each was decoded first (7.5 GB), and a MemoryError ended the job.


def _zeros_png16_rgba(path: Path, width: int, height: int) -> Path:
    """A valid all-zero 16-bit RGBA PNG (687 KB at 9400x9400) built without compressing 707 MB: one deflate
    segment of 1 MiB of zeros, ended by a full flush (so it stands alone), repeated."""
    total, piece = height * (1 + 8 * width), 2**20

    def zeros(n: int) -> bytes:
        compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
        return compressor.compress(bytes(n)) + compressor.flush(zlib.Z_FULL_FLUSH)

    body = zeros(piece) * (total // piece) + zeros(total % piece) + zlib.compressobj(9, zlib.DEFLATED, -15).flush()
    adler = ((total % 65521) << 16) | 1  # Adler-32 of `total` zero bytes
    data = b"\x78\xda" + body + struct.pack(">I", adler)

    def chunk(kind: bytes, content: bytes) -> bytes:
        return struct.pack(">I", len(content)) + kind + content + struct.pack(">I", zlib.crc32(kind + content))

    header = struct.pack(">IIBBBBB", width, height, 16, 6, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", data) + chunk(b"IEND", b""))
    return path


def test_zero_png_helper_is_a_valid_png(tmp_path):
    path = _zeros_png16_rgba(tmp_path / "small.png", 300, 5)  # several 1 MiB pieces would be too slow; one is enough
    assert imageio.read_header(path).bits == 16
    out = imageio.read_image(path)
    assert out.shape == (5, 300, 4) and out.dtype == np.uint16 and out.max() == 0


@pytest.mark.slow
def test_a_folder_of_size_bombs_is_refused_file_by_file_under_4_gib(tmp_path, upscaler):
    source = tmp_path / "bombs"
    source.mkdir()
    first = _zeros_png16_rgba(source / "bomb0.png", 9400, 9400)
    assert first.stat().st_size < 800_000
    for k in range(1, 8):
        (source / f"bomb{k}.png").write_bytes(first.read_bytes())
    model = upscaler.save_pretrained(tmp_path / "model")
    timed = ("import sys, time; from sr3infer.cli import main; t = time.monotonic(); code = main(sys.argv[1:]); "
             "print(f'seconds {time.monotonic() - t:.2f}', file=sys.stderr); sys.exit(code)")

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (4 * 2**30, 4 * 2**30))

    proc = subprocess.run([sys.executable, "-c", timed, str(source), "-o", str(tmp_path / "out"), "--model", str(model)],
                          preexec_fn=limit, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)})
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr
    refused = [line for line in lines if "failed" in line and "The output would be 18800x18800" in line]
    assert len(refused) == 8, lines
    assert lines[-2] == "sr3infer: 0 written, 8 failed of 8 files"
    assert float(lines[-1].split()[1]) < 10, lines[-1]
    assert not (tmp_path / "out").exists() or not os.listdir(tmp_path / "out")
