"""Which modules import which? The package's import graph: its circles and its one-way rules.

Every `import` and `from ... import` of the package's own modules is read from the source (ast,
nothing is imported), at module level or inside a function (a function-level import hides a
circle from Python but not from a reader). Printed:
- circles: groups of modules that reach each other (strongly connected components of more
  than one module), over all imports and over module-level imports alone;
- circles between layers (the packages of LAYERS), where modules of two layers import each
  other even without a module circle;
- rule breaks: an import outside what its layer may import (ALLOWED: one way, downwards; the
  engine never imports analysis or reports, reports never import the engine or run a model);
- lines of code per top-level package.

    python -m protoscope.bench.imports            # this package
    python -m protoscope.bench.imports --json     # the same as JSON
"""

from __future__ import annotations

import argparse
import ast
import json
import pathlib
from collections import Counter

import numpy as np
from scipy.sparse import csr_matrix
from scipy.sparse.csgraph import connected_components

ROOT = pathlib.Path(__file__).resolve().parents[1]
PACKAGE = "protoscope"
# The layers, lowest first: a module's layer is the longest prefix of its name listed here
# ("base": the shared leaves, errors, the table contract, option declarations, progress).
LAYERS = ("base", "geometry.models", "geometry.engine", "geometry.store", "geometry.starts",
          "geometry.runs", "analysis", "reports", "workflows", "commands", "cli", "bench")
BASE = {"__init__", "geometry", "geometry.errors", "geometry.tables", "options", "progress"}
_GEOMETRY = {"base", "geometry.models", "geometry.engine", "geometry.store", "geometry.starts",
             "geometry.runs"}
# What each layer may import (itself always): one way, downwards.
ALLOWED = {
    "base": set(),
    "geometry.models": {"base"},
    "geometry.engine": {"base", "geometry.models"},
    "geometry.store": {"base", "geometry.models"},
    "geometry.starts": {"base", "geometry.models", "geometry.engine", "geometry.store"},
    "geometry.runs": {"base", "geometry.models", "geometry.engine", "geometry.store",
                      "geometry.starts"},
    "analysis": _GEOMETRY,
    "reports": {"base", "geometry.store", "analysis"},  # never the engine, never a model
    "workflows": _GEOMETRY | {"analysis", "reports"},
    "commands": _GEOMETRY | {"analysis", "reports", "workflows"},
    "cli": {"base", "analysis", "workflows", "commands"},  # declarations; commands when it runs
    "bench": set(LAYERS),
}


def modules(root: pathlib.Path) -> dict[str, pathlib.Path]:
    """Dotted names (without the package prefix) of the package's modules -> their files."""
    out = {}
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root)
        if rel.parts[0] in ("tests", "build", ".venv", "runs") or any(p.startswith(".") for p in rel.parts):
            continue
        parts = list(rel.with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts) or "__init__"] = path
    return out


def imports(name: str, path: pathlib.Path, known: set[str]) -> list[tuple[str, bool, int]]:
    """(imported module, at module level?, line) for each of the package's modules `name` imports."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    is_package = path.name == "__init__.py"
    here = name.split(".") if name != "__init__" else []
    found = []

    def add(target: str, top: bool, line: int) -> None:
        while target and target not in known:  # `from .x import f`: the module is .x
            target = target.rpartition(".")[0]
        if target and target != name:
            found.append((target, top, line))

    def visit(node, top: bool) -> None:
        for child in ast.iter_child_nodes(node):
            nested = top and not isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            if isinstance(child, ast.Import):
                for alias in child.names:
                    if alias.name.startswith(PACKAGE + "."):
                        add(alias.name[len(PACKAGE) + 1:], top, child.lineno)
            elif isinstance(child, ast.ImportFrom):
                if child.level:
                    base = here if is_package else here[:-1]
                    base = base[:len(base) - (child.level - 1)] if child.level > 1 else base
                    stem = ".".join(base + ([child.module] if child.module else []))
                elif child.module and child.module.startswith(PACKAGE + "."):
                    stem = child.module[len(PACKAGE) + 1:]
                elif child.module == PACKAGE:
                    stem = ""
                else:
                    continue
                for alias in child.names:
                    full = f"{stem}.{alias.name}" if stem else alias.name
                    add(full if full in known else stem, top, child.lineno)
            visit(child, nested)

    visit(tree, True)
    return found


def circles(edges: dict[str, set[str]], names: list[str]) -> list[list[str]]:
    """Groups of two or more modules that import each other, directly or round a loop."""
    index = {n: i for i, n in enumerate(names)}
    rows = [index[a] for a, bs in edges.items() for b in bs]
    cols = [index[b] for a, bs in edges.items() for b in bs]
    graph = csr_matrix((np.ones(len(rows)), (rows, cols)), shape=(len(names), len(names)))
    _, labels = connected_components(graph, directed=True, connection="strong")
    groups = Counter(labels)
    return sorted(sorted(names[i] for i in range(len(names)) if labels[i] == g)
                  for g, k in groups.items() if k > 1)


def layer(name: str) -> str:
    """The layer of a module: base, or the longest prefix of its name in LAYERS."""
    if name in BASE:
        return "base"
    parts = name.split(".")
    for k in range(len(parts), 0, -1):
        if ".".join(parts[:k]) in LAYERS:
            return ".".join(parts[:k])
    return name.split(".")[0]


def rule_breaks(found: dict[str, list[tuple[str, bool, int]]]) -> list[str]:
    out = []
    for src, targets in sorted(found.items()):
        here = layer(src)
        for dst, _, line in targets:
            there = layer(dst)
            if there != here and there not in ALLOWED.get(here, set(LAYERS)):
                out.append(f"{src}:{line} imports {dst} ({here} may import "
                           f"{', '.join(sorted(ALLOWED.get(here, ()))) or 'nothing of the package'})")
    return list(dict.fromkeys(out))  # one line per import statement


def layer_circles(found: dict[str, list[tuple[str, bool, int]]]) -> list[list[str]]:
    edges: dict[str, set[str]] = {}
    for src, targets in found.items():
        edges.setdefault(layer(src), set()).update(layer(d) for d, _, _ in targets)
    names = sorted(set(edges) | {d for ds in edges.values() for d in ds})
    return circles({a: bs - {a} for a, bs in edges.items()}, names)


def graph(root: pathlib.Path = ROOT) -> dict:
    mods = modules(root)
    known = set(mods)
    found = {name: imports(name, path, known) for name, path in mods.items()}
    names = sorted(known)
    every = {a: {b for b, _, _ in t} for a, t in found.items()}
    top = {a: {b for b, level, _ in t if level} for a, t in found.items()}
    lines = Counter()
    for name, path in mods.items():
        lines[layer(name)] += \
            sum(1 for line in path.read_text(encoding="utf-8").splitlines() if line.strip())
    return {"modules": len(names),
            "function_level_imports": len({(a, line) for a, t in found.items()
                                           for _, level, line in t if not level}),  # statements
            "circles_all_imports": circles(every, names),
            "circles_module_level": circles(top, names),
            "circles_between_layers": layer_circles(found),
            "rule_breaks": rule_breaks(found), "lines": dict(sorted(lines.items()))}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--root", default=str(ROOT), help="the package's folder (default: this one)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    g = graph(pathlib.Path(args.root))
    if args.json:
        print(json.dumps(g, indent=2))
        return
    print(f"{g['modules']} modules, {g['function_level_imports']} imports inside functions")
    for key in ("circles_all_imports", "circles_module_level", "circles_between_layers"):
        print(f"{key.replace('_', ' ')}: {len(g[key])}")
        for c in g[key]:
            print("  " + " <-> ".join(c))
    print(f"rule breaks: {len(g['rule_breaks'])}")
    for b in g["rule_breaks"]:
        print("  " + b)
    print("non-blank lines: " + ", ".join(f"{k} {v}" for k, v in g["lines"].items()))


if __name__ == "__main__":
    main()
