"""The errors that mean "bad input", not "bug".

The command line (`python -m pipeline`) prints such an error as one line, `error: <message>`, and exits with code 2
(no traceback): the message names the culprit (key path, file, dataset, run directory). Any other exception is a
bug and keeps its traceback. Experiments (built-in or plug-in) raise these for every bad input they can meet.
"""


class PipelineError(Exception):
    """Bad input: the message is one line naming the key, file, dataset or run that is wrong."""


class ConfigError(PipelineError, ValueError):
    """A bad params.yaml (or plug-in): the message is one line naming the key path and what is wrong."""
