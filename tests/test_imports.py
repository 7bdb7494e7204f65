"""bench/imports.py reads the import graph from source: it finds a circle hidden by a
function-level import, tells it apart from module-level ones, and names a one-way rule break."""
from protoscope.bench.imports import graph


def _write(root, files: dict[str, str]) -> None:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def test_a_circle_behind_a_function_level_import_is_found(tmp_path):
    _write(tmp_path, {
        "__init__.py": "",
        "geometry/__init__.py": "",
        "geometry/a.py": "def f():\n    from .b import g\n    return g\n",
        "geometry/b.py": "from .a import f\n\ndef g():\n    return f\n",
        "geometry/c.py": "from protoscope.analysis import d\n",
        "analysis/__init__.py": "",
        "analysis/d.py": "from ..geometry.b import g\n",
        "reports/__init__.py": "",
        "reports/r.py": "from ..geometry import errors\nfrom ..geometry.a import f\n",
        "geometry/errors.py": "",
    })
    g = graph(tmp_path)
    assert g["circles_all_imports"] == [["geometry.a", "geometry.b"]]
    assert g["circles_module_level"] == []  # only a function-level import closes it
    assert g["function_level_imports"] == 1
    breaks = "\n".join(g["rule_breaks"])
    assert "geometry.c:1 imports analysis.d" in breaks
    assert "reports.r:2 imports geometry.a" in breaks and "geometry.errors" not in breaks


def test_the_package_graph_is_read():
    g = graph()
    assert g["modules"] > 50 and {"geometry", "analysis", "reports"} <= set(g["lines"])
