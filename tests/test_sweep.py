"""A sweep file becomes jobs, run stores, sweep.json and one results table; bad files are one
line; a sweep started again fits nothing new. The Ray backend's own tests: test_sweep_ray.py."""
import json
import math
import re

import pandas as pd
import pytest

from protoscope import cli
from protoscope.geometry.models.loading import save_tiny_model
from protoscope.geometry.store.runstore import RunStore
from protoscope.workflows.sweep import RESULT_COLUMNS, plan_sweep, read_sweep_file, run_sweep

SWEEP = """
models = [{models}]
texts = ["builtin:2", "random:2"]
lengths = [4]
seeds = 2
share = ["none", "m"]
[recipe]
max_steps = 60
"""


def tiny_folder(path, name="tiny"):
    """A tiny llama whose outputs respond to its inputs (see conftest's fit_llama), on disk."""
    return save_tiny_model(path / name, "llama", 0, initializer_range=0.3)


def sweep_file(path, models, body=SWEEP) -> str:
    file = path / "sweep.toml"
    file.write_text(body.format(models=", ".join(f'"{m}"' for m in models)))
    return str(file)


@pytest.fixture(scope="module")
def model_folder(tmp_path_factory):
    return tiny_folder(tmp_path_factory.mktemp("models"))


@pytest.fixture(scope="module")
def local_sweep(tmp_path_factory, model_folder):
    """The 4-job sweep (2 text sources x 2 share modes) run by the local backend."""
    folder = tmp_path_factory.mktemp("local")
    spec = read_sweep_file(sweep_file(folder, [model_folder]))
    lines = []
    state = run_sweep(spec, folder / "out", backend="local", echo=lines.append)
    return folder / "out", state, lines


def test_the_plan_is_models_x_texts_x_shares(tmp_path, model_folder):
    spec = read_sweep_file(sweep_file(tmp_path, [model_folder, model_folder]))
    jobs = plan_sweep(spec)
    assert len(jobs) == 8 and len({j["id"] for j in jobs}) == 8
    assert [(j["texts"], j["share"]) for j in jobs[:4]] == [
        ("builtin:2", "none"), ("builtin:2", "m"), ("random:2", "none"), ("random:2", "m")]
    assert all(j["config"]["lengths"] == [4] and j["config"]["seeds"] == 2 for j in jobs)
    assert all(j["config"]["recipe"]["max_steps"] == 60 for j in jobs)
    assert all(j["run"] == f"jobs/{j['id']}" for j in jobs)


def test_a_capacity_grid_climbs_lengths_per_job(tmp_path, model_folder):
    body = ('models = ["{models}"]\ntexts = "builtin:1"\ncapacity = [2, 3]\nseeds = 1\n'
            '[recipe]\nmax_steps = 40\n')
    spec = read_sweep_file(sweep_file(tmp_path, [model_folder], body.replace('"{models}"', "{models}")))
    state = run_sweep(spec, tmp_path / "out", backend="local", echo=lambda line: None)
    job = state["jobs"][0]
    assert job["status"] == "done" and job["config"]["kind"] == "capacity"
    store = RunStore.open(tmp_path / "out" / job["run"])
    assert len(store.analysis("capacity")) >= 1
    results = pd.read_parquet(tmp_path / "out" / "results.parquet")
    assert set(results["kind"]) == {"capacity"} and set(results["length"]) <= {2, 3}


def test_local_sweep_writes_stores_plan_and_one_results_table(local_sweep):
    out, state, lines = local_sweep
    saved = json.loads((out / "sweep.json").read_text())
    assert [j["status"] for j in saved["jobs"]] == ["done"] * 4
    results = pd.read_parquet(out / "results.parquet")
    assert list(results.columns[:len(RESULT_COLUMNS)]) == RESULT_COLUMNS
    assert len(results) == 4 * 2 * 2  # jobs x texts x seeds
    assert set(results["source"]) == {"builtin", "random"} and set(results["share"]) == {"none", "m"}
    assert not results.duplicated(["run", "text_id", "seed", "length"]).any()
    for job in saved["jobs"]:
        stored = RunStore.open(out / job["run"]).solutions()
        assert len(stored) == job["solutions"] == 4
        assert RunStore.open(out / job["run"]).manifest["status"] == "complete"
    assert results["accuracy"].mean() > 0.5
    assert any("4/4 jobs done, 0 running, 0 failed" in line and "/hour" in line for line in lines)


def test_a_sweep_started_again_fits_nothing_new_and_resumes_unfinished_jobs(local_sweep):
    out, state, _ = local_sweep
    before = pd.read_parquet(out / "results.parquet")
    saved = json.loads((out / "sweep.json").read_text())
    saved["jobs"][1]["status"] = "running"  # as a sweep killed during job 1 leaves it
    (out / "sweep.json").write_text(json.dumps(saved))
    lines = []
    again = run_sweep(state["sweep"], out, backend="local", echo=lines.append)
    assert "4 jobs, 3 already done" in lines[0]
    assert [j["status"] for j in again["jobs"]] == ["done"] * 4
    assert again["jobs"][1]["new"] == 0  # its store resumed with nothing left to fit
    after = pd.read_parquet(out / "results.parquet")
    pd.testing.assert_frame_equal(before, after)


@pytest.mark.parametrize("body, message", [
    ('models = ["no-such-org/no-such-model"]\ntexts = "builtin"\nlengths = [4]\n',
     "unknown model 'no-such-org/no-such-model'"),
    ('models = ["{m}"]\ntexts = "builtin"\nlengths = [4]\nlength = 8\n', "unknown key 'length'"),
    ('models = ["{m}"]\ntexts = "builtin"\nlengths = []\n', "'lengths' is empty"),
    ('models = []\ntexts = "builtin"\nlengths = [4]\n', "'models' is empty"),
    ('models = ["{m}"]\ntexts = "builtin"\nlengths = [4]\nseeds = 0\n', "'seeds' must be"),
    ('models = ["{m}"]\ntexts = "builtin"\n', "exactly one of 'lengths'"),
    ('models = ["{m}"]\ntexts = "nonsense:3"\nlengths = [4]\n', "nonsense"),
    ('models = ["{m}"]\ntexts = "builtin"\nlengths = [4]\n[recipe]\nlr = -1\n', "lr must be positive"),
    ('models = ["{m}"]\ntexts = "builtin"\nlengths = [4]\nanalyses = ["vibes"]\n', "unknown analysis"),
    ('models = ["{m}"\n', "not valid TOML"),
])
def test_a_bad_sweep_file_is_one_line_and_exit_2(tmp_path, capsys, model_folder, body, message):
    file = tmp_path / "bad.toml"
    file.write_text(body.replace("{m}", str(model_folder)))
    assert cli.main(["sweep", str(file), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and message in err, err
    assert not (tmp_path / "out").exists()


def test_another_plan_in_the_same_directory_is_refused(local_sweep, tmp_path, model_folder, capsys):
    out, _, _ = local_sweep
    file = sweep_file(tmp_path, [model_folder], SWEEP.replace("lengths = [4]", "lengths = [5]"))
    assert cli.main(["sweep", file, "--out", str(out)]) == 2
    assert "holds another sweep" in capsys.readouterr().err


def test_the_sweep_report_tables_capacity_and_links_every_job(local_sweep, capsys):
    from protoscope.reports.sweep_report import capacity_table

    out, state, _ = local_sweep
    assert cli.main(["report", str(out)]) == 0
    page = (out / "report.html").read_text()
    table = capacity_table(pd.read_parquet(out / "results.parquet"))
    assert len(table) == 4 and set(table["texts"]) == {2}  # 1 model x 2 sources x 2 shares
    assert set(table["source"]) == {"builtin", "random"}
    for job in state["jobs"]:
        assert f'href="{job["run"]}/report.html"' in page
        assert (out / job["run"] / "report.html").exists()
    assert "builtin (share none)" in page and "random (share m)" in page


def test_the_example_sweep_file_plans_two_models_x_three_sources_x_two_shares():
    from pathlib import Path

    example = Path(__file__).resolve().parent.parent / "docs" / "sweep-capacity.toml"
    jobs = plan_sweep(read_sweep_file(example), check_models=False)
    assert len(jobs) == 12 and {j["model"] for j in jobs} == {"smollm2-135m", "gemma3-270m"}
    assert all(j["config"]["kind"] == "capacity" for j in jobs)


@pytest.fixture(scope="module")
def capacity_sweep(tmp_path_factory):
    """A capacity grid on two tiny models (different weights), 3 texts of 2 sources, m per text
    and shared: 2 models x 2 text specs x 2 share modes = 8 jobs."""
    folder = tmp_path_factory.mktemp("capacity")
    models = [save_tiny_model(folder / f"tiny-{seed}", "llama", seed, initializer_range=0.3)
              for seed in (0, 1)]
    body = ('models = [{models}]\ntexts = ["builtin:2", "random:1"]\ncapacity = [2, 3]\n'
            'seeds = 1\nshare = ["none", "m"]\n[recipe]\nmax_steps = 40\n')
    spec = read_sweep_file(sweep_file(folder, models, body))
    state = run_sweep(spec, folder / "out", backend="local", echo=lambda line: None)
    return folder / "out", state, [str(m) for m in models]


def test_results_carry_the_h_lm_of_each_solutions_prefix(capacity_sweep):
    out, state, _ = capacity_sweep
    results = pd.read_parquet(out / "results.parquet")
    assert results["h_lm_nats"].notna().all() and (results["h_lm_nats"] > 0).all()
    for job in state["jobs"]:
        texts = {t.text_id: t for t in RunStore.open(out / job["run"]).texts()}
        for row in results[results["job"] == job["id"]].itertuples():
            assert row.h_lm_nats == pytest.approx(texts[row.text_id].h_lm(int(row.length)))
    assert results["h_lm_bits"].to_numpy() == pytest.approx(results["h_lm_nats"] / math.log(2))


def test_the_sweep_report_draws_capacity_vs_h_lm_one_trace_per_model(capacity_sweep):
    from protoscope.reports.sweep_report import capacity_vs_hlm_table

    from test_demo import drawn_figures, values

    out, state, models = capacity_sweep
    assert cli.main(["report", str(out)]) == 0
    page = (out / "report.html").read_text()
    drawn = [traces for title, traces in drawn_figures(page).values()
             if title == "Capacity vs H_LM per model"]
    assert len(drawn) == 1, "the figure is missing from the sweep report"
    traces = drawn[0]
    assert sorted(t["name"] for t in traces) == sorted(models)  # one trace per model
    per_text = capacity_vs_hlm_table(pd.read_parquet(out / "results.parquet"))
    for trace in traces:
        mine = per_text[per_text["model"] == trace["name"]]
        assert len(values(trace["x"])) == len(mine) == 2 * 3  # shares x texts
        assert sorted(values(trace["y"])) == sorted(mine["capacity"].astype(float))
        symbols = trace["marker"]["symbol"]
        assert sum(s.endswith("-open") for s in symbols) == 3  # the share-m texts, hollow
        assert len({s.removesuffix("-open") for s in symbols}) == 2  # builtin, random
    held = per_text[per_text["capacity"] > 0]
    assert len(held) and (held["h_lm_nats"] > 0).all()
    assert (per_text.loc[per_text["capacity"] == 0, "h_lm_nats"] == 0).all()
    assert "nats_per_token" in page and "H_LM of the longest reconstructed prefix (nats" in page


def test_capacity_vs_h_lm_takes_the_h_lm_of_the_longest_prefix_any_seed_reconstructed():
    from protoscope.reports.sweep_report import capacity_vs_hlm_table, hlm_summary

    row = dict(model="M", share="none", source="builtin", kind="capacity", method="one-step")
    results = pd.DataFrame([
        {**row, "text_id": "a", "seed": 0, "length": 2, "accuracy": 1.0, "h_lm_nats": 5.0},
        {**row, "text_id": "a", "seed": 0, "length": 3, "accuracy": 0.5, "h_lm_nats": 9.0},
        {**row, "text_id": "a", "seed": 1, "length": 3, "accuracy": 1.0, "h_lm_nats": 9.0},
        {**row, "text_id": "b", "seed": 0, "length": 2, "accuracy": 0.5, "h_lm_nats": 7.0},
        # neither the [mem] baseline nor a plain fit job is the capacity grid's one-step search
        {**row, "text_id": "b", "seed": 0, "length": 5, "accuracy": 1.0, "h_lm_nats": 20.0,
         "method": "mem"},
        {**row, "text_id": "b", "seed": 0, "length": 4, "accuracy": 1.0, "h_lm_nats": 15.0,
         "kind": "fit"},
    ])
    per_text = capacity_vs_hlm_table(results).set_index("text_id")
    assert per_text.loc["a", "capacity"] == 3 and per_text.loc["a", "h_lm_nats"] == 9.0
    assert per_text.loc["b", "capacity"] == 0 and per_text.loc["b", "h_lm_nats"] == 0.0
    summary = hlm_summary(per_text.reset_index())
    assert summary["texts"].tolist() == [2] and summary["nats_per_token"].tolist() == [3.0]
    assert capacity_vs_hlm_table(results.drop(columns="h_lm_nats")) is None  # an older table


def test_the_capacity_table_leaves_out_the_mem_baseline():
    from protoscope.reports.sweep_report import capacity_table

    row = dict(model="M", share="none", source="builtin", kind="capacity", text_id="a", seed=0)
    results = pd.DataFrame([{**row, "length": 2, "accuracy": 1.0, "method": "one-step"},
                            {**row, "length": 3, "accuracy": 0.5, "method": "one-step"},
                            {**row, "length": 3, "accuracy": 1.0, "method": "mem"}])
    assert capacity_table(results)["capacity"].tolist() == [2]


@pytest.mark.parametrize("grid", ["lengths = [4]", "capacity = [2, 3]"])
def test_a_running_job_shows_its_groups_in_flight_prefixed_with_its_id(tmp_path, capsys,
                                                                     model_folder, grid):
    body = (f'models = ["{model_folder}"]\ntexts = "builtin:2"\n{grid}\nseeds = 2\n'
            'share = "m"\n[recipe]\nmax_steps = 30\n')
    file = tmp_path / "sweep.toml"
    file.write_text(body)
    out = tmp_path / "out"
    assert cli.main(["sweep", str(file), "--out", str(out), "--progress-seconds", "0"]) == 0
    job = json.loads((out / "sweep.json").read_text())["jobs"][0]["id"]
    err = capsys.readouterr().err.splitlines()
    groups = [line for line in err if line.startswith(f"protoscope: job {job}: ")
              and "groups in flight" in line]
    assert groups, "\n".join(err)
    assert all(re.search(r"group \S+: step \d+, worst [01]\.\d\d, exact \d/4", line)
               for line in groups)  # one share group: 2 texts x 2 seeds
    steps = [int(s) for line in groups for s in re.findall(r"step (\d+)", line)]
    assert steps[0] < steps[-1]  # lines while the group is still fitting, not once at its end
    if grid.startswith("capacity"):
        assert any(line.startswith(f"protoscope: job {job}: one-step length 2: ")
                   and "/4 reconstructed" in line for line in err)


def test_a_negative_progress_interval_is_one_line_and_exit_2(tmp_path, capsys, model_folder):
    file = sweep_file(tmp_path, [model_folder])
    assert cli.main(["sweep", file, "--out", str(tmp_path / "out"), "--progress-seconds", "-1"]) == 2
    assert "--progress-seconds must be >= 0" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_the_capacity_table_marks_rows_of_unfinished_jobs_partial():
    from protoscope.reports.sweep_report import capacity_table

    results = pd.DataFrame({"model": "m", "source": ["builtin", "builtin", "random"],
                            "share": "none", "text_id": ["a", "b", "c"], "length": 2,
                            "accuracy": 1.0, "method": "one-step", "job": ["j1", "j2", "j3"]})
    table = capacity_table(results, {"j1": "done", "j2": "stopped", "j3": "done"})
    assert table.set_index("source")["partial"].to_dict() == {"builtin": True, "random": False}
    assert not capacity_table(results)["partial"].any()  # no statuses: nothing known unfinished


def test_a_sweep_stopped_by_sigterm_marks_its_job_stopped_and_its_capacity_partial(tmp_path, model_folder):
    """A scheduler stops the driver (SIGTERM) mid-grid: the job in flight is `stopped` in
    sweep.json (not left `running`), its stored solutions are in results.parquet, the sweep's
    capacity row is partial, and the same sweep again finishes it."""
    import os
    import signal
    import subprocess
    import sys
    import time

    from protoscope.reports.sweep_report import build_sweep_report

    body = ('models = ["{models}"]\ntexts = "builtin:3"\ncapacity = [2, 3, 4, 5, 6, 7, 8]\n'
            'seeds = 2\n[recipe]\nmax_steps = 400\n')
    file = sweep_file(tmp_path, [model_folder], body.replace('"{models}"', "{models}"))
    out = tmp_path / "out"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "protoscope.cli", "sweep", file, "--out", str(out)],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 180
        while not list(out.glob("jobs/*/parts/index.json")):  # a solution stored, mid-grid
            assert proc.poll() is None, f"the sweep ended first:\n{proc.stderr.read()}"
            assert time.monotonic() < deadline, "no solution stored within 180 s"
            time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        rc = proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert rc == cli.EXIT_INTERRUPTED, proc.stderr.read()
    (job,) = json.loads((out / "sweep.json").read_text())["jobs"]
    assert job["status"] == "stopped" and job["solutions"] >= 1
    results = pd.read_parquet(out / "results.parquet")
    assert len(results) == job["solutions"]
    page = build_sweep_report(out, job_reports=False).read_text()
    assert "Partial (1 of 1 rows" in page and ">stopped<" in page
    state = run_sweep(read_sweep_file(file), out, backend="local", echo=lambda line: None)
    assert state["jobs"][0]["status"] == "done"
