"""Errors in what the user asked for: the command lines print these as one line, not a traceback."""


class UserError(Exception):
    """A problem with the config, the work directory or the input files, with its fix in the message."""


class ConfigError(UserError, ValueError):
    """A config field with a value the run cannot use."""


class WorkdirError(UserError, ValueError):
    """A work directory that holds another run, or files that do not belong to this one."""


class DivergedError(UserError, FloatingPointError):
    """Training or evaluation produced non-finite numbers, or a loss far above its own best (`echo_jax.divergence`)."""


class DiskFullError(UserError, OSError):
    """A write found the disk full; the files written before are as they were."""


class Interrupted(Exception):
    """A run stopped before its end with its work saved (a signal, a time budget): the command lines print the
    message as one line and exit with `exit_status` (128 + the signal's number for a signal)."""

    def __init__(self, message: str, exit_status: int = 1):
        super().__init__(message)
        self.exit_status = exit_status
