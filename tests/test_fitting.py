"""The batched fitting engine: optimiser, batching, early exit, sharing, restarts."""
import pytest
import torch

from protoscope.geometry.engine.decoder import Decoder
from protoscope.geometry.engine.fitting import Fitter, Problem, _RowAdam, make_groups, seeded_vector
from protoscope.geometry.engine.recipes import resolve_recipe


def _problems(loaded, texts=3, seeds=2, n=4, group=None):
    v = loaded.info.vocab_size
    out = []
    for i in range(texts):
        targets = tuple(torch.randint(4, v, (n,), generator=torch.Generator().manual_seed(100 + i)).tolist())
        out += [Problem(f"t{i}", s, targets, group=group) for s in range(seeds)]
    return out


def test_row_adam_matches_torch_optimizers():
    for name, torch_opt in (("adam", torch.optim.Adam), ("adamw", torch.optim.AdamW)):
        recipe = resolve_recipe("default", optimizer=name, lr=0.05, weight_decay=0.1)
        ours = torch.randn(2, 5, generator=torch.Generator().manual_seed(0))
        theirs = ours[:1].clone().requires_grad_(True)
        opt = torch_opt([theirs], lr=0.05, betas=(0.9, 0.9), weight_decay=0.1, eps=1e-8)
        adam = _RowAdam(2, 5, recipe, "cpu")
        active = torch.tensor([True, False])
        frozen = ours[1].clone()
        for step in range(5):
            grad = torch.randn(2, 5, generator=torch.Generator().manual_seed(step))
            adam.step(ours, grad, active)
            theirs.grad = grad[:1].clone()
            opt.step()
        torch.testing.assert_close(ours[:1], theirs.detach(), atol=1e-6, rtol=1e-5)
        assert torch.equal(ours[1], frozen), "an inactive row must not move"


def test_seeded_vectors_are_reproducible_and_distinct():
    a, b = seeded_vector("x|0|0|e", 8, 1.0), seeded_vector("x|0|0|e", 8, 1.0)
    assert torch.equal(a, b)
    assert not torch.equal(a, seeded_vector("x|1|0|e", 8, 1.0))


def test_batched_equals_one_at_a_time(fit_llama):
    recipe = resolve_recipe("default", lr=0.05, max_steps=12, patience=0)
    decoder = Decoder(fit_llama, "bos e m*")
    problems = _problems(fit_llama)
    batched = Fitter(decoder, recipe, batch_size=16).fit(problems)
    single = Fitter(decoder, recipe, batch_size=1).fit(problems)
    key = lambda g: g.key  # noqa: E731
    for a, b in zip(sorted(batched, key=key), sorted(single, key=key)):
        torch.testing.assert_close(a.e, b.e, atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(a.m, b.m, atol=1e-4, rtol=1e-4)
        assert a.solutions[0].steps == b.solutions[0].steps


def test_converged_problems_leave_the_batch(fit_llama):
    recipe = resolve_recipe("default", lr=0.05, max_steps=300, patience=0)
    sizes = []
    groups = Fitter(Decoder(fit_llama, "bos e m*"), recipe, batch_size=16,
                    on_step=lambda acc: sizes.append(len(acc))).fit(_problems(fit_llama))
    solutions = [s for g in groups for s in g.solutions]
    converged = [s for s in solutions if s.converged]
    assert len(converged) >= 4
    assert all(s.accuracy == 1.0 and s.steps < 300 for s in converged)
    assert sizes[0] == 6 and sizes[-1] < 6 and sizes == sorted(sizes, reverse=True)
    # the kept vectors reproduce the reported accuracy
    decoder = Decoder(fit_llama, "bos e m*")
    for g in groups:
        for s in g.solutions:
            out = decoder(g.e[s.e_row], g.m[s.m_row], torch.tensor([s.problem.targets]))
            assert float(out.accuracy[0]) == s.accuracy


def test_shared_m_is_one_vector_per_group(fit_llama):
    recipe = resolve_recipe("default", lr=0.05, max_steps=40, patience=0)
    problems = _problems(fit_llama, texts=2, seeds=2, group=0)
    assert len(make_groups(problems, "m")) == 1
    (group,) = Fitter(Decoder(fit_llama, "bos e m*"), recipe, share="m").fit(problems)
    assert group.m.shape[0] == 1 and group.e.shape[0] == 4
    assert {s.m_row for s in group.solutions} == {0}
    assert len({s.e_row for s in group.solutions}) == 4


def test_stalled_problems_restart_from_new_seeds(fit_llama):
    recipe = resolve_recipe("default", lr=1e-6, max_steps=12, patience=3, max_restarts=2)
    groups = Fitter(Decoder(fit_llama, "bos e m*"), recipe).fit(_problems(fit_llama, texts=1, seeds=1))
    (s,) = groups[0].solutions
    assert s.restarts == 2 and s.status == "budget" and s.steps == 12


def test_arrangements_without_m_fit_too(fit_llama):
    """M gets no gradient without an m slot; e alone must still reach the text. N copies of
    one vector (`e*`) can only say one token at every position on this tiny model, so its
    text repeats one token; `mem` takes a text of 4 random tokens."""
    recipe = resolve_recipe("default", lr=0.05, max_steps=300, patience=0)
    for spec, targets in (("e*", (7, 7, 7, 7)), ("mem", _problems(fit_llama, 1, 1)[0].targets)):
        decoder = Decoder(fit_llama, spec)
        (group,) = Fitter(decoder, recipe).fit([Problem("t0", 0, targets)])
        (s,) = group.solutions
        assert s.converged and s.accuracy == 1.0 and s.steps < 300, (spec, s)
        out = decoder(group.e[s.e_row], group.m[s.m_row], torch.tensor([targets]))
        assert float(out.accuracy[0]) == 1.0, spec


def test_cpu_batches_hold_about_512_target_tokens(fit_llama):
    """The batch size the engine picks on CPU: the measured best tokens in flight
    (bench/batch_size.py), never fewer than one problem, never more than 256."""
    fitter = Fitter(Decoder(fit_llama, "bos e m*"), resolve_recipe("default"))
    if fitter.device.type != "cpu":
        pytest.skip(f"the CPU batch rule; this run's device is {fitter.device}")
    assert [fitter.auto_batch_size(n) for n in (1, 16, 32, 64, 600)] == [256, 32, 16, 8, 1]


class CappedDecoder:
    """The real decoder, except that rows whose targets are `stuck` never get their first
    token right: a member that cannot become exact, whatever the optimiser does."""

    def __init__(self, decoder: Decoder, stuck: tuple[int, ...]):
        self.inner, self.loaded, self.stuck = decoder, decoder.loaded, stuck

    def __call__(self, e, m, targets, grad=False):
        out = self.inner(e, m, targets, grad=grad)
        rows = (targets == torch.tensor(self.stuck, device=targets.device)).all(1)
        out.correct = out.correct.clone()
        out.correct[rows, 0] = False
        return out


def _hostage_fit(loaded, policy):
    """One share-m group of three texts; t1 is stuck for good."""
    recipe = resolve_recipe("default", lr=0.05, max_steps=500, patience=60, max_restarts=50,
                            share_policy=policy, group_patience=150)
    problems = _problems(loaded, texts=3, seeds=1, group=0)
    stuck = problems[1].targets
    (group,) = Fitter(CappedDecoder(Decoder(loaded, "bos e m*"), stuck), recipe, share="m").fit(problems)
    return group, {s.problem.text_id: s for s in group.solutions}


def test_a_stuck_member_does_not_hold_its_share_group_hostage(fit_llama):
    group, by_text = _hostage_fit(fit_llama, "release")
    assert by_text["t1"].status == "stalled" and not by_text["t1"].converged
    assert by_text["t1"].restarts >= 1, "the stuck member restarts its own e"
    for text in ("t0", "t2"):
        s = by_text[text]
        assert s.status == "converged" and s.converged and s.accuracy == 1.0
        assert s.restarts == 0, "an exact member is never restarted"
    assert max(s.steps for s in group.solutions) < 500, "released before the budget"
    # the kept shared m and each exact member's e reconstruct that member's text, really
    decoder = Decoder(fit_llama, "bos e m*")
    for text in ("t0", "t2"):
        s = by_text[text]
        out = decoder(group.e[s.e_row], group.m[s.m_row], torch.tensor([s.problem.targets]))
        assert float(out.accuracy[0]) == 1.0


def test_wait_policy_runs_a_stuck_group_to_its_budget(fit_llama):
    group, by_text = _hostage_fit(fit_llama, "wait")
    assert {s.status for s in group.solutions} == {"budget"}
    assert all(s.steps == 500 and not s.converged for s in group.solutions)


class CountingDecoder:
    """The real decoder, recording the target length of every call (one call = one step)."""

    def __init__(self, decoder: Decoder):
        self.inner, self.loaded, self.lengths = decoder, decoder.loaded, []

    def __call__(self, e, m, targets, grad=False):
        self.lengths.append(targets.shape[1])
        return self.inner(e, m, targets, grad=grad)


def test_the_length_curriculum_counts_every_step(fit_llama):
    """N/4, N/2, then N tokens; one share group steps together, so each member's steps must
    equal the decoder calls of all three stages."""
    recipe = resolve_recipe("default", lr=0.05, max_steps=100, patience=0, curriculum=True)
    decoder = CountingDecoder(Decoder(fit_llama, "bos e m*"))
    problems = _problems(fit_llama, texts=1, seeds=2, n=8, group=0)
    (group,) = Fitter(decoder, recipe, share="m").fit(problems)
    stages = [n for i, n in enumerate(decoder.lengths) if i == 0 or n != decoder.lengths[i - 1]]
    assert stages == [2, 4, 8]
    assert decoder.lengths.count(8) < len(decoder.lengths)
    for s in group.solutions:
        assert s.steps == len(decoder.lengths) and s.problem.length == 8
    # the kept vectors are the full-length stage's: they score what the row says on all 8 tokens
    (s, *_) = group.solutions
    out = Decoder(fit_llama, "bos e m*")(group.e[s.e_row], group.m[s.m_row], torch.tensor([s.problem.targets]))
    assert float(out.accuracy[0]) == s.accuracy


def test_a_checkpoint_resumes_in_process_and_keeps_problems_it_did_not_hold(fit_llama, tmp_path):
    from protoscope.geometry.store.checkpoints import FitCheckpoint

    class Kill(Exception):
        pass

    recipe = resolve_recipe("default", lr=0.05, max_steps=60, patience=10, group_patience=20)
    decoder = Decoder(fit_llama, "bos e m*")
    first = _problems(fit_llama, texts=2, seeds=2, n=6, group=0)
    later = [Problem("late", 0, first[0].targets[::-1], group=1)]
    whole = Fitter(decoder, recipe, share="m", batch_size=4).fit(first)
    calls = []

    def kill_at_step_25(groups):
        calls.append(1)
        if len(calls) == 25:
            raise Kill

    checkpoint = lambda: FitCheckpoint(tmp_path, {"test": 1}, every_steps=10)  # noqa: E731
    with pytest.raises(Kill):
        Fitter(decoder, recipe, share="m", batch_size=4, checkpoint=checkpoint(),
               on_groups=kill_at_step_25).fit(first)
    assert list(tmp_path.glob("fit-N6-*.safetensors"))
    resumed = Fitter(decoder, recipe, share="m", batch_size=4, checkpoint=checkpoint()).fit(first + later)
    by_key = {g.key: g for g in resumed}
    assert set(by_key) == {g.key for g in whole} | {(1, 6)}, "the later problem is fitted too"
    for g in whole:
        r = by_key[g.key]
        assert torch.equal(g.e, r.e) and torch.equal(g.m, r.m)
        assert [(s.steps, s.restarts, s.status) for s in g.solutions] == \
               [(s.steps, s.restarts, s.status) for s in r.solutions]
    assert not list(tmp_path.glob("fit-*"))
