"""Interruption: signals defer around checkpoint writes; a run killed with SIGKILL resumes with the same
curves as an uninterrupted one; SIGTERM stops a run cleanly with its checkpoint intact."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from tgrpo.errors import StopRequested


def test_graceful_stop_raises_at_once_outside_a_write_and_after_it_inside():
    from tgrpo.checkpoint import GracefulStop

    before = signal.getsignal(signal.SIGTERM)
    with GracefulStop() as stop:
        with pytest.raises(StopRequested, match="stopped by SIGTERM$"):
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(1)  # the handler runs before this returns
        finished = []
        with pytest.raises(StopRequested, match="SIGINT .after finishing the checkpoint write"):
            with stop.writing():
                os.kill(os.getpid(), signal.SIGINT)
                time.sleep(0.2)
                finished.append(True)  # the write goes on to its end
        assert finished == [True]
    assert signal.getsignal(signal.SIGTERM) is before


def _config(tmp_path, sft, name):
    data = {"suite": "libero_object", "task": 0, "iterations": 3, "eval_every": 0, "eval_init_states": [49],
            "out": str(tmp_path / name), "num_threads": 1, "probe_demos": 0, "seed": 3,
            "policy": {"checkpoint": str(sft), "lora_rank": 4},
            "rollout": {"group_size": 2, "max_steps": 5}, "algo": {"epochs": 2, "minibatch_steps": 4}}
    path = tmp_path / f"{name}.json"
    path.write_text(json.dumps(data))
    return path, data


def _start(config_path):
    return subprocess.Popen([sys.executable, "-m", "tgrpo.cli", "train", "--config", str(config_path)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for_iteration(run_dir, proc, k, timeout=600):
    state = run_dir / "checkpoint" / "trainer_state.json"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if state.exists() and json.loads(state.read_text())["iteration"] >= k:
            return
        assert proc.poll() is None, proc.communicate()[1][-2000:]
        time.sleep(0.2)
    raise AssertionError(f"no checkpoint of iteration {k} in {timeout} s")


@pytest.mark.sim
@pytest.mark.slow
def test_sigkill_resumes_with_the_same_curves_and_sigterm_stops_cleanly(tmp_path, tiny_sft):
    from tgrpo.checkpoint import find_checkpoint
    from tgrpo.config import train_config_from_dict
    from tgrpo.train import train

    _, ref_data = _config(tmp_path, tiny_sft, "reference")
    reference = train(train_config_from_dict(ref_data))
    ref = json.loads((tmp_path / "reference" / "checkpoint" / "trainer_state.json").read_text())["history"]

    path, data = _config(tmp_path, tiny_sft, "killed")
    proc = _start(path)
    _wait_for_iteration(tmp_path / "killed", proc, 1)
    proc.send_signal(signal.SIGKILL)  # at an arbitrary moment of iteration 2 (or its checkpoint write)
    proc.wait(timeout=60)
    resumed = train(train_config_from_dict(data))
    hist = json.loads((tmp_path / "killed" / "checkpoint" / "trainer_state.json").read_text())["history"]
    assert [h["iteration"] for h in hist] == [1, 2, 3]
    for a, b in zip(ref, hist):  # the loss and reward curves from the checkpoint on equal the uninterrupted run's
        assert a["reward/return_mean"] == pytest.approx(b["reward/return_mean"], abs=1e-6)
        assert a["update/loss"] == pytest.approx(b["update/loss"], rel=1e-4, abs=1e-7)
        assert a["update/kl"] == pytest.approx(b["update/kl"], rel=1e-3, abs=1e-7)
    assert resumed["evals"] == reference["evals"]

    path, _ = _config(tmp_path, tiny_sft, "terminated")
    proc = _start(path)
    _wait_for_iteration(tmp_path / "terminated", proc, 1)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130 and "stopped by SIGTERM" in err and "rerun the command to resume" in err
    ckpt = find_checkpoint(tmp_path / "terminated" / "checkpoint")
    state = json.loads((ckpt / "trainer_state.json").read_text())
    assert state["iteration"] >= 1 and np.isfinite(state["history"][0]["update/loss"])
    assert not list((tmp_path / "terminated").glob("checkpoint.tmp*"))  # no half-written checkpoint left


@pytest.mark.sim
def test_every_bad_input_of_the_reliability_table_is_refused_by_name():
    """bench/bad_inputs.py exits 1 when a case does not end with exit code 2 and its expected message."""
    from pathlib import Path

    script = Path(__file__).resolve().parents[1] / "bench" / "bad_inputs.py"
    result = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.count("\n| ") >= 25


def test_no_code_from_outside_is_executed():
    """No eval/exec, pickle or torch.load in the package: checkpoints are safetensors + JSON, LLM replies data."""
    import re
    from pathlib import Path

    src = Path(__file__).resolve().parents[1] / "src" / "tgrpo"
    pattern = re.compile(r"(?<![\w.])(eval|exec)\(|\bpickle\b|torch\.load\(|allow_pickle|yaml\.load\(|marshal")
    hits = [f"{p.relative_to(src)}:{i}: {line.strip()}" for p in src.rglob("*.py")
            for i, line in enumerate(p.read_text().splitlines(), 1)
            if pattern.search(line) and not line.lstrip().startswith("#") and "no pickle" not in line]
    assert hits == []


def test_checkpoint_write_is_atomic_and_an_interrupted_swap_finds_the_previous_one(tmp_path):
    from tgrpo.checkpoint import find_checkpoint, save_checkpoint

    def policy_files(d):
        (d / "policy.json").write_text("{}")

    save_checkpoint(tmp_path / "checkpoint", policy_files, None, {"iteration": 1})

    def crash(d):  # killed while writing the next checkpoint
        (d / "policy.json").write_text("{partial")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(tmp_path / "checkpoint", crash, None, {"iteration": 2})
    found = find_checkpoint(tmp_path / "checkpoint")
    assert json.loads((found / "trainer_state.json").read_text())["iteration"] == 1
    assert (found / "policy.json").read_text() == "{}"
    # killed between the two renames: only checkpoint.old (complete) and checkpoint.tmp exist
    (tmp_path / "checkpoint").rename(tmp_path / "checkpoint.old")
    assert find_checkpoint(tmp_path / "checkpoint") == tmp_path / "checkpoint.old"
    save_checkpoint(tmp_path / "checkpoint", policy_files, None, {"iteration": 3})
    assert json.loads((find_checkpoint(tmp_path / "checkpoint") / "trainer_state.json").read_text())["iteration"] == 3


def test_checkpoint_fingerprint_reads_the_policy_files_only_and_sees_a_rewrite(tmp_path):
    from tgrpo.checkpoint import fingerprint, save_checkpoint

    def policy_files(d):
        (d / "policy.safetensors").write_bytes(b"weights-1")
        (d / "policy.json").write_text("{}")

    save_checkpoint(tmp_path / "a", policy_files, None, {"history": [{"time/rollout_s": 61.0}]})
    save_checkpoint(tmp_path / "b", policy_files, None, {"history": [{"time/rollout_s": 64.5}]})
    (tmp_path / "b" / "optimizer.safetensors").write_bytes(b"other moments")
    first = fingerprint(tmp_path / "a")
    assert fingerprint(tmp_path / "b") == first  # other wall times and optimizer state, same policy
    (tmp_path / "a" / "policy.safetensors").write_bytes(b"weights-2")  # same size, rewritten in this process
    assert fingerprint(tmp_path / "a") != first
    (tmp_path / "b" / "policy.json").write_text('{"vision": "siglip"}')
    assert fingerprint(tmp_path / "b") not in (first, fingerprint(tmp_path / "a"))
