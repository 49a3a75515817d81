"""`weights_manifest.json`: model names -> Hub repo, pinned revision, files, task, licence."""

from __future__ import annotations

import hashlib
import json
import os
import re
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import parse_json
from ..models.config import FORMAT_VERSION

__all__ = [
    "MANIFEST_ENV", "MANIFEST_NAME", "REQUIRED_FILES", "REPO_ID_PATTERN", "FileEntry", "Task", "ModelEntry", "Manifest",
    "load_manifest", "parse_manifest", "manifest_to_dict", "dump_manifest", "sha256_file", "file_entry", "AUTO_PICKS",
]

MANIFEST_ENV = "SR3INFER_MANIFEST"   # a path to a manifest that replaces the packaged one
MANIFEST_NAME = "weights_manifest.json"
REQUIRED_FILES = ("config.json", "model.safetensors")
PACKAGED_MANIFEST = Path(__file__).resolve().parent.parent / MANIFEST_NAME  # sr3infer/weights_manifest.json

AUTO_PICKS = ("size", "any", "never")  # how a run without a model name may pick a model; see ModelEntry.auto_pick
_SHA256 = re.compile(r"[0-9a-f]{64}")
_MODEL_NAME = re.compile(r"[a-z0-9][a-z0-9._-]*")
REPO_ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*")


@dataclass(frozen=True)
class FileEntry:
    """A model file: name, sha256 and size (None until released; scripts/update_manifest.py)."""

    name: str
    sha256: str | None
    size: int | None

    @property
    def pending(self) -> bool:
        return self.sha256 is None


@dataclass(frozen=True)
class Task:
    """What the model does: `input_size` -> `output_size` square images of `domain`."""

    scale: int
    input_size: int
    output_size: int
    domain: str


@dataclass(frozen=True)
class ModelEntry:
    """One named model of the manifest."""

    name: str
    description: str
    repo_id: str                        # Hugging Face Hub repo, "owner/name"
    revision: str                       # the pinned revision; a 40-hex commit once published
    license: str
    task: Task
    files: tuple[FileEntry, ...]
    published: bool = False             # the Hub repo exists; False: only the bundled copy can be used
    bundled: bool = False               # the package carries the files under bundled/<name>/
    metrics: dict[str, Any] = field(default_factory=dict)
    student_of: str | None = None       # a distilled student: the model whose `fast` preset runs it
    # A run without a model name picks this model: "size" for inputs of exactly its trained square size, "any" for
    # any picture no "size" model takes (at most one model), "never" only by name. Students are never picked.
    auto_pick: str = "size"

    def file(self, name: str) -> FileEntry:
        """The entry of file `name` (KeyError naming the listed files if absent)."""
        for entry in self.files:
            if entry.name == name:
                return entry
        raise KeyError(f"Model {self.name!r} lists no file {name!r}; it lists {[f.name for f in self.files]}.")


@dataclass(frozen=True)
class Manifest:
    """All known models; `path` is where it was read from (None when built in memory)."""

    models: dict[str, ModelEntry]
    path: Path | None = None
    notes: str = ""
    format_version: int = FORMAT_VERSION

    @property
    def bundled_root(self) -> Path:
        """Bundled model folders live in `bundled/<name>/` next to the manifest file."""
        return (self.path.parent if self.path is not None else PACKAGED_MANIFEST.parent) / "bundled"

    def bundled_dir(self, name: str) -> Path:
        return self.bundled_root / name

    def get(self, name: str) -> ModelEntry:
        """The entry for `name`; ValueError listing the known names otherwise."""
        if name not in self.models:
            raise ValueError(
                f"Unknown model name {name!r}; known names: {', '.join(sorted(self.models)) or '(none)'}. "
                "See `sr3infer models`."
            )
        return self.models[name]


def load_manifest(path: str | Path | Manifest | None = None) -> Manifest:
    """Read and validate a manifest: `path`, else `$SR3INFER_MANIFEST`, else the packaged copy;
    FileNotFoundError when missing, ValueError naming the field when malformed."""
    if isinstance(path, Manifest):
        return path
    from_env = path is None and bool(os.environ.get(MANIFEST_ENV))
    if path is None:
        path = os.environ.get(MANIFEST_ENV) or PACKAGED_MANIFEST
    path = Path(path)
    origin = f" (set by ${MANIFEST_ENV})" if from_env else ""
    text = _read_text(path, origin)
    return parse_manifest(parse_json(text, f"Weights manifest {str(path)!r}", origin), path=path)


def default_models(manifest: Manifest | None = None) -> dict[int, tuple[str, str]]:
    """The bundled models picked by size: trained input side -> (name, domain), for the CLI's and demo's defaults
    (students, run by their teacher's `fast` preset, are never a default; see `sr3infer.hub.auto_pick`)."""
    return {e.task.input_size: (e.name, e.task.domain) for e in (manifest or load_manifest()).models.values()
            if e.bundled and e.student_of is None and e.auto_pick == "size"}


def any_size_model(manifest: Manifest | None = None) -> tuple[str, str] | None:
    """(name, domain) of the bundled model picked for pictures of any size (auto_pick "any"), or None."""
    return next(((e.name, e.task.domain) for e in (manifest or load_manifest()).models.values()
                 if e.bundled and e.student_of is None and e.auto_pick == "any"), None)


MAX_MANIFEST_BYTES = 16 << 20  # the packaged manifest is a few KB; a manifest is never read past this


def _read_text(path: Path, origin: str) -> str:
    """The UTF-8 text of a regular file of at most MAX_MANIFEST_BYTES; errors name the file."""
    what = f"Weights manifest {str(path)!r}"
    try:
        info = path.stat()
    except FileNotFoundError:
        raise FileNotFoundError(f"{what} does not exist{origin}.") from None
    if not stat.S_ISREG(info.st_mode):
        kind = "a directory" if stat.S_ISDIR(info.st_mode) else "not a regular file (a device, FIFO or socket)"
        raise ValueError(f"{what} is {kind}{origin}; expected a weights_manifest.json file.")
    with open(path, "rb") as handle:
        data = handle.read(MAX_MANIFEST_BYTES + 1)
    if len(data) > MAX_MANIFEST_BYTES:
        raise ValueError(f"{what} is larger than {MAX_MANIFEST_BYTES >> 20} MiB{origin}; a manifest is a small JSON "
                         "file. Is it the right file?")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise ValueError(f"{what} is not UTF-8 text{origin} ({err.reason} at byte {err.start}): a binary file? "
                         "Expected a weights_manifest.json file.") from None


def parse_manifest(data: Any, *, path: Path | None = None) -> Manifest:
    """Validate the JSON object `data` and return the typed manifest."""
    where = str(path) if path is not None else "manifest"
    top = _object(data, where, required={"format_version", "models"}, optional={"notes"})
    if top["format_version"] != FORMAT_VERSION:
        raise ValueError(
            f"{where}: format_version must be {FORMAT_VERSION}, got {top['format_version']!r}. "
            "Upgrade sr3infer (pip install -U sr3infer) to read newer manifests."
        )
    notes = _string(top.get("notes", ""), f"{where}: notes", allow_empty=True)
    models = _object(top["models"], f"{where}: models")
    parsed = {}
    for name, entry in models.items():
        if not _MODEL_NAME.fullmatch(name):
            raise ValueError(
                f"{where}: model name {name!r} must be lowercase letters, digits, '.', '_' or '-', "
                "starting with a letter or digit."
            )
        parsed[name] = _model(name, entry, f"{where}: models[{name!r}]")
    any_size = [name for name, entry in parsed.items() if entry.auto_pick == "any"]
    if len(any_size) > 1:
        raise ValueError(f"{where}: at most one model may have auto_pick \"any\" (the default for pictures of any "
                         f"size), got {len(any_size)}: {', '.join(any_size)}.")
    return Manifest(models=parsed, path=path, notes=notes)


def _model(name: str, data: Any, where: str) -> ModelEntry:
    obj = _object(
        data, where,
        required={"description", "repo_id", "revision", "license", "task", "files"},
        optional={"published", "bundled", "metrics", "student_of", "auto_pick"},
    )
    repo_id = _string(obj["repo_id"], f"{where}.repo_id")
    if not REPO_ID_PATTERN.fullmatch(repo_id) or ".." in repo_id:
        raise ValueError(f"{where}.repo_id must look like 'owner/name', got {repo_id!r}.")
    task_obj = _object(obj["task"], f"{where}.task", required={"scale", "input_size", "output_size", "domain"})
    task = Task(
        scale=_positive_int(task_obj["scale"], f"{where}.task.scale"),
        input_size=_positive_int(task_obj["input_size"], f"{where}.task.input_size"),
        output_size=_positive_int(task_obj["output_size"], f"{where}.task.output_size"),
        domain=_string(task_obj["domain"], f"{where}.task.domain"),
    )
    if task.output_size != task.input_size * task.scale:
        raise ValueError(
            f"{where}.task: output_size ({task.output_size}) must be input_size ({task.input_size}) "
            f"x scale ({task.scale}) = {task.input_size * task.scale}."
        )
    files_obj = _object(obj["files"], f"{where}.files")
    files = tuple(_file(fname, entry, f"{where}.files[{fname!r}]") for fname, entry in files_obj.items())
    missing = [f for f in REQUIRED_FILES if f not in files_obj]
    if missing:
        raise ValueError(f"{where}.files must list {', '.join(REQUIRED_FILES)}; missing {', '.join(missing)}.")
    metrics = _object(obj.get("metrics", {}), f"{where}.metrics")
    for key, value in metrics.items():
        if isinstance(value, bool) or (value is not None and not isinstance(value, (int, float, str))):
            raise ValueError(f"{where}.metrics[{key!r}] must be a number, a string or null, got {value!r}.")
    auto_pick = obj.get("auto_pick", "size")
    if auto_pick not in AUTO_PICKS:
        raise ValueError(f"{where}.auto_pick must be one of {', '.join(map(repr, AUTO_PICKS))}, got {auto_pick!r}.")
    if auto_pick != "size" and obj.get("student_of") is not None:
        raise ValueError(f"{where}: a student (student_of) is never picked without a name; leave out auto_pick.")
    return ModelEntry(
        name=name,
        description=_string(obj["description"], f"{where}.description"),
        repo_id=repo_id,
        revision=_string(obj["revision"], f"{where}.revision"),
        license=_string(obj["license"], f"{where}.license"),
        task=task,
        files=files,
        published=_bool(obj.get("published", False), f"{where}.published"),
        bundled=_bool(obj.get("bundled", False), f"{where}.bundled"),
        metrics=dict(metrics),
        student_of=None if obj.get("student_of") is None else _string(obj["student_of"], f"{where}.student_of"),
        auto_pick=auto_pick,
    )


def _file(name: str, data: Any, where: str) -> FileEntry:
    if not name or "/" in name or "\\" in name or name in (".", "..") or ".." in name or name.startswith("."):
        raise ValueError(
            f"{where}: file names must be plain names inside the model folder (no '/', '\\', '..' or leading '.'), "
            f"got {name!r}."
        )
    obj = _object(data, where, required={"sha256", "size"})
    sha, size = obj["sha256"], obj["size"]
    if sha is None and size is None:
        return FileEntry(name, None, None)
    if not isinstance(sha, str) or not _SHA256.fullmatch(sha):
        raise ValueError(
            f"{where}.sha256 must be 64 lowercase hex digits (or null with size null while unreleased), got {sha!r}. "
            "Recompute it with scripts/update_manifest.py or `sha256sum`."
        )
    if isinstance(size, bool) or not isinstance(size, int) or size < 0:
        raise ValueError(f"{where}.size must be a non-negative integer number of bytes, got {size!r}.")
    return FileEntry(name, sha, size)


def _object(data: Any, where: str, *, required: set[str] | None = None, optional: set[str] | None = None) -> dict:
    if not isinstance(data, dict):
        raise ValueError(f"{where} must be a JSON object, got {type(data).__name__}.")
    if required is not None:
        allowed = required | (optional or set())
        missing = sorted(required - set(data))
        if missing:
            raise ValueError(f"{where} is missing required field(s) {missing}.")
        unknown = sorted(set(data) - allowed)
        if unknown:
            raise ValueError(f"{where} has unknown field(s) {unknown}; expected only {sorted(allowed)}.")
    return data


def _string(value: Any, where: str, *, allow_empty: bool = False) -> str:
    if not isinstance(value, str) or (not allow_empty and not value.strip()):
        raise ValueError(f"{where} must be a non-empty string, got {value!r}.")
    return value


def _positive_int(value: Any, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{where} must be a positive integer, got {value!r}.")
    return value


def _bool(value: Any, where: str) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"{where} must be true or false, got {value!r}.")
    return value


def manifest_to_dict(manifest: Manifest) -> dict[str, Any]:
    """The JSON object of `manifest` (the inverse of `parse_manifest`)."""
    data: dict[str, Any] = {"format_version": manifest.format_version}
    if manifest.notes:
        data["notes"] = manifest.notes
    data["models"] = {name: model_entry_to_dict(entry) for name, entry in manifest.models.items()}
    return data


def model_entry_to_dict(entry: ModelEntry) -> dict[str, Any]:
    """The JSON object of one model entry, keys in a fixed order."""
    return {
        "description": entry.description,
        "repo_id": entry.repo_id,
        "revision": entry.revision,
        "published": entry.published,
        "bundled": entry.bundled,
        "license": entry.license,
        "task": {"scale": entry.task.scale, "input_size": entry.task.input_size,
                 "output_size": entry.task.output_size, "domain": entry.task.domain},
        "files": {f.name: {"sha256": f.sha256, "size": f.size} for f in entry.files},
        "metrics": dict(entry.metrics),
        **({"student_of": entry.student_of} if entry.student_of else {}),
        **({"auto_pick": entry.auto_pick} if entry.auto_pick != "size" else {}),
    }


def dump_manifest(manifest: Manifest) -> str:
    """The manifest as stored on disk (2-space indent, trailing newline)."""
    return json.dumps(manifest_to_dict(manifest), indent=2, ensure_ascii=False) + "\n"


def sha256_file(path: str | Path, *, chunk_size: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(chunk_size):
            digest.update(chunk)
    return digest.hexdigest()


def file_entry(path: str | Path) -> FileEntry:
    """A `FileEntry` for an existing file: its name, sha256 and size."""
    path = Path(path)
    return FileEntry(path.name, sha256_file(path), path.stat().st_size)
