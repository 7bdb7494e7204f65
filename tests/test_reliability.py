"""Reliability: what bad input, a kill, a second process and NaN do to protoscope.

Bad input ends with exactly one line on stderr and exit status 2, never a traceback; a fit
killed with SIGKILL resumes and keeps every stored solution bit for bit; a busy run says so; a
non-finite loss or vector restarts or fails its own problem only; the same command on CPU
repeats bit for bit; no module unpickles or trusts remote code by default.

Most cases call `main()` in-process (each subprocess costs seconds of imports on a shared
machine); the script entry, the lock and the kill run the real command line in subprocesses.
"""
from __future__ import annotations

import ast
import json
import math
import os
import pathlib
import shutil
import signal
import subprocess
import sys
import time
from types import SimpleNamespace

import pandas as pd
import pytest
import torch

from tiny_run import single_thread
from protoscope.cli import main
from protoscope.geometry.engine.decoder import Decoder
from protoscope.geometry.engine.fitting import Fitter, Problem
from protoscope.geometry.models.loading import tiny_model
from protoscope.geometry.engine.recipes import resolve_recipe
from protoscope.geometry.store.runstore import RunStore
from protoscope.geometry.store.texts import tokenize

ROOT = pathlib.Path(__file__).resolve().parents[1]
TEXTS = "the time of the day\n\nwe can see it now\n\nthis is a good one for you\n"
KEY = ["text_id", "seed", "length"]


# ------------------------------------------------------------------------------ helpers


def save_model(folder: pathlib.Path, seed: int) -> pathlib.Path:
    """A tiny Llama and its tokenizer in a folder `--model` accepts (fits converge in tens of
    steps at initializer_range=0.3)."""
    loaded = tiny_model("llama", seed, initializer_range=0.3)
    loaded.model.save_pretrained(folder)
    loaded.tokenizer.save_pretrained(folder)
    return folder


def fit_args(ns, **options) -> list[str]:
    """`fit` on the tiny model; options override the defaults (underscores become dashes)."""
    values = {"model": ns.model, "texts": ns.texts, "length": 4, "seeds": 2, "max_steps": 60,
              "out": ns.root / "unused", **options}
    argv = ["fit", "--quiet"]
    for name, value in values.items():
        if value is True:
            argv.append(f"--{name.replace('_', '-')}")
        else:
            argv += [f"--{name.replace('_', '-')}", str(value)]
    return argv


def cli(argv, capfd) -> tuple[int, str, str]:
    """Run the command line in-process; (exit status, stdout, stderr) at the file-descriptor
    level, so library output that bypasses sys.stderr is seen too."""
    capfd.readouterr()
    environ = dict(os.environ)  # main() quiets libraries through the environment
    try:
        with single_thread():
            rc = main([str(a) for a in argv])
    finally:
        os.environ.clear()
        os.environ.update(environ)
    out, err = capfd.readouterr()
    return rc, out, err


def subprocess_env() -> dict:
    """The user's environment, minus anything that would hide library chatter from the test."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("HF_HUB_DISABLE_PROGRESS_BARS", "TRANSFORMERS_VERBOSITY")}
    env["OMP_NUM_THREADS"] = "1"
    return env


def run_cli(argv, entry=("-m", "protoscope.cli"), timeout=120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *entry, *[str(a) for a in argv]], cwd=ROOT,
                          env=subprocess_env(), capture_output=True, text=True, timeout=timeout)


def one_line(rc: int, err: str, *needles: str) -> str:
    """The contract for bad input: exit 2, one line on stderr, no traceback, naming the fault."""
    lines = err.splitlines()  # also splits progress bars drawn with \r
    assert "Traceback" not in err, err
    assert rc == 2, f"exit status {rc}, stderr:\n{err}"
    assert len(lines) == 1, f"expected one line on stderr, got {len(lines)}:\n{err}"
    assert lines[0].startswith("protoscope: error: "), lines[0]
    for needle in needles:
        assert needle in lines[0], f"{needle!r} not in {lines[0]!r}"
    return lines[0]


def snapshot(folder: pathlib.Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file() and p.name != ".lock"}


def keyed(store: RunStore) -> tuple[pd.DataFrame, torch.Tensor, torch.Tensor]:
    """Rows sorted by (text_id, seed, length) and their vectors in that order."""
    rows, e, m = store.solution_vectors()
    order = rows.sort_values(KEY).index.to_numpy()
    index = torch.as_tensor(order.copy())
    return rows.loc[order].reset_index(drop=True), e[index], m[index]


# ------------------------------------------------------------------------------ fixtures


@pytest.fixture(scope="module")
def ns(tmp_path_factory) -> SimpleNamespace:
    """Two tiny models (seeds 0 and 1), good texts and every kind of bad text file."""
    root = tmp_path_factory.mktemp("reliability")
    ns = SimpleNamespace(root=root, model=save_model(root / "model", 0),
                         other_model=save_model(root / "other-model", 1))
    files = {
        "texts.txt": TEXTS,
        "empty.txt": "",
        "blank.txt": "\n  \n\n",
        "binary.txt": b"\xff\xfe\x00\x81 not text \x80\n",
        "nul.txt": b"the day\x00 of the time\n",
        "not-json.jsonl": '{"text": "the time of the day"}\nthe time of the day\n',
        "no-text.jsonl": '{"id": "a", "body": "the time of the day"}\n',
        "number-text.jsonl": '{"text": 5}\n',
        "array.jsonl": '["the time of the day"]\n',
        "long.txt": " ".join(["the time of day"] * 40) + "\n",  # 160 tokens > 128 positions
    }
    for name, content in files.items():
        path = root / name
        path.write_bytes(content) if isinstance(content, bytes) else path.write_text(content)
    (root / "not-a-model").mkdir()
    (root / "not-a-model" / "README.md").write_text("no weights here\n")
    (root / "empty-dir").mkdir()
    ns.texts = root / "texts.txt"
    return ns


@pytest.fixture(scope="module")
def good_run(ns) -> pathlib.Path:
    """A real small run: 3 texts x 2 seeds at 4 tokens (do not modify: copy it)."""
    out = ns.root / "good-run"
    with single_thread():
        assert main(fit_args(ns, out=out)) == 0
    assert len(RunStore.open(out).solutions()) == 6
    return out


@pytest.fixture
def run_copy(good_run, tmp_path) -> pathlib.Path:
    out = tmp_path / "run"
    shutil.copytree(good_run, out)
    return out


# ------------------------------------------------------------------------------ bad input

BAD_FIT = {  # case: (options for fit_args, words the one line must contain)
    "missing .txt": ({"texts": "{root}/missing.txt"}, ["missing.txt", "does not exist"]),
    "missing .jsonl": ({"texts": "{root}/missing.jsonl"}, ["missing.jsonl", "does not exist"]),
    "empty .txt": ({"texts": "{root}/empty.txt"}, ["empty.txt", "is empty"]),
    "blank .txt": ({"texts": "{root}/blank.txt"}, ["blank.txt", "is empty"]),
    "non-UTF-8 .txt": ({"texts": "{root}/binary.txt"}, ["binary.txt", "not UTF-8"]),
    "NUL bytes .txt": ({"texts": "{root}/nul.txt"}, ["nul.txt", "binary"]),
    "JSONL line not JSON": ({"texts": "{root}/not-json.jsonl"}, ["not-json.jsonl line 2", "not JSON"]),
    "JSONL without text": ({"texts": "{root}/no-text.jsonl"}, ["no-text.jsonl line 1", "string field 'text'"]),
    "JSONL text not a string": ({"texts": "{root}/number-text.jsonl"}, ["line 1", "string field 'text'"]),
    "JSONL line not an object": ({"texts": "{root}/array.jsonl"}, ["line 1", "string field 'text'"]),
    "unknown text spec": ({"texts": "novel:3"}, ["unknown text spec 'novel:3'", "random:COUNT"]),
    "length 0": ({"length": 0}, ["--length must be at least 1, got 0"]),
    "length negative": ({"length": -3}, ["--length must be at least 1, got -3"]),
    "length longer than the text": ({"length": 50}, ["has 5 tokens", "a prefix of 50"]),
    "length beyond the context": ({"texts": "{root}/long.txt", "length": 128},
                                  ["length 128 needs 129 input positions", "context", "(128)"]),
    "seeds 0": ({"seeds": 0}, ["argument --seeds: must be an integer >= 1, got '0'"]),
    "seeds negative": ({"seeds": -2}, ["argument --seeds: must be an integer >= 1, got '-2'"]),
    "unknown arrangement": ({"arrangement": "e q*"}, ["unknown arrangement 'e q*'", "allowed"]),
    "unknown share": ({"share": "x"}, ["argument --share: must be one of none, m, e"]),
    "unknown model id": ({"model": "no-such-org/no-such-model"},
                         ["unknown model 'no-such-org/no-such-model'", "not a local folder"]),
    "unknown model folder": ({"model": "{root}/no-such-folder"}, ["unknown model", "no-such-folder"]),
    "folder without a model": ({"model": "{root}/not-a-model"}, ["cannot load", "not-a-model"]),
    "unknown device": ({"device": "tpu"}, ["unknown device 'tpu'", "allowed: cpu, cuda"]),
    "unavailable device": ({"device": "cuda:99"}, ["device 'cuda:99' is not available"]),
    "unknown dtype": ({"dtype": "float8"}, ["argument --dtype: must be one of float32", "got 'float8'"]),
    "unknown recipe": ({"recipe": "fancy"}, ["argument --recipe: must be one of default, paper", "got 'fancy'"]),
}


def kill_when(argv, ready, what: str, poll: float) -> None:
    """Run the CLI in a subprocess and SIGKILL it as soon as `ready()` holds (within 180 s)."""
    proc = subprocess.Popen([sys.executable, "-m", "protoscope.cli", *map(str, argv)], cwd=ROOT,
                            env=subprocess_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 180
        while not ready():
            assert proc.poll() is None, f"fit ended before {what}:\n{proc.stderr.read()}"
            assert time.monotonic() < deadline, f"no {what} within 180 s"
            time.sleep(poll)
        was_running = proc.poll() is None
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.stderr.close()
    assert was_running and proc.returncode == -signal.SIGKILL


@pytest.mark.parametrize("case", list(BAD_FIT))
def test_bad_fit_input_gets_one_line(case, ns, tmp_path, capfd, monkeypatch):
    options, needles = BAD_FIT[case]
    options = {k: str(v).format(root=ns.root) for k, v in options.items()}
    if "texts" in options and case != "length beyond the context":
        def load_model(*args, **kwargs):  # a bad text source must not wait for a model load
            raise AssertionError("the model was loaded before the texts were checked")

        monkeypatch.setattr("protoscope.geometry.runs.fit.load_model", load_model)
    out = tmp_path / "run"
    rc, _, err = cli(fit_args(ns, out=out, **options), capfd)
    one_line(rc, err, *needles)
    assert not (out / "manifest.json").exists(), "bad input must not leave a run behind"


@pytest.mark.parametrize("command", [
    ["analyze"], ["report"], ["compare", "--text", "file-000"],
])
@pytest.mark.parametrize("where", ["empty-dir", "no-such-dir", "texts.txt"])
def test_commands_on_something_that_is_not_a_run(command, where, ns, capfd):
    target = ns.root / where
    rc, _, err = cli([command[0], target, *command[1:]], capfd)
    one_line(rc, err, str(target), "not a protoscope run")
    assert not (ns.root / "no-such-dir").exists()


def test_demo_with_a_bad_device_gets_one_line(tmp_path, capfd):
    rc, _, err = cli(["demo", "--device", "tpu", "--out", tmp_path / "demo"], capfd)
    one_line(rc, err, "unknown device 'tpu'")


def test_compare_an_unknown_text_id(good_run, capfd):
    before = snapshot(good_run)
    rc, _, err = cli(["compare", good_run, "--text", "nope"], capfd)
    one_line(rc, err, "unknown text id 'nope'", "file-000, file-001, file-002")
    assert snapshot(good_run) == before


UNUSABLE_OUT = {  # case: (--out under the test's root, words the one line must contain)
    "cannot be created": ("/proc/protoscope-run", ["cannot create run folder /proc/protoscope-run"]),
    "a file": ("texts.txt", ["texts.txt is a file, not a run folder"]),
    "under a file": ("texts.txt/run", ["cannot create run folder", "texts.txt/run"]),
}


@pytest.mark.parametrize("case", list(UNUSABLE_OUT))
@pytest.mark.parametrize("command", ["fit", "capacity", "study"])
def test_an_unusable_out_gets_one_line_before_the_model_loads(case, command, ns, capfd, monkeypatch):
    where, needles = UNUSABLE_OUT[case]
    def load_model(*args, **kwargs):
        raise AssertionError("the model was loaded before --out was checked")

    monkeypatch.setattr("protoscope.geometry.runs.fit.load_model", load_model)
    common = ["--model", ns.model, "--seeds", "1", "--out", ns.root / where, "--quiet"]
    argv = {"fit": ["fit", "--texts", ns.texts, "--length", "2", *common],
            "capacity": ["capacity", "--texts", ns.texts, "--lengths", "2,4", *common],
            "study": ["study", "uniqueness", "--contexts", "1", "--per-context", "2",
                      "--length", "2", *common]}[command]
    rc, _, err = cli(argv, capfd)
    one_line(rc, err, *needles)


def test_a_run_that_cannot_be_written_gets_one_line(good_run, tmp_path, capfd):
    """analyze must take the run's lock and report must write report.html: where neither can
    be done (here a folder sits where the file goes), one line, not a traceback."""
    run = tmp_path / "run"
    shutil.copytree(good_run, run)
    (run / ".lock").unlink(missing_ok=True)
    (run / ".lock").mkdir()
    rc, _, err = cli(["analyze", run, "--only", "uniqueness", "--quiet"], capfd)
    one_line(rc, err, "cannot lock", str(run / ".lock"))
    (run / "report.html").mkdir()
    rc, _, err = cli(["report", run], capfd)
    one_line(rc, err, "cannot write", str(run / "report.html"))


def _truncate(path: pathlib.Path) -> None:
    os.truncate(path, path.stat().st_size // 2)


def _scribble(path: pathlib.Path) -> None:
    data = bytearray(path.read_bytes())
    data[:8] = b"\xff" * 8  # the safetensors header length: now absurd
    path.write_bytes(bytes(data))


def _reshape_manifest(path: pathlib.Path) -> None:
    manifest = json.loads(path.read_text())
    path.write_text(json.dumps({**manifest, "model": "tiny"}))


DAMAGE = {  # case: (file, damage, words the one line must contain)
    "truncated solutions.parquet": ("solutions.parquet", _truncate, ["solutions.parquet is damaged"]),
    "truncated solutions.safetensors": ("solutions.safetensors", _truncate,
                                        ["solutions.safetensors is damaged"]),
    "corrupt solutions.safetensors": ("solutions.safetensors", _scribble,
                                      ["solutions.safetensors is damaged"]),
    "missing solutions.safetensors": ("solutions.safetensors", pathlib.Path.unlink,
                                      ["solutions.parquet indexes e rows beyond"]),
    "invalid manifest.json": ("manifest.json", _truncate, ["manifest.json is damaged", "JSONDecodeError"]),
    "manifest.json of the wrong shape": ("manifest.json", _reshape_manifest,
                                         ["manifest.json is damaged", "'model' is not a JSON object"]),
    "damaged texts.jsonl": ("texts.jsonl", _truncate, ["texts.jsonl is damaged"]),
}


@pytest.mark.parametrize("command", ["fit", "analyze", "report"])
@pytest.mark.parametrize("case", list(DAMAGE))
def test_damaged_store_gets_one_line_and_is_left_alone(case, command, ns, run_copy, capfd):
    name, damage, needles = DAMAGE[case]
    damage(run_copy / name)
    before = snapshot(run_copy)
    argv = fit_args(ns, out=run_copy) if command == "fit" else [command, run_copy]
    rc, _, err = cli(argv, capfd)
    one_line(rc, err, str(run_copy), *needles)
    assert snapshot(run_copy) == before, "a failed command must not write to the store"


def _with_a_torn_part(run: pathlib.Path) -> pathlib.Path:
    """Give a finished run one appended part (as a fit stopped mid-run leaves it), then tear
    that part's rows file; returns the torn file."""
    store = RunStore.open(run)
    rows, e, m = store.solution_vectors([0])
    row = {k: v for k, v in rows.iloc[0].to_dict().items() if k not in ("solution_id", "e_index", "m_index")}
    store.append([{**row, "seed": 99, "e_row": 0, "m_row": 0}], e, m)
    (part,) = (run / "parts").glob("part-*.parquet")
    os.truncate(part, part.stat().st_size - 5)
    return part


@pytest.mark.parametrize("command", ["fit", "analyze", "report"])
def test_a_torn_part_gets_one_line_naming_it_and_the_store_is_left_alone(command, ns, run_copy, capfd):
    part = _with_a_torn_part(run_copy)
    before = {p: p.read_bytes() for p in sorted(run_copy.rglob("*")) if p.is_file() and p.name != ".lock"}
    argv = fit_args(ns, out=run_copy) if command == "fit" else [command, run_copy]
    rc, _, err = cli(argv, capfd)
    one_line(rc, err, str(part), "is damaged", "bytes where", "records")
    after = {p: p.read_bytes() for p in sorted(run_copy.rglob("*")) if p.is_file() and p.name != ".lock"}
    assert after == before, "a failed command must not write to the store"


def test_run_of_another_model_is_refused(ns, run_copy, capfd):
    before = snapshot(run_copy)
    rc, _, err = cli(fit_args(ns, out=run_copy, model=ns.other_model), capfd)
    one_line(rc, err, str(run_copy), "was written for model", "other weights", "--overwrite")
    assert snapshot(run_copy) == before


def test_other_config_is_refused_unless_overwrite(ns, run_copy, capfd):
    before = snapshot(run_copy)
    rc, _, err = cli(fit_args(ns, out=run_copy, seeds=3), capfd)
    one_line(rc, err, str(run_copy), "another config", "differs in: seeds", "--overwrite")
    assert snapshot(run_copy) == before
    rc, _, err = cli(fit_args(ns, out=run_copy, seeds=3, overwrite=True), capfd)
    assert rc == 0, err
    assert len(RunStore.open(run_copy).solutions()) == 9


def test_the_script_entry_gives_one_line_through_a_model_load(ns, tmp_path):
    """`python cli.py` in a fresh process: the model loads (transformers would draw a bar) and a
    text longer than the tokenizer's nominal maximum is tokenised (it would warn)."""
    done = run_cli(fit_args(ns, texts=ns.root / "long.txt", length=128, out=tmp_path / "run"),
                   entry=("cli.py",))
    one_line(done.returncode, done.stderr, "length 128 needs 129 input positions")


# ------------------------------------------------------------------------------ processes


def test_second_process_on_a_busy_run_is_told_it_is_in_use(ns, tmp_path):
    out = tmp_path / "run"
    with RunStore(out).lock():  # this test's process is the first one
        done = run_cli(fit_args(ns, out=out))
    one_line(done.returncode, done.stderr, str(out), "in use by another protoscope process")
    assert not (out / "manifest.json").exists()


def test_fit_killed_mid_run_resumes_and_keeps_every_stored_solution(ns, tmp_path, capfd):
    texts = tmp_path / "texts.txt"
    texts.write_text(TEXTS + "\nall of them went to the city\n")
    out = tmp_path / "run"
    argv = fit_args(ns, texts=texts, seeds=3, max_steps=400, batch_size=2, out=out)
    expected = {(f"file-{i:03d}", seed, 4) for i in range(4) for seed in range(3)}
    # each finished solution is an append: a part committed in parts/index.json
    kill_when(argv, lambda: (out / "parts" / "index.json").exists(), "a solution stored", 0.02)
    store = RunStore.open(out)
    assert store.manifest["status"] == "running"
    before, e_before, m_before = keyed(store)
    assert 0 < len(before) < len(expected), "the kill should land mid-run"

    rc, stdout, err = cli(argv, capfd)  # the same command again
    assert rc == 0, err
    after, e_after, m_after = keyed(RunStore.open(out))
    assert not after.duplicated(KEY).any()
    assert set(map(tuple, after[KEY].itertuples(index=False))) == expected
    kept_rows = torch.as_tensor(after["solution_id"].isin(before["solution_id"]).to_numpy(copy=True))
    pd.testing.assert_frame_equal(after[kept_rows.numpy()].reset_index(drop=True), before)
    assert torch.equal(e_after[kept_rows], e_before) and torch.equal(m_after[kept_rows], m_before)
    assert RunStore.open(out).manifest["status"] == "complete"
    assert f"{len(expected)} solutions in {out}" in stdout


def test_shared_group_killed_mid_fit_resumes_from_its_checkpoint_bit_for_bit(ns, tmp_path, capfd):
    """A share group killed between checkpoints replays from the last one and ends exactly as a
    run that was never stopped (on CPU): vectors, rows, steps and restarts."""
    def argv(out):
        return fit_args(ns, length=5, seeds=2, share="m", group_size=1, share_policy="wait",
                        max_steps=300, checkpoint_steps=10, out=out)

    out = tmp_path / "killed"
    kill_when(argv(out), lambda: list((out / "checkpoints").glob("fit-*.json")), "a checkpoint", 0.01)
    (state_file,) = (out / "checkpoints").glob("fit-*.json")
    state = json.loads(state_file.read_text())
    assert state["groups"] and all({"steps", "worst", "exact", "members"} <= set(g) for g in state["groups"])
    assert len(RunStore.open(out).solutions()) < 6, "the kill should land mid-fit"

    rc, _, err = cli(argv(out), capfd)  # the same command resumes
    assert rc == 0, err
    rc, _, err = cli(argv(tmp_path / "whole"), capfd)  # never stopped
    assert rc == 0, err
    resumed, e1, m1 = keyed(RunStore.open(out))
    whole, e2, m2 = keyed(RunStore.open(tmp_path / "whole"))
    assert len(resumed) == 6 and not resumed.duplicated(KEY).any()
    assert torch.equal(e1, e2) and torch.equal(m1, m2)
    columns = KEY + ["accuracy", "c_tokens", "loss", "steps", "restarts", "status", "share_group"]
    pd.testing.assert_frame_equal(resumed[columns], whole[columns])
    assert not (out / "checkpoints").exists(), "a finished fit leaves no checkpoint"


def test_quiet_fit_still_shows_groups_in_flight(ns, tmp_path, capfd):
    rc, _, err = cli(fit_args(ns, share="m", progress_seconds=0, max_steps=20, out=tmp_path / "run"), capfd)
    assert rc == 0, err
    line = err.splitlines()[0]
    assert line.startswith("protoscope: fit: 1 groups in flight: group 0/4: step ")
    assert "worst " in line and "exact " in line and "/6" in line


def test_same_command_twice_gives_bit_identical_vectors(ns, good_run, tmp_path, capfd):
    rc, _, err = cli(fit_args(ns, out=tmp_path / "again"), capfd)
    assert rc == 0, err
    first, e1, m1 = keyed(RunStore.open(good_run))
    second, e2, m2 = keyed(RunStore.open(tmp_path / "again"))
    assert torch.equal(e1, e2) and torch.equal(m1, m2)
    columns = KEY + ["accuracy", "c_tokens", "loss", "steps", "restarts", "status"]
    pd.testing.assert_frame_equal(first[columns], second[columns])


# ------------------------------------------------------------------------------ numerical faults


class PoisonedDecoder:
    """The real decoder, except that rows whose targets are `poison` get a NaN loss on the
    decoder calls numbered in `at_calls` (1-based): a fault in one problem of a batch."""

    def __init__(self, decoder: Decoder, poison: tuple[int, ...], at_calls: set[int]):
        self.inner, self.loaded = decoder, decoder.loaded
        self.poison, self.at_calls, self.calls = poison, at_calls, 0

    def __call__(self, e, m, targets, grad=False):
        out = self.inner(e, m, targets, grad=grad)
        self.calls += 1
        if self.calls in self.at_calls:
            rows = (targets == torch.tensor(self.poison, device=targets.device)).all(1)
            out.loss = torch.where(rows[:, None], torch.full_like(out.loss, math.nan), out.loss)
        return out


@pytest.fixture(scope="module")
def nan_setup():
    loaded = tiny_model("llama", 0, initializer_range=0.3)
    words = ["the time of the day", "we can see it now", "this is a good one"]
    targets = [tokenize(loaded, w)[:4] for w in words]
    return loaded, targets


def _nan_fit(loaded, targets, max_restarts: int):
    """t0: NaN loss on step 3; t1: a NaN initial vector; t2 (two seeds): healthy."""
    recipe = resolve_recipe("default", lr=0.05, max_steps=200, patience=0, max_restarts=max_restarts)
    nan_init = torch.full((loaded.info.d_model,), math.nan)
    problems = [Problem("t0", 0, targets[0]), Problem("t1", 0, targets[1], init_e=nan_init),
                Problem("t2", 0, targets[2]), Problem("t2", 1, targets[2])]
    decoder = PoisonedDecoder(Decoder(loaded, "bos e m*"), targets[0], at_calls={3})
    with single_thread():
        groups = Fitter(decoder, recipe).fit(problems)
    return {(s.problem.text_id, s.problem.seed): (s, g) for g in groups for s in g.solutions}


def test_nan_restarts_only_the_faulty_problem(nan_setup):
    found = _nan_fit(*nan_setup, max_restarts=2)
    for key in [("t0", 0), ("t1", 0)]:
        s, g = found[key]
        assert s.restarts == 1 and s.status != "failed" and s.failure is None, key
        assert torch.isfinite(g.e).all() and torch.isfinite(g.m).all() and math.isfinite(s.loss)
    for key in [("t2", 0), ("t2", 1)]:
        s, g = found[key]
        assert s.restarts == 0 and s.status == "converged" and s.accuracy == 1.0, key


def test_nan_out_of_restarts_fails_only_the_faulty_problem(nan_setup):
    found = _nan_fit(*nan_setup, max_restarts=0)
    s, g = found[("t0", 0)]
    assert s.status == "failed" and not s.converged and s.steps == 3
    assert "non-finite" in s.failure and "step 3" in s.failure
    assert torch.isfinite(g.e).all() and math.isfinite(s.loss)  # the best vectors before the fault
    s, g = found[("t1", 0)]
    assert s.status == "failed" and s.steps == 1 and "step 1" in s.failure
    assert math.isnan(s.loss), "never evaluated finitely: its loss is unknown, not 0"
    for key in [("t2", 0), ("t2", 1)]:
        s, _ = found[key]
        assert s.restarts == 0 and s.status == "converged", key


# ------------------------------------------------------------------------------ safe loading

UNSAFE_MODULES = {"pickle", "cPickle", "_pickle", "dill", "cloudpickle", "joblib", "shelve", "marshal"}


def unsafe_loading(source: str) -> list[str]:
    """What in `source` could run code from a file: pickle imports, torch.load without
    weights_only=True, np.load(allow_pickle=True), read_pickle, trust_remote_code=True."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [f"import {a.name}" for a in node.names if a.name.split(".")[0] in UNSAFE_MODULES]
        elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] in UNSAFE_MODULES:
            found.append(f"from {node.module} import")
        elif isinstance(node, ast.Call):
            name = ast.unparse(node.func)
            kw = {k.arg: k.value for k in node.keywords if k.arg}
            true = lambda key: isinstance(kw.get(key), ast.Constant) and kw[key].value is True  # noqa: E731
            if name == "torch.load" and not true("weights_only"):
                found.append(f"line {node.lineno}: torch.load without weights_only=True")
            if name.endswith("read_pickle"):
                found.append(f"line {node.lineno}: {name}")
            if name in ("np.load", "numpy.load") and true("allow_pickle"):
                found.append(f"line {node.lineno}: {name}(allow_pickle=True)")
            if true("trust_remote_code"):
                found.append(f"line {node.lineno}: trust_remote_code=True")
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            args = node.args.args + node.args.kwonlyargs
            defaults = [None] * (len(node.args.args) - len(node.args.defaults)) + node.args.defaults
            defaults += node.args.kw_defaults
            for arg, default in zip(args, defaults):
                if arg.arg == "trust_remote_code" and isinstance(default, ast.Constant) and default.value:
                    found.append(f"line {node.lineno}: {node.name}(trust_remote_code=True)")
    return found


def test_the_unsafe_loading_check_finds_what_it_looks_for():
    bad = ("import pickle\nfrom joblib import load\nimport torch\ntorch.load('x')\n"
           "torch.load('x', weights_only=False)\npd.read_pickle('x')\nnp.load('x', allow_pickle=True)\n"
           "f(trust_remote_code=True)\ndef g(trust_remote_code=True): pass\n")
    assert len(unsafe_loading(bad)) == 8
    assert unsafe_loading("torch.load('x', weights_only=True)\nf(trust_remote_code=False)\n") == []


def test_no_module_loads_pickles_or_trusts_remote_code_by_default():
    modules = [p for folder in ("geometry", "analysis", "reports", "workflows", "bench") for p in (ROOT / folder).rglob("*.py")]
    modules += sorted(ROOT.glob("*.py"))
    assert any(p.name == "runstore.py" for p in modules)
    problems = {str(p.relative_to(ROOT)): found for p in modules
                if (found := unsafe_loading(p.read_text(encoding="utf-8")))}
    assert not problems, problems
