"""Progress of the analyses: every analysis reports its stages through one callback with counts
that never go back and end at their total, the callback changes no table and no stamp, and
the terminal side (`Progress.on_analysis`) draws a bar, or under quiet the timed line a sweep
job prefixes with its id."""

import math
import re
import shutil

import pandas as pd
import pytest
import torch

from protoscope.analysis import connectivity, information, neighbourhoods, probes, uniqueness
from protoscope.analysis.registry import ANALYSES as REGISTRY
from protoscope.options import resolve, stamp_value
from protoscope.analysis.run import ANALYSES, run_analyses
from protoscope.geometry.engine.decoder import Decoder
from protoscope.geometry.errors import ProtoscopeError
from protoscope.geometry.engine.paths import join, train_beziers
from protoscope.geometry.store.runstore import RunStore
from protoscope.progress import Progress

from test_probes import FAST, planted_store  # noqa: F401 (a fixture)
from tiny_run import ARRANGEMENT, LENGTH, SEEDS, TEXTS, single_thread, tiny_run

SOLUTIONS = len(TEXTS) * SEEDS
CONNECTIVITY = dict(grid=11, bezier_steps=6, samples_per_step=2, lr=0.05, check_every=3,
                    cross_text_pairs=1, min_accuracy=0.0, train_batch=4)  # 2 curves a chunk


class Calls:
    """A progress callback that keeps every call: (stage, done, total, detail)."""

    def __init__(self):
        self.calls = []

    def __call__(self, stage, done, total, **detail):
        self.calls.append((stage, done, total, detail))

    def stages(self) -> list[str]:
        return list(dict.fromkeys(c[0] for c in self.calls))

    def of(self, stage: str) -> list[tuple]:
        return [c for c in self.calls if c[0] == stage]

    def counts(self, stage: str, total: int) -> list[int]:
        """The stage's counts, checked: one total, never going back, ending at the total."""
        calls = self.of(stage)
        assert calls, f"no call for {stage!r}: {self.stages()}"
        assert {c[2] for c in calls} == {total}, stage
        done = [c[1] for c in calls]
        assert done == sorted(done) and 0 <= done[0] and done[-1] == total, (stage, done)
        assert max(done) <= total, (stage, done)
        return done


@pytest.fixture(scope="module")
def tiny():
    path, loaded = tiny_run()
    return RunStore.open(path), loaded


def test_curve_training_calls_back_after_every_step(tiny):
    store, loaded = tiny
    rows, e, m = store.solution_vectors()
    t0 = rows.index[rows["text_id"] == "t0"]
    a0, b0 = join(e[t0[0]], m[t0[0]]), join(e[t0[1]], m[t0[1]])
    target = torch.tensor(next(t for t in store.texts() if t.text_id == "t0").token_ids[:LENGTH])
    steps = []
    # The first curve joins a solution to itself: it holds before any step and stops there.
    with single_thread():
        train_beziers(Decoder(loaded, ARRANGEMENT), torch.stack([a0, a0]), torch.stack([a0, b0]),
                      torch.stack([target, target]), steps=6, samples_per_step=2, grid=11,
                      check_every=3, on_step=lambda *a: steps.append(a))
    assert [s for s, _, _, _ in steps] == list(range(1, 7))
    assert all(active + held <= 2 for _, active, held, _ in steps)
    assert steps[0][1:3] == (1, 1)  # one curve training, the one that holds already stopped
    assert all(math.isfinite(loss) and loss >= 0 for *_, loss in steps)  # the step's mean loss


def test_connectivity_reports_curves_then_paths_and_changes_no_number(tiny):
    store, loaded = tiny
    calls = Calls()
    with single_thread():
        tables = connectivity.analyze(store, loaded, calls, **CONNECTIVITY)
        plain = connectivity.analyze(store, loaded, **CONNECTIVITY)
    assert calls.stages() == ["bezier curves", "paths walked"]
    pairs = len(TEXTS) * 3  # C(3 seeds, 2) per text
    trained = calls.counts("bezier curves", pairs)
    assert len(set(trained)) > 2  # counted chunk by chunk, not only at the end
    steps = [int(c[3]["step"].split("/")[0]) for c in calls.of("bezier curves") if "step" in c[3]]
    assert steps and max(steps) <= CONNECTIVITY["bezier_steps"]
    assert all(c[3]["held"] <= pairs for c in calls.of("bezier curves"))
    paths = tables["connectivity_pairs"][["pair_id", "path"]].drop_duplicates()
    assert calls.counts("paths walked", len(paths)) == list(range(len(paths) + 1))
    for name in ("connectivity", "connectivity_pairs"):
        pd.testing.assert_frame_equal(tables[name], plain[name])


def test_neighbourhoods_count_solutions_through_both_passes(tiny):
    store, loaded = tiny
    calls = Calls()
    with single_thread():
        # Two radii: a solution's ascent is two rows, so rows are not solutions.
        neighbourhoods.analyze(store, loaded, calls, radii=(0.0, 0.1, 0.5), directions=2,
                               adversarial_steps=1, umap=False, batch_size=4)
    assert calls.stages() == ["solutions", "maps"]
    done = calls.counts("solutions", SOLUTIONS)
    assert len(set(done)) > 2  # batch by batch
    passes = [k for c in calls.of("solutions") for k in c[3]]
    assert "rays" in passes and "ascent" in passes
    assert passes.index("rays") < passes.index("ascent")
    calls.counts("maps", 1)


def test_information_uniqueness_and_probes_report_start_and_end(tiny, planted_store):  # noqa: F811
    store, loaded = tiny
    calls = Calls()
    with single_thread():
        information.analyze(store, loaded, calls, batch=4, throughput_batches=(1, 2), repeats=1)
        uniqueness.analyze(store, loaded, calls, semantic=False)
    assert calls.stages() == ["prompting", "attention", "throughput", "cohorts"]
    assert calls.counts("prompting", SOLUTIONS) == [0, 4, 8, 9]
    assert calls.counts("attention", SOLUTIONS) == [0, 4, 8, 9]
    calls.counts("throughput", 2)
    calls.counts("cohorts", 1)
    assert calls.of("cohorts")[-1][3] == {"pairs": SOLUTIONS * (SOLUTIONS - 1) // 2}
    probed = Calls()
    table = probes.analyze(planted_store, None, probed, semantic=False, **FAST)["probes"]
    assert probed.counts("probes", len(table)) == list(range(len(table) + 1))
    assert all("probing" in c[3] for c in probed.calls[:-1])


def test_progress_is_no_option_and_leaves_the_stamp_alone(tiny, tmp_path):
    for name in ANALYSES:
        assert "progress" not in resolve(REGISTRY[name].options, None, name), name
    with pytest.raises(ProtoscopeError, match="no option 'progress'"):
        resolve(REGISTRY["connectivity"].options, {"progress": print}, "connectivity")
    path, loaded = tiny_run()
    copy = tmp_path / "run"
    shutil.copytree(path, copy)
    store, calls = RunStore.open(copy), Calls()
    options = {"connectivity": CONNECTIVITY}
    with single_thread():
        run_analyses(store, only=["connectivity"], loaded=loaded, quiet=True, options=options,
                     progress=calls)
        stamp = store.manifest["analyses"]["connectivity"]
        again = run_analyses(store, only=["connectivity"], loaded=loaded, quiet=True,
                             options=options)  # no callback this time: still up to date
    assert again == {"connectivity": None}
    assert stamp["options"] == stamp_value(resolve(REGISTRY["connectivity"].options, CONNECTIVITY,
                                                    "connectivity"))
    assert calls.stages() == ["connectivity: bezier curves", "connectivity: paths walked"]


def test_quiet_progress_prints_a_timed_line_through_echo():
    lines = []
    progress = Progress(quiet=True, desc="job 000-x", every=0.0, echo=lines.append)
    progress.on_analysis("connectivity: bezier curves", 2, 9, step="40/150", training=3, held=1)
    progress.on_analysis("connectivity: paths walked", 19, 19)
    assert lines == ["protoscope: job 000-x: connectivity: bezier curves 2/9 "
                     "(step 40/150, training 3, held 1)",
                     "protoscope: job 000-x: connectivity: paths walked 19/19"]
    hourly = Progress(quiet=True, every=3600.0, echo=lines.append)
    hourly.on_analysis("probes: probes", 1, 3)
    assert len(lines) == 2  # not a line per call: one every `every` seconds


def test_a_bar_per_stage_on_stderr(capsys):
    progress = Progress(desc="analyze")
    for done in range(4):
        progress.on_analysis("neighbourhoods: solutions", done, 3, rays=f"{done}/3")
    progress.on_analysis("neighbourhoods: maps", 1, 1)
    progress.close()
    err = capsys.readouterr().err
    assert re.search(r"neighbourhoods: solutions: 100%.*3/3.*rays 3/3", err), err
    assert "neighbourhoods: maps" in err


def test_a_sweep_job_line_carries_its_analysis_progress(tmp_path):
    from protoscope.geometry.models.loading import save_tiny_model
    from protoscope.workflows.sweep import read_sweep_file, run_sweep

    model = save_tiny_model(tmp_path / "tiny", "llama", 0, initializer_range=0.3)
    file = tmp_path / "sweep.toml"
    file.write_text(f'models = ["{model}"]\ntexts = "builtin:2"\nlengths = [4]\nseeds = 2\n'
                    'share = "m"\nanalyses = ["neighbourhoods"]\n[recipe]\nmax_steps = 20\n')
    lines = []
    state = run_sweep(read_sweep_file(str(file)), tmp_path / "out", echo=lines.append,
                      progress_seconds=0.0)
    job = state["jobs"][0]["id"]
    ours = [line for line in lines
            if line.startswith(f"protoscope: job {job}: neighbourhoods: solutions ")]
    assert ours, "\n".join(lines)
    assert ours[-1].startswith(f"protoscope: job {job}: neighbourhoods: solutions 4/4")
