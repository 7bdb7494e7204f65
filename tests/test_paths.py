"""Paths through proto-token space: exact endpoints, linear as a special Bezier, lengths, and
a trained curve that is never worse than the straight segment it starts from."""

import pytest
import torch

from protoscope.geometry.engine.decoder import Decoder
from protoscope.geometry.engine.paths import (BezierPath, LinearPath, bernstein, decode_path, even_grid,
                                       join, split, train_bezier)
from protoscope.geometry.store.runstore import RunStore

from tiny_run import ARRANGEMENT, tiny_run




def _points(d=7, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(d, generator=g) for _ in range(3)]


def test_endpoints_are_exact():
    a, c, b = _points()
    t = torch.tensor([0.0, 1.0])
    for path in (LinearPath(a, b), BezierPath(a, c, b)):
        pts = path.points(t)
        assert torch.equal(pts[0], a) and torch.equal(pts[1], b)


def test_linear_is_bezier_with_midpoint_control():
    a, _, b = _points(seed=1)
    t = even_grid(61)
    straight = BezierPath.straight(a, b)
    assert torch.allclose(straight.control, (a + b) / 2)
    assert torch.allclose(LinearPath(a, b).points(t), straight.points(t), atol=1e-6)
    assert torch.allclose(LinearPath(a, b).points(t), a + t[:, None] * (b - a), atol=1e-6)


def test_weights_blend_to_one():
    w = bernstein(torch.rand(50), 2)
    assert w.shape == (50, 3)
    assert torch.allclose(w.sum(1), torch.ones(50))
    assert (w >= 0).all()


def test_lengths():
    a, c, b = _points(seed=2)
    assert LinearPath(a, b).length() == pytest.approx(float((b - a).norm()), rel=1e-5)
    curved = BezierPath(a, c + 5, b)
    assert curved.length() > curved.straight_length() * 1.01
    assert curved.length(grid=201) >= curved.length(grid=11)  # finer grids see more of a curve


def test_join_split_round_trip():
    e, m, _ = _points(seed=3)
    for moved, fixed in (("e+m", None), ("e", m), ("m", e)):
        back = split(join(e, m, moved)[None], moved, fixed)
        assert torch.equal(back[0][0], e) and torch.equal(back[1][0], m)
    with pytest.raises(ValueError, match="moved must be one of"):
        join(e, m, "both")
    with pytest.raises(ValueError, match="fixed vector"):
        split(e[None], "e")


def test_path_copies_its_points():
    a, c, b = _points(seed=4)
    path = BezierPath(a, c, b)
    a += 1.0
    assert not torch.equal(path.start, a)


@pytest.fixture(scope="module")
def two_solutions():
    path, loaded = tiny_run()
    store = RunStore.open(path)
    rows = store.solutions()
    ids = rows[rows["text_id"] == "t0"]["solution_id"].tolist()[:2]
    _, e, m = store.solution_vectors(ids)
    targets = torch.tensor(store.texts()[0].token_ids[:6])
    return Decoder(loaded, ARRANGEMENT), e, m, targets


def _grid_loss(decoder, path, targets, moved="e+m", fixed=None):
    return float(decode_path(decoder, path, even_grid(21), targets, moved, fixed).total_loss.mean())


def test_decode_path_reproduces_the_endpoints(two_solutions):
    decoder, e, m, targets = two_solutions
    out = decode_path(decoder, LinearPath(join(e[0], m[0]), join(e[1], m[1])),
                      torch.tensor([0.0, 1.0]), targets)
    direct = decoder(e, m, targets.expand(2, -1))
    assert torch.equal(out.predicted, direct.predicted)
    assert torch.allclose(out.loss, direct.loss, atol=1e-5)


def test_trained_curve_beats_its_straight_start(two_solutions):
    decoder, e, m, targets = two_solutions
    a, b = join(e[0], m[0]), join(e[1], m[1])
    before = [x.clone() for x in (a, b, targets)]
    curve = train_bezier(decoder, a, b, targets, steps=40, samples_per_step=4, lr=0.05, seed=0,
                         grid=21)
    assert all(torch.equal(x, y) for x, y in zip((a, b, targets), before))
    assert not a.requires_grad
    assert torch.equal(curve.start, a) and torch.equal(curve.end, b)
    straight = _grid_loss(decoder, LinearPath(a, b), targets)
    assert curve.trained_steps == 40
    assert _grid_loss(decoder, curve, targets) < 0.9 * straight


class _Recording:
    """The decoder, recording every m it is given (a path must not move what it holds fixed)."""

    def __init__(self, decoder):
        self.decoder, self.loaded, self.m = decoder, decoder.loaded, []

    def __call__(self, e, m, targets, **options):
        self.m.append(m.detach().clone())
        return self.decoder(e, m, targets, **options)


def test_moving_e_only_keeps_m_fixed(two_solutions):
    decoder, e, m, targets = two_solutions
    recording = _Recording(decoder)
    curve = train_bezier(recording, e[0], e[1], targets, steps=20, samples_per_step=4, lr=0.05,
                         moved="e", fixed=m[0], grid=21)
    assert curve.controls.shape == (3, e.shape[1])
    assert curve.trained_steps == 20  # it trained (a dropped curve would be straight)
    _grid_loss(recording, curve, targets, "e", m[0])
    # every point decoded in training and on the grid has exactly the fixed m, bit for bit
    seen = torch.cat(recording.m)
    assert len(recording.m) >= 20 and len(seen) >= 20 * 4 + 21
    assert torch.equal(seen, m[0].expand_as(seen))
    straight = _grid_loss(decoder, LinearPath(e[0], e[1]), targets, "e", m[0])
    assert _grid_loss(decoder, curve, targets, "e", m[0]) < 0.9 * straight


def test_a_worse_curve_falls_back_to_the_straight_one(two_solutions):
    decoder, e, m, targets = two_solutions
    a, b = join(e[0], m[0]), join(e[1], m[1])
    # A wild learning rate throws the control far away; the straight start must come back.
    curve = train_bezier(decoder, a, b, targets, steps=3, samples_per_step=2, lr=50.0, grid=21)
    assert curve.trained_steps == 0
    assert torch.allclose(curve.control, (a + b) / 2)
