"""`weights_manifest.json`: the shipped copies, the typed loader's errors, scripts/update_manifest.py, publish --dry-run."""

from __future__ import annotations

import copy
import hashlib
import importlib.util
import json
import re
import shutil

import pytest

from sr3infer.cli import main
from sr3infer.hub.manifest import (
    MANIFEST_ENV, PACKAGED_MANIFEST, dump_manifest, load_manifest, manifest_to_dict, parse_manifest,
)

from conftest import REPO

GOOD_SHA = "0123456789abcdef" * 4


def valid() -> dict:
    return {
        "format_version": 1,
        "models": {
            "m": {
                "description": "d", "repo_id": "owner/m", "revision": "main", "license": "Apache-2.0",
                "task": {"scale": 4, "input_size": 64, "output_size": 256, "domain": "natural photos"},
                "files": {"config.json": {"sha256": GOOD_SHA, "size": 10},
                          "model.safetensors": {"sha256": GOOD_SHA, "size": 20}},
            }
        },
    }


def test_packaged_manifest_names_both_models():
    manifest = load_manifest()
    face, natural = manifest.get("sr3-face-8x"), manifest.get("sr3-64-256")
    assert (face.task.scale, face.task.input_size, face.task.output_size, face.task.domain) == (8, 16, 128, "faces")
    assert (natural.task.scale, natural.task.input_size, natural.task.output_size) == (4, 64, 256)
    assert face.repo_id == "sr3infer/sr3-face-8x" and natural.repo_id == "sr3infer/sr3-64-256"
    assert face.bundled and natural.bundled
    assert manifest.bundled_dir("sr3-face-8x") == PACKAGED_MANIFEST.parent / "bundled" / "sr3-face-8x"


def test_root_copy_is_identical_to_the_packaged_one():
    assert (REPO / "weights_manifest.json").read_bytes() == PACKAGED_MANIFEST.read_bytes()


def test_packaged_manifest_is_in_canonical_form():
    """What scripts/update_manifest.py writes, so running it changes only hashes and sizes."""
    assert PACKAGED_MANIFEST.read_text(encoding="utf-8") == dump_manifest(load_manifest(PACKAGED_MANIFEST))


def test_round_trip():
    data = valid()
    data["models"]["m"].update(published=True, bundled=False, metrics={"psnr_db": 24.1, "eval_set": "val"})
    assert manifest_to_dict(parse_manifest(copy.deepcopy(data))) == data


def _set(path: str, value):
    def change(data: dict) -> None:
        *keys, last = path.split(".")
        target = data
        for key in keys:
            target = target[key]
        if value is KeyError:
            del target[last]
        else:
            target[last] = value
    return change


def _rename_file(new: str):
    def change(data: dict) -> None:
        files = data["models"]["m"]["files"]
        files[new] = files.pop("model.safetensors")
    return change


@pytest.mark.parametrize("change, message", [
    (_set("models.m.repo_id", KeyError), r"models\['m'\] is missing required field\(s\) \['repo_id'\]"),
    (_set("models.m.task.domain", KeyError), r"task is missing required field\(s\) \['domain'\]"),
    (_set("models.m.weights_url", "http://x"), r"unknown field\(s\) \['weights_url'\]"),
    (_set("extra", 1), r"manifest has unknown field\(s\) \['extra'\]"),
    (_set("models.m.files", {"config.json": "abc", "model.safetensors": {"sha256": GOOD_SHA, "size": 1}}),
     r"files\['config\.json'\] must be a JSON object, got str"),
    (_set("models.m.files", {"config.json": {"sha256": "abc", "size": 1},
                             "model.safetensors": {"sha256": GOOD_SHA, "size": 1}}), r"sha256 must be 64 lowercase hex"),
    (_set("models.m.files", {"config.json": {"sha256": GOOD_SHA.upper(), "size": 1},
                             "model.safetensors": {"sha256": GOOD_SHA, "size": 1}}), r"sha256 must be 64 lowercase hex"),
    (_set("models.m.files", {"config.json": {"sha256": GOOD_SHA, "size": -1},
                             "model.safetensors": {"sha256": GOOD_SHA, "size": 1}}), r"size must be a non-negative"),
    (_set("models.m.files", {"config.json": {"sha256": GOOD_SHA, "size": 1}}), r"missing model\.safetensors"),
    (_rename_file("../model.safetensors"), r"plain names .*'\.\./model\.safetensors'"),
    (_rename_file("sub/model.safetensors"), r"plain names .*'sub/model\.safetensors'"),
    (_rename_file("sub\\model.safetensors"), r"plain names"),
    (_rename_file(".."), r"plain names"),
    (_set("models.m.task.output_size", 128), r"output_size \(128\) must be input_size \(64\) x scale \(4\) = 256"),
    (_set("models.m.task.scale", "4"), r"task\.scale must be a positive integer"),
    (_set("models.m.repo_id", "no-owner"), r"repo_id must look like 'owner/name'"),
    (_set("models.m.published", "yes"), r"published must be true or false"),
    (_set("models.m.metrics", {"psnr": [1, 2]}), r"metrics\['psnr'\] must be a number"),
    (_set("format_version", 2), r"format_version must be 1, got 2"),
    (_set("models", {"Bad Name": {}}), r"model name 'Bad Name'"),
    (_set("models.m.auto_pick", "always"), r"auto_pick must be one of 'size', 'any', 'never', got 'always'"),
    (_set("models.m", {**valid()["models"]["m"], "auto_pick": "any", "student_of": "n"}), r"a student .* leave out auto_pick"),
])
def test_malformed_manifests_are_rejected_with_the_field_named(change, message):
    data = valid()
    change(data)
    with pytest.raises(ValueError, match=message):
        parse_manifest(data)


def test_pending_files_are_allowed_only_as_a_pair():
    data = valid()
    data["models"]["m"]["files"]["config.json"] = {"sha256": None, "size": None}
    assert parse_manifest(data).models["m"].file("config.json").pending
    data["models"]["m"]["files"]["config.json"] = {"sha256": None, "size": 3}
    with pytest.raises(ValueError, match="or null with size null"):
        parse_manifest(data)


def test_manifest_path_from_the_environment(tmp_path, monkeypatch):
    path = tmp_path / "weights_manifest.json"
    path.write_text(json.dumps(valid()))
    monkeypatch.setenv(MANIFEST_ENV, str(path))
    manifest = load_manifest()
    assert list(manifest.models) == ["m"] and manifest.bundled_root == tmp_path / "bundled"
    path.write_text("{not json")
    with pytest.raises(ValueError, match="is not valid JSON"):
        load_manifest()
    monkeypatch.setenv(MANIFEST_ENV, str(tmp_path / "missing.json"))
    with pytest.raises(FileNotFoundError, match=r"missing\.json' does not exist \(set by \$SR3INFER_MANIFEST\)"):
        load_manifest()


def test_a_deeply_nested_manifest_is_refused_in_one_line_naming_the_file(tmp_path, monkeypatch, capsys):
    path = tmp_path / "weights_manifest.json"
    path.write_text("[" * 100_000 + "]" * 100_000)
    monkeypatch.setenv(MANIFEST_ENV, str(path))
    with pytest.raises(ValueError, match=rf"Weights manifest '{re.escape(str(path))}' is nested too deeply to read "
                                         r".*\(set by \$SR3INFER_MANIFEST\); expected a small JSON object"):
        load_manifest()
    assert main(["models"]) == 1
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "nested too deeply" in err and "recursion depth" not in err


@pytest.mark.parametrize("kind", ["device", "binary", "directory", "huge"])
def test_a_manifest_that_is_not_a_small_text_file_is_refused_by_name(tmp_path, monkeypatch, kind):
    """/dev/zero was read without bound; a binary file or a folder gave a raw codec/Errno message."""
    from sr3infer.hub import manifest as manifest_module

    path = {"device": "/dev/zero", "binary": tmp_path / "m.bin", "directory": tmp_path, "huge": tmp_path / "m.json"}[kind]
    (tmp_path / "m.bin").write_bytes(b"\x89PNG\r\n\x1a\n\xff\xfe" * 10)
    (tmp_path / "m.json").write_text(json.dumps(valid()) + " " * 2048)
    monkeypatch.setattr(manifest_module, "MAX_MANIFEST_BYTES", 1024)
    monkeypatch.setenv(MANIFEST_ENV, str(path))
    expected = {"device": "is not a regular file", "binary": "is not UTF-8 text", "directory": "is a directory",
                "huge": "is larger than"}[kind]
    with pytest.raises(ValueError, match=rf"Weights manifest '{re.escape(str(path))}' {expected}.*\(set by "
                                         r"\$SR3INFER_MANIFEST\)") as info:
        load_manifest()
    assert "Errno" not in str(info.value) and "codec" not in str(info.value)


def _update_script():
    spec = importlib.util.spec_from_file_location("update_manifest", REPO / "scripts" / "update_manifest.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_update_manifest_script_fills_hashes_and_syncs_both_copies(tmp_path, tiny_model_dir, capsys):
    canonical, root = tmp_path / "pkg" / "weights_manifest.json", tmp_path / "weights_manifest.json"
    canonical.parent.mkdir()
    data = json.loads(PACKAGED_MANIFEST.read_text())
    for entry in data["models"]["sr3-64-256"]["files"].values():  # an unpublished entry
        entry.update(sha256=None, size=None)
    canonical.write_text(json.dumps(data, indent=2) + "\n")
    bundled = tmp_path / "pkg" / "bundled" / "sr3-face-8x"
    shutil.copytree(tiny_model_dir, bundled)
    (bundled / "README.md").write_text("# card\n")
    script = _update_script()
    args = ["--manifest", str(canonical), "--root-copy", str(root)]
    assert script.main(args + ["--check"]) == 1
    assert script.main(args) == 0
    assert root.read_bytes() == canonical.read_bytes()
    entry = load_manifest(canonical).get("sr3-face-8x")
    for name in ("config.json", "model.safetensors", "README.md"):
        data = (bundled / name).read_bytes()
        assert entry.file(name).sha256 == hashlib.sha256(data).hexdigest() and entry.file(name).size == len(data)
    assert (entry.task.scale, entry.task.input_size, entry.task.output_size) == (2, 8, 16)  # from config.json
    assert entry.task.domain == "faces" and entry.license.startswith("CelebA")  # hand-written fields kept
    assert load_manifest(canonical).get("sr3-64-256").file("model.safetensors").pending  # no folder yet
    assert script.main(args + ["--check"]) == 0
    (bundled / "README.md").write_text("# changed card\n")
    assert script.main(args + ["--check"]) == 1


def test_publish_dry_run_lists_files_and_prints_a_valid_manifest_entry(tiny_model_dir, capsys):
    (tiny_model_dir / "notes.txt").write_text("not uploaded")
    assert main(["publish", str(tiny_model_dir), "--repo-id", "someone/Tiny-SR", "--dry-run"]) == 0
    out = capsys.readouterr().out
    head, _, entry_json = out.partition("manifest entry (publishing replaces revision with the upload's commit):\n")
    assert "would upload 2 files" in head and "notes.txt" not in out
    entry = json.loads(entry_json)
    manifest = parse_manifest({"format_version": 1, "models": entry})
    model = manifest.get("tiny-sr")
    assert model.repo_id == "someone/Tiny-SR" and model.published and not model.bundled
    assert (model.task.scale, model.task.input_size, model.task.output_size) == (2, 8, 16)
    for name in ("config.json", "model.safetensors"):
        digest = hashlib.sha256((tiny_model_dir / name).read_bytes()).hexdigest()
        assert model.file(name).sha256 == digest and digest in head


def test_publish_rejects_bad_input(tiny_model_dir, tmp_path, capsys):
    assert main(["publish", str(tiny_model_dir), "--repo-id", "no-owner", "--dry-run"]) == 1
    assert "--repo-id must look like 'owner/name'" in capsys.readouterr().err
    assert main(["publish", str(tmp_path / "nothing"), "--repo-id", "a/b", "--dry-run"]) == 1
    assert "does not exist" in capsys.readouterr().err
    assert main(["publish", str(tiny_model_dir)]) == 2


@pytest.mark.slow
def test_weights_bytes_are_the_same_in_every_process():
    """safetensors writes its metadata in hash-map order; `serialize_weights` sorts it, so one set of tensors has one
    sha256 (bundled files, search JSONs and the manifest name weights by it)."""
    import subprocess
    import sys

    code = ("import hashlib, torch; from sr3infer.models.weights import serialize_weights; "
            "print(hashlib.sha256(serialize_weights({'w': torch.arange(6.0).reshape(2, 3)})).hexdigest())")
    hashes = {subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
              for _ in range(4)}
    assert len(hashes) == 1, hashes


def test_a_student_is_listed_but_never_a_default_model(monkeypatch):
    """A distilled student (run by its teacher's fast preset) shares its teacher's task; the size defaults stay the
    teachers', and the field survives a dump and a parse."""
    import json

    from sr3infer.hub import manifest as manifest_module

    data = json.loads(manifest_module.PACKAGED_MANIFEST.read_text())
    teacher = data["models"]["sr3-64-256"]
    data["models"]["sr3-64-256-fast"] = {**teacher, "repo_id": "sr3infer/sr3-64-256-fast", "student_of": "sr3-64-256"}
    parsed = manifest_module.parse_manifest(data)
    assert parsed.models["sr3-64-256-fast"].student_of == "sr3-64-256"
    assert manifest_module.parse_manifest(json.loads(manifest_module.dump_manifest(parsed))) == parsed
    monkeypatch.setattr(manifest_module, "load_manifest", lambda: parsed)
    assert manifest_module.default_models()[64][0] == "sr3-64-256"


def test_auto_pick_survives_a_dump_and_at_most_one_model_takes_any_size():
    data = valid()
    data["models"]["m"]["auto_pick"] = "any"
    parsed = parse_manifest(copy.deepcopy(data))
    assert parsed.models["m"].auto_pick == "any" and manifest_to_dict(parsed)["models"]["m"]["auto_pick"] == "any"
    assert parse_manifest(manifest_to_dict(parsed)) == parsed
    assert "auto_pick" not in manifest_to_dict(parse_manifest(valid()))["models"]["m"]  # "size", the default
    data["models"]["n"] = {**data["models"]["m"], "repo_id": "o/n"}
    with pytest.raises(ValueError, match=r"at most one model may have auto_pick \"any\".*got 2: m, n"):
        parse_manifest(data)
