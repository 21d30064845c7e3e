"""The one base class of the errors that mean "bad input", not "bug".

The command line (`python -m pipeline`) prints such an error as one line, `error: <message>`, and exits with code 2
(no traceback): the message names the culprit (key path, file, dataset, run directory). Any other exception is a
bug and keeps its traceback.
"""


class PipelineError(Exception):
    """Bad input: the message is one line naming the key, file, dataset or run that is wrong."""
