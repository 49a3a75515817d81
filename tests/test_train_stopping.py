"""Stopping a training run with SIGTERM / Ctrl-C: the run ends after the step in flight with state and export saved."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from sr3infer import Upscaler
from sr3infer.runtime.distributed import DistContext
from sr3infer.train.stopping import StopOnSignal

from conftest import REPO
from test_train import _config, face_folder  # noqa: F401  (fixture)

pytestmark = pytest.mark.slow  # training processes and signals


def test_first_signal_sets_the_flag_and_the_second_acts_as_before():
    # Python's own Ctrl-C handler, as in a terminal: a job started in the background inherits SIGINT ignored
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with StopOnSignal() as stop:
            assert not stop.requested
            os.kill(os.getpid(), signal.SIGINT)
            assert stop.requested
            with pytest.raises(KeyboardInterrupt):
                os.kill(os.getpid(), signal.SIGINT)
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    finally:
        signal.signal(signal.SIGINT, previous)


def test_handlers_come_back_when_the_run_ends():
    before = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
    with StopOnSignal():
        assert signal.getsignal(signal.SIGTERM) is not before[signal.SIGTERM]
    assert {s: signal.getsignal(s) for s in before} == before


def test_a_single_process_agrees_with_itself():
    assert DistContext().any_rank(True) and not DistContext().any_rank(False)


def test_sigterm_ends_the_run_with_state_and_export_at_the_same_step(tmp_path, face_folder):  # noqa: F811
    cfg = _config(tmp_path, face_folder, name="stop", max_steps=10**9, max_minutes=10,
                  checkpoint_minutes=60, export_minutes=60)  # nothing is saved unless the stop saves it
    path = tmp_path / "stop.json"
    path.write_text(json.dumps(cfg.__dict__))
    run_dir = tmp_path / "runs" / "stop"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, "-m", "sr3infer.train", str(path)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 120
        while not (run_dir / "log.jsonl").is_file() or not (run_dir / "log.jsonl").read_text():
            assert proc.poll() is None and time.time() < deadline, proc.communicate()[1][-2000:]
            time.sleep(0.2)
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 0, stderr[-2000:]
    assert "stopped by signal" in stderr
    step = torch.load(run_dir / "state.pt", weights_only=True)["step"]
    assert step >= 50
    assert Upscaler.from_pretrained(run_dir / "export", device="cpu").config.task["training_steps"] == step
