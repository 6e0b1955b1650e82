import json

import h5py
import numpy as np
import pytest

from tgrpo.data import REQUIRED_OBS_KEYS, Demo, DemoFile, DemoWriter, default_demo_path
from tgrpo.envs import TaskInfo
from tgrpo.errors import DatasetError


@pytest.fixture
def task(tmp_path):
    bddl = tmp_path / "t.bddl"
    bddl.write_text("(define (problem LIBERO_Tabletop_Manipulation))")
    return TaskInfo("libero_object", 2, "pick_up_x", "pick up x", str(bddl), (("in", "x_1", "basket_1_contain_region"),))


def _demo(rng, n):
    obs = {
        "agentview_rgb": rng.integers(0, 256, (n, 8, 8, 3), dtype=np.uint8),
        "eye_in_hand_rgb": rng.integers(0, 256, (n, 8, 8, 3), dtype=np.uint8),
        "ee_pos": rng.normal(size=(n, 3)), "ee_ori": rng.normal(size=(n, 3)),
        "gripper_states": rng.normal(size=(n, 2)), "joint_states": rng.normal(size=(n, 7)),
    }
    return Demo(actions=rng.uniform(-1, 1, (n, 7)).astype(np.float32), obs=obs, states=rng.normal(size=(n, 11)),
                model_file="<mujoco/>", attrs={"seed": 42})


def test_write_then_read_back_is_equal(tmp_path, task):
    rng = np.random.default_rng(0)
    demos = [_demo(rng, 5), _demo(rng, 9)]
    path = default_demo_path(tmp_path, task.suite, task.name)
    assert path == tmp_path / "libero_object" / "pick_up_x_demo.hdf5"
    with DemoWriter(path, task, {"camera_heights": 8}) as w:
        for d in demos:
            w.add(d)
    assert not path.with_name(path.name + ".partial").exists()
    with DemoFile(path) as f:
        assert len(f) == 2 and f.info.language_instruction == "pick up x" and f.info.total == 14
        assert f.info.env_args["env_kwargs"] == {"camera_heights": 8}
        for want, got in zip(demos, f):
            np.testing.assert_array_equal(got.actions, want.actions)
            np.testing.assert_array_equal(got.states, want.states)
            for k in REQUIRED_OBS_KEYS:
                np.testing.assert_array_equal(got.obs[k], want.obs[k])
            assert got.model_file == "<mujoco/>" and got.attrs["seed"] == 42
    with h5py.File(path) as raw:  # LIBERO's own attribute layout
        assert raw["data"].attrs["num_demos"] == 2
        assert json.loads(raw["data"].attrs["problem_info"])["language_instruction"] == "pick up x"
        assert raw["data/demo_1/dones"][-1] == 1 and raw["data/demo_1"].attrs["num_samples"] == 9


def test_interrupted_write_keeps_the_existing_file(tmp_path, task):
    path = tmp_path / "d.hdf5"
    path.write_bytes(b"precious")
    with pytest.raises(RuntimeError):
        with DemoWriter(path, task) as w:
            w.add(_demo(np.random.default_rng(0), 3))
            raise RuntimeError("interrupted")
    assert path.read_bytes() == b"precious" and not (tmp_path / "d.hdf5.partial").exists()


def test_missing_and_malformed_files_are_named(tmp_path, task):
    with pytest.raises(DatasetError, match="nope.hdf5 does not exist"):
        DemoFile(tmp_path / "nope.hdf5")
    bad = tmp_path / "bad.hdf5"
    bad.write_text("not hdf5")
    with pytest.raises(DatasetError, match="bad.hdf5 is not a readable HDF5 file"):
        DemoFile(bad)
    path = tmp_path / "d.hdf5"
    with DemoWriter(path, task) as w:
        w.add(_demo(np.random.default_rng(0), 3))
    with h5py.File(path, "a") as raw:
        del raw["data/demo_0/obs/joint_states"]
    with pytest.raises(DatasetError, match="d.hdf5: /data/demo_0/obs has no 'joint_states' dataset"):
        DemoFile(path)[0]


def test_task_demo_file_is_found_by_name_or_instruction(tmp_path, task):
    from tgrpo.data.hdf5 import find_task_demo_file, load_task_demos

    other = tmp_path / "misc" / "renamed.hdf5"
    with DemoWriter(other, task) as w:
        for n in (3, 4, 5):
            w.add(_demo(np.random.default_rng(n), n))
    assert find_task_demo_file(tmp_path, task) == other  # found by its instruction
    named = default_demo_path(tmp_path, task.suite, task.name)
    with DemoWriter(named, task) as w:
        w.add(_demo(np.random.default_rng(0), 2))
    assert find_task_demo_file(tmp_path, task) == named  # LIBERO's name wins
    path, demos = load_task_demos(other, task, limit=2)
    assert path == other and [len(d) for d in demos] == [3, 4]
    with pytest.raises(DatasetError, match="no demo file for task 'pick up x'.*collect-demos --suite libero_object --tasks 2"):
        find_task_demo_file(tmp_path / "misc" / "empty", task)


def test_fingerprint_covers_the_trajectories_not_the_attributes(tmp_path, task):
    def write(path, demos, env_kwargs=None):
        with DemoWriter(path, task, env_kwargs or {}) as w:
            for d in demos:
                w.add(d)
        with DemoFile(path) as f:
            return f.fingerprint()

    rng = np.random.default_rng(0)
    demos = [_demo(rng, 5), _demo(rng, 9)]
    first = write(tmp_path / "a.hdf5", demos)
    assert write(tmp_path / "b.hdf5", demos, {"camera_heights": 8}) == first  # other env attributes, same demos
    demos[1].actions[3, 0] += 1e-3  # one action component of one step
    assert write(tmp_path / "c.hdf5", demos) != first
    assert write(tmp_path / "d.hdf5", demos[:1]) != first
