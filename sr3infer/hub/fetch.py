"""Model names and paths -> verified files on disk.

`resolve_model_files(x)` takes, in order:

1. `x` itself, an existing model folder or `.safetensors` file;
2. the package's bundled copy of the manifest name `x` (`bundled/<name>/`);
3. the Hugging Face cache (`cache_dir`, else `$HF_HUB_CACHE`, else `$HF_HOME/hub`);
4. a download at the manifest's pinned revision (`$HF_ENDPOINT`, `token` / `$HF_TOKEN`),
   unless `$HF_HUB_OFFLINE=1` or `local_files_only=True`.

Every file is checked against the manifest's size and sha256. A file that fails is deleted only when
this call downloaded it: the cache may be shared with other programs.
"""

from __future__ import annotations

import logging
import os
import stat
from dataclasses import dataclass
from pathlib import Path

from .manifest import (
    REPO_ID_PATTERN, REQUIRED_FILES, FileEntry, Manifest, ModelEntry, Task, file_entry, load_manifest, parse_manifest,
    sha256_file,
)
from ..models.weights import CARD_NAME, CONFIG_NAME, WEIGHTS_NAME

__all__ = ["resolve_model_files", "fetch_model_files", "download_model", "list_models", "ModelStatus",
           "plan_publish", "publish_model", "hub_cache_dir", "hub_endpoint", "is_offline"]

log = logging.getLogger(__name__)


def resolve_model_files(
    name_or_path: str | Path,
    *,
    revision: str | None = None,
    cache_dir: str | Path | None = None,
    token: str | bool | None = None,
    local_files_only: bool | None = None,
    manifest: Manifest | str | Path | None = None,
) -> tuple[Path | None, Path]:
    """`(config.json or None, model.safetensors)` of a folder, `.safetensors` file or model name.

    Args:
        name_or_path: a folder, a `.safetensors` file, or a manifest name such as "sr3-face-8x".
        revision: Hub revision; default the manifest's pinned one (only that one is checked).
        cache_dir: Hub cache folder; default `$HF_HUB_CACHE`, else `$HF_HOME/hub`.
        token: Hub token; default `$HF_TOKEN` or the saved login.
        local_files_only: never download (also with `$HF_HUB_OFFLINE=1`).
        manifest: a manifest or its path; default `$SR3INFER_MANIFEST`, else the packaged one.

    Raises:
        ValueError: an unknown name, or a file failed its sha256 check.
        FileNotFoundError: a missing path, or files not available (offline or unpublished).
    """
    path = Path(name_or_path)
    if path.is_dir():
        weights = path / WEIGHTS_NAME
        if not weights.is_file():
            raise FileNotFoundError(f"Model folder {str(path)!r} has no {WEIGHTS_NAME}; expected {CONFIG_NAME} + {WEIGHTS_NAME}.")
        config = path / CONFIG_NAME
        return (config if config.is_file() else None), weights
    if path.suffix == ".safetensors":
        if not path.is_file():
            raise FileNotFoundError(f"Weights file {str(path)!r} does not exist.")
        return None, path
    known = load_manifest(manifest)
    name = str(name_or_path)
    if name not in known.models:
        raise ValueError(
            f"Unknown model {name!r}: not an existing model folder or .safetensors file, and not a known model "
            f"name. Known names: {', '.join(sorted(known.models)) or '(none)'} (see `sr3infer models`)."
        )
    files = fetch_model_files(name, files=REQUIRED_FILES, revision=revision, cache_dir=cache_dir, token=token,
                              local_files_only=local_files_only, manifest=known)
    return files[CONFIG_NAME], files[WEIGHTS_NAME]


def fetch_model_files(
    name: str,
    *,
    files: tuple[str, ...] | list[str] | None = None,
    revision: str | None = None,
    cache_dir: str | Path | None = None,
    token: str | bool | None = None,
    local_files_only: bool | None = None,
    manifest: Manifest | str | Path | None = None,
    use_bundled: bool = True,
) -> dict[str, Path]:
    """Verified local paths of the files of model `name` (default all): bundled, cached or new."""
    known = load_manifest(manifest)
    entry = known.get(name)
    wanted = [entry.file(f) for f in (files if files is not None else [f.name for f in entry.files])]
    pinned = revision is None or revision == entry.revision
    if use_bundled and pinned and entry.bundled:
        bundled = _bundled_files(known, entry, wanted)
        if bundled is not None:
            return bundled
    cache = hub_cache_dir(cache_dir)
    offline = is_offline(local_files_only)
    return {
        f.name: _cached_or_download(known, entry, f, revision or entry.revision, pinned, cache, token, offline)
        for f in wanted
    }


def download_model(
    name: str,
    *,
    revision: str | None = None,
    cache_dir: str | Path | None = None,
    token: str | bool | None = None,
    manifest: Manifest | str | Path | None = None,
) -> dict[str, Path]:
    """Put every file of model `name` into the Hub cache and verify it, for offline use (what
    `sr3infer download NAME` runs); a model not yet on the Hub gives its bundled files."""
    known = load_manifest(manifest)
    unpublished = not known.get(name).published
    return fetch_model_files(name, revision=revision, cache_dir=cache_dir, token=token, local_files_only=False,
                             manifest=known, use_bundled=unpublished)


@dataclass(frozen=True)
class ModelStatus:
    """One row of `sr3infer models`: a name and where `from_pretrained(name)` would load it from."""

    name: str
    task: Task
    description: str
    source: str      # "bundled", "cache", "download" or "unavailable"
    location: str    # a folder, or the Hub URL it would come from
    cached: bool     # all files needed to load it are in the Hub cache


def list_models(
    *, cache_dir: str | Path | None = None, manifest: Manifest | str | Path | None = None
) -> list[ModelStatus]:
    """Every model of the manifest, with where it would load from (no network, no hashing)."""
    known = load_manifest(manifest)
    cache = hub_cache_dir(cache_dir)
    rows = []
    for name in sorted(known.models):
        entry = known.models[name]
        folder = known.bundled_dir(name)
        cached = all(_cache_problem(_cached_path(entry, f, entry.revision, cache), entry.file(f)) is None
                     for f in REQUIRED_FILES)
        if entry.bundled and all((folder / f).is_file() for f in REQUIRED_FILES):
            source, location = "bundled", str(folder)
        elif cached:
            source, location = "cache", str(cache)
        elif entry.published and not is_offline(None):
            source, location = "download", f"{hub_endpoint() or 'https://huggingface.co'}/{entry.repo_id}@{entry.revision}"
        else:
            source, location = "unavailable", "not bundled in this install" + (
                "; offline" if entry.published else f"; Hub repo {entry.repo_id} not published yet")
        rows.append(ModelStatus(name, entry.task, entry.description, source, location, cached))
    return rows


def hub_cache_dir(cache_dir: str | Path | None = None) -> Path:
    """The Hub cache folder: `cache_dir`, else huggingface_hub's (`constants.HF_HUB_CACHE`)."""
    if cache_dir is not None:
        return Path(cache_dir).expanduser()
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE)


def hub_endpoint() -> str | None:
    """`$HF_ENDPOINT` without a trailing slash, or None for huggingface_hub's default."""
    return os.environ.get("HF_ENDPOINT", "").strip().rstrip("/") or None


def is_offline(local_files_only: bool | None = None) -> bool:
    """True when downloads are off: `local_files_only` or `HF_HUB_OFFLINE`."""
    from huggingface_hub import constants

    return bool(local_files_only) or constants.is_offline_mode()


# Steps 2-4 for one file.


def _bundled_files(known: Manifest, entry: ModelEntry, wanted: list[FileEntry]) -> dict[str, Path] | None:
    """The verified bundled files, or None when the package carries none."""
    folder = known.bundled_dir(entry.name)
    present = [f for f in wanted if os.path.lexists(folder / f.name)]  # device links refused below
    if not present:
        log.debug("No bundled copy of %s in %s", entry.name, folder)
        return None
    if len(present) < len(wanted):
        missing = [f.name for f in wanted if f not in present]
        raise FileNotFoundError(
            f"The bundled copy of {entry.name!r} in {folder} is incomplete: missing {', '.join(missing)}. "
            "Reinstall sr3infer (pip install --force-reinstall sr3infer)."
        )
    for f in present:
        path = folder / f.name
        if f.pending:
            raise ValueError(
                f"The manifest has no sha256 for bundled file {path} yet, so it cannot be verified. "
                "Run scripts/update_manifest.py after placing the weights."
            )
        problem = _cache_problem(path, f)
        if problem is None:
            actual = sha256_file(path)
            problem = None if actual == f.sha256 else f"expected sha256 {f.sha256}, got {actual}"
        if problem is not None:
            raise ValueError(
                f"Bundled file {path} failed verification: {problem}. "
                "The installed package is damaged or its manifest is stale: reinstall sr3infer, or in a source "
                "checkout run scripts/update_manifest.py."
            )
    return {f.name: folder / f.name for f in present}


def _cached_path(entry: ModelEntry, filename: str, revision: str, cache: Path) -> Path | None:
    """The file in the Hub cache (huggingface_hub's lookup, no network), or None."""
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        return Path(hf_hub_download(entry.repo_id, filename, revision=revision, cache_dir=cache,
                                    local_files_only=True))
    except LocalEntryNotFoundError:
        return None


def _cached_or_download(
    known: Manifest, entry: ModelEntry, f: FileEntry, revision: str, pinned: bool, cache: Path,
    token: str | bool | None, offline: bool,
) -> Path:
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import (
        LocalEntryNotFoundError, RemoteEntryNotFoundError, RepositoryNotFoundError, RevisionNotFoundError,
    )

    if pinned and f.pending:
        where = f" and its bundled copy ({known.bundled_dir(entry.name)}) is not in this installation" if entry.bundled else ""
        raise FileNotFoundError(
            f"Model {entry.name!r} has no released weights yet: the manifest lists no sha256 for {f.name}{where}. "
            "Pass a local model folder or .safetensors file instead (maintainers: put the files in "
            f"bundled/{entry.name}/ and run scripts/update_manifest.py)."
        )
    path = _cached_path(entry, f.name, revision, cache)
    downloaded = path is None
    if path is None:
        if not entry.published:
            where = f"its bundled copy ({known.bundled_dir(entry.name)}) is not in this installation, " if entry.bundled else ""
            raise FileNotFoundError(
                f"Model {entry.name!r} is not available: {where}{f.name} is not in the Hub cache {cache}, and its Hub "
                f"repo {entry.repo_id} is not published yet. Install an sr3infer release that bundles it, or pass a "
                "local model folder or .safetensors file."
            )
        if offline:
            raise LocalEntryNotFoundError(
                f"{f.name} of model {entry.name!r} ({entry.repo_id}, revision {revision!r}) is not in the Hub cache "
                f"{cache}, and downloads are off (HF_HUB_OFFLINE or local_files_only). Run `sr3infer download "
                f"{entry.name}` with network access and the same cache (HF_HOME / --cache-dir), then retry."
            )
        try:
            path = Path(hf_hub_download(entry.repo_id, f.name, revision=revision, cache_dir=cache, token=token,
                                        endpoint=hub_endpoint()))
        except RevisionNotFoundError as err:
            _prepend(err, f"Revision {revision!r} of {entry.repo_id} (model {entry.name!r}) does not exist on the Hub; "
                          f"the manifest pins {entry.revision!r}. Drop --revision or pass an existing branch, tag or commit.")
            raise
        except RemoteEntryNotFoundError as err:
            _prepend(err, f"{f.name} is not in {entry.repo_id} at revision {revision!r} (model {entry.name!r}).")
            raise
        except RepositoryNotFoundError as err:
            _prepend(err, f"Hub repo {entry.repo_id} (model {entry.name!r}) was not found, or it is private and no "
                          "valid token was given (token= / HF_TOKEN).")
            raise
        except OSError as err:  # HTTP, connection, size: nothing cached
            _prepend(err, f"Downloading {f.name} of model {entry.name!r} from {entry.repo_id}@{revision} failed and "
                          "nothing was cached; check the connection (HF_ENDPOINT, proxy) and run it again.")
            raise
    if not pinned:
        log.warning("%s of %s: revision %r is not the manifest's %r, so its sha256 is not checked.",
                    f.name, entry.name, revision, entry.revision)
        return path
    where = f"{f.name} of model {entry.name!r} from {entry.repo_id}@{revision}"
    problem = _cache_problem(path, f)
    if problem is None:
        actual = sha256_file(path)
        problem = None if actual == f.sha256 else f"expected sha256 {f.sha256}, got {actual}"
    if problem is None:
        return path
    if downloaded:
        _remove_from_cache(path, cache)
        raise ValueError(
            f"{where} failed verification: {problem}. The copy just downloaded was deleted; run `sr3infer download "
            f"{entry.name}` to fetch it again. If this repeats, the file on the Hub does not match this sr3infer "
            "version's manifest."
        )
    raise ValueError(
        f"{where} failed verification: {problem}. The file {path} was already in the Hub cache {cache}, so it was "
        f"left in place: another program may use {entry.repo_id}, and sr3infer deletes only what it downloaded "
        f"itself. If the file is yours, delete it and its blob {path.resolve()} (or use `hf cache delete`) and run "
        f"`sr3infer download {entry.name}`; otherwise check the manifest's repo_id."
    )


def _cache_problem(path: Path | None, f: FileEntry) -> str | None:
    """Why `path` cannot be `f`, found before hashing (missing, not a file, wrong size), or None."""
    if path is None:
        return "not in the Hub cache"
    try:
        info = path.stat()  # follows the snapshot link to its blob
    except OSError as err:
        return f"it cannot be read ({err.strerror})"
    if not stat.S_ISREG(info.st_mode):
        return f"it is not a regular file (it resolves to {path.resolve()})"
    if f.size is not None and info.st_size != f.size:
        return f"expected {f.size} bytes, found {info.st_size}"
    return None


def _remove_from_cache(pointer: Path, cache: Path) -> None:
    """Delete a cached file's snapshot link and its blob (only inside `cache`)."""
    blob = pointer.resolve() if pointer.is_symlink() else None
    pointer.unlink(missing_ok=True)
    if blob is not None and Path(cache).expanduser().resolve() in blob.parents:
        blob.unlink(missing_ok=True)


def _prepend(err: BaseException, message: str) -> None:
    """Put a clear first line on a huggingface_hub error, keeping its type."""
    if err.args and isinstance(err.args[0], str):
        err.args = (f"{message}\n{err.args[0]}", *err.args[1:])
    else:
        err.args = (message, *err.args)


# Publishing a model folder.

PUBLISHED_FILES = (CONFIG_NAME, WEIGHTS_NAME, CARD_NAME)


def plan_publish(
    folder: str | Path, repo_id: str, *, name: str | None = None, revision: str = "main"
) -> tuple[list[FileEntry], ModelEntry]:
    """What `publish_model` would upload from `folder` (config.json, model.safetensors, README.md)
    and the manifest entry it would produce, from the config's `task`; FileNotFoundError for a
    folder that is not a model's, ValueError for a bad repo id or configs that disagree."""
    from ..models.weights import embedded_config, read_config

    folder = Path(folder)
    if not REPO_ID_PATTERN.fullmatch(repo_id) or ".." in repo_id:
        raise ValueError(f"--repo-id must look like 'owner/name', got {repo_id!r}.")
    if not folder.is_dir():
        raise FileNotFoundError(f"Model folder {str(folder)!r} does not exist.")
    missing = [f for f in REQUIRED_FILES if not (folder / f).is_file()]
    if missing:
        raise FileNotFoundError(f"Model folder {str(folder)!r} has no {', '.join(missing)}; expected {', '.join(REQUIRED_FILES)}.")
    config = read_config(folder / WEIGHTS_NAME, folder / CONFIG_NAME)
    embedded = embedded_config(folder / WEIGHTS_NAME)  # older files only
    if embedded is not None and embedded != config:
        raise ValueError(
            f"{folder / CONFIG_NAME} differs from the config in {WEIGHTS_NAME}'s metadata; "
            "re-save the folder with Upscaler.save_pretrained so both come from one config."
        )
    files = [file_entry(folder / f) for f in PUBLISHED_FILES if (folder / f).is_file()]
    task = config.task
    metrics = task.get("metrics") if isinstance(task.get("metrics"), dict) else {}
    domain = str(task.get("domain") or "unspecified")
    data = {
        "description": str(task.get("description") or
                           f"SR3 x{config.scale} super-resolution, {config.lowres_size}->{config.out_size}, {domain}."),
        "repo_id": repo_id,
        "revision": revision,
        "published": True,
        "bundled": False,
        "license": str(task.get("license") or "see the model card"),
        "task": {"scale": config.scale, "input_size": config.lowres_size, "output_size": config.out_size,
                 "domain": domain},
        "files": {f.name: {"sha256": f.sha256, "size": f.size} for f in files},
        "metrics": metrics,
    }
    model_name = name or repo_id.split("/")[-1].lower()
    entry = parse_manifest({"format_version": 1, "models": {model_name: data}}).models[model_name]
    return files, entry


def publish_model(
    folder: str | Path,
    repo_id: str,
    *,
    name: str | None = None,
    revision: str | None = None,
    token: str | bool | None = None,
    private: bool = False,
) -> ModelEntry:
    """Upload a model folder to the Hub (`$HF_ENDPOINT`); its manifest entry's `revision` is the
    upload's commit, pinning exactly the uploaded files."""
    from dataclasses import replace

    from huggingface_hub import HfApi

    files, entry = plan_publish(folder, repo_id, name=name, revision=revision or "main")
    api = HfApi(endpoint=hub_endpoint(), token=token)
    api.create_repo(repo_id, private=private, exist_ok=True)
    commit = api.upload_folder(
        folder_path=str(folder), repo_id=repo_id, revision=revision,
        allow_patterns=[f.name for f in files], commit_message=f"Upload {entry.name} with sr3infer",
    )
    return replace(entry, revision=commit.oid)
