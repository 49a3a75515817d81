"""sr3infer.integrations.ray.Upscale: the CLI's seeds and outputs, on a real local Ray cluster and without one.

The cluster test starts `ray.init(num_cpus=2)`, runs `read_images -> map_batches(Upscale) -> write_images` over a
folder of 5 small PNGs of 3 sizes with a tiny random model, and the single-process CLI on the same folder: every
file once, and each output equal to the CLI's to 1/255. It skips when Ray is not installed (`sr3infer[ray]`);
`.ci/run` sets SR3INFER_RAY_REQUIRED=1, which turns that skip into a failure. The other tests need no cluster.
"""

from __future__ import annotations

import importlib
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from sr3infer.cli import main
from sr3infer.integrations.ray import Upscale
from sr3infer.upscaler import Upscaler

SEED, STEPS = 7, 3
SIZES = [(8, 8), (8, 12), (8, 8), (12, 8), (8, 8)]  # (h, w): the tiny model's own 8 px and two others


@pytest.fixture
def photos(tmp_path) -> Path:
    """5 random RGB PNGs, c.png .. g.png (names sort in the order written), plus a file the CLI does not read."""
    folder = tmp_path / "in"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for name, (h, w) in zip("cdefg", SIZES):
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(folder / f"{name}.png")
    (folder / "notes.txt").write_text("not an image")
    return folder


def _column(arrays: list[np.ndarray]) -> np.ndarray:
    column = np.empty(len(arrays), dtype=object)
    for k, array in enumerate(arrays):
        column[k] = array
    return column


def _cli(folder: Path, out: Path, model: Path, *extra: str) -> dict[str, np.ndarray]:
    argv = [str(folder), "-o", str(out), "--model", str(model), "--seed", str(SEED), "--steps", str(STEPS),
            "--device", "cpu", "--dtype", "fp32", "--batch-size", "2", "--quiet", *extra]
    assert main(argv) == 0
    return {p.stem: np.asarray(Image.open(p)) for p in sorted(out.iterdir())}


def _close(a: np.ndarray, b: np.ndarray) -> bool:
    return a.shape == b.shape and int(np.abs(a.astype(np.int16) - b.astype(np.int16)).max()) <= 1


def test_batch_matches_cli_without_a_cluster(photos, tmp_path, tiny_model_dir):
    """One shuffled, mixed-size batch: the CLI's seeds (file k of the folder: seed + k) and outputs; columns kept."""
    expected = _cli(photos, tmp_path / "cli", tiny_model_dir)
    upscale = Upscale(str(tiny_model_dir), seed=SEED, num_steps=STEPS, device="cpu", torch_dtype="fp32")
    order = ["g", "c", "e", "d"]  # out of order, sizes 8x8, 8x8, 8x8, 8x12
    paths = np.array([str(photos / f"{name}.png") for name in order])
    batch = {"image": _column([np.asarray(Image.open(p)) for p in paths]), "path": paths, "id": np.arange(4)}
    out = upscale(batch)
    assert [upscale.index(p) for p in paths] == [4, 0, 2, 1]
    assert list(out["id"]) == [0, 1, 2, 3] and list(out["path"]) == list(paths)
    assert out["image"].dtype == object and [a.dtype for a in out["image"]] == [np.uint8] * 4
    for name, image in zip(order, out["image"]):
        assert _close(image, expected[name]), name
    # One size in the batch: one (N, H, W, C) uint8 array back, as Ray's same-size blocks come.
    same = upscale({"image": np.stack(list(batch["image"][:3])), "path": paths[:3]})["image"]
    assert same.shape == (3, 16, 16, 3) and same.dtype == np.uint8
    assert all(np.array_equal(a, b) for a, b in zip(same, out["image"][:3]))


def test_seeds_follow_the_library_rule(photos, tiny_model_dir):
    """File k with K samples: seed + k*K + j, as `run_jobs`; `inputs` numbers files by a list's order."""
    upscale = Upscale(str(tiny_model_dir), seed=SEED, num_steps=2, num_samples=2, device="cpu", torch_dtype="fp32")
    path = str(photos / "e.png")  # file 2 of the folder
    image = np.asarray(Image.open(path))
    got = upscale({"image": _column([image]), "path": np.array([path])})["image"][0]
    alone = Upscaler.from_pretrained(str(tiny_model_dir), device="cpu", torch_dtype="fp32").upscale(
        image, seed=SEED + 2 * 2, num_steps=2, num_samples=2, progress=False)
    assert np.array_equal(got, alone)
    listed = Upscale(str(tiny_model_dir), device="cpu", inputs=["s3://bucket/x.png", "local://" + path])
    assert listed.index(path) == 1 and listed.index("bucket/x.png") == 0  # Ray's path column drops the scheme
    with pytest.raises(ValueError, match="not one of the 2 `inputs`"):
        listed.index(str(photos / "c.png"))


def test_refusals(photos, tiny_model_dir):
    with pytest.raises(TypeError, match="'generator' is set by Upscale"):
        Upscale(str(tiny_model_dir), generator=torch.Generator())
    with pytest.raises(TypeError, match="'nsteps' is not an Upscaler.upscale argument"):
        Upscale(str(tiny_model_dir), nsteps=3)
    with pytest.raises(ValueError, match="seed must be an integer"):
        Upscale(str(tiny_model_dir), seed=-1)
    upscale = Upscale(str(tiny_model_dir), device="cpu")
    with pytest.raises(KeyError, match="include_paths=True"):
        upscale({"image": np.zeros((1, 8, 8, 3), np.uint8)})
    with pytest.raises(ValueError, match="not an image the CLI reads"):
        upscale.index(photos / "notes.txt")


@pytest.fixture
def ray_cluster(monkeypatch):
    """A real local cluster of 2 CPUs, shut down however the test ends."""
    if os.environ.get("SR3INFER_RAY_REQUIRED") == "1":  # CI installs sr3infer[ray]: no Ray fails, never skips
        ray = importlib.import_module("ray")
    else:
        ray = pytest.importorskip("ray", reason="Ray is not installed: pip install 'sr3infer[ray]'")
    monkeypatch.setenv("RAY_USAGE_STATS_ENABLED", "0")
    monkeypatch.delenv("RAY_ADDRESS", raising=False)  # address="local": a new cluster, never one already running
    ray.init(address="local", num_cpus=2, include_dashboard=False, object_store_memory=200 * 2**20,
             log_to_driver=False)
    yield ray
    ray.shutdown()


@pytest.mark.slow
def test_ray_pipeline_matches_cli(ray_cluster, photos, tmp_path, tiny_model_dir):
    ray = ray_cluster
    expected = _cli(photos, tmp_path / "cli", tiny_model_dir)
    # Two actors of half a CPU each leave a CPU of the 2 for the read tasks (a whole CPU each would starve them).
    ds = ray.data.read_images(str(photos), include_paths=True).map_batches(
        Upscale, fn_constructor_kwargs={"model": str(tiny_model_dir), "seed": SEED, "num_steps": STEPS,
                                        "device": "cpu", "torch_dtype": "fp32"},
        batch_size=2, concurrency=2, num_gpus=0, num_cpus=0.5).materialize()
    rows = ds.take_all()
    assert sorted(Path(row["path"]).stem for row in rows) == sorted(expected)  # every file once, notes.txt never
    for row in rows:
        assert row["image"].dtype == np.uint8
        assert _close(row["image"], expected[Path(row["path"]).stem]), row["path"]
    ds.write_images(str(tmp_path / "ray"), column="image")
    written = [np.asarray(Image.open(p)) for p in sorted((tmp_path / "ray").iterdir())]
    assert len(written) == len(expected)
    matches = [[name for name, want in expected.items() if _close(got, want)] for got in written]
    assert sorted(name for found in matches for name in found) == sorted(expected)  # each output once
