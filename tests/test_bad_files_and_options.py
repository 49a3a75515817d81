"""Bad files, manifests, caches, eval sets, training configs and options: a table of cases with their exit code and message.

Each list holds (id, setup, exit code, message fragment); setup(work, model, monkeypatch) returns the argv.
A case passes when the exit code matches, one stderr line holds the fragment, nothing shows a traceback, and the
work folder is as it was (nothing written, nothing deleted, no temporary file left). IO_CASES are the files,
manifests, Hub cache, eval and training-config cases; the CLI cases have their own list.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from huggingface_hub import constants
from PIL import Image

from sr3infer.images import io as imageio
from sr3infer.cli import main
from sr3infer.hub.fetch import download_model
from sr3infer.upscaler import Upscaler
from sr3infer.models.weights import build_model

from conftest import cli_case

from test_train import TINY_MODEL


@pytest.fixture
def model(tmp_path, tiny_config) -> Path:
    """The tiny x2 model (8 -> 16 px) without the `untrained` flag, so stderr holds only what a run reports."""
    config = tiny_config.replace(task={})
    return Upscaler(config, build_model(config), device="cpu").save_pretrained(tmp_path / "model")


def _files(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


def _png(path: Path, side: int = 8) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.random.default_rng(side).integers(0, 256, (side, side, 3), dtype=np.uint8)).save(path)
    return path


# IO cases: files, manifests, the Hub cache, `sr3infer eval`, training configs.


def _manifest(work: Path, model_dir: Path, mp, *, repo_id: str = "sr3infer/tiny", sizes: dict | None = None) -> Path:
    """A manifest naming `tiny` (the files of `model_dir`) in $SR3INFER_MANIFEST; the Hub cache under work/hf."""
    files = {p.name: {"sha256": hashlib.sha256(p.read_bytes()).hexdigest(), "size": p.stat().st_size}
             for p in sorted(model_dir.iterdir())}
    for name, size in (sizes or {}).items():
        files[name]["size"] = size
    entry = {"description": "tiny", "repo_id": repo_id, "revision": "main", "published": True, "bundled": False,
             "license": "MIT", "task": {"scale": 2, "input_size": 8, "output_size": 16, "domain": "noise"},
             "files": files, "metrics": {}}
    path = work / "manifest" / "weights_manifest.json"
    path.parent.mkdir()
    path.write_text(json.dumps({"format_version": 1, "models": {"tiny": entry}}))
    mp.setenv("SR3INFER_MANIFEST", str(path))
    mp.setattr(constants, "HF_HUB_CACHE", str(work / "hf"))
    mp.setattr(constants, "HF_HUB_OFFLINE", True)
    return path


def _cached(work: Path, repo_id: str, files: dict[str, bytes | str]) -> None:
    """`files` in the Hub cache as huggingface_hub lays it out: bytes become blobs, a str a link to that path."""
    repo = work / "hf" / f"models--{repo_id.replace('/', '--')}"
    commit = "0" * 40
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    (repo / "blobs").mkdir()
    snapshot = repo / "snapshots" / commit
    snapshot.mkdir(parents=True)
    for name, data in files.items():
        if isinstance(data, str):
            (snapshot / name).symlink_to(data)
            continue
        blob = repo / "blobs" / hashlib.sha256(data).hexdigest()
        blob.write_bytes(data)
        (snapshot / name).symlink_to(blob)


def _dev_zero_weights(work: Path, m: Path, mp) -> str:
    _manifest(work, m, mp)
    _cached(work, "sr3infer/tiny", {"config.json": (m / "config.json").read_bytes(), "model.safetensors": "/dev/zero"})
    return "tiny"


def _other_projects_file(work: Path, m: Path, mp) -> str:
    """Another program's cached repo, named by a custom manifest whose sha256 (and size) do not match it."""
    theirs = (m / "model.safetensors").read_bytes()
    _manifest(work, m, mp, repo_id="someone/else", sizes={"model.safetensors": len(theirs) + 1})
    _cached(work, "someone/else", {"config.json": (m / "config.json").read_bytes(), "model.safetensors": theirs})
    return "tiny"


def _train_config(work: Path, **changes) -> Path:
    path = work / "cfg.json"
    path.write_text(json.dumps({"name": "x", "data_kind": "faces", "data_root": str(work), "model": TINY_MODEL,
                                "out_dir": str(work / "runs"), **changes}))
    return path


def _eval_folder(work: Path, *names_sizes: tuple[str, int]) -> Path:
    folder = work / "val"
    for name, side in names_sizes:
        _png(folder / name, side)
    data = (folder / names_sizes[0][0]).read_bytes()
    (folder / "cut.png").write_bytes(data[: len(data) // 2])
    return folder


def _config(m: Path, **changes) -> Path:
    """The model folder with config.json keys replaced (a `network` dict is merged into the network's)."""
    config = json.loads((m / "config.json").read_text())
    config["network"].update(changes.pop("network", {}))
    (m / "config.json").write_text(json.dumps({**config, **changes}))
    return m


def _weights_as(m: Path, dtype: str) -> Path:
    """The model folder with every weight cast to `dtype` (right names and shapes, wrong kind of number)."""
    import torch
    from safetensors.torch import load_file, save_file

    state = load_file(str(m / "model.safetensors"))
    save_file({k: v.to(getattr(torch, dtype)) for k, v in state.items()}, str(m / "model.safetensors"))
    return m


def _run_with(m: Path, t: Path) -> list:
    return [_png(t / "a.png"), "-o", "out.png", "--model", m, "--steps", 1]


IO_CASES = [
    ("config: schedule of 3e9 steps", lambda t, m, mp: _run_with(_config(m, schedule={"num_steps": 3 * 10**9}), t),
     1, "config.json: 'schedule.num_train_timesteps' must be an integer from 1 to 100,000, got 3000000000"),
    ("config: lowres_size '8'", lambda t, m, mp: _run_with(_config(m, lowres_size="8"), t),
     1, "config.json: 'lowres_size' must be an integer from 1 to 4,096, got '8' (str)"),
    ("config: lowres_size 8.5", lambda t, m, mp: _run_with(_config(m, lowres_size=8.5), t),
     1, "'lowres_size' must be an integer from 1 to 4,096, got 8.5 (float)"),
    ("config: lowres_size -8", lambda t, m, mp: _run_with(_config(m, lowres_size=-8), t),
     1, "'lowres_size' must be an integer from 1 to 4,096, got -8 (int)"),
    ("config: task 'x'", lambda t, m, mp: _run_with(_config(m, task="x"), t), 1, "'task' must be an object"),
    ("config: sampling null", lambda t, m, mp: _run_with(_config(m, sampling=None), t),
     1, "'sampling' must be an object ({...}), got None"),
    ("config: channel_mults 5", lambda t, m, mp: _run_with(_config(m, network={"channel_mults": 5}), t),
     1, "'network.channel_mults' must be a list of 1 to 8 integers from 1 to 64, got 5 (int)"),
    ("config: dropout '0.1'", lambda t, m, mp: _run_with(_config(m, network={"dropout": "0.1"}), t),
     1, "'network.dropout' must be a number in [0, 1), got '0.1' (str)"),
    ("config: residual 'false'", lambda t, m, mp: _run_with(_config(m, residual="false"), t),
     1, "'residual' must be true or false, got 'false' (str)"),
    ("config: scale true", lambda t, m, mp: _run_with(_config(m, scale=True), t),
     1, "'scale' must be an integer from 1 to 64, got True (bool)"),
    ("weights of dtype int8", lambda t, m, mp: _run_with(_weights_as(m, "int8"), t),
     1, "tensors of dtype I8"),
    ("weights of dtype bool", lambda t, m, mp: _run_with(_weights_as(m, "bool"), t),
     1, "tensors of dtype BOOL"),
    ("weights of dtype float8", lambda t, m, mp: _run_with(_weights_as(m, "float8_e4m3fn"), t),
     1, "tensors of dtype F8_E4M3"),
    ("manifest is /dev/zero", lambda t, m, mp: mp.setenv("SR3INFER_MANIFEST", "/dev/zero") or ["models"],
     1, "Weights manifest '/dev/zero' is not a regular file"),
    ("manifest is a directory", lambda t, m, mp: mp.setenv("SR3INFER_MANIFEST", str(t)) or ["models"],
     1, "is a directory (set by $SR3INFER_MANIFEST)"),
    ("manifest is a binary file",
     lambda t, m, mp: mp.setenv("SR3INFER_MANIFEST", str(_png(t / "m.png").rename(t / "m.json"))) or ["models"],
     1, "is not UTF-8 text (set by $SR3INFER_MANIFEST)"),
    ("cached weights link to /dev/zero", lambda t, m, mp: [_png(t / "a.png"), "-o", "out.png", "--model",
                                                                    _dev_zero_weights(t, m, mp)],
     1, "not a regular file (it resolves to /dev/zero)"),
    ("custom manifest names another project's cached repo",
     lambda t, m, mp: [_png(t / "a.png"), "-o", "out.png", "--model", _other_projects_file(t, m, mp)],
     1, "left in place: another program may use someone/else"),
    ("eval: every file too small or truncated",
     lambda t, m, mp: ["eval", m, _eval_folder(t, ("tiny.png", 3)), "--protocol", "plain", "--no-fid"],
     1, "No usable image"),
    ("eval: mixed sizes, 3x3, truncated",
     lambda t, m, mp: ["eval", m, _eval_folder(t, ("a.png", 16), ("b.png", 24), ("c.png", 3)), "--protocol", "plain",
                       "--no-fid", "--steps", "1"],
     0, "skipped"),
    ("eval: faces protocol on small images",
     lambda t, m, mp: ["eval", m, _eval_folder(t, ("a.png", 16)), "--no-fid"], 1, "smaller than the faces protocol"),
    ("--quality outside 1-100",
     lambda t, m, mp: [_png(t / "a.png"), "-o", "out.jpg", "--model", m, "--quality", 0],
     2, "--quality must be between 1 and 100"),
    ("train: batch_size 0", lambda t, m, mp: ["train", _train_config(t, batch_size=0)],
     1, "'batch_size' must be a whole number of at least 1, got 0"),
    ("train: lr 'fast'", lambda t, m, mp: ["train", _train_config(t, lr="fast")],
     1, "'lr' must be a number from 0 to 1, got 'fast'"),
    ("train: name escapes out_dir", lambda t, m, mp: ["train", _train_config(t, name="../../escaped_run")],
     1, "'name' must be a plain folder name"),
]


@pytest.mark.parametrize("setup, code, fragment", [pytest.param(*case[1:], id=case[0]) for case in IO_CASES])
def test_io_case(tmp_path, model, capsys, monkeypatch, setup, code, fragment):
    work, argv = cli_case(tmp_path, model, monkeypatch, setup)
    before = _files(tmp_path)  # the model and everything beside work/ too: a run name with '..' escaped out_dir
    got = main(argv)
    err = capsys.readouterr().err
    assert (got, "Traceback" in err) == (code, False), err
    assert any(fragment in line for line in err.splitlines()), err
    assert _files(tmp_path) == before


def test_io_big_endian_array_is_upscaled_like_native(tiny_upscaler):
    """Item 13: '>u2' was refused as an unsupported dtype."""
    native = np.random.default_rng(0).integers(0, 65536, (8, 8, 3)).astype(np.uint16)
    big = tiny_upscaler.upscale(native.astype(">u2"), seed=0, num_steps=1, progress=False)
    assert np.array_equal(big, tiny_upscaler.upscale(native, seed=0, num_steps=1, progress=False))


def test_io_multi_frame_and_16_bit_gray_alpha_through_the_cli(tmp_path, model, capsys):
    """Item 25: an animated GIF said nothing about its other frames; 16-bit gray+alpha came out with 8 bits."""
    frames = [Image.fromarray(np.full((8, 8, 3), v, np.uint8)) for v in (10, 200)]
    frames[0].save(tmp_path / "anim.gif", save_all=True, append_images=frames[1:])
    assert main([str(tmp_path / "anim.gif"), "-o", str(tmp_path / "anim.png"), "--model", str(model)]) == 0
    assert "holds 2 frames (GIF); only the first is used" in capsys.readouterr().err
    deep = np.random.default_rng(1).integers(0, 65536, (8, 8, 2)).astype(np.uint16)
    imageio.save_image(deep, tmp_path / "ga.png")
    assert main([str(tmp_path / "ga.png"), "-o", str(tmp_path / "up.png"), "--model", str(model), "--steps", "1"]) == 0
    header = imageio.read_header(tmp_path / "up.png")
    assert (header.mode, header.bits, header.width) == ("LA", 16, 16)
    out = imageio.read_image(tmp_path / "up.png")
    assert out.dtype == np.uint16 and np.any(out % 257 != 0)  # not 8-bit values stretched to 16


def test_io_download_model_of_a_bundled_model(tmp_path):
    """Item 22: download_model("sr3-64-256", cache_dir=...) as the README shows it."""
    paths = download_model("sr3-64-256", cache_dir=tmp_path / "cache")
    assert {p.parent.name for p in paths.values()} == {"sr3-64-256"} and "bundled" in str(paths["model.safetensors"])
    assert not (tmp_path / "cache").exists()


# CLI cases (helper B): output collisions, non-regular inputs, bounds, formats and places, tiles.


def _fifo(path: Path) -> Path:
    import os

    os.mkfifo(path)
    return path


def _folder_and_spelling(work: Path) -> str:
    (work / "d").mkdir()
    return str(work / "d" / ".." / "out.png")


CLI_CASES = [
    ("--uncertainty is -o by its absolute path",
     lambda t, m, mp: [_png(t / "a.png"), "-o", "out.png", "--model", m, "--samples", 2, "--overwrite",
                       "--uncertainty", t / "out.png"], 2, "would both be written to 'out.png'"),
    ("--uncertainty is -o through d/..",
     lambda t, m, mp: [_png(t / "a.png"), "-o", "out.png", "--model", m, "--samples", 2, "--overwrite",
                       "--uncertainty", _folder_and_spelling(t)], 2, "would both be written to"),
    ("-o is the input", lambda t, m, mp: [_png(t / "a.png"), "-o", t / "." / "a.png", "--model", m,
                                                   "--overwrite"], 2, "is the input"),
    ("FIFO input with --model", lambda t, m, mp: [_fifo(t / "pipe.png"), "-o", "out.png", "--model", m],
     2, "is not a regular file (a FIFO, device or socket)"),
    ("FIFO input without --model", lambda t, m, mp: [_fifo(t / "pipe.png"), "-o", "out.png"],
     2, "is not a regular file (a FIFO, device or socket)"),
    ("--threads 100000", lambda t, m, mp: [_png(t / "a.png"), "-o", "out.png", "--model", m,
                                                    "--threads", 100000], 2, "--threads must be between 1 and"),
    ("--threads 0", lambda t, m, mp: [_png(t / "a.png"), "-o", "out.png", "--model", m, "--threads", 0],
     2, "--threads must be between 1 and"),
    *[(f"-o a{suffix}: Pillow cannot write RGB",
       lambda t, m, mp, suffix=suffix: [_png(t / "a.png"), "-o", f"out{suffix}", "--model", m],
       2, f"Pillow cannot write RGB images as {suffix}") for suffix in (".xbm", ".msp", ".grib", ".h5")],
    ("-o under an existing file", lambda t, m, mp: [_png(t / "a.png"), "-o", "a.png/x.png", "--model", m],
     2, "'a.png' is a file, not a folder"),
    ("-o in /proc", lambda t, m, mp: [_png(t / "a.png"), "-o", "/proc/x.png", "--model", m],
     2, "'/proc' is not writable"),
    ("--uncertainty map under a file",
     lambda t, m, mp: [_png(t / "a.png"), "-o", "out.png", "--model", m, "--samples", 2, "--uncertainty",
                       "a.png/u.npy"], 2, "is a file, not a folder"),
    ("cascade -o in /proc", lambda t, m, mp: ["cascade", _png(t / "a.png"), "-o", "/proc/out", "--stages", m],
     2, "is not writable"),
    ("--tile below half the trained output",
     lambda t, m, mp: [_png(t / "a.png"), "-o", "out.png", "--model", m, "--tile", 6],
     2, "--tile must be at least 8 output pixels (half the model's trained 16 px output"),
    ("cascade --tile below half the trained output",
     lambda t, m, mp: ["cascade", _png(t / "a.png"), "-o", "out", "--stages", m, "--tile", 4],
     2, "--tile must be at least 8 output pixels"),
    ("--skip-existing with --overwrite", lambda t, m, mp: [_png(t / "a.png"), "-o", "out.png", "--model", m,
                                                                     "--skip-existing", "--overwrite"],
     2, "contradict each other"),
]


@pytest.mark.parametrize("setup, code, fragment", [pytest.param(*case[1:], id=case[0]) for case in CLI_CASES])
def test_cli_case(tmp_path, model, capsys, monkeypatch, setup, code, fragment):
    test_io_case(tmp_path, model, capsys, monkeypatch, setup, code, fragment)  # the same checks as the IO table


def test_cli_version(capsys):
    """Item 9: --version and -V were usage errors; sr3infer.__version__ did not exist."""
    from importlib.metadata import version

    import sr3infer

    assert sr3infer.__version__ == version("sr3infer")
    for flag in ("--version", "-V"):
        assert main([flag]) == 0
        assert capsys.readouterr().out.strip() == f"sr3infer {sr3infer.__version__}"


def test_cli_help_says_what_quiet_hides(capsys):
    """Item 24: --quiet also hid the 'wrote ...' line without saying so."""
    assert main(["--help"]) == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "--quiet hide the progress bar, the 'wrote ...' lines and a successful folder run's summary" in text
    assert "--skip-existing" in text


def test_cli_output_with_a_trailing_slash_is_a_folder(tmp_path, model, capsys):
    """Item 25: `-o newdir/` for one file said "Unknown output format ''"."""
    src = _png(tmp_path / "a.png")
    assert main([str(src), "-o", str(tmp_path / "newdir") + "/", "--model", str(model), "--steps", "1", "--quiet"]) == 0
    assert [p.name for p in (tmp_path / "newdir").iterdir()] == ["a.png"]


def test_cli_threads_within_the_bound_run(tmp_path, model):
    """Item 8: the bound leaves every ordinary thread count alone."""
    import os

    import torch

    threads = torch.get_num_threads()
    try:
        assert main([str(_png(tmp_path / "a.png")), "-o", str(tmp_path / "o.png"), "--model", str(model), "--steps", "1",
                     "--quiet", "--threads", str(os.cpu_count() or 1)]) == 0
    finally:
        torch.set_num_threads(threads)
