"""The version of vaelab (``vaelab --version``, ``vaelab.__version__``); pyproject.toml names the same."""

VERSION = "0.2.0"
