"""End to end: the scripted expert's demos of a real libero_object task, written and read back."""

import numpy as np
import pytest

from tgrpo.cli import main
from tgrpo.data import DemoFile

pytestmark = pytest.mark.sim


def test_collect_demos_writes_a_valid_libero_file(tmp_path, capsys, monkeypatch):
    import os
    import signal

    import tgrpo.data.collect

    real, calls = tgrpo.data.collect.rollout_group, []

    def killing_once(pool, policy, **kwargs):  # a worker killed mid-episode: replaced, the episodes rerun
        calls.append(kwargs["seeds"])
        if len(calls) == 1:
            kwargs["on_step"] = lambda t, live: t == 2 and os.kill(pool.pids[1], signal.SIGKILL)
        return real(pool, policy, **kwargs)

    monkeypatch.setattr(tgrpo.data.collect, "rollout_group", killing_once)
    argv = ["collect-demos", "--suite", "libero_object", "--tasks", "0", "--num-demos", "2", "--num-envs", "2",
            "--image-size", "32", "--out", str(tmp_path)]
    assert main(argv) == 0
    assert calls[0] == calls[1]  # the killed attempt's seeds ran again
    assert "demonstration rollout attempt 1 failed" in capsys.readouterr().err
    path = tmp_path / "libero_object" / "pick_up_the_alphabet_soup_and_place_it_in_the_basket_demo.hdf5"
    with DemoFile(path) as f:
        assert len(f) == 2 and f.info.language_instruction == "pick up the alphabet soup and place it in the basket"
        for demo in f:
            n = len(demo)
            assert 30 < n <= 280
            assert demo.obs["agentview_rgb"].shape == (n, 32, 32, 3) and demo.obs["eye_in_hand_rgb"].dtype == np.uint8
            assert demo.states.shape[0] == n and demo.obs["ee_pos"].shape == (n, 3)
            assert np.abs(demo.actions).max() <= 1.0 and demo.actions[:, 6].max() > 0  # the gripper closed at some point
        assert f[0].attrs["seed"] != f[1].attrs["seed"]
    # a second run keeps the existing file
    assert main(argv) == 0
    assert "exists, kept" in capsys.readouterr().out
