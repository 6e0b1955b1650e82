"""Registry of policy families: a name in ``PolicyConfig.name`` or a checkpoint's policy.json -> class."""

from __future__ import annotations

import json
from pathlib import Path

from tgrpo.errors import DatasetError, choice_error
from tgrpo.policy.config import PolicyConfig


def _tiny_vla():
    from tgrpo.policy.vla import TinyVLA

    return TinyVLA


def _pretrained_vla():
    from tgrpo.policy.pretrained import PretrainedVLA

    return PretrainedVLA


POLICIES = {"tiny-vla": _tiny_vla, "pretrained-vla": _pretrained_vla}


def policy_class(name: str):
    try:
        return POLICIES[name]()
    except KeyError:
        raise choice_error("policy", name, POLICIES) from None


def build_policy(config: PolicyConfig):
    """A fresh policy of ``config.name`` (or the checkpoint in ``config.checkpoint``)."""
    if config.checkpoint:
        return load_policy(config.checkpoint)
    return policy_class(config.name)(config)


def load_policy(directory: str | Path, **overrides):
    """Load any registered policy family from its checkpoint directory."""
    meta = Path(directory) / "policy.json"
    if not meta.exists():
        raise DatasetError(f"{directory} is not a tgrpo policy checkpoint (no policy.json); train one with `tgrpo sft`")
    name = json.loads(meta.read_text())["policy"].get("name", "tiny-vla")
    return policy_class(name).load(directory, **overrides)
