"""The bottom layer: the error users see, registries, typed configs, and the persistence format of modules."""

from vaelab.core.config import coerce, make_config, parse_assignments, with_overrides
from vaelab.core.errors import VaelabError
from vaelab.core.registry import Entry, Registry, TypeRegistry

__all__ = [
    "Entry",
    "Registry",
    "TypeRegistry",
    "VaelabError",
    "coerce",
    "make_config",
    "parse_assignments",
    "with_overrides",
]
