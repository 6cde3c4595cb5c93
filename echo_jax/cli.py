"""Running a command-line entry point: user errors as one line (``error: ...``, exit status 1).

Errors in what the user asked for (`echo_jax.errors.UserError`, bad flags, a missing or broken config
file, an unknown config field) print one line; internal bugs keep their traceback. Set
ECHO_JAX_TRACEBACK=1 to see the traceback of a user error too.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Callable
from typing import NoReturn

from absl import app, flags

from echo_jax.errors import UserError

TRACEBACK_ENV = "ECHO_JAX_TRACEBACK"


def run(main: Callable[[list[str]], None]) -> None:
    """`absl.app.run(main)` with one-line user errors."""

    def guarded(argv):
        try:
            return main(argv)
        except UserError as e:
            fail(str(e), e)
        except OSError as e:
            if "Configuration is not available" not in str(e):  # config_flags defers load errors to here
                raise
            fail(flag_error_message(e), e)

    app.run(guarded, flags_parser=_parse_flags)


def fail(message: str, error: BaseException | None = None) -> NoReturn:
    """Prints ``error: message`` (its first line) to stderr and exits with status 1."""
    if error is not None and os.environ.get(TRACEBACK_ENV):
        raise error
    print(f"error: {message.strip().splitlines()[0] if message.strip() else type(error).__name__}", file=sys.stderr)
    sys.exit(1)


def _parse_flags(argv: list[str]) -> list[str]:
    try:
        return flags.FLAGS(argv)
    except Exception as e:  # noqa: BLE001 - every flag or config-file problem is the user's to fix
        fail(flag_error_message(e), e)


def flag_error_message(error: Exception) -> str:
    """One line for an error raised while parsing the flags and loading the config file."""
    text = str(error)
    missing = re.search(r"No such file or directory: '([^']+)'", text)
    if missing:
        return (
            f"config file {missing.group(1)} not found; give the path of a config file, "
            "e.g. configs/rate_distortion/echo.py"
        )
    if "Error whilst parsing config file" in text:  # the config file's own exception is the last line
        last = [line for line in text.splitlines() if line.strip()][-1].strip()
        return f"the config file could not be loaded: {last}"
    unknown = re.fullmatch(r"""Unknown command line flag '(\w+)\.([\w.]+)'""", text) or (
        isinstance(error, (AttributeError, KeyError)) and re.fullmatch(r"""['"]*([\w.]+)['"]*""", text)
    )
    if unknown:
        field = unknown.group(unknown.lastindex)
        return f"unknown config field {field!r}; the fields and their meaning are in echo_jax/defaults.py"
    return text
