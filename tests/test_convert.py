"""`sr3infer convert`: community checkpoint -> model folder that reproduces the reference, and no pickled code runs."""

from __future__ import annotations

import io
import json
import os
import pickle
import re
import struct
import time
import zipfile
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from sr3infer.cli import main
from sr3infer.upscaler import Upscaler

from conftest import FIXTURES, require


def test_convert_reproduces_the_reference_forward(tmp_path, capsys):
    pth = require(FIXTURES / "tiny_gen.pth")
    out = tmp_path / "converted"
    code = main(["convert", str(pth), "-o", str(out), "--norm-groups", "4", "--image-size", "32", "--scale", "2"])
    assert code == 0, capsys.readouterr().err
    assert sorted(p.name for p in out.iterdir()) == ["README.md", "config.json", "model.safetensors"]
    config = json.loads((out / "config.json").read_text())
    assert config["network"]["norm_groups"] == 4 and config["network"]["inner_channel"] == 8
    assert config["network"]["channel_mults"] == [1, 2, 4] and config["network"]["attn_resolutions"] == [8]
    assert (config["scale"], config["lowres_size"]) == (2, 16)
    assert "norm_groups 4" in (out / "README.md").read_text()

    model = Upscaler.from_pretrained(out, device="cpu").model
    ref = load_file(str(require(FIXTURES / "tiny_forward.safetensors")))
    with torch.no_grad():
        eps = model(ref["x"], ref["noise_level"])
        eps_rect = model(ref["x_rect"], ref["noise_level_rect"])
    assert (eps - ref["eps"]).abs().max().item() <= 1e-5
    assert (eps_rect - ref["eps_rect"]).abs().max().item() <= 1e-5


def test_convert_refuses_to_overwrite_without_flag(tmp_path, capsys):
    pth = require(FIXTURES / "tiny_gen.pth")
    out = tmp_path / "converted"
    args = ["convert", str(pth), "-o", str(out), "--norm-groups", "4", "--image-size", "32", "--scale", "2"]
    assert main(args) == 0
    before = (out / "model.safetensors").stat().st_mtime_ns
    assert main(args) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert (out / "model.safetensors").stat().st_mtime_ns == before
    assert main(args + ["--overwrite", "--dtype", "fp16"]) == 0
    assert load_file(str(out / "model.safetensors"))["downs.0.weight"].dtype == torch.float16


TINY_ARGS = ["--norm-groups", "4", "--image-size", "32", "--scale", "2"]


@pytest.mark.parametrize("present", [["README.md"], ["config.json"], ["model.safetensors"], ["README.md", "config.json"]])
def test_convert_refuses_every_file_it_would_write_naming_them(tmp_path, capsys, present):
    """`-o .` in a project folder: its README.md or config.json is the user's, not to be replaced unasked."""
    pth = require(FIXTURES / "tiny_gen.pth")
    out = tmp_path / "project"
    out.mkdir()
    for name in present:
        (out / name).write_text("the user's own")
    (out / "notes.txt").write_text("kept")
    assert main(["convert", str(pth), "-o", str(out), *TINY_ARGS]) == 2
    err = capsys.readouterr().err
    assert f"already holds {', '.join(n for n in ('model.safetensors', 'config.json', 'README.md') if n in present)};" \
        in err and "--overwrite" in err and len(err.strip().splitlines()) == 1, err
    assert sorted(p.name for p in out.iterdir()) == sorted([*present, "notes.txt"])
    assert all((out / name).read_text() == "the user's own" for name in present)


def test_convert_overwrite_replaces_a_symlink_and_never_writes_through_it(tmp_path, capsys):
    pth = require(FIXTURES / "tiny_gen.pth")
    out, elsewhere = tmp_path / "out", tmp_path / "elsewhere.md"
    out.mkdir()
    elsewhere.write_text("not the card")
    (out / "README.md").symlink_to(elsewhere)
    (out / "config.json").symlink_to(tmp_path / "dangling.json")
    assert main(["convert", str(pth), "-o", str(out), *TINY_ARGS]) == 2
    assert "already holds config.json, README.md;" in capsys.readouterr().err
    assert main(["convert", str(pth), "-o", str(out), *TINY_ARGS, "--overwrite"]) == 0
    assert elsewhere.read_text() == "not the card" and not (tmp_path / "dangling.json").exists()
    assert not (out / "README.md").is_symlink() and "norm_groups 4" in (out / "README.md").read_text()
    assert sorted(p.name for p in out.iterdir()) == ["README.md", "config.json", "model.safetensors"]  # no temp files


def test_convert_rejects_bad_numbers(tmp_path, capsys):
    pth = require(FIXTURES / "tiny_gen.pth")
    assert main(["convert", str(pth), "-o", str(tmp_path / "o"), "--norm-groups", "0"]) == 2
    assert "--norm-groups must be at least 1" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


class _RunsCode:
    """Unpickling this calls os.system: what a malicious checkpoint would do."""

    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self):
        return (os.system, (self.command,))


def _malicious_pth(path: Path, marker: Path) -> Path:
    """A PyTorch-zip checkpoint whose data.pkl runs `touch marker` when unpickled without weights_only."""
    payload = {"denoise_fn.downs.0.weight": _RunsCode(f"touch {marker}")}
    buffer = io.BytesIO()
    torch.save({"placeholder": torch.zeros(1)}, buffer)
    with zipfile.ZipFile(io.BytesIO(buffer.getvalue())) as src, zipfile.ZipFile(path, "w") as dst:
        for item in src.infolist():
            data = src.read(item.filename)
            if item.filename.endswith("/data.pkl"):
                data = pickle.dumps(payload, protocol=2)
            dst.writestr(item, data)
    return path


def test_malicious_pickle_is_refused_and_never_runs(tmp_path, capsys):
    marker = tmp_path / "pwned"
    pth = _malicious_pth(tmp_path / "evil_gen.pth", marker)
    # The file really is dangerous: a plain unpickle of its data.pkl runs the payload (a harmless `touch`).
    with zipfile.ZipFile(pth) as archive:
        data = archive.read(next(n for n in archive.namelist() if n.endswith("/data.pkl")))
    pickle.loads(data)
    assert marker.exists()
    marker.unlink()
    out = tmp_path / "out"
    code = main(["convert", str(pth), "-o", str(out)])
    err = capsys.readouterr().err
    assert code == 1
    assert "Refusing to load" in err and "could run code" in err
    assert len(err.strip().splitlines()) == 1
    assert not marker.exists()
    assert not out.exists()


def test_convert_refuses_a_raw_pickle(tmp_path, capsys):
    marker = tmp_path / "pwned"
    pth = tmp_path / "legacy_gen.pth"
    pth.write_bytes(pickle.dumps(_RunsCode(f"touch {marker}")))
    assert main(["convert", str(pth), "-o", str(tmp_path / "out")]) == 1
    assert "not a PyTorch zip checkpoint" in capsys.readouterr().err
    assert not marker.exists()


def _tiny_state(**changes) -> dict:
    """The tiny community checkpoint's tensors with `changes` ("denoise_fn.downs.0.weight" written with __ for .)."""
    state = torch.load(require(FIXTURES / "tiny_gen.pth"), weights_only=True)
    state.update({key.replace("__", "."): value for key, value in changes.items()})
    return state


@pytest.mark.parametrize("changes, expected", [
    (dict(denoise_fn__downs__0__weight=torch.zeros(8)),
     "'denoise_fn.downs.0.weight' has shape (8,); expected a conv weight (out, in, kh, kw) without an empty dimension"),
    (dict(denoise_fn__downs__0__weight=torch.zeros(0, 6, 3, 3)), "'denoise_fn.downs.0.weight' has shape (0, 6, 3, 3)"),
    (dict(denoise_fn__final_conv__block__3__weight=torch.zeros(3, 0, 3, 3)),
     "'denoise_fn.final_conv.block.3.weight' has shape (3, 0, 3, 3); expected a conv weight"),
    (dict(denoise_fn__downs__1__res_block__block1__block__3__weight=torch.tensor(1.0)),
     "'denoise_fn.downs.1.res_block.block1.block.3.weight' has shape (); expected a conv weight"),
    (dict(denoise_fn__downs__1__res_block__block1__block__3__weight=torch.zeros(5, 8, 3, 3)),
     "has shape (5, 8, 3, 3); expected a conv weight (out, in, kh, kw) without an empty dimension, out a multiple of "
     "inner_channel 8"),
    (dict(betas=torch.tensor(0.1)), "'betas' has shape (); expected (T,): one value per training step"),
    (dict(betas=torch.zeros(0)), "'betas' has shape (0,)"),
    (dict(alphas_cumprod=torch.zeros(3)), "'alphas_cumprod' has shape (3,); expected (2000,), as betas"),
    (dict(denoise_fn__downs__0__bias=torch.zeros(7)), "downs.0.bias: file (7,) vs config (8,)"),
    (dict(denoise_fn__downs__0__bias=5), "'denoise_fn.downs.0.bias' is a int; expected a tensor"),
    (dict(betas={"nested": torch.zeros(1)}), "'betas' is a dict; expected a tensor"),
    (dict(denoise_fn__downs__0__bias=torch.zeros(8, dtype=torch.int64)),
     "'denoise_fn.downs.0.bias' is a int64 strided tensor on cpu; expected a dense floating-point tensor"),
])
def test_malformed_tensor_dicts_are_refused_naming_the_file_and_key(tmp_path, capsys, changes, expected):
    pth, out = tmp_path / "odd_gen.pth", tmp_path / "out"
    torch.save(_tiny_state(**changes), pth)
    assert main(["convert", str(pth), "-o", str(out), *TINY_ARGS]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(pth) in err and expected in err, err
    assert "tuple index" not in err and "division" not in err and not out.exists()


def test_malformed_safetensors_are_refused_naming_the_file(tmp_path, capsys):
    bad = tmp_path / "odd.safetensors"
    save_file(_tiny_state(denoise_fn__downs__0__weight=torch.zeros(8, 0, 3, 3)), str(bad))
    assert main(["convert", str(bad), "-o", str(tmp_path / "out"), *TINY_ARGS]) == 1
    assert f"{str(bad)!r}: 'denoise_fn.downs.0.weight' has shape (8, 0, 3, 3)" in capsys.readouterr().err
    bad.write_bytes(bad.read_bytes()[:100])
    assert main(["convert", str(bad), "-o", str(tmp_path / "out"), *TINY_ARGS]) == 1
    assert f"{str(bad)!r} is not a readable safetensors file (" in capsys.readouterr().err


def _rewritten_pth(path: Path, entry: str, write, compression: int = zipfile.ZIP_STORED) -> Path:
    """The tiny checkpoint as a zip whose entry ending in `entry` is replaced by what `write(handle, old bytes)`
    writes, compressed with `compression`."""
    with zipfile.ZipFile(require(FIXTURES / "tiny_gen.pth")) as src, zipfile.ZipFile(path, "w") as dst:
        for item in src.infolist():
            if item.filename.endswith(entry):
                replaced = zipfile.ZipInfo(item.filename)
                replaced.compress_type = compression
                with dst.open(replaced, "w", force_zip64=True) as handle:
                    write(handle, src.read(item.filename))
            else:
                dst.writestr(item.filename, src.read(item.filename))
    return path


def test_a_small_pth_that_inflates_far_past_its_size_is_refused_unread(tmp_path, capsys):
    """64 MiB of zeros deflate to 64 KiB: torch.save never compresses, so a checkpoint like that is a zip bomb."""
    def bomb(handle, _):
        for _ in range(64):
            handle.write(bytes(1 << 20))

    pth = _rewritten_pth(tmp_path / "bomb_gen.pth", "/data/0", bomb, zipfile.ZIP_DEFLATED)
    size = pth.stat().st_size
    start = time.monotonic()
    assert main(["convert", str(pth), "-o", str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err
    assert re.search(rf"its zip entries inflate to 6[78],[\d,]+ bytes, over the [\d,]+ a {size:,}-byte checkpoint can "
                     r"hold \(2x its size \+ 16 MiB", err) and "zip bomb" in err and "could run code" not in err, err
    assert time.monotonic() - start < 1 and not (tmp_path / "out").exists()


def test_a_storage_claiming_more_bytes_than_the_file_holds_is_refused_as_damaged(tmp_path, capsys):
    def huge_storage(handle, pickled):  # the first storage's element count (the int after 'cpu') set to 2**31 - 1
        claimed, count = re.subn(rb"(X\x03\x00\x00\x00cpuq.)(K.|M..|J....)",
                                 lambda m: m.group(1) + b"J" + struct.pack("<i", 2**31 - 1), pickled, count=1,
                                 flags=re.DOTALL)
        assert count == 1
        handle.write(claimed)

    pth = _rewritten_pth(tmp_path / "claims_gen.pth", "/data.pkl", huge_storage)
    start = time.monotonic()
    assert main(["convert", str(pth), "-o", str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err
    assert "is a damaged or inconsistent PyTorch checkpoint (" in err and "could run code" not in err, err
    assert time.monotonic() - start < 1


@pytest.mark.parametrize("keys, norm_groups, image_size, expected", [
    ("keys_sr_sr3_16_128.txt", 32, 128, dict(channel_mults=(1, 2, 4, 8, 8), num_res_blocks=2, attn_resolutions=(16,))),
    ("keys_sr_sr3_64_512.txt", 16, 512, dict(channel_mults=(1, 2, 4, 8, 16), num_res_blocks=1, attn_resolutions=())),
])
def test_the_released_architectures_are_inferred_from_their_shapes(keys, norm_groups, image_size, expected):
    from sr3infer.models.checkpoints import config_from_state_dict, convert_state_dict
    from sr3infer.models.unet import UNet

    state = {}
    for line in require(FIXTURES / keys).read_text().splitlines():
        key, shape, _ = line.split("\t")
        state[key] = torch.empty(json.loads(shape), device="meta")  # shapes only: no 100M-parameter allocation
    unet, _ = convert_state_dict({k: v for k, v in state.items() if k.startswith("denoise_fn.")})
    config = config_from_state_dict(unet, norm_groups=norm_groups, image_size=image_size)
    assert config.inner_channel == 64 and config.norm_groups == norm_groups
    assert {k: getattr(config, k) for k in expected} == expected
    with torch.device("meta"):
        model = UNet(**config.to_dict())
    assert {k: tuple(v.shape) for k, v in model.state_dict().items()} == {k: tuple(v.shape) for k, v in unet.items()}
