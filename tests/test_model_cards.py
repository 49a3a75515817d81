"""The bundled model cards carry the Hub's metadata: library, task, licence, and the measured val metrics of the
search JSON they were written from (scripts/bundle_model.py)."""

from __future__ import annotations

import json

import pytest
from huggingface_hub import ModelCard

from conftest import REPO


@pytest.mark.parametrize("name", ["sr3-face-8x", "sr3-64-256"])
def test_bundled_cards_metadata_matches_their_measurements(name):
    card = ModelCard.load(REPO / "sr3infer" / "bundled" / name / "README.md")
    data = card.data
    assert data.library_name == "sr3infer" and data.pipeline_tag == "image-to-image" and data.license
    search = json.loads((REPO / "benchmarks" / "results" / name / "preset_search.json").read_text())
    results = {(r.metric_name.rsplit(", ", 1)[1].split()[0], r.metric_type): r.metric_value for r in data.eval_results}
    for preset, chosen in search["presets"].items():
        measured = search["runs"][chosen["key"]]["model"]
        for metric in ("psnr", "ssim", "kid_1e3"):
            assert results[(preset, metric)] == pytest.approx(measured[metric], abs=1e-4), (preset, metric)
