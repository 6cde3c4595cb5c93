"""Running a command-line entry point: user errors as one line (``error: ...``, exit status 1).

Errors in what the user asked for (`echo_jax.errors.UserError`, bad flags, a missing or broken config
file, an unknown config field) print one line; internal bugs keep their traceback. Set
ECHO_JAX_TRACEBACK=1 to see the traceback of a user error too. A run stopped by a signal
(`echo_jax.errors.Interrupted`: SIGINT, SIGTERM) prints where it stopped and how to resume, in one line, and
exits with 128 + the signal's number (130, 143); Ctrl-C outside a run exits 130 with one line too.

``--help`` (``-h``, ``--helpshort``) prints the command's docstring, its flags and, for the commands that
take a config, every config field with its value and meaning, and exits with status 0; ``--helpfull`` adds
absl's own flags.
"""

from __future__ import annotations

import logging
import os
import re
import sys
from collections.abc import Callable
from typing import NoReturn

import ml_collections
from absl import app, flags

from echo_jax.errors import Interrupted, UserError

TRACEBACK_ENV = "ECHO_JAX_TRACEBACK"

_SHORT_HELP = frozenset({"-h", "-help", "--help", "-?", "-helpshort", "--helpshort"})
_FULL_HELP = frozenset({"-helpfull", "--helpfull"})


def run(
    main: Callable[[list[str]], None],
    config_defaults: Callable[[], ml_collections.ConfigDict] | None = None,
) -> None:
    """`absl.app.run(main)` with one-line user errors and a ``--help`` that exits with status 0.

    Args:
      main: the command, called with the arguments left after the flags.
      config_defaults: the `echo_jax.defaults` function the command's ``--config`` files start from; its
        fields and their meaning are listed by ``--help``.
    """
    if not os.environ.get("JAX_LOGGING_LEVEL"):  # the user asked for jax's logs: leave them all
        # On a machine without a TPU, jax logs at INFO that it could not load libtpu; the commands log at INFO,
        # so every run would start with that line. Failures that matter are jax's warnings and errors.
        logging.getLogger("jax._src.xla_bridge").setLevel(logging.WARNING)

    def guarded(argv):
        try:
            return main(argv)
        except UserError as e:
            fail(str(e), e)
        except Interrupted as e:
            if os.environ.get(TRACEBACK_ENV):
                raise
            print(str(e), file=sys.stderr)
            sys.exit(e.exit_status)
        except KeyboardInterrupt:
            if os.environ.get(TRACEBACK_ENV):
                raise
            print("interrupted; run the same command to resume from the last checkpoint", file=sys.stderr)
            sys.exit(130)
        except OSError as e:
            if "Configuration is not available" not in str(e):  # config_flags defers load errors to here
                raise
            fail(flag_error_message(e), e)

    def parse(argv: list[str]) -> list[str]:
        wanted = _help_requested(argv)
        if wanted:
            # absl names the flags of a module run as __main__ after its file, as it does sys.argv[0].
            module = argv[0] if main.__module__ == "__main__" else main.__module__
            print_help(argv, module, config_defaults, full=wanted == "full")
            sys.exit(0)
        return _parse_flags(argv)

    app.run(guarded, flags_parser=parse)


def _help_requested(argv: list[str]) -> str | None:
    """ "short" or "full" when the arguments ask for help (before any ``--``), else None."""
    for arg in argv[1:]:
        if arg == "--":
            return None
        if arg in _FULL_HELP:
            return "full"
        if arg in _SHORT_HELP:
            return "short"
    return None


def _config_argument(argv: list[str]) -> str | None:
    """The value of ``--config`` in the arguments (``--config=X`` or ``--config X``), if any."""
    for i, arg in enumerate(argv[1:], start=1):
        if arg == "--":
            break
        if arg in ("--config", "-config") and i + 1 < len(argv):
            return argv[i + 1]
        if arg.startswith(("--config=", "-config=")):
            return arg.split("=", 1)[1]
    return None


def print_help(
    argv: list[str],
    flag_module: str,
    config_defaults: Callable[[], ml_collections.ConfigDict] | None = None,
    *,
    full: bool = False,
) -> None:
    """Prints a command's help to stdout: its docstring, its flags and its config fields.

    Args:
      argv: the command's arguments; a ``--config`` among them shows that file's values.
      flag_module: the module whose flags are the command's (absl's name for it).
      config_defaults: the defaults function of the command's configs (None: the command takes no config).
      full: also list absl's own flags (logging, flag files).
    """
    doc = (sys.modules["__main__"].__doc__ or f"usage: {argv[0]} [flags]").strip()
    flag_help = flags.FLAGS.get_help() if full else flags.FLAGS.module_help(flag_module).strip()
    parts = [doc, "flags:\n" + flag_help]
    if not full:
        parts[-1] += "\n\n(--helpfull also lists absl's flags: logging, flag files.)"
    if config_defaults is not None:
        from echo_jax import config_help  # reads defaults.py's source: only for --help

        argument, config, note = _config_argument(argv), None, ""
        if argument:
            try:
                config = config_help.load_config_file(argument)
            except Exception as e:  # noqa: BLE001 - the help still shows the defaults
                reason = str(e).splitlines()[0] if str(e) else type(e).__name__
                note = f"(could not load --config {argument}: {reason}; the values below are the defaults)\n"
        text = config_help.help_text(config_defaults, config, source=argument if config is not None else "")
        parts.append(note + text.rstrip())
    print("\n\n".join(parts))


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
        return f"unknown config field {field!r}; --help lists the config fields and their meaning"
    return text
