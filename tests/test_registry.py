"""The registry (analysis/registry.py) is what the rest of the package reads about each
analysis: its tables exist in the table contract, its figures module imports, the findings
rows it names are rows analysis/findings.py writes, and a table it does not declare is refused."""

import importlib
import inspect

import pytest

from protoscope.analysis import findings
from protoscope.analysis.registry import ANALYSES, SEARCH_FINDINGS
from protoscope.analysis.run import run_analyses
from protoscope.geometry.tables import COLUMNS

from tiny_run import tiny_run


@pytest.mark.parametrize("name", list(ANALYSES))
def test_each_declaration_names_real_tables_figures_and_findings(name):
    analysis = ANALYSES[name]
    assert set(analysis.tables) <= set(COLUMNS), name
    assert importlib.import_module(f"protoscope.{analysis.figures}")
    source = inspect.getsource(findings)
    for row in analysis.findings:
        assert f'"{row}' in source, (name, row)
    assert analysis.question.endswith("?")


def test_the_search_findings_are_written_by_findings():
    source = inspect.getsource(findings)
    assert all(f'"{row}' in source for rows in SEARCH_FINDINGS.values() for row in rows)


def test_a_table_the_registry_does_not_declare_is_refused(monkeypatch, tmp_path):
    import shutil

    from protoscope.analysis import information
    from protoscope.geometry.store.runstore import RunStore

    path, loaded = tiny_run()
    shutil.copytree(path, tmp_path / "run")
    monkeypatch.setattr(information, "analyze", lambda store, loaded, progress=None, **options:
                        {"surprise": None})
    with pytest.raises(RuntimeError, match="wrote 'surprise'"):
        run_analyses(RunStore.open(tmp_path / "run"), only=["information"], loaded=loaded, quiet=True)
