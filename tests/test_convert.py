"""`sr3infer convert`: community checkpoint -> model folder that reproduces the reference, and no pickled code runs."""

from __future__ import annotations

import io
import json
import os
import pickle
import zipfile
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

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


@pytest.mark.parametrize("keys, norm_groups, image_size, expected", [
    ("keys_sr_sr3_16_128.txt", 32, 128, dict(channel_mults=(1, 2, 4, 8, 8), num_res_blocks=2, attn_resolutions=(16,))),
    ("keys_sr_sr3_64_512.txt", 16, 512, dict(channel_mults=(1, 2, 4, 8, 16), num_res_blocks=1, attn_resolutions=())),
])
def test_the_released_architectures_are_inferred_from_their_shapes(keys, norm_groups, image_size, expected):
    from sr3infer.convert import config_from_state_dict, convert_state_dict
    from sr3infer.unet import UNet

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
