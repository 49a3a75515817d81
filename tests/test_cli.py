"""`sr3infer INPUT -o OUTPUT`: exit codes, one-line errors, atomic and refused overwrites, folders, seeds."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from sr3infer.cli import main
from sr3infer.upscaler import Upscaler
from sr3infer.models.weights import build_model

RNG = np.random.default_rng(0)


@pytest.fixture
def model(tmp_path, tiny_config) -> str:
    """The tiny model without the `untrained` flag, so stderr holds only what a run itself reports."""
    config = tiny_config.replace(task={})
    return str(Upscaler(config, build_model(config), device="cpu").save_pretrained(tmp_path / "model"))


def _png(path: Path, size: int = 8) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(RNG.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(path)
    return path


def _cli(capsys, *args: str) -> tuple[int, list[str]]:
    code = main([str(a) for a in args])
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return code, err.strip().splitlines()


def test_upscales_one_file(tmp_path, model, capsys):
    src = _png(tmp_path / "in.png")
    code, lines = _cli(capsys, src, "-o", tmp_path / "out.png", "--model", model, "--steps", 2, "--device", "cpu")
    assert code == 0
    assert Image.open(tmp_path / "out.png").size == (16, 16)
    assert lines[-1] == f"sr3infer: wrote {tmp_path / 'out.png'} (16x16)"  # after the progress bar
    assert any("2/2" in line for line in lines[:-1])
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temporary files left


def test_untrained_models_say_so(tmp_path, tiny_model_dir, capsys):
    src = _png(tmp_path / "in.png")
    code, lines = _cli(capsys, src, "-o", tmp_path / "out.png", "--model", tiny_model_dir, "--quiet")
    assert code == 0
    assert lines == ["sr3infer: warning: this model is an UNTRAINED demo (random weights); its output is noise."]


def test_output_folder_and_seed(tmp_path, model, capsys):
    src = _png(tmp_path / "face.png")
    (tmp_path / "out").mkdir()
    assert _cli(capsys, src, "-o", tmp_path / "out", "--model", model, "--seed", 7, "--quiet")[0] == 0
    assert _cli(capsys, src, "-o", tmp_path / "again.png", "--model", model, "--seed", 7, "--quiet")[0] == 0
    assert _cli(capsys, src, "-o", tmp_path / "other.png", "--model", model, "--seed", 8, "--quiet",
                "--sampler", "ancestral")[0] == 0
    first = np.asarray(Image.open(tmp_path / "out" / "face.png"))
    assert np.array_equal(first, np.asarray(Image.open(tmp_path / "again.png")))
    assert not np.array_equal(first, np.asarray(Image.open(tmp_path / "other.png")))


def test_recipe_flags_reach_the_sampler(tmp_path, model, capsys):
    src = _png(tmp_path / "face.png")
    outputs = {}
    for name, flags in {"final": ["--consistency", "final"], "none": ["--consistency", "none"],
                        "trailing": ["--consistency", "none", "--spacing", "trailing"]}.items():
        assert _cli(capsys, src, "-o", tmp_path / f"{name}.png", "--model", model, "--steps", 3, "--quiet", *flags)[0] == 0
        outputs[name] = np.asarray(Image.open(tmp_path / f"{name}.png")).astype(np.float64)
    assert not np.array_equal(outputs["final"], outputs["none"])
    assert not np.array_equal(outputs["trailing"], outputs["none"])


@pytest.mark.parametrize("args, message", [
    ([], None),
    (["in.png"], "the following arguments are required: -o/--output"),
    (["in.png", "-o", "out.png", "--sampler", "euler"], "invalid choice: 'euler'"),
    (["in.png", "-o", "out.png", "--steps", "0"], "--steps must be at least 1, got 0"),
    (["in.png", "-o", "out.png", "--steps", "many"], "invalid int value: 'many'"),
    (["in.png", "-o", "out.png", "--steps", "2001"], "--steps must be at most the model's 2000 training steps"),
    (["in.png", "-o", "out.png", "--batch-size", "0"], "--batch-size must be at least 1"),
    (["in.png", "-o", "out.png", "--dtype", "fp64"], "invalid choice: 'fp64'"),
    (["in.png", "-o", "out.png", "--consistency", "always"], "invalid choice: 'always'"),
    (["in.png", "-o", "out.png", "--spacing", "cosine"], "invalid choice: 'cosine'"),
    (["in.png", "-o", "out.png", "--frobnicate"], "unrecognized arguments: --frobnicate"),
    (["missing.png", "-o", "out.png"], "input 'missing.png' does not exist"),
    (["empty_folder", "-o", "out"], "no images"),
])
def test_usage_errors_exit_2_with_one_line(tmp_path, model, capsys, monkeypatch, args, message):
    monkeypatch.chdir(tmp_path)
    _png(tmp_path / "in.png")
    (tmp_path / "empty_folder").mkdir()
    code, lines = _cli(capsys, *args, *(["--model", model] if args else []))
    assert code == 2
    if message is None:  # no arguments: the usage text
        assert any("usage: sr3infer" in line for line in lines)
    else:
        assert len(lines) == 1 and lines[0].startswith("sr3infer: error: ") and message in lines[0], lines
    assert not (tmp_path / "out.png").exists() and not (tmp_path / "out").exists()


def test_help_exits_0_and_its_usage_lists_the_subcommands(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    assert "--steps" in out
    assert out.startswith("usage: sr3infer INPUT -o OUTPUT [options]\n"
                          "       sr3infer {cascade,convert,demo,download,eval,models,publish,train} ...\n")
    assert main([]) == 2 and "{cascade,convert,demo," in capsys.readouterr().err


def test_samples_say_that_the_output_is_their_mean(tmp_path, model, capsys):
    assert main(["--help"]) == 0
    assert "per-pixel MEAN as the output, not one sample" in " ".join(capsys.readouterr().out.split())
    src = _png(tmp_path / "in.png")
    code, lines = _cli(capsys, src, "-o", tmp_path / "mean.png", "--model", model, "--steps", 1, "--samples", 3)
    said = [line for line in lines if "mean of" in line]
    assert code == 0 and said == ["sr3infer: each output is the per-pixel mean of 3 samples, smoother than one "
                                  "sample; --samples 1 writes a single sample"]
    _cli(capsys, src, "-o", tmp_path / "one.png", "--model", model, "--steps", 1)
    code, lines = _cli(capsys, src, "-o", tmp_path / "quiet.png", "--model", model, "--steps", 1, "--samples", 3,
                       "--quiet")
    assert code == 0 and lines == []
    assert not np.array_equal(np.asarray(Image.open(tmp_path / "mean.png")), np.asarray(Image.open(tmp_path / "one.png")))


def test_existing_output_is_refused_without_overwrite(tmp_path, model, capsys):
    src, dst = _png(tmp_path / "in.png"), tmp_path / "out.png"
    dst.write_bytes(b"precious")
    code, lines = _cli(capsys, src, "-o", dst, "--model", model, "--quiet")
    assert code == 1 and len(lines) == 1 and "already exists; pass --overwrite" in lines[0]  # exit 1, as README says
    assert dst.read_bytes() == b"precious"
    assert _cli(capsys, src, "-o", dst, "--model", model, "--quiet", "--overwrite")[0] == 0
    assert Image.open(dst).size == (16, 16)


@pytest.mark.parametrize("content, message", [
    (b"", "empty (0-byte) file"),
    (b"just some text\n", "not an image PIL can read"),
    ("truncated", "truncated or corrupt"),
])
def test_bad_input_files_exit_1_with_one_line(tmp_path, model, capsys, content, message):
    src = tmp_path / "bad.png"
    if content == "truncated":
        data = _png(tmp_path / "good.png", size=32).read_bytes()
        content = data[: len(data) // 2]
    src.write_bytes(content)
    code, lines = _cli(capsys, src, "-o", tmp_path / "out.png", "--model", model, "--quiet")
    assert code == 1
    assert len(lines) == 1 and lines[0].startswith(f"sr3infer: skipped {src}: ") and message in lines[0], lines
    assert not (tmp_path / "out.png").exists()


@pytest.mark.parametrize("command, flag", [([], "--model"), (["cascade"], "--stages")])
def test_an_unknown_model_is_a_usage_error_naming_it(tmp_path, capsys, command, flag):
    src = _png(tmp_path / "in.png")
    code, lines = _cli(capsys, *command, src, "-o", f"{tmp_path / 'out'}/", flag, "no-such-sr3-model", "--quiet")
    assert code == 2 and lines == [f"sr3infer: error: {flag} no-such-sr3-model: no such model folder, .safetensors "
                                   "file or model name (known names: sr3-64-256, sr3-64-256-fast, sr3-face-8x, sr3-face-8x-fast; see `sr3infer models`)"]
    code, lines = _cli(capsys, src, "-o", tmp_path / "out.png", "--model", src)  # an image is no weights file
    assert code == 2 and "a file, but not a .safetensors weights file" in lines[0] and "sr3infer convert" in lines[0]
    assert not (tmp_path / "out").exists() and not (tmp_path / "out.png").exists()


def test_debug_shows_the_traceback(tmp_path, model):
    config_path = Path(model) / "config.json"
    config_path.write_text(config_path.read_text().replace('"inner_channel": 8', '"inner_channel": 16'))
    with pytest.raises(ValueError, match="do not match the model config"):
        main([str(_png(tmp_path / "in.png")), "-o", str(tmp_path / "out.png"), "--model", model, "--debug"])


@pytest.mark.parametrize("device, message", [
    ("cpux", "--device cpux: not a device; expected cpu, cuda, cuda:N or mps"),
    pytest.param("cuda", "--device cuda: torch finds no CUDA device on this machine; use --device cpu",
                 marks=pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="this machine has CUDA")),
])
def test_a_device_this_machine_lacks_is_a_usage_error_in_command_line_words(tmp_path, model, capsys, device, message):
    code, lines = _cli(capsys, _png(tmp_path / "in.png"), "-o", tmp_path / "out.png", "--model", model,
                       "--device", device)
    assert code == 2 and len(lines) == 1 and message in lines[0], lines
    assert "device='" not in lines[0] and not (tmp_path / "out.png").exists()


def test_weights_that_do_not_match_their_config_exit_1(tmp_path, model, capsys):
    config_path = Path(model) / "config.json"
    config = json.loads(config_path.read_text())
    config["network"]["inner_channel"] = 16
    config_path.write_text(json.dumps(config))
    src = _png(tmp_path / "in.png")
    code, lines = _cli(capsys, src, "-o", tmp_path / "out.png", "--model", model, "--quiet")
    assert code == 1
    assert len(lines) == 1 and "do not match the model config" in lines[0]


def test_a_failed_write_leaves_no_partial_file(tmp_path, model, capsys, monkeypatch):
    src, dst = _png(tmp_path / "in.png"), tmp_path / "out" / "result.png"
    original = Image.Image.save

    def write_then_fail(self, fp, *args, **kwargs):
        original(self, fp, *args, **kwargs)
        raise OSError("No space left on device")

    monkeypatch.setattr(Image.Image, "save", write_then_fail)
    code, lines = _cli(capsys, src, "-o", dst, "--model", model, "--quiet")
    assert code == 1
    assert len(lines) == 1 and "No space left on device" in lines[0]
    assert not dst.exists() and os.listdir(dst.parent) == []


def test_folder_input(tmp_path, model, capsys):
    inputs = tmp_path / "in"
    for name in ("a.png", "b.jpg", "c.png"):
        _png(inputs / name)
    (inputs / "notes.txt").write_text("ignored: not an image suffix")
    (inputs / "broken.png").write_bytes(b"")
    code, lines = _cli(capsys, inputs, "-o", tmp_path / "out", "--model", model, "--quiet", "--seed", 3,
                       "--batch-size", 2)
    assert code == 1  # one file failed; the others were written
    assert sorted(os.listdir(tmp_path / "out")) == ["a.png", "b.png", "c.png"]
    assert any("skipped" in line and "broken.png" in line for line in lines)
    assert lines[-1] == "sr3infer: 3 written, 1 failed of 4 files; ignored 1 non-image file"
    # File k of the sorted list gets --seed + k, whatever the batching.
    code, _ = _cli(capsys, inputs / "c.png", "-o", tmp_path / "c.png", "--model", model, "--quiet", "--seed", 3 + 3)
    assert code == 0
    alone, batched = Image.open(tmp_path / "c.png"), Image.open(tmp_path / "out" / "c.png")
    assert np.array_equal(np.asarray(batched), np.asarray(alone))

    (inputs / "broken.png").unlink()
    code, _ = _cli(capsys, inputs, "-o", tmp_path / "out2", "--model", model, "--quiet")
    assert code == 0 and len(os.listdir(tmp_path / "out2")) == 3


def test_a_folder_run_counts_what_it_left_alone(tmp_path, model, capsys):
    inputs = tmp_path / "in"
    _png(inputs / "a.png")
    _png(inputs / "nested" / "b.png")
    (inputs / "more").mkdir()
    (inputs / "notes.txt").write_text("not an image")
    code, lines = _cli(capsys, inputs, "-o", tmp_path / "out", "--model", model, "--steps", 1)
    assert code == 0 and lines[-1] == "sr3infer: 1 written, 0 failed of 1 file; ignored 2 subfolders and 1 non-image file"


def test_folder_input_needs_a_folder_output(tmp_path, model, capsys):
    _png(tmp_path / "in" / "a.png")
    (tmp_path / "file.png").write_bytes(b"x")
    code, lines = _cli(capsys, tmp_path / "in", "-o", tmp_path / "file.png", "--model", model, "--quiet")
    assert code == 2 and "-o must be a folder" in lines[0]


def test_without_model_the_input_size_picks_a_bundled_model_or_the_run_stops(tmp_path, capsys, monkeypatch):
    """No photo silently goes through the 8x face model: only the trained input sizes pick a model, said on stderr."""
    code, lines = _cli(capsys, _png(tmp_path / "photo.png", 20), "-o", tmp_path / "out.png")
    assert code == 2 and not (tmp_path / "out.png").exists()
    assert "no --model given" in lines[-1] and "20x20" in lines[-1] and "--model sr3-64-256" in lines[-1]
    mixed = tmp_path / "mixed"
    _png(mixed / "a.png", 16), _png(mixed / "b.png", 64)
    code, lines = _cli(capsys, mixed, "-o", tmp_path / "out")
    assert code == 2 and "mixed' holds 16x16 (a.png), 64x64 (b.png), not one bundled model's" in lines[-1]
    for k in range(5):
        _png(mixed / f"c{k}.png", 16)
    code, lines = _cli(capsys, mixed, "-o", tmp_path / "out")
    assert code == 2 and "holds 16x16 (a.png, c0.png, c1.png and 3 more), 64x64 (b.png)," in lines[-1]
    (tmp_path / "broken.png").write_bytes(b"not an image")
    code, lines = _cli(capsys, tmp_path / "broken.png", "-o", tmp_path / "out.png")
    assert code == 2 and "could be read to pick a model" in lines[-1]

    loaded = []
    monkeypatch.setattr(Upscaler, "from_pretrained", classmethod(lambda cls, name, **kw: loaded.append(name) or 1 / 0))
    for size, name in ((16, "sr3-face-8x"), (64, "sr3-64-256")):
        code, lines = _cli(capsys, _png(tmp_path / f"in{size}.png", size), "-o", tmp_path / f"out{size}.png")
        assert code == 1 and loaded[-1] == name  # (the stand-in loader fails, after the choice)
        assert lines[0].startswith(f"sr3infer: no --model given; using {name}") and f"{size}x{size}" in lines[0]


def test_default_models_come_from_the_manifest_task(monkeypatch, tmp_path, capsys):
    import dataclasses

    from sr3infer.hub import manifest

    assert manifest.default_models() == {16: ("sr3-face-8x", "faces"), 64: ("sr3-64-256", "natural photos")}
    real = manifest.load_manifest()
    entry = real.models["sr3-face-8x"]
    moved = dataclasses.replace(entry, task=dataclasses.replace(entry.task, input_size=24, domain="portraits"))
    monkeypatch.setattr(manifest, "load_manifest", lambda *a, **k: dataclasses.replace(
        real, models={**real.models, "sr3-face-8x": moved}))
    assert manifest.default_models() == {24: ("sr3-face-8x", "portraits"), 64: ("sr3-64-256", "natural photos")}
    src = _png(tmp_path / "in.png", 16)  # 16x16 is no longer a bundled model's size: no silent pick
    assert main([str(src), "-o", str(tmp_path / "out.png")]) == 2
    assert "24x24 (sr3-face-8x, portraits)" in capsys.readouterr().err


def test_a_model_for_any_size_takes_every_picture_no_size_model_takes(monkeypatch, tmp_path, capsys):
    """A manifest entry with auto_pick "any" is the default for photos of any size; a "never" model is only run by
    name; the model picked by size keeps its inputs; each choice is said in one line with its reason."""
    import dataclasses

    from sr3infer.hub import manifest

    real = manifest.load_manifest()
    models = {**real.models, "sr3-64-256": dataclasses.replace(real.models["sr3-64-256"], auto_pick="never"),
              "photo-any": dataclasses.replace(real.models["sr3-64-256"], name="photo-any", auto_pick="any")}
    monkeypatch.setattr(manifest, "load_manifest", lambda *a, **k: dataclasses.replace(real, models=models))
    assert manifest.default_models() == {16: ("sr3-face-8x", "faces")}
    assert manifest.any_size_model() == ("photo-any", "natural photos")
    loaded = []
    monkeypatch.setattr(Upscaler, "from_pretrained", classmethod(lambda cls, name, **kw: loaded.append(name) or 1 / 0))
    mixed = tmp_path / "mixed"
    _png(mixed / "a.png", 16), _png(mixed / "b.png", 64)
    for src, name in ((_png(tmp_path / "p.png", 20), "photo-any"), (_png(tmp_path / "q.png", 64), "photo-any"),
                      (mixed, "photo-any"), (_png(tmp_path / "f.png", 16), "sr3-face-8x")):
        code, lines = _cli(capsys, src, "-o", tmp_path / ("out" if src.is_dir() else "out.png"))
        assert code == 1 and loaded[-1] == name, lines  # (the stand-in loader fails, after the choice)
        assert lines[0].startswith(f"sr3infer: no --model given; using {name} (")
    assert lines[0].endswith("the bundled model trained on 16x16 inputs")
    code, lines = _cli(capsys, tmp_path / "p.png", "-o", tmp_path / "out.png")
    assert lines[0] == ("sr3infer: no --model given; using photo-any (natural photos), the bundled model for pictures "
                        "of any size; 16x16 (sr3-face-8x, faces) go to their own model")


@pytest.mark.slow
@pytest.mark.parametrize("signum, code", [(15, 143), (1, 129)])
def test_sigterm_and_sighup_stop_like_ctrl_c(tmp_path, model, signum, code):
    """SIGTERM left temporary files and said nothing; now one line, no temporary file, 128 + N."""
    import signal
    import subprocess
    import sys

    for k in range(6):
        _png(tmp_path / "in" / f"{k}.png")
    repo = Path(__file__).resolve().parents[1]
    proc = subprocess.Popen(
        [sys.executable, "-m", "sr3infer.cli", str(tmp_path / "in"), "-o", str(tmp_path / "out"), "--model", model,
         "--steps", "400", "--batch-size", "1", "--sampler", "ddim"],
        stderr=subprocess.PIPE, text=True, env={**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(repo)})
    lines = []
    for line in proc.stderr:  # the first file written: the run is in its loop, writing
        lines.append(line.rstrip("\n"))
        if "wrote" in line:
            break
    proc.send_signal(signum)
    rest = proc.stderr.read().splitlines()
    assert proc.wait(timeout=120) == code, lines + rest
    messages = [line for line in rest if line.startswith("sr3infer:")]
    assert messages[-1] == (f"sr3infer: terminated by {signal.Signals(signum).name}; complete outputs kept, "
                            "no temporary files"), rest
    assert not [p for p in (tmp_path / "out").iterdir() if p.name.startswith(".")]  # no temporary file left
    for path in (tmp_path / "out").iterdir():
        assert Image.open(path).size == (16, 16)  # every file there is whole


def test_a_heavy_run_states_its_cost_first_from_the_measured_speed(tmp_path, model, capsys):
    src = _png(tmp_path / "in.png")
    code, lines = _cli(capsys, src, "-o", tmp_path / "heavy.png", "--model", model, "--steps", 200)
    cost = [line for line in lines if "network calls" in line]
    assert code == 0 and len(cost) == 1 and lines.index(cost[0]) == 0
    assert re.fullmatch(r"sr3infer: this run makes 200 network calls: about \d+ s at \d+\.\d\d s per call \(measured "
                        r"now on cpu\); fewer --steps or --samples cost less", cost[0])
    code, lines = _cli(capsys, src, "-o", tmp_path / "light.png", "--model", model, "--steps", 5)
    assert code == 0 and not any("network calls" in line for line in lines)


def test_a_new_sampler_option_is_a_flag_with_no_edit_to_the_cli(monkeypatch, tmp_path, model, capsys):
    """A toy sampler with its own option is one function and one registry line: `--sampler toy --s-noise X`."""
    from sr3infer.sampling.samplers import SAMPLERS

    seen = []

    def sample_toy(denoise, x, gammas, *, s_noise: float = 1.0, clip_denoised=True, generator=None, callback=None,
                   disable=False):
        """One jump to the clean estimate at the noisiest level; it records the option it was given."""
        seen.append(s_noise)
        return denoise(x, gammas[:1].sqrt().expand(x.shape[0]))

    monkeypatch.setitem(SAMPLERS, "toy", sample_toy)
    for command in ([], ["eval"], ["cascade"]):
        assert main([*command, "--help"]) == 0
        text = " ".join(capsys.readouterr().out.split())
        assert "--s-noise" in text and "option s_noise of the toy sampler" in text
        assert re.search(r"ancestral, ?ddim, ?dpmpp_2m, ?toy", text)  # --sampler's choices
    src = _png(tmp_path / "in.png")
    code, lines = _cli(capsys, src, "-o", tmp_path / "ddim.png", "--model", model, "--sampler", "ddim", "--s-noise", 0.5)
    assert code == 2 and lines == ["sr3infer: error: --sampler ddim has no option --s-noise (its options: --eta); "
                                   "leave --s-noise out or pass --sampler toy"]
    code, lines = _cli(capsys, src, "-o", tmp_path / "inf.png", "--model", model, "--sampler", "toy", "--s-noise", "inf")
    assert code == 2 and lines[0].startswith("sr3infer: error: --s-noise must be a finite number, got inf;")
    assert not seen
    code, lines = _cli(capsys, src, "-o", tmp_path / "toy.png", "--model", model, "--sampler", "toy", "--s-noise", 0.5,
                       "--steps", 2, "--quiet")
    assert (code, lines) == (0, [])
    assert seen == [0.5]  # needs Upscaler.upscale(**sampler_options), which passes the option on by its name
