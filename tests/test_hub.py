"""Model names -> files through the real `hf_hub_download`, against a local HTTP server that speaks the Hub's file API."""

from __future__ import annotations

import base64
import hashlib
import json
import re
import shutil
import socket
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import torch
from huggingface_hub import constants
from huggingface_hub.errors import LocalEntryNotFoundError, RepositoryNotFoundError, RevisionNotFoundError

from sr3infer.cli import main
from sr3infer.hub.fetch import list_models, resolve_model_files
from sr3infer.hub.manifest import PACKAGED_MANIFEST
from sr3infer.upscaler import Upscaler

REPO_ID = "sr3infer/tiny"
COMMIT = hashlib.sha1(b"tiny main").hexdigest()
CARD = b"# tiny\n\nA random test model.\n"


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class FakeHub:
    """The Hub's file endpoints: HEAD/GET /{repo_id}/resolve/{revision}/{filename}, one commit per repo.

    Answers like huggingface.co for what `hf_hub_download` reads: X-Repo-Commit, ETag (the
    sha256, as for LFS files), Content-Length, Range requests (206), and 401/404 with
    X-Error-Code RepoNotFound / RevisionNotFound / EntryNotFound. For `HfApi.create_repo` and
    `upload_folder` it also takes POST /api/repos/create, /api/validate-yaml and the preupload and
    commit endpoints (every file "regular", sent inline in the commit); a commit replaces the files.
    """

    def __init__(self) -> None:
        self.repos: dict[str, dict[str, bytes]] = {}
        self.override: dict[str, bytes] = {}     # filename -> bytes served instead (a corrupted upload)
        self.drop: dict[str, int] = {}           # filename -> bytes sent before the connection drops (once)
        self.broken: set[str] = set()            # filenames answered with 500 (a dropped file stays broken)
        self.requests: list[tuple[str, str, str | None]] = []   # (method, path, Authorization)
        self.commits: dict[str, str] = {}        # repo -> its one commit (default COMMIT)
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self._server.daemon_threads = True
        self._server.hub = self  # type: ignore[attr-defined]
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def record(self, method: str, path: str, auth: str | None) -> None:
        with self._lock:
            self.requests.append((method, path, auth))


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, format, *args):  # noqa: A002 - keep test output quiet
        pass

    def do_HEAD(self) -> None:
        self._serve(head=True)

    def do_GET(self) -> None:
        self._serve(head=False)

    def _json(self, data: dict) -> None:
        body = json.dumps(data).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self) -> None:
        hub: FakeHub = self.server.hub  # type: ignore[attr-defined]
        hub.record(self.command, self.path, self.headers.get("Authorization"))
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        path = urllib.parse.urlsplit(self.path).path
        if path == "/api/repos/create":
            request = json.loads(body)
            repo = f"{request['organization']}/{request['name']}" if request.get("organization") else request["name"]
            hub.repos.setdefault(repo, {})
            return self._json({"url": f"{hub.url}/{repo}"})
        if path == "/api/validate-yaml":
            return self._json({"errors": [], "warnings": []})
        match = re.fullmatch(r"/api/models/([^/]+/[^/]+)/(preupload|commit)/main", path)
        if match is None or match.group(1) not in hub.repos:
            return self._error(404, "RepoNotFound")
        repo, action = match.groups()
        if action == "preupload":
            files = json.loads(body)["files"]
            return self._json({"files": [{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False}
                                         for f in files]})
        lines = [json.loads(line) for line in body.splitlines() if line.strip()]
        files = {item["value"]["path"]: base64.b64decode(item["value"]["content"])
                 for item in lines if item["key"] == "file"}
        hub.repos[repo] = {**hub.repos[repo], **files}
        hub.commits[repo] = hashlib.sha1(json.dumps(sorted((k, sha256(v)) for k, v in files.items())).encode()).hexdigest()
        return self._json({"commitUrl": f"{hub.url}/{repo}/commit/{hub.commits[repo]}",
                           "commitOid": hub.commits[repo]})

    def _error(self, status: int, code: str | None, commit: str | None = None) -> None:
        self.send_response(status)
        if code:
            self.send_header("X-Error-Code", code)
        if commit:
            self.send_header("X-Repo-Commit", commit)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def _serve(self, head: bool) -> None:
        hub: FakeHub = self.server.hub  # type: ignore[attr-defined]
        hub.record(self.command, self.path, self.headers.get("Authorization"))
        match = re.fullmatch(r"/([^/]+/[^/]+)/resolve/([^/]+)/(.+)", urllib.parse.unquote(self.path))
        if match is None or match.group(1) not in hub.repos:
            return self._error(401, "RepoNotFound")
        repo, revision, filename = match.groups()
        commit = hub.commits.get(repo, COMMIT)
        if revision not in ("main", commit):
            return self._error(404, "RevisionNotFound")
        if filename not in hub.repos[repo]:
            return self._error(404, "EntryNotFound", commit)
        data = hub.override.get(filename, hub.repos[repo][filename])
        if filename in hub.broken and not head:
            return self._error(500, None)
        requested = self.headers.get("Range")
        start = int(re.fullmatch(r"bytes=(\d+)-", requested).group(1)) if requested and not head else 0
        self.send_response(206 if start else 200)
        self.send_header("X-Repo-Commit", commit)
        self.send_header("ETag", f'"{sha256(data)}"')
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(len(data) - start))
        if start:
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        self.end_headers()
        if head:
            return
        if filename in hub.drop and not start:
            hub.broken.add(filename)
            self.wfile.write(data[: hub.drop.pop(filename)])
            self.wfile.flush()
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)
            return
        self.wfile.write(data[start:])


def write_manifest(folder: Path, files: dict[str, bytes], *, repo_id: str = REPO_ID, published: bool = True,
                   bundled: bool = False) -> Path:
    entry = {
        "description": "tiny random test model", "repo_id": repo_id, "revision": "main",
        "published": published, "bundled": bundled, "license": "Apache-2.0",
        "task": {"scale": 2, "input_size": 8, "output_size": 16, "domain": "noise"},
        "files": {name: {"sha256": sha256(data), "size": len(data)} for name, data in files.items()},
        "metrics": {},
    }
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "weights_manifest.json"
    path.write_text(json.dumps({"format_version": 1, "models": {"tiny": entry}}), encoding="utf-8")
    return path


@pytest.fixture(autouse=True)
def hub_env(tmp_path, monkeypatch):
    """A private Hub cache, no token, online, the packaged manifest: nothing leaks in from the machine.

    sr3infer reads the cache and offline settings from `huggingface_hub.constants` (set from the environment
    when huggingface_hub is imported), so the tests set those.
    """
    for var in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_HUB_OFFLINE",
                "HF_ENDPOINT", "SR3INFER_MANIFEST"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf_home"))
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf_home" / "hub"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(tmp_path / "hf_home" / "token"))
    return tmp_path / "hf_home" / "hub"


@pytest.fixture
def hub():
    server = FakeHub()
    yield server
    server.close()


@pytest.fixture
def tiny_files(tiny_model_dir) -> dict[str, bytes]:
    files = {p.name: p.read_bytes() for p in sorted(tiny_model_dir.iterdir())}
    assert set(files) == {"config.json", "model.safetensors"}
    return {**files, "README.md": CARD}


@pytest.fixture
def tiny_repo(hub, tiny_files, tmp_path, monkeypatch) -> dict[str, bytes]:
    """`tiny` published on the fake Hub, a manifest naming it in $SR3INFER_MANIFEST, $HF_ENDPOINT at the server."""
    hub.repos[REPO_ID] = dict(tiny_files)
    monkeypatch.setenv("SR3INFER_MANIFEST", str(write_manifest(tmp_path / "manifest", tiny_files)))
    monkeypatch.setenv("HF_ENDPOINT", hub.url)
    return tiny_files


def snapshot(cache: Path, filename: str) -> Path:
    return cache / "models--sr3infer--tiny" / "snapshots" / COMMIT / filename


def cached_contents(cache: Path) -> list[bytes]:
    return [p.read_bytes() for p in cache.rglob("*") if p.is_file() and not p.is_symlink()]


def test_first_call_fills_the_cache_second_call_makes_no_request(hub, tiny_repo, hub_env, tiny_upscaler):
    config, weights = resolve_model_files("tiny")
    assert (config, weights) == (snapshot(hub_env, "config.json"), snapshot(hub_env, "model.safetensors"))
    assert weights.read_bytes() == tiny_repo["model.safetensors"]
    assert weights.is_symlink() and weights.resolve().parent == hub_env / "models--sr3infer--tiny" / "blobs"
    paths = sorted((method, path) for method, path, _ in hub.requests)
    assert paths == [(m, f"/{REPO_ID}/resolve/main/{f}") for m in ("GET", "HEAD") for f in ("config.json", "model.safetensors")]

    count = len(hub.requests)
    upscaler = Upscaler.from_pretrained("tiny", device="cpu")
    assert len(hub.requests) == count
    expected = tiny_upscaler.model.state_dict()
    assert all(torch.equal(v, expected[k]) for k, v in upscaler.model.state_dict().items())


def test_offline_uses_the_cache(hub, tiny_repo, monkeypatch):
    _, weights = resolve_model_files("tiny")
    count = len(hub.requests)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)  # as when HF_HUB_OFFLINE=1 was set before the import
    assert resolve_model_files("tiny")[1] == weights
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    assert resolve_model_files("tiny", local_files_only=True)[1] == weights
    assert len(hub.requests) == count


@pytest.mark.parametrize("how", ["constants", "argument"])
def test_offline_without_cache_fails_clearly(hub, tiny_repo, monkeypatch, capsys, how):
    if how == "constants":
        monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(LocalEntryNotFoundError, match=r"config\.json of model 'tiny'.*`sr3infer download tiny`"):
        resolve_model_files("tiny", local_files_only=how == "argument" or None)
    assert hub.requests == []
    if how != "argument":
        assert main(["download", "tiny"]) == 1
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "config.json of model 'tiny'" in err[0] and "downloads are off" in err[0]
        assert hub.requests == []


def test_corrupted_file_on_the_server_fails_and_leaves_no_poisoned_cache(hub, tiny_repo, hub_env):
    good = tiny_repo["model.safetensors"]
    bad = bytearray(good)
    bad[-1] ^= 0xFF
    hub.override["model.safetensors"] = bytes(bad)
    with pytest.raises(ValueError) as info:
        resolve_model_files("tiny")
    message = str(info.value)
    assert "model.safetensors" in message and sha256(good) in message and sha256(bytes(bad)) in message
    link = snapshot(hub_env, "model.safetensors")
    assert not link.exists() and not link.is_symlink()
    assert bytes(bad) not in cached_contents(hub_env)
    with pytest.raises(LocalEntryNotFoundError, match="model.safetensors"):
        resolve_model_files("tiny", local_files_only=True)

    hub.override.clear()
    _, weights = resolve_model_files("tiny")
    assert weights.read_bytes() == good


def test_a_cached_file_that_changed_on_disk_is_reported_and_left_in_place(hub, tiny_repo):
    _, weights = resolve_model_files("tiny")
    blob = weights.resolve()
    changed = blob.read_bytes()[:-1] + b"\0"
    blob.write_bytes(changed)
    with pytest.raises(ValueError, match=r"model\.safetensors of model 'tiny'.*expected sha256 [0-9a-f]{64}, got .*"
                                         r"already in the Hub cache .* left in place"):
        resolve_model_files("tiny")
    assert blob.read_bytes() == changed and weights.is_symlink()  # sr3infer did not download it in this call
    weights.unlink()  # what the message tells its owner to do: the link and its blob
    blob.unlink()
    count = len(hub.requests)
    assert resolve_model_files("tiny")[1].read_bytes() == tiny_repo["model.safetensors"]
    assert len(hub.requests) == count + 2  # HEAD + GET of the weights only


def test_another_projects_cached_file_is_never_deleted(hub, tiny_files, hub_env, tmp_path, monkeypatch):
    """a manifest whose repo_id names another project's cached repo, with a wrong sha256."""
    from huggingface_hub import hf_hub_download

    monkeypatch.setenv("HF_ENDPOINT", hub.url)
    hub.repos["other/project"] = dict(tiny_files)
    theirs = Path(hf_hub_download("other/project", "model.safetensors", endpoint=hub.url))  # the other program's copy
    wrong = {**tiny_files, "model.safetensors": tiny_files["model.safetensors"] + b"x"}
    manifest = write_manifest(tmp_path / "custom", wrong, repo_id="other/project")
    wrong_size = json.loads(manifest.read_text())
    wrong_size["models"]["tiny"]["files"]["model.safetensors"]["size"] = len(tiny_files["model.safetensors"])
    manifest.write_text(json.dumps(wrong_size))
    with pytest.raises(ValueError, match=r"left in place: another program may use other/project, and sr3infer "
                                         r"deletes only what it downloaded itself"):
        resolve_model_files("tiny", manifest=manifest)
    assert theirs.read_bytes() == tiny_files["model.safetensors"] and theirs.resolve().is_file()


def test_a_cached_file_linked_to_a_device_is_refused_before_hashing(hub, tiny_repo, hub_env, monkeypatch, capsys):
    """a snapshot link to /dev/zero would be hashed for ever; `sr3infer models` called it cached."""
    from sr3infer.hub import fetch as hub_module

    _, weights = resolve_model_files("tiny")
    weights.unlink()
    weights.symlink_to("/dev/zero")
    real = hub_module.sha256_file
    monkeypatch.setattr(hub_module, "sha256_file",
                        lambda path: pytest.fail(f"hashed {path}") if Path(path).name == weights.name else real(path))
    with pytest.raises(ValueError, match=r"model\.safetensors of model 'tiny'.*not a regular file .*/dev/zero"):
        resolve_model_files("tiny")
    assert Path(weights).is_symlink()  # not ours to delete: it was in the cache before this call
    assert [m.cached for m in list_models()] == [False]
    assert main(["models"]) == 0
    assert re.search(r"tiny\s+x2\s+8->16\s+noise\s+no\s", capsys.readouterr().out)


def test_a_cached_file_of_the_wrong_size_is_refused_before_hashing(hub, tiny_repo, monkeypatch):
    from sr3infer.hub import fetch as hub_module

    _, weights = resolve_model_files("tiny")
    blob = weights.resolve()
    blob.write_bytes(blob.read_bytes() + b"extra")
    real = hub_module.sha256_file
    monkeypatch.setattr(hub_module, "sha256_file",
                        lambda path: pytest.fail(f"hashed {path}") if Path(path).name == weights.name else real(path))
    size = len(tiny_repo["model.safetensors"])
    with pytest.raises(ValueError, match=rf"expected {size} bytes, found {size + 5}"):
        resolve_model_files("tiny")
    assert [m.cached for m in list_models()] == [False]


def test_unknown_revision_gives_a_clear_error(hub, tiny_repo, hub_env, capsys):
    with pytest.raises(RevisionNotFoundError, match=r"^Revision 'nope' of sr3infer/tiny"):
        resolve_model_files("tiny", revision="nope")
    assert not (hub_env / "models--sr3infer--tiny" / "refs" / "nope").exists()
    assert main(["download", "tiny", "--revision", "nope"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "Revision 'nope' of sr3infer/tiny" in err[0] and "pins 'main'" in err[0]


def test_unknown_repo_and_unknown_name(hub, tiny_files, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_ENDPOINT", hub.url)
    manifest = write_manifest(tmp_path / "m", tiny_files, repo_id="someone/missing")
    with pytest.raises(RepositoryNotFoundError, match=r"^Hub repo someone/missing \(model 'tiny'\) was not found"):
        resolve_model_files("tiny", manifest=manifest)
    with pytest.raises(ValueError, match=r"Unknown model 'tinny'.*Known names: tiny"):
        resolve_model_files("tinny", manifest=manifest)


def test_interrupted_download_leaves_nothing_that_looks_complete(hub, tiny_repo, hub_env):
    hub.drop["model.safetensors"] = 1000  # headers, 1000 of 180k bytes, then the connection drops;
    with pytest.raises(OSError, match=r"^Downloading model\.safetensors of model 'tiny'.*failed"):
        resolve_model_files("tiny")       # and the client's retry gets a 500
    assert [m for m, p, _ in hub.requests if p.endswith("model.safetensors")] == ["HEAD", "GET", "GET"]
    link = snapshot(hub_env, "model.safetensors")
    assert not link.exists() and not link.is_symlink()
    assert not list(hub_env.rglob("*.incomplete"))
    assert tiny_repo["model.safetensors"][:1000] not in [c[:1000] for c in cached_contents(hub_env)]
    with pytest.raises(LocalEntryNotFoundError, match="model.safetensors"):
        resolve_model_files("tiny", local_files_only=True)

    hub.broken.clear()
    _, weights = resolve_model_files("tiny")
    assert weights.read_bytes() == tiny_repo["model.safetensors"]
    assert [m for m, p, _ in hub.requests if p.endswith("model.safetensors")][3:] == ["HEAD", "GET"]


def test_token_argument_and_hf_token_are_sent(hub, tiny_repo, tmp_path, monkeypatch):
    resolve_model_files("tiny", token="hf_argument")
    assert hub.requests and {auth for _, _, auth in hub.requests} == {"Bearer hf_argument"}
    hub.requests.clear()
    monkeypatch.setenv("HF_TOKEN", "hf_environment")
    config, _ = resolve_model_files("tiny", cache_dir=tmp_path / "elsewhere")
    assert hub.requests and {auth for _, _, auth in hub.requests} == {"Bearer hf_environment"}
    assert (tmp_path / "elsewhere").resolve() in config.resolve().parents


def test_other_revisions_load_but_are_not_checked_against_the_manifest(hub, tiny_repo, caplog):
    hub.override["config.json"] = tiny_repo["config.json"] + b"\n"
    with caplog.at_level("WARNING", logger="sr3infer.hub.fetch"):
        config, _ = resolve_model_files("tiny", revision=COMMIT)
    assert config.read_bytes().endswith(b"\n\n")
    assert "is not the manifest's 'main'" in caplog.text


@pytest.fixture
def bundled_tiny(hub, tiny_files, tmp_path, monkeypatch) -> tuple[Path, Path]:
    """(manifest, folder): `tiny` bundled in a package beside the manifest, not published; $HF_ENDPOINT at the server."""
    monkeypatch.setenv("HF_ENDPOINT", hub.url)
    manifest = write_manifest(tmp_path / "pkg", tiny_files, published=False, bundled=True)
    bundled = tmp_path / "pkg" / "bundled" / "tiny"
    bundled.mkdir(parents=True)
    for name, data in tiny_files.items():
        (bundled / name).write_bytes(data)
    return manifest, bundled


def test_bundled_copy_is_used_first_and_verified(hub, tiny_files, bundled_tiny, monkeypatch):
    manifest, bundled = bundled_tiny
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    assert resolve_model_files("tiny", manifest=manifest) == (bundled / "config.json", bundled / "model.safetensors")
    assert [m.source for m in list_models(manifest=manifest)] == ["bundled"]

    data = bytearray(tiny_files["model.safetensors"])
    data[-1] ^= 1
    (bundled / "model.safetensors").write_bytes(bytes(data))
    with pytest.raises(ValueError, match=rf"Bundled file .*model\.safetensors failed verification: expected sha256 "
                                         rf"{sha256(tiny_files['model.safetensors'])}, got {sha256(bytes(data))}"):
        resolve_model_files("tiny", manifest=manifest)
    assert (bundled / "model.safetensors").exists()  # package files are reported, never deleted
    (bundled / "model.safetensors").unlink()
    (bundled / "model.safetensors").symlink_to("/dev/zero")  # refused by its type, not hashed for ever
    with pytest.raises(ValueError, match=r"Bundled file .*model\.safetensors failed verification: it is not a regular "
                                         r"file \(it resolves to /dev/zero\)"):
        resolve_model_files("tiny", manifest=manifest)
    (bundled / "model.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="bundled copy of 'tiny'.*incomplete: missing model.safetensors"):
        resolve_model_files("tiny", manifest=manifest)
    assert hub.requests == []


def test_download_model_finds_the_bundled_copy_of_an_unpublished_model(hub, tiny_files, bundled_tiny, tmp_path):
    """`download_model(name, cache_dir=...)` as the README shows it, like `sr3infer download`."""
    from sr3infer.hub.fetch import download_model

    manifest, bundled = bundled_tiny
    paths = download_model("tiny", cache_dir=tmp_path / "cache", manifest=manifest)
    assert paths == {name: bundled / name for name in tiny_files}
    assert hub.requests == [] and not (tmp_path / "cache").exists()


def test_packaged_names_without_weights_fail_clearly(tmp_path):
    manifest = tmp_path / "pkg" / "weights_manifest.json"  # no bundled/ beside it: the weights have not landed
    manifest.parent.mkdir()
    shutil.copy(PACKAGED_MANIFEST, manifest)
    for name in ("sr3-face-8x", "sr3-64-256"):
        with pytest.raises(FileNotFoundError, match=rf"Model '{name}' has no released weights yet|Model '{name}' is not available"):
            resolve_model_files(name, manifest=manifest)


def test_cli_download_then_models(hub, tiny_repo, hub_env, capsys):
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    assert re.search(rf"tiny\s+x2\s+8->16\s+noise\s+no\s+download \({re.escape(hub.url)}/sr3infer/tiny@main\)", out)
    assert main(["download", "tiny"]) == 0
    printed = capsys.readouterr().out.split()
    assert printed == [str(snapshot(hub_env, f)) for f in ("config.json", "model.safetensors", "README.md")]
    assert main(["models"]) == 0
    assert re.search(r"tiny\s+x2\s+8->16\s+noise\s+yes\s+cache", capsys.readouterr().out)
    count = len(hub.requests)
    assert main(["download", "tiny", "--cache-dir", str(hub_env)]) == 0  # already cached: no request
    assert len(hub.requests) == count


def test_local_paths_need_no_manifest(tiny_model_dir, monkeypatch):
    monkeypatch.setenv("SR3INFER_MANIFEST", "/nonexistent/manifest.json")
    assert resolve_model_files(tiny_model_dir) == (tiny_model_dir / "config.json", tiny_model_dir / "model.safetensors")
    assert resolve_model_files(tiny_model_dir / "model.safetensors") == (None, tiny_model_dir / "model.safetensors")


def test_publish_uploads_and_the_printed_entry_downloads_what_was_sent(hub, tiny_model_dir, tmp_path, monkeypatch,
                                                                       capsys):
    monkeypatch.setenv("HF_ENDPOINT", hub.url)
    (tiny_model_dir / "README.md").write_bytes(CARD)
    (tiny_model_dir / "scratch.txt").write_text("stays local")
    assert main(["publish", str(tiny_model_dir), "--repo-id", "someone/tiny", "--token", "hf_write"]) == 0
    entry = json.loads(capsys.readouterr().out)
    assert set(hub.repos["someone/tiny"]) == {"config.json", "model.safetensors", "README.md"}
    assert entry["tiny"]["revision"] == hub.commits["someone/tiny"]
    assert {auth for _, _, auth in hub.requests} == {"Bearer hf_write"}

    manifest = tmp_path / "published" / "weights_manifest.json"
    manifest.parent.mkdir()
    manifest.write_text(json.dumps({"format_version": 1, "models": entry}))
    config, weights = resolve_model_files("tiny", manifest=manifest)
    assert weights.read_bytes() == (tiny_model_dir / "model.safetensors").read_bytes()
    assert weights.parent.name == hub.commits["someone/tiny"]
