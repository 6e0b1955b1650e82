import numpy as np
import pytest

from tgrpo.errors import DatasetError
from tgrpo.policy.normalization import ActionNormalizer


def test_bounds_q99_hand_computed():
    norm = ActionNormalizer(q01=np.array([0.0, -2.0]), q99=np.array([1.0, 2.0]), mask=np.array([True, False]))
    # dim 0: 2 * (0.25 - 0) / 1 - 1 = -0.5; out-of-range 3.0 clips to 1; dim 1 unmasked passes through
    np.testing.assert_allclose(norm.normalize([[0.25, 0.7], [3.0, -1.0]]), [[-0.5, 0.7], [1.0, -1.0]], atol=1e-6)
    np.testing.assert_allclose(norm.unnormalize([[-0.5, 0.7]]), [[0.25, 0.7]], atol=1e-6)


def test_fit_leaves_the_gripper_alone_and_round_trips(tmp_path):
    rng = np.random.default_rng(0)
    actions = np.concatenate([rng.normal(0, 0.3, (500, 6)), rng.choice([-1.0, 1.0], (500, 1))], 1)
    norm = ActionNormalizer.fit(actions)
    assert norm.mask.tolist() == [True] * 6 + [False]
    inside = actions[(actions[:, :6] > norm.q01[:6]).all(1) & (actions[:, :6] < norm.q99[:6]).all(1)]
    np.testing.assert_allclose(norm.unnormalize(norm.normalize(inside)), inside, atol=1e-5)
    norm.save(tmp_path)
    loaded = ActionNormalizer.load(tmp_path)
    np.testing.assert_allclose(loaded.q99, norm.q99)


def test_missing_or_bad_statistics_are_named(tmp_path):
    with pytest.raises(DatasetError, match="dataset_statistics.json is missing"):
        ActionNormalizer.load(tmp_path)
    (tmp_path / "dataset_statistics.json").write_text('{"action": {"q01": [0]}}')
    with pytest.raises(DatasetError, match="malformed"):
        ActionNormalizer.load(tmp_path)
    with pytest.raises(DatasetError, match="finite actions"):
        ActionNormalizer.fit(np.array([[np.nan] * 7, [0.0] * 7]))
