import numpy as np

from tgrpo.policy import ActionTokenizer


def test_bins_match_openvla_hand_computed_values():
    tok = ActionTokenizer()
    # edges = linspace(-1, 1, 256), width 2/255; digitize(-1) = 1 -> bin 0; digitize(1) = 256 -> bin 255
    np.testing.assert_array_equal(tok.encode([-1.0, -0.999, 0.0, 0.5, 1.0]), [0, 0, 127, 191, 255])
    # centre of bin 0 = -1 + 1/255; bin 127 = -1 + 255/255 = 0.0 ... (-1 + (2*127+1)/255)
    np.testing.assert_allclose(tok.decode([0, 127, 254, 255]),
                               [-1 + 1 / 255, -1 + 255 / 255, 1 - 1 / 255, 1 - 1 / 255], atol=1e-6)


def test_round_trip_error_is_below_one_bin():
    tok = ActionTokenizer()
    a = np.random.default_rng(0).uniform(-1, 1, size=(1000, 7))
    assert np.abs(tok.decode(tok.encode(a)) - a).max() <= 2 / 255 + 1e-6


def test_vocab_mapping_uses_last_256_ids():
    tok = ActionTokenizer()
    ids = tok.to_vocab(np.array([0, 255]), vocab_size=32000)
    np.testing.assert_array_equal(ids, [31999, 31744])
    np.testing.assert_array_equal(tok.from_vocab(ids, 32000), [0, 255])
