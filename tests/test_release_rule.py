"""A model for degraded photos is released by a rule written before its scores: presets chosen on the pooled degraded
val (`preset_rule.pool` + `choose` without the consistency condition), then the release conditions
(scripts/bundle_real_model.py --check)."""

from __future__ import annotations

import json
import subprocess
import sys

from sr3infer.sampling import preset_rule
from sr3infer.train.degrade import VAL_KINDS

from conftest import REPO

SETTINGS = {"ddim1:none": {"sampler": "ddim", "num_steps": 1, "num_samples": 1, "spacing": "linear", "consistency": "none"},
            "ddim2x4:none": {"sampler": "ddim", "num_steps": 2, "num_samples": 4, "spacing": "quadratic",
                             "consistency": "none"},
            "ancestral5x4:none": {"sampler": "ancestral", "num_steps": 5, "num_samples": 4, "spacing": "quadratic",
                                  "consistency": "none"}}


def _row(recipe: str, kind: str, psnr: float, kid: float, bicubic: float = 28.0) -> dict:
    return {"recipe": recipe, "kind": kind, "settings": SETTINGS[recipe], "weights_sha256": "0" * 64,
            "model": {"psnr": psnr, "ssim": 0.8, "consistency_1e5": 40.0, "kid_1e3": kid},
            "bicubic": {"psnr": bicubic, "ssim": 0.75, "consistency_1e5": 45.0, "kid_1e3": 30.0}, "images": 24}


def test_pool_averages_each_recipe_over_the_sets_that_all_measured_it():
    a = {"x": {"n": 1, "model": {"psnr": 30.0, "kid_1e3": 10.0}, "bicubic": {"psnr": 29.0}}, "y": {"model": {}, "bicubic": {}}}
    b = {"x": {"n": 1, "model": {"psnr": 32.0, "kid_1e3": 20.0}, "bicubic": {"psnr": 31.0}}}
    assert preset_rule.pool([a, b]) == {"x": {"n": 1, "model": {"psnr": 31.0, "kid_1e3": 15.0},
                                              "bicubic": {"psnr": 30.0}}}


def _check(tmp_path, ours: dict, clean: dict) -> tuple[int, str]:
    (tmp_path / "ours.json").write_text(json.dumps(ours))
    (tmp_path / "clean.json").write_text(json.dumps(clean))
    run = subprocess.run([sys.executable, str(REPO / "scripts" / "bundle_real_model.py"), "m", "--check", "--score",
                          str(tmp_path / "ours.json"), "--clean-score", str(tmp_path / "clean.json")],
                         capture_output=True, text=True, cwd=REPO)
    assert "Traceback" not in run.stderr, run.stderr
    return run.returncode, run.stdout


def test_the_release_check_picks_presets_on_the_pooled_degraded_val_and_names_each_failed_condition(tmp_path):
    ours, clean = {}, {}
    for kind in ("clean", *VAL_KINDS):
        bic = 31.0 if kind == "clean" else 28.0
        ours[f"ddim1:none|{kind}"] = _row("ddim1:none", kind, bic + 0.9, 20.0, bic)
        ours[f"ddim2x4:none|{kind}"] = _row("ddim2x4:none", kind, bic + 1.0, 24.0, bic)       # within 0.05 dB: 8 calls
        ours[f"ancestral5x4:none|{kind}"] = _row("ancestral5x4:none", kind, bic + 1.04, 25.0, bic)
        clean[f"fidelity|{kind}"] = {"recipe": "fidelity", "kind": kind, "model": {"psnr": bic + 0.2}}
    code, out = _check(tmp_path, ours, clean)
    assert "fidelity: ddim2x4:none (8 calls)" in out and "realism: ddim1:none (1 calls)" in out
    assert code == 0 and "decision: release" in out
    ours["ddim2x4:none|blur"]["model"]["psnr"] = 28.1  # pooled 28.82 is now 0.2 dB off the best: ancestral 5 x 4
    clean["fidelity|noise"]["model"]["psnr"] = 30.0      # and the clean model beats it on noise
    del clean["fidelity|mixed"]
    code, out = _check(tmp_path, ours, clean)
    assert code == 1 and "fidelity: ancestral5x4:none (20 calls)" in out
    assert "noise: 29.04 dB, not above bicubic 28.00 and the clean model's 30.00" in out
    assert "mixed: the clean model's fidelity preset is not measured" in out and "blur" not in out.split("decision")[1]
    ours["ancestral5x4:none|clean"]["model"]["psnr"] = 31.9
    assert "clean: 31.90 dB < bicubic 31.00 + 1.0" in _check(tmp_path, ours, clean)[1]
