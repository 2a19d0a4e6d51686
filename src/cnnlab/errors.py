"""The one exception type for bad input.

Every check at the public API and CLI boundary raises :class:`CnnlabError` with a single line that says what was
expected and what was given. It subclasses ``ValueError`` so library users can catch the usual type; the CLI turns
it into that one line on stderr and exit code 2 (tracebacks only with ``--debug``).
"""


class CnnlabError(ValueError):
    """Bad input: the message is one line, 'expected X, got Y'."""


class DataError(CnnlabError):
    """A data file is missing, truncated, corrupt or of the wrong format."""


class CheckpointError(CnnlabError):
    """A checkpoint is missing, corrupt, not a plain tensor container, or from another model."""


class StopRun(Exception):
    """Raised by an observer's ``on_epoch`` (or ``train``'s ``on_epoch`` callback) to end the run after this epoch.

    Not a failure: the run ends as a finished one would (test evaluation, result.json, the report), with
    ``status: stopped`` and the exception's message as ``stop_reason``. A sweep's pruner stops trials this way.
    """


class Interrupted(Exception):
    """SIGINT/SIGTERM stopped training after a resumable checkpoint was written (CLI exit 128 + signal)."""

    def __init__(self, signum: int, message: str):
        super().__init__(message)
        self.signum = signum

