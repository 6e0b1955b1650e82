"""Feed tgrpo bad input and record what each gets: the table of docs/reliability.md.

    .venv/bin/python bench/bad_inputs.py --out docs/reliability.md

Every case runs the real command line in-process (``tgrpo.cli.main``) or the named API call, on files this
script writes into a temporary directory, and records the exit code and the first line of the message.
A case fails the script (exit 1) if it does not end with exit code 2 and a message that contains the
expected words, so the table cannot go stale silently. Bad input is refused before any environment
worker starts (the stage-spec case builds one environment without cameras); the run takes about 20 seconds.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import sys
import tempfile
from pathlib import Path

import numpy as np

BEGIN, END = "<!-- bad-inputs:begin -->", "<!-- bad-inputs:end -->"


def run_cli(argv: list[str]) -> tuple[int, str]:
    from tgrpo.cli import main

    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            code = main(argv)
        except SystemExit as exc:  # argparse
            code = int(exc.code or 0)
    lines = [line for line in err.getvalue().splitlines() if "robosuite WARNING" not in line and line.strip()]
    return code, lines[-1] if lines else ""


def run_api(call) -> tuple[int, str]:
    from tgrpo.errors import TgrpoError

    try:
        call()
    except TgrpoError as exc:
        return 2, f"{type(exc).__name__}: {str(exc).splitlines()[0]}"
    return 0, "(accepted)"


def cases(tmp: Path) -> list[tuple[str, str, object, str]]:
    """(what, how it is given, runner, words the message must contain)."""
    import h5py

    from tgrpo.policy.config import PolicyConfig, TinyVLASize
    from tgrpo.policy.vla import TinyVLA

    ckpt = tmp / "ckpt"
    small = TinyVLASize.smoke()
    TinyVLA(PolicyConfig(size=small, image_size=64)).save(ckpt)
    other = tmp / "other_model"
    TinyVLA(PolicyConfig(size=small, image_size=64)).save(other)
    meta = json.loads((other / "policy.json").read_text())
    meta["policy"]["size"]["text_width"] = 48  # weights of one model, policy.json of another
    (other / "policy.json").write_text(json.dumps(meta))
    (tmp / "garbage.hdf5").write_bytes(b"not an hdf5 file")
    with h5py.File(tmp / "no_data.hdf5", "w") as f:
        f.create_group("something_else")
    with h5py.File(tmp / "no_actions.hdf5", "w") as f:
        f.create_group("data").create_group("demo_0").create_group("obs")
    (tmp / "bad_spec.json").write_text(json.dumps({"stages": [{"kind": "teleport", "object": "alphabet_soup_1"}]}))
    (tmp / "bad_experiment.json").write_text(json.dumps({"out": str(tmp / "e"), "tasks": ["libero_object:0"],
                                                         "methods": [{"name": "x", "overides": {}}]}))
    train = ["train", "--checkpoint", str(ckpt), "--out", str(tmp / "run")]

    def nan_action():
        from tgrpo.envs.libero_env import check_action  # what LiberoEnv.step runs before the simulator

        check_action(np.array([0, 0, float("nan"), 0, 0, 0, 1.0]))

    def nan_policy_output():
        from tgrpo.rollout.engine import _check_policy_step
        from tgrpo.rollout.types import PolicyStep

        _check_policy_step(PolicyStep(actions=np.full((2, 7), np.inf, np.float32)), 2)

    cli = lambda *a: (lambda: run_cli(list(a)))  # noqa: E731
    return [
        ("negative group size", "`tgrpo train rollout.group_size=-4`", cli(*train, "rollout.group_size=-4"),
         "group_size must be >= 2"),
        ("a1 + a2 that makes no sense", "`tgrpo train algo.a1=0 algo.a2=0`", cli(*train, "algo.a1=0", "algo.a2=0"),
         "positive sum"),
        ("negative a1", "`tgrpo train algo.a1=-0.3`", cli(*train, "algo.a1=-0.3"), "must be >= 0"),
        ("unknown advantage estimator", "`tgrpo train algo.advantage=ppo`", cli(*train, "algo.advantage=ppo"),
         "valid choices: tgrpo, grpo, step"),
        ("unknown update objective", "`tgrpo train algo.objective=ppo`", cli(*train, "algo.objective=ppo"),
         "valid choices: clip, dpo"),
        ("DPO without a reference policy", "`tgrpo train algo.objective=dpo policy.lora_rank=0`",
         cli(*train, "algo.objective=dpo", "policy.lora_rank=0"), "lora_rank > 0"),
        ("unknown config key", "`tgrpo train algo.gamma=0.99`", cli(*train, "algo.gamma=0.99"), "valid: algo.objective"),
        ("unknown rollout backend", "`tgrpo train rollout.backend=slurm`", cli(*train, "rollout.backend=slurm"),
         "valid choices: local, ray"),
        ("init state out of range", "`tgrpo train eval_init_states=40-50`", cli(*train, "eval_init_states=40-50"),
         "0..49"),
        ("unknown suite", "`tgrpo train --suite libero_100`", cli(*train, "--suite", "libero_100"), "invalid choice"),
        ("unknown task index", "`tgrpo train --task 12`", cli(*train, "--task", "12"), "0..9"),
        ("unknown task name", "`tgrpo train --task pick_up_the_moon`", cli(*train, "--task", "pick_up_the_moon"),
         "valid names: 0=pick_up_the_alphabet_soup"),
        ("missing checkpoint", "`tgrpo train --checkpoint runs/nowhere`",
         cli("train", "--checkpoint", str(tmp / "nowhere"), "--out", str(tmp / "run2")), "not a tgrpo policy checkpoint"),
        ("checkpoint of another model", "weights of one size, policy.json of another",
         cli("eval", "--checkpoint", str(other), "--out", str(tmp / "ev")), "do not fit the model"),
        ("unreadable config file", "`tgrpo train --config missing.json`",
         cli("train", "--config", str(tmp / "missing.json")), "cannot read config file"),
        ("missing HDF5 dataset", "`tgrpo sft --data missing.hdf5`",
         cli("sft", "--data", str(tmp / "missing.hdf5"), "--out", str(tmp / "s1")), "missing.hdf5"),
        ("a file that is not HDF5", "`tgrpo sft --data garbage.hdf5`",
         cli("sft", "--data", str(tmp / "garbage.hdf5"), "--out", str(tmp / "s2")), "garbage.hdf5"),
        ("HDF5 without LIBERO's data group", "`tgrpo sft --data no_data.hdf5`",
         cli("sft", "--data", str(tmp / "no_data.hdf5"), "--out", str(tmp / "s3")), "no_data.hdf5"),
        ("HDF5 demo without actions", "`tgrpo sft --data no_actions.hdf5`",
         cli("sft", "--data", str(tmp / "no_actions.hdf5"), "--out", str(tmp / "s4")), "no_actions.hdf5"),
        ("stage spec that fails validation (as an LLM could return)", "`tgrpo reward --source file --spec-file bad.json`",
         cli("reward", "--source", "file", "--spec-file", str(tmp / "bad_spec.json")), "teleport"),
        ("unknown stage source", "`tgrpo reward --source oracle`", cli("reward", "--source", "oracle"),
         "valid choices: bddl"),
        ("evaluation init states out of range", "`tgrpo eval --init-states 0-60`",
         cli("eval", "--checkpoint", str(ckpt), "--init-states", "0-60", "--out", str(tmp / "ev2")), "0..49"),
        ("comparison without episodes", "`tgrpo compare runs/none runs/other`",
         cli("compare", str(tmp / "none"), str(tmp / "other")), "no evaluation episodes"),
        ("experiment method with a misspelt key", "`tgrpo experiment bad.json`",
         cli("experiment", str(tmp / "bad_experiment.json")), "valid: name, overrides, sweep"),
        ("non-finite action sent to the simulator", "`LiberoEnv.step([0, 0, nan, ...])`",
         lambda: run_api(nan_action), "7 finite numbers"),
        ("non-finite action from the policy", "a policy returning inf actions to the rollout engine",
         lambda: run_api(nan_policy_output), "non-finite actions"),
    ]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="-", help="Markdown file for the table ('-': stdout only)")
    args = p.parse_args()
    rows, failed = [], []
    with tempfile.TemporaryDirectory() as d:
        for what, how, runner, expect in cases(Path(d)):
            code, message = runner()
            message = message.replace(d, "TMP")
            ok = code == 2 and expect in message
            if not ok:
                failed.append(f"{what}: exit {code}, {message!r} (expected exit 2 and {expect!r})")
            rows.append(f"| {what} | {how} | {code} | {message.replace('|', '/')} |")
    table = "\n".join(["| bad input | given as | exit code | what the user sees (last line) |", "|---|---|---|---|", *rows])
    print(table)
    if args.out != "-":  # replaces the table between the markers (the whole file if it has none)
        out = Path(args.out)
        text = out.read_text() if out.exists() else ""
        if BEGIN in text and END in text:
            text = text[:text.index(BEGIN) + len(BEGIN)] + "\n" + table + "\n" + text[text.index(END):]
        else:
            text = table + "\n"
        out.write_text(text)
    for f in failed:
        print("FAILED:", f, file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
