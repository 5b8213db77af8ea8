"""Your own data: image folders, .npy/.npz arrays, .csv tables and Python objects, each a registered source.

``describe_data`` turns what ``--data``/``data=`` was given into the run config's data section; importing this
package registers every source (``PATH_SOURCES`` by what a path is, ``OBJECT_SOURCES`` by an object's type, and
their loaders in ``DATASETS``)."""

from vaelab.data.sources import arrays, folder, objects, table  # noqa: F401  (registration)
from vaelab.data.sources.registry import OBJECT_SOURCES, PATH_SOURCES, PathSource, describe_data, fingerprint

__all__ = ["OBJECT_SOURCES", "PATH_SOURCES", "PathSource", "describe_data", "fingerprint"]
