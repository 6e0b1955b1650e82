import os

import pytest

import tgrpo  # noqa: F401  (first: OpenMP's wait policy is set before a test module loads torch)

os.environ.setdefault("MUJOCO_GL", "egl")
os.environ.setdefault("PYOPENGL_PLATFORM", os.environ["MUJOCO_GL"])


@pytest.fixture
def tiny_sft(tmp_path):
    """A freshly initialised, very small tiny-vla (64 px, both cameras) saved as an SFT checkpoint: the start
    of the short training runs in the tests."""
    from tgrpo.policy.config import PolicyConfig, TinyVLASize
    from tgrpo.policy.vla import TinyVLA

    size = TinyVLASize.smoke()
    path = tmp_path / "sft"
    TinyVLA(PolicyConfig(size=size, image_size=64)).save(path)
    return path
