#!/usr/bin/env python
"""Recompute sha256 and size of each bundled model's files and rewrite both copies of weights_manifest.json.

Run it after placing or replacing weights in sr3infer/bundled/<name>/ (config.json, model.safetensors,
README.md). It also takes scale and sizes from each bundled config.json, and leaves every other field
(description, licence, metrics, revision, published) as written in sr3infer/weights_manifest.json,
the canonical copy. The copy at the repository root is made identical to it.

    python scripts/update_manifest.py            # rewrite both copies
    python scripts/update_manifest.py --check    # exit 1 if either copy is out of date; write nothing
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from pathlib import Path

from sr3infer.models.config import ModelConfig
from sr3infer.hub.fetch import PUBLISHED_FILES
from sr3infer.hub.manifest import FileEntry, Manifest, Task, dump_manifest, file_entry, load_manifest

REPO = Path(__file__).resolve().parents[1]


def updated_manifest(manifest: Manifest) -> tuple[Manifest, list[str]]:
    """The manifest with hashes, sizes and task sizes taken from the bundled folders, and a log of what changed."""
    models, log = {}, []
    for name, entry in manifest.models.items():
        folder = manifest.bundled_dir(name)
        if not entry.bundled or not folder.is_dir():
            if entry.bundled:
                log.append(f"{name}: no folder {folder} yet; left as is")
            models[name] = entry
            continue
        listed = [f.name for f in entry.files]
        names = listed + [f for f in PUBLISHED_FILES if f not in listed and (folder / f).is_file()]
        missing = [f for f in names if not (folder / f).is_file()]
        if missing:
            raise SystemExit(f"{name}: {folder} lacks {', '.join(missing)}; put every listed file there first.")
        files: tuple[FileEntry, ...] = tuple(file_entry(folder / f) for f in names)
        config = ModelConfig.from_json_file(folder / "config.json")
        task = Task(config.scale, config.lowres_size, config.out_size, entry.task.domain)
        new = replace(entry, files=files, task=task)
        for old_file, new_file in zip(entry.files, files):
            if old_file != new_file:
                log.append(f"{name}: {new_file.name} sha256 {new_file.sha256} size {new_file.size}")
        for extra in files[len(entry.files):]:
            log.append(f"{name}: added {extra.name} sha256 {extra.sha256} size {extra.size}")
        if task != entry.task:
            log.append(f"{name}: task {entry.task} -> {task}")
        models[name] = new
    return replace(manifest, models=models), log


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--manifest", type=Path, default=REPO / "sr3infer" / "weights_manifest.json",
                        help="canonical manifest; bundled folders are in bundled/ next to it")
    parser.add_argument("--root-copy", type=Path, default=REPO / "weights_manifest.json",
                        help="the copy kept identical to the canonical one")
    parser.add_argument("--check", action="store_true", help="write nothing; exit 1 if a copy is out of date")
    args = parser.parse_args(argv)
    manifest, log = updated_manifest(load_manifest(args.manifest))
    text = dump_manifest(manifest)
    stale = [p for p in (args.manifest, args.root_copy) if not p.is_file() or p.read_text(encoding="utf-8") != text]
    for line in log:
        print(line)
    if args.check:
        for path in stale:
            print(f"out of date: {path}", file=sys.stderr)
        return 1 if stale else 0
    for path in stale:
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(text, encoding="utf-8")
        tmp.replace(path)
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
