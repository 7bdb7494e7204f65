"""docs/tour.ipynb, the notebook face of the API: stored without outputs, and executed
headless on the default model (integration) with its progress as notebook widgets, its figure
inline and its findings read."""

import json
import os
import pathlib
import shutil
import time

import pytest

TOUR = pathlib.Path(__file__).resolve().parents[1] / "docs" / "tour.ipynb"


def test_the_tour_is_stored_without_outputs():
    notebook = json.loads(TOUR.read_text())
    code = [c for c in notebook["cells"] if c["cell_type"] == "code"]
    assert code, "the tour has code cells"
    assert all(c["outputs"] == [] and c["execution_count"] is None for c in code)


def _outputs(cell) -> dict[str, str]:
    """mime type -> text of a cell's outputs (streams under 'stream:NAME')."""
    out = {}
    for o in cell.get("outputs", []):
        if o["output_type"] == "stream":
            out[f"stream:{o['name']}"] = out.get(f"stream:{o['name']}", "") + o["text"]
        for mime, data in o.get("data", {}).items():
            out[mime] = out.get(mime, "") + (data if isinstance(data, str) else json.dumps(data))
    return out


@pytest.mark.integration
def test_the_tour_runs_headless_on_the_default_model(tmp_path):
    nbclient = pytest.importorskip("nbclient")
    nbformat = pytest.importorskip("nbformat")
    pytest.importorskip("ipykernel")
    shutil.copy(TOUR, tmp_path / "tour.ipynb")
    notebook = nbformat.read(tmp_path / "tour.ipynb", as_version=4)
    client = nbclient.NotebookClient(notebook, timeout=1200, kernel_name="python3",
                                     resources={"metadata": {"path": str(tmp_path)}})
    started = time.perf_counter()
    client.execute()
    print(f"tour.ipynb: {len(notebook.cells)} cells in {time.perf_counter() - started:.0f} s")
    code = [c for c in notebook.cells if c.cell_type == "code"]
    for i, cell in enumerate(code):  # nbclient's own timing of each cell
        timing = cell.metadata.get("execution", {})
        begun, ended = timing.get("iopub.execute_input"), timing.get("shell.execute_reply")
        if begun and ended:
            from datetime import datetime
            seconds = (datetime.fromisoformat(ended.rstrip("Z")) -
                       datetime.fromisoformat(begun.rstrip("Z"))).total_seconds()
            print(f"  code cell {i + 1}: {seconds:.1f} s  {cell.source.splitlines()[-1][:60]}")
    if os.environ.get("PROTOSCOPE_TOUR_OUT"):  # keep the executed notebook (docs/api.md quotes it)
        nbformat.write(notebook, os.environ["PROTOSCOPE_TOUR_OUT"])
    assert not [o for c in code for o in c.outputs if o.output_type == "error"]
    fit, straight, curve, findings = (_outputs(code[i]) for i in (0, 4, 5, 6))
    assert "Run('runs/tour': 6 solutions)" in fit["text/plain"]
    assert "application/vnd.jupyter.widget-view+json" in fit  # tqdm's notebook bars
    assert all("application/vnd.plotly.v1+json" in f for f in (straight, curve))  # inline
    assert "curve keeps the text" in findings["text/plain"]
    assert (tmp_path / "runs" / "tour" / "analysis" / "connectivity.parquet").is_file()
