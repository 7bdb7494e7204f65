"""Which modules import which? The package's import graph: its circles and its one-way rules.

Every `import` and `from ... import` of the package's own modules is read from the source (ast,
nothing is imported), at module level or inside a function (a function-level import hides a
circle from Python but not from a reader). Printed:
- circles: groups of modules that reach each other (strongly connected components of more
  than one module), over all imports and over module-level imports alone;
- rule breaks: the engine (geometry/) importing analysis/ or reports/, and reports/ importing
  the engine (geometry/ modules that run a model: anything but errors, tables, store, parts,
  texts' pure helpers is counted; see ENGINE_FREE);
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
# geometry modules that reports/ may read: tables and the store, no model
ENGINE_FREE = {"geometry.errors", "geometry.tables", "geometry.store", "geometry.parts",
               "geometry.starts", "geometry.builtin_texts"}


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


def rule_breaks(found: dict[str, list[tuple[str, bool, int]]]) -> list[str]:
    out = []
    for src, targets in sorted(found.items()):
        for dst, _, line in targets:
            if src.startswith("geometry") and dst.split(".")[0] in ("analysis", "reports"):
                out.append(f"{src}:{line} imports {dst} (the engine imports no analysis or report)")
            if src.startswith("reports") and dst.startswith("geometry") and dst not in ENGINE_FREE:
                out.append(f"{src}:{line} imports {dst} (reports never import the engine)")
    return out


def graph(root: pathlib.Path = ROOT) -> dict:
    mods = modules(root)
    known = set(mods)
    found = {name: imports(name, path, known) for name, path in mods.items()}
    names = sorted(known)
    every = {a: {b for b, _, _ in t} for a, t in found.items()}
    top = {a: {b for b, level, _ in t if level} for a, t in found.items()}
    lines = Counter()
    for name, path in mods.items():
        lines[name.split(".")[0] if "." in name else "(root modules)"] += \
            sum(1 for line in path.read_text(encoding="utf-8").splitlines() if line.strip())
    return {"modules": len(names),
            "function_level_imports": len({(a, line) for a, t in found.items()
                                           for _, level, line in t if not level}),  # statements
            "circles_all_imports": circles(every, names),
            "circles_module_level": circles(top, names),
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
    for key in ("circles_all_imports", "circles_module_level"):
        print(f"{key.replace('_', ' ')}: {len(g[key])}")
        for c in g[key]:
            print("  " + " <-> ".join(c))
    print(f"rule breaks: {len(g['rule_breaks'])}")
    for b in g["rule_breaks"]:
        print("  " + b)
    print("non-blank lines: " + ", ".join(f"{k} {v}" for k, v in g["lines"].items()))


if __name__ == "__main__":
    main()
