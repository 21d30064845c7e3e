"""Every variant's resolved settings as a file, and what changed since its runs were made.

    planned(params, experiment, variant) -> the config a run of the variant records (config.json's run.config,
                                            before the keys a job adds itself, such as a tuned lr)
    write(params, out, runs) -> lines      results/settings/<experiment>/<variant>.json, a file rewritten only
                                            when its content changes; one line per change since the variants'
                                            runs were made: "optimizers/sgd: train.epochs 2 -> 3"

The `settings` stage writes them; each tuning and training job depends on its variant's file, so DVC reruns
exactly the variants an edit changes, and both orchestrators print which keys changed (not only hashes).
"""
from __future__ import annotations

import json
from pathlib import Path

from .config import Params


def planned(params: Params, experiment: str, variant: str) -> dict:
    """The run config of a variant under the active profile, as its jobs record it (Params.run_config)."""
    return params.run_config(experiment, variant)


def flatten(tree: dict, prefix: str = "") -> dict[str, object]:
    """{"train": {"epochs": 2}} -> {"train.epochs": 2}; lists stay values."""
    out = {}
    for key, value in tree.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            out.update(flatten(value, path + "."))
        else:
            out[path] = value
    return out


def changes(recorded: dict, now: dict) -> list[str]:
    """`key old -> new` for every key of `now` whose value differs from `recorded` (keys only `recorded` has, such
    as the lr a job tuned, are not settings)."""
    old, new = flatten(recorded), flatten(now)
    lines = []
    for key, value in new.items():
        if key not in old:
            lines.append(f"{key} (new) {json.dumps(value)}")
        elif old[key] != value:
            lines.append(f"{key} {json.dumps(old[key])} -> {json.dumps(value)}")
    return lines


def _recorded(runs: Path, experiment: str, variant: str) -> dict | None:
    """The run config of the variant's first recorded seed, if any."""
    for config in sorted((runs / experiment / variant).glob("seed*/config.json")):
        try:
            return json.loads(config.read_text())["run"]["config"]
        except (OSError, ValueError, KeyError):
            continue
    return None


def write(params: Params, out: Path, runs: Path, shown: int = 4) -> list[str]:
    """Write every variant's settings file (only those whose content changed) and remove those of variants no
    longer in the grid; return one line per change since the recorded runs, with the variants it concerns."""
    by_change: dict[str, list[str]] = {}
    keep = set()
    for exp in params.experiments:
        for variant in params.variants(exp):
            settings = planned(params, exp, variant)
            path = out / exp / f"{variant}.json"
            keep.add(path)
            text = json.dumps(settings, indent=1, sort_keys=True) + "\n"
            if not path.exists() or path.read_text() != text:
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(text)
            recorded = _recorded(runs, exp, variant)
            if recorded is not None and (diff := changes(recorded, settings)):
                by_change.setdefault("; ".join(diff), []).append(f"{exp}/{variant}")
    for stale in sorted(out.glob("*/*.json")):
        if stale not in keep:
            stale.unlink()
    lines = []
    for change, variants in by_change.items():
        more = f" and {len(variants) - shown} more" if len(variants) > shown else ""
        lines.append(f"{', '.join(variants[:shown])}{more}: {change}")
    return lines
