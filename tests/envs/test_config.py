import pytest

from tgrpo.envs import EnvConfig, get_suite, resolve_task
from tgrpo.errors import ConfigError


def test_suite_max_steps_follow_the_protocol():
    assert [get_suite(s).max_steps for s in ("libero_spatial", "libero_object", "libero_goal", "libero_10")] == [
        220, 280, 300, 520]


def test_unknown_suite_lists_valid_ones():
    with pytest.raises(ConfigError, match="libero_foo.*libero_spatial, libero_object, libero_goal, libero_10"):
        get_suite("libero_foo")


@pytest.mark.parametrize("kwargs, pattern", [
    ({"cameras": ("front",)}, "camera 'front'.*agentview, wrist"),
    ({"cameras": ("wrist", "wrist")}, "twice"),
    ({"image_size": 8}, "image_size 8"),
    ({"render_backend": "glfw"}, "glfw.*egl, osmesa"),
    ({"suite": "libero_90"}, "libero_90"),
])
def test_env_config_rejects_bad_values(kwargs, pattern):
    with pytest.raises(ConfigError, match=pattern):
        EnvConfig(**kwargs)


def test_resolve_task_by_index_and_name():
    assert resolve_task("libero_object", 3) == 3
    assert resolve_task("libero_object", "pick_up_the_ketchup_and_place_it_in_the_basket") == 4
    with pytest.raises(ConfigError, match=r"valid: 0\.\.9"):
        resolve_task("libero_object", 10)
    with pytest.raises(ConfigError, match="0=pick_up_the_alphabet_soup"):
        resolve_task("libero_object", "pick_up_the_moon")
