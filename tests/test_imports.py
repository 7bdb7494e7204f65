"""bench/imports.py reads the import graph from source: it finds a circle hidden by a
function-level import, tells it apart from module-level ones, and names a one-way rule break;
the package itself has neither."""
from protoscope.bench.imports import ALLOWED, LAYERS, graph, layer


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
        "geometry/engine/__init__.py": "",
        "geometry/engine/c.py": "from protoscope.analysis import d\n",
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
    assert "geometry.engine.c:1 imports analysis.d (geometry.engine may import" in breaks
    # geometry.a is in no named layer of geometry: its own layer, which reports may not import
    assert "reports.r:2 imports geometry.a" in breaks and "geometry.errors" not in breaks


def test_the_package_graph_is_read():
    g = graph()
    assert g["modules"] > 50 and {"geometry.engine", "analysis", "reports", "workflows"} <= set(g["lines"])


def test_the_package_has_no_circle_and_keeps_its_one_way_rules():
    g = graph()
    assert g["circles_all_imports"] == [] and g["circles_between_layers"] == []
    assert g["rule_breaks"] == []
    # every layer may import only layers below it: the rules themselves are one way
    for here, allowed in ALLOWED.items():
        if here != "bench":
            assert all(LAYERS.index(there) < LAYERS.index(here) for there in allowed), here
    assert layer("geometry.engine.paths") == "geometry.engine" and layer("options") == "base"
