import http.server
import json
import threading

import numpy as np
import pytest

from tgrpo.envs import TaskInfo
from tgrpo.errors import ConfigError
from tgrpo.reward import RewardConfig, gripper_events, parse_stage_spec, stages_from_bddl, stages_to_json, task_stages

OBJECT = TaskInfo("libero_object", 0, "pick_up_soup", "pick up the soup", "x.bddl",
                  (("in", "alphabet_soup_1", "basket_1_contain_region"),), object_names=("alphabet_soup_1", "basket_1"))
GOAL = TaskInfo("libero_goal", 0, "open_drawer", "open the middle drawer", "x.bddl",
                (("open", "wooden_cabinet_1_middle_region"),), fixture_names=("wooden_cabinet_1",),
                articulation_names=("wooden_cabinet_1_top_level", "wooden_cabinet_1_middle_level", "flat_stove_1_button"))
TWO = TaskInfo("libero_10", 0, "two", "put both", "x.bddl",
               (("in", "a_1", "basket_1_contain_region"), ("turnon", "flat_stove_1")),
               object_names=("a_1", "basket_1"), fixture_names=("flat_stove_1",), articulation_names=("flat_stove_1_button",))


def test_bddl_stages():
    assert [s.describe() for s in stages_from_bddl(OBJECT)] == [
        "approach(alphabet_soup_1)", "grasp(alphabet_soup_1)", "move(alphabet_soup_1 -> basket_1_contain_region)",
        "place(alphabet_soup_1 -> basket_1_contain_region)"]
    (drawer,) = stages_from_bddl(GOAL)
    assert drawer.kind == "actuate" and drawer.joint == "wooden_cabinet_1_middle_level" and drawer.predicate == 0
    two = stages_from_bddl(TWO)
    assert [s.kind for s in two] == ["approach", "grasp", "move", "place", "actuate"] and two[-1].predicate == 1


def test_unsupported_predicate_is_named():
    task = TaskInfo("libero_goal", 5, "push", "push", "x.bddl", (("stack", "a", "b", "c"),))
    with pytest.raises(ConfigError, match=r"\('stack', 'a', 'b', 'c'\) has no stage rule; supported: in, on, open"):
        stages_from_bddl(task)


def test_json_round_trip_and_validation():
    stages = stages_from_bddl(OBJECT)
    assert parse_stage_spec(stages_to_json(stages), OBJECT) == stages
    bad = [
        ("not json", "not valid JSON"),
        ('{"stages": [{"kind": "teleport", "object": "alphabet_soup_1"}]}', "unknown kind 'teleport'.*approach, grasp"),
        ('{"stages": [{"kind": "grasp", "object": "moon_1"}]}', "object 'moon_1' is not in the scene; valid: alphabet_soup_1"),
        ('{"stages": [{"kind": "place", "object": "alphabet_soup_1", "target": "basket_1", "predicate": 3}]}',
         "predicate index 3 out of range 0..0"),
        ('{"stages": [{"kind": "grasp"}]}', "field 'object' is required"),
        ('{"stages": [{"kind": "grasp", "object": "alphabet_soup_1", "code": "import os"}]}', "unknown fields \\['code'\\]"),
        ('{"stages": []}', "is empty"),
    ]
    for text, pattern in bad:
        with pytest.raises(ConfigError, match=pattern):
            parse_stage_spec(text, OBJECT)


class _Handler(http.server.BaseHTTPRequestHandler):
    reply = ""
    hits = 0

    def do_POST(self):  # noqa: N802
        type(self).hits += 1
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        assert body["messages"][1]["role"] == "user" and "alphabet_soup_1" in body["messages"][1]["content"]
        payload = json.dumps({"choices": [{"message": {"content": type(self).reply}}]}).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *args):
        pass


@pytest.fixture
def endpoint():
    server = http.server.HTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    _Handler.hits = 0
    yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    server.shutdown()


def test_llm_spec_is_validated_cached_and_never_run(endpoint, tmp_path):
    _Handler.reply = '```json\n{"stages": [{"kind": "grasp", "object": "alphabet_soup_1"}, ' \
                     '{"kind": "place", "object": "alphabet_soup_1", "target": "basket_1_contain_region", "predicate": 0}]}\n```'
    cfg = RewardConfig(source="llm", llm_url=endpoint, llm_model="m", cache_dir=str(tmp_path), llm_fallback="error")
    stages = task_stages(OBJECT, cfg)
    assert [s.kind for s in stages] == ["grasp", "place"] and _Handler.hits == 1
    assert (tmp_path / "libero_object" / "pick_up_soup.json").exists()
    assert task_stages(OBJECT, cfg) == stages and _Handler.hits == 1  # served from the cache


def test_invalid_llm_reply_falls_back_or_raises(endpoint, tmp_path, capsys):
    _Handler.reply = '{"stages": [{"kind": "grasp", "object": "__import__(\'os\')"}]}'
    cfg = RewardConfig(source="llm", llm_url=endpoint, llm_model="m", cache_dir=str(tmp_path))
    assert task_stages(OBJECT, cfg) == stages_from_bddl(OBJECT)
    assert "using the BDDL stages" in capsys.readouterr().err
    assert not list(tmp_path.rglob("*.json"))  # nothing invalid is cached
    with pytest.raises(ConfigError, match="is not in the scene"):
        task_stages(OBJECT, RewardConfig(source="llm", llm_url=endpoint, llm_model="m", cache_dir=str(tmp_path),
                                         llm_fallback="error"))


def test_unreachable_endpoint_and_bad_config(tmp_path):
    cfg = RewardConfig(source="llm", llm_url="http://127.0.0.1:9/v1", llm_model="m", cache_dir=str(tmp_path),
                       llm_fallback="error", llm_timeout_s=2)
    with pytest.raises(ConfigError, match="unreachable"):
        task_stages(OBJECT, cfg)
    with pytest.raises(ConfigError, match="reward source 'gpt'.*bddl, file, llm"):
        RewardConfig(source="gpt")
    with pytest.raises(ConfigError, match="needs reward.spec_file"):
        RewardConfig(source="file")


def test_gripper_events():
    a = np.zeros((8, 7))
    a[:, 6] = [-1, -1, 1, 1, 1, -1, -1, 1]
    assert gripper_events(a) == ([2, 7], [5])
