"""The one exception type users see: a clear message, never a traceback from the CLI."""


class VaelabError(Exception):
    """Bad input or a state we refuse to continue from; the message says what and how to fix it.

    ``exit_code`` is what the ``vaelab`` command exits with (2: bad input; an interrupt sets 130 or 143)."""

    exit_code: int = 2


class Interrupted(VaelabError):
    """A signal stopped a job; for training, the state was checkpointed and the run resumes exactly.

    Exit codes follow the shell's convention, 128 + the signal: 130 for Ctrl-C (SIGINT), 143 for SIGTERM."""

    def __init__(self, message: str, exit_code: int = 130) -> None:
        super().__init__(message)
        self.exit_code = exit_code


class WriteError(VaelabError):
    """A file could not be written (a full disk, a read-only or foreign folder); nothing half-written is left."""
