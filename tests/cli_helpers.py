"""Running the vaelab command in-process, as the CLI tests do."""

from __future__ import annotations

from vaelab.cli import main


def run_cli(capsys, *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def fails_with(capsys, message: str, *args: str) -> str:
    """The command exits with 2 and one clear message, never a traceback."""
    code, out, err = run_cli(capsys, *args)
    assert code == 2, (out, err)
    assert message in err, err
    assert "Traceback" not in err + out
    return err
