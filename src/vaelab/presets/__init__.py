"""Preset runs shipped with the package: ``vaelab train --preset NAME`` reproduces a published setup.

A preset is a JSON file in this folder: {"description", "model", "data", "options"}; options are
the same keys as ``--set``, and flags given on the command line override them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

from vaelab.core.errors import VaelabError


@dataclass(frozen=True)
class Preset:
    name: str
    description: str
    model: str
    data: str
    options: dict[str, Any] = field(default_factory=dict)


def presets() -> dict[str, Preset]:
    found = {}
    for entry in resources.files(__package__).iterdir():
        if entry.name.endswith(".json"):
            d = json.loads(entry.read_text())
            name = entry.name[: -len(".json")]
            found[name] = Preset(name, d["description"], d["model"], d["data"], d.get("options", {}))
    return dict(sorted(found.items()))


def get_preset(name: str) -> Preset:
    available = presets()
    if name not in available:
        raise VaelabError(f"unknown preset {name!r}; choose from: {', '.join(available) or '(none)'}")
    return available[name]
