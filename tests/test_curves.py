"""Curves trained until they answer: the early stop on the grid check (each curve on its own),
the `held` / budget columns of connectivity_pairs, and the stored control points."""

import shutil

import pytest
import torch

from protoscope.analysis import connectivity
from protoscope.analysis.run import run_analyses
from protoscope.geometry.engine.decoder import Decoder
from protoscope.geometry.engine.paths import decode_path, even_grid, join, split, train_beziers
from protoscope.geometry.store.runstore import RunStore
from protoscope.geometry.tables import reconstructed

from tiny_run import ARRANGEMENT, LENGTH, tiny_run

GRID = 11


@pytest.fixture(scope="module")
def solved():
    """The tiny run, its decoder, and per text the path coordinates and targets."""
    path, loaded = tiny_run()
    store = RunStore.open(path)
    rows, e, m = store.solution_vectors()
    targets = {t.text_id: torch.tensor(t.token_ids[:LENGTH]) for t in store.texts()}
    by_text = {}
    for i, row in rows.iterrows():
        by_text.setdefault(row["text_id"], []).append(join(e[i], m[i]))
    return store, Decoder(loaded, ARRANGEMENT), by_text, targets


def _worst_accuracy(decoder, curve, target) -> float:
    return float(decode_path(decoder, curve, even_grid(GRID), target).accuracy.min())


def test_each_curve_stops_on_its_own(solved):
    _, decoder, by_text, targets = solved
    a0, b0 = by_text["t0"][0], by_text["t0"][1]
    # Pair 0 has one solution at both ends: its straight start already holds. Pair 1 is two
    # different solutions, whose curve does not hold in 10 steps on this model.
    a, b = torch.stack([a0, a0]), torch.stack([a0, b0])
    target = torch.stack([targets["t0"], targets["t0"]])
    curves = train_beziers(decoder, a, b, target, steps=10, samples_per_step=2, lr=0.05,
                           grid=GRID, check_every=5)
    assert curves[0].held and curves[0].steps_used == 0
    assert torch.equal(curves[0].control, a0)
    assert not curves[1].held and curves[1].steps_used == 10
    assert not reconstructed(_worst_accuracy(decoder, curves[1], targets["t0"]))


def test_a_curve_that_holds_stops_at_a_check_and_keeps_that_control(solved):
    _, decoder, by_text, targets = solved
    a, b = by_text["t0"][0], by_text["t0"][2]
    target = targets["t0"]
    straight = _worst_accuracy(decoder, train_beziers(
        decoder, a[None], b[None], target[None], steps=0, grid=GRID)[0], target)
    bar = 0.8  # reachable on the tiny model within the budget; the straight path misses it
    assert straight < bar
    # Beside it trains a curve to another text's solution, which never holds: the first
    # curve's control must not drift on Adam's momentum while the second trains on.
    other = by_text["t2"][0]
    curve, hopeless = train_beziers(decoder, torch.stack([a, a]), torch.stack([b, other]),
                                    torch.stack([target, target]), steps=300,
                                    samples_per_step=4, lr=0.3, grid=GRID, check_every=10,
                                    min_accuracy=bar)
    assert not hopeless.held and hopeless.steps_used == 300
    assert curve.held
    assert 0 < curve.steps_used < 300 and curve.steps_used % 10 == 0
    assert curve.trained_steps == curve.steps_used
    assert _worst_accuracy(decoder, curve, target) >= bar  # the stored curve is the one checked


def test_without_checks_the_whole_budget_is_used(solved):
    _, decoder, by_text, targets = solved
    a, b = by_text["t1"][0], by_text["t1"][1]
    (curve,) = train_beziers(decoder, a[None], b[None], targets["t1"][None], steps=7,
                             samples_per_step=2, lr=0.05, grid=GRID, check_every=0)
    assert curve.steps_used == 7
    with pytest.raises(ValueError, match="check_every"):
        train_beziers(decoder, a[None], b[None], targets["t1"][None], steps=1, check_every=-1)


@pytest.fixture(scope="module")
def analysed(tmp_path_factory):
    """A copy of the tiny run with its connectivity analysis written by run_analyses."""
    path, loaded = tiny_run()
    copy = tmp_path_factory.mktemp("curves") / "run"
    shutil.copytree(path, copy)
    store = RunStore.open(copy)
    options = {"connectivity": {"grid": GRID, "bezier_steps": 20, "samples_per_step": 2,
                                "check_every": 5, "cross_text_pairs": 1, "max_pairs": 2}}
    run_analyses(store, only=["connectivity"], loaded=loaded, quiet=True, options=options)
    return store, loaded


def test_pairs_say_whether_they_held_and_what_they_cost(analysed):
    store, _ = analysed
    pairs = store.analysis("connectivity_pairs")
    assert pairs["held"].dtype == bool
    assert (pairs["held"] == reconstructed(pairs["min_accuracy"])).all()
    bezier = pairs[pairs["path"] == "bezier"]
    assert len(bezier) == 3 * 2  # 3 texts x max_pairs 2
    assert set(bezier.loc[bezier["held"], "status"]) <= {"held"}
    assert set(bezier.loc[~bezier["held"], "status"]) <= {"not within budget 20"}
    assert (bezier.loc[~bezier["held"], "steps_used"] == 20).all()
    assert (bezier["steps_used"] <= 20).all()
    assert pairs[["bezier_steps", "check_every", "max_pairs", "cross_text_pairs"]].iloc[0].tolist() \
        == [20, 5, "2", 1]  # max_pairs as the command line spells it: a count or "all"
    linear = pairs[pairs["path"] == "linear"]
    assert set(linear["status"]) <= {"held", "breaks"} and (linear["steps_used"] == 0).all()


def test_stored_curves_reproduce_their_rows(analysed):
    store, loaded = analysed
    pairs = store.analysis("connectivity_pairs")
    bezier = pairs[pairs["path"] == "bezier"].set_index("pair_id")
    curves = connectivity.load_curves(store)
    assert sorted(curves) == sorted(bezier.index)
    rows, e, m = store.solution_vectors()
    index = {int(s): i for i, s in enumerate(rows["solution_id"])}
    targets = {t.text_id: torch.tensor(t.token_ids[:LENGTH]) for t in store.texts()}
    decoder = Decoder(loaded, ARRANGEMENT)
    for pair_id, curve in curves.items():
        row = bezier.loc[pair_id]
        ia, ib = index[int(row["solution_a"])], index[int(row["solution_b"])]
        ends = curve.points(torch.tensor([0.0, 1.0]))
        assert torch.equal(ends[0], join(e[ia], m[ia]))  # phi(0) = A
        assert torch.equal(ends[1], join(e[ib], m[ib]))  # phi(1) = B
        out = decode_path(decoder, curve, even_grid(GRID), targets[row["text_a"]])
        assert float(out.accuracy.min()) == pytest.approx(row["min_accuracy"])
    e_a, m_a = split(next(iter(curves.values())).start[None])
    assert e_a.shape[-1] == m_a.shape[-1] == e.shape[-1]


def test_a_chain_is_straight_on_each_half_and_trains_like_a_curve(solved):
    from protoscope.geometry.engine.paths import ChainPath

    a, bend, b = torch.zeros(4), torch.tensor([1.0, 2.0, 0.0, 0.0]), torch.ones(4)
    chain = ChainPath(a, bend, b)
    points = chain.points(torch.tensor([0.0, 0.25, 0.5, 0.75, 1.0]))
    assert torch.allclose(points, torch.stack([a, (a + bend) / 2, bend, (bend + b) / 2, b]))
    straight = ChainPath(a, (a + b) / 2, b)
    t = torch.rand(7)
    assert torch.allclose(straight.points(t), t[:, None] * b)  # midpoint bend: the segment
    _, decoder, by_text, targets = solved
    ends = torch.stack([by_text["t1"][0], by_text["t1"][0]]), \
        torch.stack([by_text["t1"][0], by_text["t1"][2]])
    same, trained = train_beziers(decoder, *ends, torch.stack([targets["t1"]] * 2), steps=5,
                                  samples_per_step=2, grid=GRID, check_every=5, kind="chain")
    assert isinstance(trained, ChainPath) and same.held and same.steps_used == 0
    assert trained.steps_used == 5
    with pytest.raises(ValueError, match="curve must be one of bezier, chain"):
        train_beziers(decoder, *ends, torch.stack([targets["t1"]] * 2), steps=1, kind="spline")


def test_both_curve_families_are_tabled_and_stored(analysed, tmp_path):
    store, loaded = analysed
    run = tmp_path / "run"
    shutil.copytree(store.path, run)
    copy = RunStore.open(run)
    options = {"connectivity": {"grid": GRID, "bezier_steps": 4, "samples_per_step": 1,
                                "check_every": 2, "cross_text_pairs": 0, "max_pairs": 1,
                                "curves": ("bezier", "chain")}}
    run_analyses(copy, only=["connectivity"], loaded=loaded, quiet=True, options=options)
    pairs = copy.analysis("connectivity_pairs")
    assert sorted(set(pairs["path"])) == ["bezier", "chain", "linear"]
    chains = connectivity.load_curves(copy, "chain")
    beziers = connectivity.load_curves(copy)
    assert sorted(chains) == sorted(beziers) == sorted(pairs.loc[pairs["path"] == "chain",
                                                                 "pair_id"])


class _RecordingE:
    """The decoder, recording every batch of e it is asked to decode with a gradient."""

    def __init__(self, decoder):
        self.decoder, self.loaded, self.e = decoder, decoder.loaded, []

    def __call__(self, e, m, targets, **options):
        if options.get("grad"):
            self.e.append(e.detach().clone())
        return self.decoder(e, m, targets, **options)


def test_a_midpoint_start_is_a_fit_from_the_midpoint(solved):
    """The midpoint phase trains one point a step, at t = 0.5, with Adam on the control: the
    point there moves exactly as Adam at lr / 2 fitting the vector from (a + b) / 2 would."""
    _, decoder, by_text, targets = solved
    a, b = by_text["t1"][0], by_text["t1"][1]
    target, lr, steps = targets["t1"], 0.1, 4
    recording = _RecordingE(decoder)
    (curve,) = train_beziers(recording, a[None], b[None], target[None], steps=steps,
                             samples_per_step=3, lr=lr, grid=GRID, check_every=0,
                             midpoint_steps=steps)
    assert curve.midpoint_steps == steps and curve.evaluations == steps  # one point a step
    assert all(len(batch) == 1 for batch in recording.e)
    # The same fit written directly: x from the midpoint, Adam at half the control's rate.
    x = ((a + b) / 2).clone().requires_grad_(True)
    adam = torch.optim.Adam([x], lr=lr / 2, eps=1e-8 / 2)  # eps scales with the gradient
    for _ in range(steps):
        e, m = split(x[None], "e+m")
        loss = decoder(e, m, target[None], grad=True).total_loss.sum()
        adam.zero_grad()
        loss.backward()
        adam.step()
    point = curve.points(torch.tensor([0.5]))[0]
    assert torch.allclose(point, x.detach(), atol=1e-5)
    assert torch.allclose(curve.control, 2 * x.detach() - (a + b) / 2, atol=1e-4)


def test_the_midpoint_phase_ends_when_the_midpoint_holds(solved):
    _, decoder, by_text, targets = solved
    a, b = by_text["t0"][0], by_text["t0"][2]
    target, bar = targets["t0"], 0.8
    (curve,) = train_beziers(decoder, a[None], b[None], target[None], steps=60,
                             samples_per_step=2, lr=0.3, grid=GRID, check_every=0,
                             midpoint_steps=50, min_accuracy=bar)
    # It left the phase early, and every step after it decoded the S sampled points.
    assert 0 < curve.midpoint_steps < 50
    assert curve.evaluations == curve.midpoint_steps + 2 * (60 - curve.midpoint_steps)


def test_worst_t_sampling_draws_one_t_beside_the_worst_point(solved):
    _, decoder, by_text, targets = solved
    a, b = by_text["t0"][0], by_text["t0"][1]
    recording = _RecordingE(decoder)
    # seed 1: its first uniform draw is 0.76, so only the worst-t rule puts a point near 0.5
    train_beziers(recording, a[None], b[None], targets["t0"][None], steps=6,
                  samples_per_step=3, lr=0.05, seed=1, grid=GRID, check_every=2,
                  t_sampling="worst")
    d = recording.e[0].shape[1]  # the path moves [e; m]; the decoder sees e, its first half
    ea, eb = a[:d], b[:d]
    first = ((recording.e[0] - ea) @ (eb - ea) / (eb - ea).dot(eb - ea)).tolist()
    # The first step's curve is the straight segment, so a point's t is its position on it;
    # before any check the worst point is taken to be 0.5.
    assert abs(first[0] - 0.5) <= 0.5 / (GRID - 1) + 1e-4
    with pytest.raises(ValueError, match="t_sampling"):
        train_beziers(decoder, a[None], b[None], targets["t0"][None], steps=1,
                      t_sampling="middle")


def test_the_coarse_check_grid_is_a_subset_and_a_held_curve_holds_on_the_whole_grid(solved):
    _, decoder, by_text, targets = solved
    a, b = by_text["t0"][0], by_text["t0"][2]
    target, bar = targets["t0"], 0.8
    (curve,) = train_beziers(decoder, a[None], b[None], target[None], steps=300,
                             samples_per_step=4, lr=0.3, grid=GRID, check_every=10,
                             check_grid=6, min_accuracy=bar)
    assert curve.held
    assert _worst_accuracy(decoder, curve, target) >= bar
    with pytest.raises(ValueError, match="subset"):
        train_beziers(decoder, a[None], b[None], target[None], steps=1, grid=GRID, check_grid=5)


def test_the_curve_bench_smoke_mode_runs_every_candidate_path(capsys):
    from protoscope.bench import curves

    curves.main(["--smoke"])
    out = capsys.readouterr().out
    for label in ("study default: lr 0.02, S 4", "lr 0.1, S 4, midpoint start",
                  "lr 0.1, S 4, worst t"):
        assert label in out
