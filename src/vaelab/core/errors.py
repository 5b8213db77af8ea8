"""The one exception type users see: a clear message, never a traceback from the CLI."""


class VaelabError(Exception):
    """Bad input or a state we refuse to continue from; the message says what and how to fix it."""
