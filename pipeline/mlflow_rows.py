"""What the `track` sync (pipeline/tracking.py) and live logging (pipeline/live.py) both do with MLflow: read a
run file's value as a number, turn a history row into metrics, and page through a search.

    number(value)                        float, or None for what is not one (booleans, "", None, text)
    row_metrics(row, stamp_ms)           a Metric per numeric history cell: step = the row's epoch
    search_all(client, experiment, filter_string)   every active run that matches (all pages)
MLflow is imported inside the functions: importing this module stays cheap.
"""
from __future__ import annotations

NOT_METRICS = ("epoch", "time")  # history columns that are a metric's step and timestamp


def number(value) -> float | None:
    try:
        return None if isinstance(value, bool) else float(value)
    except (TypeError, ValueError):
        return None


def ms(seconds: float) -> int:
    return int(round(seconds * 1000))  # MLflow's times are integer milliseconds


def row_metrics(row: dict, stamp_ms: int) -> list:
    """A Metric per numeric cell of one history row (epoch and time excluded), at step = the row's epoch."""
    from mlflow.entities import Metric

    return [Metric(key, v, stamp_ms, int(row["epoch"])) for key, value in row.items()
            if key not in NOT_METRICS and (v := number(value)) is not None]


def search_all(client, experiment: str, filter_string: str) -> list:
    """Every active run of the experiment matching `filter_string` (all pages)."""
    runs, token = [], None
    while True:
        page = client.search_runs([experiment], filter_string=filter_string, max_results=1000, page_token=token)
        runs += list(page)
        if not (token := page.token):
            return runs
