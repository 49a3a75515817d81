"""Per-image fidelity report: consistency, uncertainty mean / 95th percentile, and the made-up mask
from a threshold calibrated on val (benchmarks/calibrate_madeup.py) and stored in each model's config."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from sr3infer.cli import main
from sr3infer.models.config import ModelConfig, ReportSettings
from sr3infer.quality.report import (
    MADEUP_ERROR, calibration_curve, choose_threshold, consistency_mse, image_report, mask_overlay,
)
from sr3infer.quality.metrics import consistency
from sr3infer.upscaler import Upscaler
from sr3infer.models.weights import build_model

REPO = Path(__file__).resolve().parents[1]
RNG = np.random.default_rng(0)


@pytest.fixture
def calibrated(tiny_config) -> Upscaler:
    """The tiny x2 model with a made-up threshold low enough that its random samples cross it somewhere."""
    config = tiny_config.replace(task={}, report=ReportSettings(madeup_std_threshold=0.05, madeup_precision=0.6))
    torch.manual_seed(0)
    return Upscaler(config, build_model(config), device="cpu")


def test_the_curve_counts_precision_coverage_and_recall():
    std = np.r_[np.full(50, 0.01), np.full(50, 0.1)]
    error = np.r_[np.zeros(50), np.full(30, 0.2), np.zeros(20)]
    low, mid = calibration_curve(std, error, [0.005, 0.05])
    assert low == {"threshold": 0.005, "precision": 0.3, "coverage": 1.0, "recall": 1.0, "pixels": 100}
    assert mid == {"threshold": 0.05, "precision": 0.6, "coverage": 0.5, "recall": 1.0, "pixels": 50}
    (top,) = calibration_curve(std, error, [0.2])
    assert top["pixels"] == 0 and np.isnan(top["precision"])


def test_the_chosen_threshold_is_the_lowest_with_precision_there_and_above():
    curve = [{"threshold": t, "precision": p, "pixels": n} for t, p, n in
             [(0.01, 0.3, 900), (0.02, 0.55, 500), (0.03, 0.45, 300), (0.04, 0.6, 200), (0.05, 0.9, 20)]]
    assert choose_threshold(curve, min_pixels=100)["threshold"] == 0.04  # 0.02 reaches it, but 0.03 above does not
    assert choose_threshold(curve, precision=0.95, min_pixels=100) is None
    bounded = [dict(row, precision_p05=row["precision"] - 0.1) for row in curve]  # a lower bound of each
    assert choose_threshold(bounded, min_pixels=100, key="precision_p05")["threshold"] == 0.04
    assert choose_threshold(bounded, precision=0.55, min_pixels=100, key="precision_p05") is None


def test_consistency_is_the_mse_in_unit_pixels_at_any_size():
    lowres = torch.zeros(1, 3, 8, 8)  # gray 0.5 in [0, 1]
    for size in ((16, 16), (19, 21)):
        brighter = torch.full((1, 3, *size), 0.5)  # 0.75 in [0, 1]: off by 0.25 everywhere
        assert consistency_mse(brighter, lowres) == pytest.approx(0.25**2)
    smooth = torch.linspace(-0.5, 0.5, 16)[None, None, :, None].expand(1, 3, 16, 16)
    assert consistency_mse(smooth, torch.nn.functional.avg_pool2d(smooth, 2)) < 1e-4


def test_image_report_says_why_a_field_is_missing():
    out, lowres = torch.zeros(1, 3, 16, 16), torch.zeros(1, 3, 8, 8)
    one = image_report(out, lowres)
    assert one.uncertainty_mean is None and one.mask is None and "num_samples" in one.note
    std = np.linspace(0, 0.2, 256, dtype=np.float32).reshape(16, 16)
    uncalibrated = image_report(out, lowres, uncertainty=std, num_samples=4)
    assert uncalibrated.uncertainty_p95 == pytest.approx(np.percentile(std, 95))
    assert uncalibrated.mask is None and "no made-up threshold" in uncalibrated.note
    report = image_report(out, lowres, uncertainty=std, num_samples=4, threshold=0.1)
    assert report.mask.shape == (16, 16) and report.madeup_fraction == pytest.approx((std > 0.1).mean())
    assert report.to_dict()["output_size"] == [16, 16] and "mask" not in report.to_dict()
    json.dumps(report.to_dict(), allow_nan=False)


def test_overlay_tints_only_the_mask():
    image = Image.fromarray(np.full((4, 6, 3), 128, dtype=np.uint8))
    mask = np.zeros((4, 6), dtype=bool)
    mask[1, 2] = True
    out = np.asarray(mask_overlay(image, mask)).astype(int)
    assert out.shape == (4, 6, 3)
    assert out[1, 2, 0] > out[1, 2, 1] + 60 and out[1, 2, 2] > out[1, 2, 1] + 60  # magenta
    assert out[0, 0, 0] == out[0, 0, 1] == out[0, 0, 2]  # gray elsewhere
    with pytest.raises(ValueError, match="mask is 6x4 but the image is 5x5"):
        mask_overlay(np.zeros((5, 5), dtype=np.uint16), mask)


def test_upscale_returns_a_report_per_image(calibrated):
    images = [torch.rand(3, 8, 8), torch.rand(3, 6, 10)]
    out = calibrated.upscale(images, num_samples=3, seed=0, progress=False, return_report=True)
    assert len(out.report) == 2
    for image, report, uncertainty in zip(out.images, out.report, out.uncertainty):
        assert report.output_size == (image.shape[-1], image.shape[-2])
        assert report.num_samples == 3 and report.madeup_threshold == 0.05
        assert report.uncertainty_mean == pytest.approx(float(uncertainty.mean()), rel=1e-5)
        assert report.madeup_fraction == pytest.approx(float((uncertainty > 0.05).mean()))
    lowres = images[0][None] * 2 - 1
    assert out.report[0].consistency == pytest.approx(consistency_mse(out.images[0][None] * 2 - 1, lowres), rel=1e-4)


def test_report_with_outscale_is_at_the_final_size(calibrated):
    out = calibrated.upscale(torch.rand(3, 8, 8), num_samples=2, seed=0, progress=False, return_report=True,
                             outscale=1.5)
    assert out.report.output_size == (12, 12) and out.report.input_size == (8, 8)
    assert out.report.mask.shape == (12, 12)


def test_a_model_without_threshold_says_so(tiny_upscaler):
    out = tiny_upscaler.upscale(torch.rand(3, 8, 8), num_samples=2, seed=0, progress=False, return_report=True)
    assert out.report.madeup_threshold is None and out.report.mask is None
    assert "no made-up threshold is calibrated" in out.report.note


def test_config_keeps_the_threshold(tiny_config):
    config = tiny_config.replace(report=ReportSettings(madeup_std_threshold=0.04, madeup_precision=0.52))
    again = ModelConfig.from_dict(json.loads(config.to_json()))
    assert again.report == config.report
    assert ModelConfig.from_dict(json.loads(tiny_config.to_json())).report.madeup_std_threshold is None
    with pytest.raises(ValueError, match="madeup_std_threshold"):
        ReportSettings(madeup_std_threshold=-1)


@pytest.mark.slow
def test_bundled_face_model_has_the_calibrated_threshold():
    calibration = json.loads((REPO / "benchmarks" / "results" / "madeup_calibration.json").read_text())
    face = calibration["models"]["sr3-face-8x"]
    assert face["error_level"] == MADEUP_ERROR and face["chosen"]["precision"] >= 0.5
    config = Upscaler.from_pretrained("sr3-face-8x", device="cpu").config
    assert config.report.madeup_std_threshold == face["chosen"]["threshold"]


def _png(path, size=8):
    Image.fromarray(RNG.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(path)
    return path


def test_cli_writes_the_report_and_the_mask(tmp_path, calibrated, capsys):
    model = str(calibrated.save_pretrained(tmp_path / "model"))
    src = _png(tmp_path / "in.png")
    code = main([str(src), "-o", str(tmp_path / "out.png"), "--model", model, "--samples", "2", "--quiet",
                 "--report", str(tmp_path / "report.json"), "--report-mask", str(tmp_path / "mask.png")])
    assert code == 0, capsys.readouterr().err
    data = json.loads((tmp_path / "report.json").read_text())
    (entry,) = data["images"].values()
    assert entry["output_size"] == [16, 16] and entry["num_samples"] == 2 and entry["madeup_threshold"] == 0.05
    assert {"consistency", "uncertainty_mean", "uncertainty_p95", "madeup_fraction"} <= set(entry)
    assert Image.open(tmp_path / "mask.png").size == (16, 16)


def test_cli_report_with_one_sample_has_consistency_only(tmp_path, calibrated, capsys):
    model = str(calibrated.save_pretrained(tmp_path / "model"))
    src = _png(tmp_path / "in.png")
    assert main([str(src), "-o", str(tmp_path / "out.png"), "--model", model, "--quiet",
                 "--report", str(tmp_path / "report.json")]) == 0
    (entry,) = json.loads((tmp_path / "report.json").read_text())["images"].values()
    assert entry["consistency"] >= 0 and entry["uncertainty_mean"] is None
    code = main([str(src), "-o", str(tmp_path / "out2.png"), "--model", model, "--report-mask",
                 str(tmp_path / "mask.png")])
    assert code == 2 and "--samples 2" in capsys.readouterr().err


def test_cli_report_mask_needs_a_calibrated_model(tmp_path, tiny_config, capsys):
    config = tiny_config.replace(task={})
    model = str(Upscaler(config, build_model(config), device="cpu").save_pretrained(tmp_path / "model"))
    src = _png(tmp_path / "in.png")
    code = main([str(src), "-o", str(tmp_path / "out.png"), "--model", model, "--samples", "2", "--quiet",
                 "--report-mask", str(tmp_path / "mask.png")])
    assert code == 2 and "no calibrated made-up threshold" in capsys.readouterr().err
    assert not (tmp_path / "out.png").exists() and not (tmp_path / "mask.png").exists()


def test_cli_folder_report_names_each_input_and_refuses_an_existing_report(tmp_path, calibrated, capsys):
    model = str(calibrated.save_pretrained(tmp_path / "model"))
    (tmp_path / "in").mkdir()
    for name in ("a", "b"):
        _png(tmp_path / "in" / f"{name}.png")
    args = [str(tmp_path / "in"), "-o", str(tmp_path / "out"), "--model", model, "--samples", "2", "--quiet",
            "--report", str(tmp_path / "report.json"), "--report-mask", str(tmp_path / "masks")]
    assert main(args) == 0, capsys.readouterr().err
    images = json.loads((tmp_path / "report.json").read_text())["images"]
    assert sorted(Path(name).name for name in images) == ["a.png", "b.png"]
    assert sorted(p.name for p in (tmp_path / "masks").iterdir()) == ["a_madeup.png", "b_madeup.png"]
    capsys.readouterr()
    assert main(args[:-2] + ["--uncertainty", str(tmp_path / "maps")]) == 1  # report.json exists, no --overwrite
    assert "report.json' already exists" in capsys.readouterr().err


def test_python_batch_runner_keeps_reports_and_masks(tmp_path, calibrated):
    from sr3infer.batch import upscale_files

    src = _png(tmp_path / "in.png")
    summary = upscale_files(calibrated, src, tmp_path / "out.png", report_mask=tmp_path / "mask.png", num_samples=2,
                            progress=False, quiet=True)
    assert summary.written == 1 and Image.open(tmp_path / "mask.png").size == (16, 16)
    (report,) = summary.reports.values()
    assert report.mask.shape == (16, 16) and report.num_samples == 2


# --report and --report-mask are planned with the images: checked before the model is loaded, nothing written.


def _report_case(tmp: Path) -> dict[str, Path]:
    (tmp / "d").mkdir()
    for name in ("a", "b"):
        _png(tmp / "d" / f"{name}.png")
    (tmp / "keep.json").write_text("{}")
    (tmp / "folder").mkdir()
    return {"in": _png(tmp / "in.png"), "out": tmp / "out.png", "d": tmp / "d", "keep": tmp / "keep.json"}


REPORT_PLANNING = [
    ("report is the input, --overwrite", ["IN", "--report", "IN", "--overwrite"], 2,
     "the JSON report (--report) 'IN' is the input 'IN'; choose another name (an input is never replaced"),
    ("report is a folder input's image, --overwrite", ["D", "--report", "D/a.png", "--overwrite"], 2,
     "the JSON report (--report) 'D/a.png' is the input 'D/a.png'"),
    ("report is -o, --overwrite", ["IN", "--report", "OUT", "--overwrite"], 2,
     "the upscaled image (-o) and the JSON report (--report) would both be written to 'OUT'; rename one of them"),
    ("report is a folder run's output", ["D", "--report", "TMP/out/b.png"], 2,
     "the output of 'D/b.png' and the JSON report (--report) would both be written to"),
    ("report is the mask", ["IN", "--samples", "2", "--report-mask", "TMP/m.png", "--report", "TMP/m.png"], 2,
     "the made-up mask (--report-mask) and the JSON report (--report) would both be written to 'TMP/m.png'"),
    ("report is the uncertainty map", ["IN", "--samples", "2", "--uncertainty", "TMP/u.png", "--report", "TMP/u.png"],
     2, "the uncertainty map (--uncertainty) and the JSON report (--report) would both be written to 'TMP/u.png'"),
    ("report under a file", ["IN", "--report", "IN/r.json"], 2, "cannot write --report 'IN/r.json': 'IN' is a file"),
    ("report in /proc", ["IN", "--report", "/proc/r.json"], 2, "cannot write --report '/proc/r.json': '/proc' is not "
                                                                 "writable"),
    ("report is a folder", ["IN", "--report", "TMP/folder", "--overwrite"], 2,
     "--report 'TMP/folder' is a folder; give a file name, e.g. 'TMP/folder/report.json'"),
    ("report exists", ["IN", "--report", "KEEP"], 1, "--report 'KEEP' already exists; pass --overwrite to replace it"),
    ("mask as .npy", ["IN", "--samples", "2", "--report-mask", "TMP/m.npy"], 2,
     "--report-mask 'TMP/m.npy': Unknown output format '.npy'; use .png, .jpg, .webp, .tif or .bmp"),
    ("mask under a file", ["IN", "--samples", "2", "--report-mask", "IN/m.png"], 2,
     "cannot write --report-mask 'IN/m.png': 'IN' is a file"),
    ("mask is -o, no uncertainty map asked", ["IN", "--samples", "2", "--report-mask", "OUT", "--overwrite"], 2,
     "the upscaled image (-o) and the made-up mask (--report-mask) would both be written to 'OUT'"),
]


@pytest.mark.parametrize("args, code, message", [case[1:] for case in REPORT_PLANNING],
                         ids=[case[0] for case in REPORT_PLANNING])
def test_report_paths_are_planned_before_any_work(tmp_path, calibrated, capsys, monkeypatch, args, code, message):
    model = str(calibrated.save_pretrained(tmp_path / "model"))
    paths = _report_case(tmp_path)
    before = {path: path.read_bytes() for path in tmp_path.rglob("*") if path.is_file()}
    monkeypatch.setattr(Upscaler, "from_pretrained", classmethod(lambda cls, *a, **k: pytest.fail("model loaded")))
    words = {"IN": paths["in"], "OUT": paths["out"], "D": paths["d"], "KEEP": paths["keep"], "TMP": tmp_path}

    def spell(text: str) -> str:
        for key, value in words.items():
            text = text.replace(key, str(value))
        return text

    argv = [spell(a) for a in args]
    assert main([argv[0], "-o", str(paths["out"] if argv[0] != str(paths["d"]) else tmp_path / "out"),
                 "--model", model, "--quiet", *argv[1:]]) == code
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("sr3infer: error: ") and spell(message) in lines[0], lines
    assert "uncertainty" not in lines[0] or "--uncertainty" in args
    assert {path: path.read_bytes() for path in tmp_path.rglob("*") if path.is_file()} == before  # nothing written


def test_a_report_that_cannot_be_written_at_the_end_is_named(tmp_path, calibrated, capsys, monkeypatch):
    from sr3infer.quality import report

    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(report, "write_report", disk_full)
    model = str(calibrated.save_pretrained(tmp_path / "model"))
    code = main([str(_png(tmp_path / "in.png")), "-o", str(tmp_path / "out.png"), "--model", model, "--quiet",
                 "--report", str(tmp_path / "r.json")])
    lines = capsys.readouterr().err.strip().splitlines()
    assert code == 1 and len(lines) == 1, lines
    assert lines[0].startswith(f"sr3infer: error: --report {tmp_path / 'r.json'}: could not write it (")
    assert "No space left on device" in lines[0] and (tmp_path / "out.png").exists()
