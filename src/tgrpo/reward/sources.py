"""Where a task's stages come from: the BDDL goal (default), a JSON file, or an LLM (as in the paper).

The LLM source asks an OpenAI-compatible chat endpoint for a stage spec *as JSON data*; the reply is
parsed and validated against the task (:func:`tgrpo.reward.stages.parse_stage_spec`), cached per task
on disk, and never executed. If the endpoint is unreachable or the reply is invalid, the source either
falls back to the BDDL stages (with a warning) or raises, as configured.
"""

from __future__ import annotations

import json
import os
import sys
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from tgrpo.envs.libero_env import TaskInfo
from tgrpo.errors import ConfigError, choice_error
from tgrpo.reward.stages import STAGE_KINDS, Stage, parse_stage_spec, stages_from_bddl, stages_to_json

FALLBACKS = ("bddl", "error")


@dataclass(frozen=True)
class RewardConfig:
    """The dense reward of TGRPO (paper section 3.1).

    Attributes:
        source: where stages come from: ``bddl`` (derived from the goal predicates, no LLM), ``file``
            (``spec_file``: a JSON stage spec) or ``llm`` (an OpenAI-compatible chat endpoint).
        spec_file: JSON stage spec for ``source="file"``.
        llm_url: base URL of the chat endpoint (``.../v1``); default from ``TGRPO_LLM_URL``.
        llm_model: model name; default from ``TGRPO_LLM_MODEL``.
        llm_api_key_env: environment variable holding the API key (sent as a Bearer token if set).
        llm_timeout_s: seconds to wait for the endpoint.
        llm_fallback: on an unreachable endpoint or an invalid reply: ``bddl`` stages or ``error``.
        cache_dir: validated LLM specs are cached here, one JSON per task.
        sigma: distance scale (m) of the keypose shaping f2.
        shaping_weight: weight w of f2 relative to one stage of f1.
        keypose_demos: demos per task used to extract keyposes.
    """

    source: str = "bddl"
    spec_file: str | None = None
    llm_url: str | None = None
    llm_model: str | None = None
    llm_api_key_env: str = "OPENAI_API_KEY"
    llm_timeout_s: float = 60.0
    llm_fallback: str = "bddl"
    cache_dir: str = ".cache/tgrpo/stages"
    sigma: float = 0.1
    shaping_weight: float = 1.0
    keypose_demos: int = 20

    def __post_init__(self) -> None:
        if self.source not in STAGE_SOURCES:
            raise choice_error("reward source", self.source, STAGE_SOURCES)
        if self.llm_fallback not in FALLBACKS:
            raise choice_error("llm_fallback", self.llm_fallback, FALLBACKS)
        if self.source == "file" and not self.spec_file:
            raise ConfigError("reward.source 'file' needs reward.spec_file (a JSON stage spec)")
        if self.sigma <= 0:
            raise ConfigError(f"reward.sigma must be > 0 metres, got {self.sigma}")
        if self.shaping_weight < 0:
            raise ConfigError(f"reward.shaping_weight must be >= 0, got {self.shaping_weight}")


def _bddl(task: TaskInfo, cfg: RewardConfig) -> list[Stage]:
    return stages_from_bddl(task)


def _file(task: TaskInfo, cfg: RewardConfig) -> list[Stage]:
    path = Path(cfg.spec_file)
    if not path.exists():
        raise ConfigError(f"stage spec file {path} does not exist")
    return parse_stage_spec(path.read_text(), task)


SYSTEM_PROMPT = (
    "You decompose a robot manipulation task into sequential stages for a dense reward. Answer with JSON only: "
    '{"stages": [{"kind": K, ...}]}. Kinds and their fields: '
    + "; ".join(f"{k}: {', '.join(v)}" for k, v in STAGE_KINDS.items())
    + ". 'object' is a body name, 'target' a region or body name, 'joint' an articulated joint name, 'predicate' "
    "the 0-based index of the goal predicate the stage completes. Use only the names given."
)


def llm_prompt(task: TaskInfo) -> str:
    return json.dumps({
        "instruction": task.language,
        "goal_predicates": [list(p) for p in task.goal_predicates],
        "objects": list(task.object_names),
        "fixtures": list(task.fixture_names),
        "articulated_joints": list(task.articulation_names),
    })


def request_llm_spec(task: TaskInfo, cfg: RewardConfig) -> str:
    """POST a chat completion request and return the reply's text (raises ConfigError on failure)."""
    url = cfg.llm_url or os.environ.get("TGRPO_LLM_URL")
    model = cfg.llm_model or os.environ.get("TGRPO_LLM_MODEL")
    if not url or not model:
        raise ConfigError("reward.source 'llm' needs an endpoint: set reward.llm_url and reward.llm_model "
                          "(or TGRPO_LLM_URL and TGRPO_LLM_MODEL)")
    body = json.dumps({"model": model, "temperature": 0, "messages": [
        {"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": llm_prompt(task)}]}).encode()
    headers = {"Content-Type": "application/json"}
    if os.environ.get(cfg.llm_api_key_env):
        headers["Authorization"] = f"Bearer {os.environ[cfg.llm_api_key_env]}"
    request = urllib.request.Request(url.rstrip("/") + "/chat/completions", data=body, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=cfg.llm_timeout_s) as response:
            reply = json.loads(response.read())
        text = reply["choices"][0]["message"]["content"]
    except (urllib.error.URLError, TimeoutError, OSError) as exc:
        raise ConfigError(f"LLM endpoint {url} is unreachable: {exc}") from None
    except (KeyError, IndexError, TypeError, json.JSONDecodeError) as exc:
        raise ConfigError(f"LLM endpoint {url} returned no chat completion ({exc})") from None
    text = text.strip()
    if text.startswith("```"):  # tolerate a fenced JSON block; the content is still only parsed as JSON
        text = text.strip("`").removeprefix("json").strip()
    return text


def _llm(task: TaskInfo, cfg: RewardConfig) -> list[Stage]:
    cache = Path(cfg.cache_dir) / task.suite / f"{task.name}.json"
    if cache.exists():
        return parse_stage_spec(cache.read_text(), task)
    try:
        stages = parse_stage_spec(request_llm_spec(task, cfg), task)
    except ConfigError as exc:
        if cfg.llm_fallback == "error":
            raise
        print(f"warning: LLM stage spec for {task.name} unusable ({exc}); using the BDDL stages", file=sys.stderr)
        return stages_from_bddl(task)
    cache.parent.mkdir(parents=True, exist_ok=True)
    cache.write_text(stages_to_json(stages))
    return stages


STAGE_SOURCES: dict[str, Callable[[TaskInfo, RewardConfig], list[Stage]]] = {"bddl": _bddl, "file": _file, "llm": _llm}


def task_stages(task: TaskInfo, cfg: RewardConfig) -> list[Stage]:
    """The task's stages from the configured source."""
    return STAGE_SOURCES[cfg.source](task, cfg)
