"""Edit a parsed params.yaml and read the one-line error its loader raises."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from ddrn.errors import ConfigError
from pipeline.params import config_from_dict


def mutated(raw: dict, path: str, value: Any) -> dict:
    """A deep copy of ``raw`` with ``path`` (dotted) set to ``value``."""
    data = copy.deepcopy(raw)
    *parents, last = path.split(".")
    node = data
    for key in parents:
        node = node[key]
    node[last] = value
    return data


def config_error(raw: dict, profile: str | None = None) -> str:
    """The message of the :class:`ConfigError` that loading ``raw`` raises (checked one line)."""
    with pytest.raises(ConfigError) as info:
        config_from_dict(raw, profile=profile)
    message = str(info.value)
    assert "\n" not in message
    return message
