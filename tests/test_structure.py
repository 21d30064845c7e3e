"""The shape of the package: small modules, no import cycle, training that never imports the DAG, and no module
outside the registry that names an experiment."""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "pipeline"
BUILTIN = ("block_size", "edba", "growth", "optimizers")


def modules() -> dict[str, Path]:
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def imports_of(name: str, path: Path, known: set[str]) -> set[str]:
    """The pipeline modules `name` imports anywhere in its file (top level or inside functions)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            found |= {base} | {f"{base}.{a.name}" for a in node.names}
    return {m for m in found if m in known and m != name}


def test_no_module_is_longer_than_350_lines():
    long = {name: n for name, path in modules().items() if (n := len(path.read_text().splitlines())) > 350}
    assert not long, long


def test_no_import_cycle():
    mods = modules()
    graph = {name: imports_of(name, path, set(mods)) for name, path in mods.items()}
    # Tarjan's strongly connected components: a component of more than one module is a cycle
    index, low, stack, on, cycles, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    sys.setrecursionlimit(10_000)
    for v in graph:
        if v not in index:
            visit(v)
    assert not cycles, cycles


def test_training_and_tuning_never_import_the_dag():
    """A training job gets every path on its command line: what it imports is config, registry, the experiment's
    train (tune) module and the loops, never pipeline.dag; nor MLflow (seconds to import) unless it logs live."""
    code = ("import sys; from pipeline import __main__, config; p = config.load(); "
            "[p.experiment(e).module(m) for e in p.experiments for m in ('train', 'tune') "
            " if p.experiment(e).has_module(m)]; "
            "import pipeline.train.jobs, pipeline.tracking, pipeline.live; "
            "print(sorted(m for m in sys.modules if m.startswith('pipeline.dag') or m.split('.')[0] == 'mlflow'))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=PACKAGE.parent)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_the_host_names_no_experiment():
    """config, dag, registry, analysis, report and tracking loop over the registry: none of them names a built-in
    experiment (its name as a string, or an import of its package)."""
    host = [p for name, p in modules().items() if not name.startswith("pipeline.experiments")
            and not name.startswith(("pipeline.models", "pipeline.methods", "pipeline.data", "pipeline.train"))]
    named = []
    for path in host:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value in BUILTIN:
                named.append(f"{path.name}:{node.lineno} {node.value!r}")
            if isinstance(node, ast.ImportFrom) and any(e in (node.module or "").split(".") for e in BUILTIN):
                named.append(f"{path.name}:{node.lineno} imports {node.module}")
    assert not named, named
