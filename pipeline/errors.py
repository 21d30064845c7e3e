"""The errors that mean "bad input", not "bug".

The command line (`python -m pipeline`) prints such an error as one line, `error: <message>`, and exits with code 2
(no traceback): the message names the culprit (key path, file, dataset, run directory). Any other exception is a
bug and keeps its traceback. Experiments (built-in or plug-in) raise these for every bad input they can meet.
"""


class PipelineError(Exception):
    """Bad input: the message is one line naming the key, file, dataset or run that is wrong."""


def check_writable(folder, what: str) -> None:
    """A one-line PipelineError when no file can be written in `folder` (probed in its nearest existing ancestor,
    which is left as it was), so a stage refuses before any work whose results it could not keep."""
    import os
    from pathlib import Path

    path = Path(folder).absolute()
    existing = next(p for p in [path, *path.parents] if p.exists())
    probe = existing / f".write-test-{os.getpid()}"
    try:
        if not existing.is_dir():
            raise NotADirectoryError(20, "Not a directory", str(existing))
        probe.write_text("")
        probe.unlink()
    except OSError as err:
        raise PipelineError(f"{folder}: cannot write {what} there ({err.strerror}: {existing})") from None


class ConfigError(PipelineError, ValueError):
    """A bad params.yaml (or plug-in): the message is one line naming the key path and what is wrong."""
