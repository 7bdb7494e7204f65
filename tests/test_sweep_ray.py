"""The Ray backend on a local 2-CPU cluster: the same solutions as the local backend, jobs spread
over workers, a killed worker's job retried with no duplicate and no lost solution, a re-run
that fits nothing new. Skipped where Ray is not installed (`protoscope[ray]`)."""
import json
import os
import shutil
import tempfile

import pandas as pd
import pytest
import torch
from safetensors.torch import load_file

from protoscope.geometry.store.runstore import RunStore
from protoscope.workflows.jobs import FAULT_ENV
from protoscope.workflows.sweep import read_sweep_file, run_sweep

from test_sweep import local_sweep, model_folder, sweep_file, tiny_folder  # noqa: F401

ray = pytest.importorskip("ray", reason="the protoscope[ray] extra")
KEY = ["job", "text_id", "seed", "length"]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """One local cluster for the module: 2 CPUs, no dashboard, no auth token, and every Ray
    file in a short temporary folder of the test's own (socket paths must stay short)."""
    marker = tmp_path_factory.mktemp("fault") / "killed"
    ray_tmp = tempfile.mkdtemp(prefix="ray", dir="/tmp")
    saved = {k: os.environ.get(k) for k in ("RAY_AUTH_MODE", "RAY_TMPDIR", FAULT_ENV)}
    # Workers inherit this environment: the fault hook kills the worker of the "victim" job once.
    os.environ.update(RAY_AUTH_MODE="disabled", RAY_TMPDIR=ray_tmp,
                      **{FAULT_ENV: f"000-victim-builtin_2-share-none:{marker}"})
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, _temp_dir=ray_tmp)
    yield marker
    ray.shutdown()
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
    shutil.rmtree(ray_tmp, ignore_errors=True)


def _vectors(out, job):
    path = out / job["run"] / "solutions.safetensors"
    return load_file(str(path))


def test_ray_gives_the_local_backends_solutions_spread_over_workers(cluster, local_sweep, tmp_path):
    local_out, local_state, _ = local_sweep
    lines = []
    state = run_sweep(local_state["sweep"], tmp_path / "ray", backend="ray", echo=lines.append)
    assert [j["status"] for j in state["jobs"]] == ["done"] * 4
    assert len({j["worker"] for j in state["jobs"]}) == 2  # both workers took jobs
    ray_rows = pd.read_parquet(tmp_path / "ray" / "results.parquet").sort_values(KEY)
    local_rows = pd.read_parquet(local_out / "results.parquet").sort_values(KEY)
    same = ["text_id", "seed", "length", "share", "source", "accuracy", "c_tokens", "steps", "converged"]
    pd.testing.assert_frame_equal(ray_rows[same].reset_index(drop=True),
                                  local_rows[same].reset_index(drop=True))
    for job in state["jobs"]:
        mine, theirs = _vectors(tmp_path / "ray", job), _vectors(local_out, job)
        for name in ("e", "m"):
            torch.testing.assert_close(mine[name], theirs[name], rtol=1e-5, atol=1e-6)
    assert any("4/4 jobs done, 0 running, 0 failed" in line for line in lines)

    again = []
    run_sweep(local_state["sweep"], tmp_path / "ray", backend="ray", echo=again.append)
    assert "4 jobs, 4 already done" in again[0]
    assert "0 new solutions" in again[-1]


def test_a_killed_worker_is_retried_with_no_duplicate_and_no_lost_solution(cluster, tmp_path,
                                                                           local_sweep):
    local_out, local_state, _ = local_sweep
    victim = tiny_folder(tmp_path, "victim")  # the same tiny model under the fault hook's name
    spec = read_sweep_file(sweep_file(tmp_path, [victim]))
    spec["texts"], spec["share"] = ["builtin:2"], ["none"]
    spec["batch_size"] = 1  # one problem at a time, so the kill lands between stored groups
    state = run_sweep(spec, tmp_path / "out", backend="ray", echo=print)
    assert cluster.exists(), "the fault hook never fired"
    job = state["jobs"][0]
    assert job["status"] == "done" and job["new"] < 4  # the retry resumed after the first group
    rows = RunStore.open(tmp_path / "out" / job["run"]).solutions()
    assert len(rows) == 4 and not rows.duplicated(["text_id", "seed", "length"]).any()
    reference = pd.read_parquet(local_out / "results.parquet")
    reference = reference[reference["job"] == local_state["jobs"][0]["id"]]
    cols = ["text_id", "seed", "accuracy", "steps", "converged"]
    pd.testing.assert_frame_equal(rows.sort_values(cols[:2])[cols].reset_index(drop=True),
                                  reference.sort_values(cols[:2])[cols].reset_index(drop=True))
    saved = json.loads((tmp_path / "out" / "sweep.json").read_text())
    assert saved["jobs"][0]["status"] == "done"
