"""The repository keeps only results that something names: every file under benchmarks/results is named by the
README, a docs page, a README under benchmarks/, a model card, a training record (training/) or a test, directly
or through a record under benchmarks/results that one of them names. And every results path they name exists."""

from __future__ import annotations

import fnmatch
import posixpath
import re

from conftest import REPO

RESULTS = "benchmarks/results/"
# A path-like token ending in a results file's extension; <model> and * stand for any name.
PATH = re.compile(r"[\w./<>*-]+\.(?:jsonl|json|md|png)\b")
BRACES = re.compile(r"([\w./<>*-]*)\{([\w.,-]+)\}([\w./<>*-]*)")  # uncertainty.{json,png} -> both names


def _documents() -> list[str]:
    """Repository-relative paths of the documents that may name a result."""
    docs = ["README.md"]
    docs += [p for p in ("docs", "training", "tests") for p in _files(p) if p.endswith((".md", ".json", ".py"))]
    docs += [p for p in _files("benchmarks") if posixpath.basename(p) == "README.md"]
    docs += [p.relative_to(REPO).as_posix() for p in (REPO / "sr3infer" / "bundled").glob("*/README.md")]
    return docs


def _files(folder: str) -> list[str]:
    skip = {"node_modules", "work", "__pycache__"}
    return sorted(p.relative_to(REPO).as_posix() for p in (REPO / folder).rglob("*")
                  if p.is_file() and not skip & set(p.relative_to(REPO).parts))


def _named(document: str, relative: bool = True) -> set[str]:
    """Glob patterns (repository-relative) of the results files that `document` names; with `relative`, also the
    names it gives relative to its own folder."""
    text = (REPO / document).read_text(encoding="utf-8").replace('" / "', "/")  # Python's "a" / "b" paths
    text = BRACES.sub(lambda m: " ".join(m[1] + alt + m[3] for alt in m[2].split(",")), text)
    folder = posixpath.dirname(document)
    patterns = set()
    for token in PATH.findall(text):
        if RESULTS in token:
            path = token[token.index(RESULTS):]
        elif "results/" in token:  # results/... in benchmarks/README.md, ../results/... in benchmarks/peers/
            path = "benchmarks/" + token[token.index("results/"):]
        elif relative:  # a name relative to the document's folder (a record beside the files it names)
            path = posixpath.normpath(posixpath.join(folder, token))
        else:
            continue
        patterns.add(re.sub(r"<[^<>]*>", "*", path))
    return patterns


def _result_files() -> list[str]:
    """What benchmarks/results holds; the ignored lock and temporary files of a running benchmark left out."""
    return [p for p in _files(RESULTS) if not p.endswith((".lock", ".tmp"))]


def test_every_result_file_is_named_somewhere():
    files = _result_files()
    documents, patterns = _documents(), set()
    for document in documents:
        patterns |= _named(document)
    # A named record under benchmarks/results (a stretch's keep rule and scores, an A/B's README) names its data.
    records, seen = True, set()
    while records:
        named = {f for f in files if any(fnmatch.fnmatchcase(f, p) for p in patterns)}
        records = {f for f in named if f.endswith(".md")} - seen
        seen |= records
        for record in records:
            patterns |= _named(record)
    unnamed = [f for f in files if f not in named]
    assert not unnamed, f"named by no README, card, docs page, training record or test: {unnamed}"


def test_every_named_result_path_exists():
    missing = {}
    for document in _documents() + [f for f in _result_files() if f.endswith(".md")]:
        for pattern in _named(document, relative=False):
            if pattern.startswith(RESULTS) and "*" not in pattern and not (REPO / pattern).exists():
                missing.setdefault(document, []).append(pattern)
    assert not missing, f"results paths that do not exist: {missing}"


def test_results_of_one_model_are_in_its_folder():
    """benchmarks/results/<model>/ holds what was measured on one model: no model name left in a top-level name."""
    models = [p.name for p in (REPO / "sr3infer" / "bundled").iterdir() if p.is_dir()] + ["sr3-real-x4"]
    top = [posixpath.basename(f) for f in _result_files() if posixpath.dirname(f) == RESULTS.rstrip("/")]
    assert not [name for name in top for model in models if model in name], top
