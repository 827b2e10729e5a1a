"""Imports run downward only (../shared/STYLE.md): the domain core knows nothing of the runners, the people's tools
use the client library, not the coordinator, and nothing below the commands imports them. An import against the
layering fails here, naming the file and the line."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "aal_rpc"

# what each part of the package may NOT import (prefixes of module names)
UPPER = ("aal_rpc.cli", "aal_rpc.experiment", "aal_rpc.web", "aal_rpc.labelstudio", "aal_rpc.annotators")
FORBIDDEN: dict[str, tuple[str, ...]] = {
    # the foundation: records, measures, data, models, strategies, training
    "aal_rpc.types": ("aal_rpc.",),
    "aal_rpc.errors": ("aal_rpc.",),
    "aal_rpc.measures": ("aal_rpc.coordinator", "aal_rpc.client", "aal_rpc.trainer", "aal_rpc.selector", *UPPER),
    "aal_rpc.data": ("aal_rpc.coordinator", "aal_rpc.client", "aal_rpc.trainer", "aal_rpc.selector",
                     "aal_rpc.models", "aal_rpc.strategies", *UPPER),
    "aal_rpc.models": ("aal_rpc.coordinator", "aal_rpc.client", "aal_rpc.trainer", "aal_rpc.selector",
                       "aal_rpc.strategies", *UPPER),  # models may read data's encodings (the text buckets)
    "aal_rpc.strategies": ("aal_rpc.coordinator", "aal_rpc.client", "aal_rpc.trainer", "aal_rpc.selector",
                           "aal_rpc.models", "aal_rpc.data", *UPPER),
    "aal_rpc.training": ("aal_rpc.coordinator", "aal_rpc.client", "aal_rpc.trainer", "aal_rpc.selector", *UPPER),
    "aal_rpc.frozen": ("aal_rpc.coordinator", "aal_rpc.client", "aal_rpc.trainer", "aal_rpc.selector", *UPPER),
    "aal_rpc.pretraining": ("aal_rpc.coordinator", "aal_rpc.client", "aal_rpc.trainer", "aal_rpc.selector", *UPPER),
    # the coordinator serves; it runs no trainer, selector, tool or runner
    "aal_rpc.coordinator": ("aal_rpc.client", "aal_rpc.trainer", "aal_rpc.selector", *UPPER),
    # ... inside it, the contract owns its types and imports no backend, and the two coordinators are siblings
    "aal_rpc.coordinator.contract": ("aal_rpc.coordinator.embedded", "aal_rpc.coordinator.postgres",
                                     "aal_rpc.coordinator.sqlite_store", "aal_rpc.coordinator.postgres_store",
                                     "aal_rpc.coordinator.servicers", "aal_rpc.coordinator.app", "aal_rpc.client",
                                     "aal_rpc.trainer", "aal_rpc.selector", *UPPER),
    "aal_rpc.coordinator.postgres": ("aal_rpc.coordinator.embedded", "aal_rpc.coordinator.sqlite_store",
                                     "aal_rpc.coordinator.servicers", "aal_rpc.coordinator.app", "aal_rpc.client",
                                     "aal_rpc.trainer", "aal_rpc.selector", *UPPER),
    "aal_rpc.coordinator.embedded": ("aal_rpc.coordinator.postgres", "aal_rpc.coordinator.postgres_store",
                                     "aal_rpc.coordinator.servicers", "aal_rpc.coordinator.app", "aal_rpc.client",
                                     "aal_rpc.trainer", "aal_rpc.selector", *UPPER),
    # ... and so are the two stores: what they share (row codecs, schemas) lives below them in rows.py and schema.py
    "aal_rpc.coordinator.sqlite_store": ("aal_rpc.coordinator.postgres_store", "aal_rpc.coordinator.embedded",
                                         "aal_rpc.coordinator.postgres", "aal_rpc.coordinator.servicers",
                                         "aal_rpc.coordinator.app", "aal_rpc.client", "aal_rpc.trainer",
                                         "aal_rpc.selector", *UPPER),
    "aal_rpc.coordinator.postgres_store": ("aal_rpc.coordinator.sqlite_store", "aal_rpc.coordinator.embedded",
                                           "aal_rpc.coordinator.postgres", "aal_rpc.coordinator.servicers",
                                           "aal_rpc.coordinator.app", "aal_rpc.client", "aal_rpc.trainer",
                                           "aal_rpc.selector", *UPPER),
    # the client library is what tools import: it knows no coordinator internals
    "aal_rpc.client": ("aal_rpc.coordinator", "aal_rpc.trainer", "aal_rpc.selector", *UPPER),
    # the loops talk to the coordinator through the client library
    "aal_rpc.trainer": ("aal_rpc.coordinator", "aal_rpc.selector", *UPPER),
    "aal_rpc.selector": ("aal_rpc.coordinator", "aal_rpc.trainer", *UPPER),
    "aal_rpc.predict": ("aal_rpc.coordinator", "aal_rpc.trainer", "aal_rpc.selector", *UPPER),
    # the people's tools use the client library only
    "aal_rpc.web": ("aal_rpc.coordinator", "aal_rpc.trainer", "aal_rpc.selector", "aal_rpc.cli",
                    "aal_rpc.experiment", "aal_rpc.labelstudio", "aal_rpc.annotators"),
    "aal_rpc.labelstudio": ("aal_rpc.coordinator", "aal_rpc.trainer", "aal_rpc.selector", "aal_rpc.cli",
                            "aal_rpc.experiment", "aal_rpc.annotators"),
    "aal_rpc.annotators": ("aal_rpc.coordinator", "aal_rpc.trainer", "aal_rpc.selector", "aal_rpc.cli",
                           "aal_rpc.experiment", "aal_rpc.web", "aal_rpc.labelstudio"),
    "aal_rpc.experiment": ("aal_rpc.cli", "aal_rpc.web", "aal_rpc.labelstudio"),
}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path) -> list[tuple[int, str]]:
    """(line, module) of every absolute import of aal_rpc in the file, at any depth (lazy imports count)."""
    out = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out += [(node.lineno, node.module)] + [(node.lineno, f"{node.module}.{a.name}") for a in node.names]
    return [(line, m) for line, m in out if m.startswith("aal_rpc")]


def rule_for(module: str) -> tuple[str, tuple[str, ...]] | None:
    matches = [p for p in FORBIDDEN if module == p or module.startswith(p + ".")]
    return (max(matches, key=len), FORBIDDEN[max(matches, key=len)]) if matches else None


def violations() -> list[str]:
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if "proto" in path.relative_to(PACKAGE).parts[:1]:
            continue
        module = module_name(path)
        rule = rule_for(module)
        if rule is None:
            continue
        part, forbidden = rule
        for line, imported in imports(path):
            if imported == part or imported.startswith(part + "."):
                continue  # within its own part
            if any(imported == f.rstrip(".") or imported.startswith(f if f.endswith(".") else f + ".")
                   or imported == f for f in forbidden):
                found.append(f"{path.relative_to(PACKAGE.parent)}:{line}: {module} imports {imported}")
    return sorted(set(found))


def test_imports_run_downward_only():
    assert violations() == []


def test_the_check_catches_an_upward_import(tmp_path, monkeypatch):
    fake = tmp_path / "aal_rpc" / "data"
    fake.mkdir(parents=True)
    (fake / "bad.py").write_text("def f():\n    from aal_rpc.coordinator import rules\n")
    monkeypatch.setattr(__import__(__name__), "PACKAGE", tmp_path / "aal_rpc")
    assert violations() == ["aal_rpc/data/bad.py:2: aal_rpc.data.bad imports aal_rpc.coordinator",
                            "aal_rpc/data/bad.py:2: aal_rpc.data.bad imports aal_rpc.coordinator.rules"]
