"""Each of the decoder's views agrees with the model's own forward pass on the tiny models:
one-step decoding (also with the flattened head), the prompt view (greedy continuation with a
KV cache) and the attention view."""
import pytest
import torch
import torch.nn.functional as F

from protoscope.geometry.engine.decoder import Decoder
from protoscope.geometry.models.loading import tiny_model

FAMILIES = ["tiny_llama", "tiny_neox", "fit_llama"]


def _naive_greedy(loaded, prompt, n, banned):
    """Greedy decoding without a cache: the whole sequence through the model at every step."""
    x, out = prompt, []
    with torch.no_grad():
        for _ in range(n):
            logits = loaded.model(inputs_embeds=x).logits[:, -1].float()
            logits[:, banned] = float("-inf")
            token = logits.argmax(-1)
            out.append(token)
            x = torch.cat([x, loaded.embed(token[:, None])], 1)
    return torch.stack(out, 1)


@pytest.mark.parametrize("flat_head", [False, True])
@pytest.mark.parametrize("family", FAMILIES)
def test_one_step_view_is_the_models_argmax_and_cross_entropy(family, flat_head, request,
                                                              proto_batch):
    loaded = request.getfixturevalue(family)
    e, m, t = proto_batch(loaded, n=6)
    decoder = Decoder(loaded, "bos e m*", flat_head=flat_head)
    out = decoder(e, m, t)
    x, first = decoder.inputs(e, m, t)
    with torch.no_grad():
        logits = loaded.model(inputs_embeds=x).logits[:, first:first + t.shape[1]].float()
    assert torch.equal(out.predicted, logits.argmax(-1))
    ref = F.cross_entropy(logits.transpose(1, 2), t, reduction="none")
    torch.testing.assert_close(out.loss, ref, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("spec", ["bos e m*", "e m*"])
@pytest.mark.parametrize("family", FAMILIES)
def test_prompt_view_is_greedy_decoding_without_a_cache(family, spec, request, proto_batch):
    loaded = request.getfixturevalue(family)
    e, m, _ = proto_batch(loaded, b=4)
    decoder = Decoder(loaded, spec)
    prompt = decoder.prompt(e, m)
    assert prompt.shape == (4, 3 if spec.startswith("bos") else 2, loaded.info.d_model)
    if spec.startswith("bos"):
        bos = loaded.embed(torch.tensor([loaded.info.bos_token_id]))[0]
        assert torch.equal(prompt[:, 0], bos.expand(4, -1))
    assert torch.equal(prompt[:, -2], e) and torch.equal(prompt[:, -1], m)
    n = 9
    generated = decoder.greedy(prompt, n)
    assert generated.shape == (4, n)
    eos = loaded.model.generation_config.eos_token_id
    assert torch.equal(generated, _naive_greedy(loaded, prompt, n, [eos]))
    # the same continuation as the model's own generate (exactly n tokens: EOS not chosen)
    with torch.no_grad():
        reference = loaded.model.generate(
            inputs_embeds=prompt, attention_mask=torch.ones(prompt.shape[:2], dtype=torch.long),
            max_new_tokens=n, min_new_tokens=n, do_sample=False,
            pad_token_id=loaded.tokenizer.pad_token_id)[:, -n:]
    assert torch.equal(generated, reference)


def test_prompt_view_never_chooses_a_banned_token(tiny_llama, proto_batch):
    e, m, _ = proto_batch(tiny_llama, b=4)
    decoder = Decoder(tiny_llama, "bos e m*")
    prompt = decoder.prompt(e, m)
    free = decoder.greedy(prompt, 3, banned=())
    banned = sorted(set(free[:, 0].tolist()))
    constrained = decoder.greedy(prompt, 3, banned=banned)
    assert not torch.isin(constrained, torch.tensor(banned)).any()
    assert torch.equal(constrained, _naive_greedy(tiny_llama, prompt, 3, banned))


def test_prompt_view_of_one_mem_vector(tiny_neox, proto_batch):
    """The [mem] baseline decodes autoregressively from its one vector, no BOS."""
    e, _, _ = proto_batch(tiny_neox, b=2)
    decoder = Decoder(tiny_neox, "mem")
    prompt = decoder.prompt(e)
    assert prompt.shape == (2, 1, tiny_neox.info.d_model)
    eos = tiny_neox.model.generation_config.eos_token_id
    assert torch.equal(decoder.greedy(prompt, 5), _naive_greedy(tiny_neox, prompt, 5, [eos]))


@pytest.mark.parametrize("spec", ["bos e m*", "e m*+1", "mem"])
@pytest.mark.parametrize("family", ["llama", "gpt_neox"])
def test_attention_view_is_the_models_eager_attention(family, spec, proto_batch):
    loaded = tiny_model(family, seed=0)  # sdpa by default: it returns no weights
    reference = tiny_model(family, seed=0, attn_implementation="eager")
    e, m, t = proto_batch(loaded, n=6)
    decoder = Decoder(loaded, spec)
    attended = decoder.attention(e, m, t)
    assert loaded.model.config._attn_implementation == "sdpa"  # restored afterwards
    x, first = decoder.inputs(e, m, t)
    with torch.no_grad():
        maps = reference.model(inputs_embeds=x, output_attentions=True).attentions
    assert len(attended.weights) == len(maps) == loaded.info.n_layers
    for got, want in zip(attended.weights, maps):
        torch.testing.assert_close(got, want[:, :, first:first + t.shape[1]])
    slots = torch.tensor(decoder.arrangement.layout(t.shape[1])[0])
    assert torch.equal(attended.slots.cpu(), slots)
    mass = attended.mass()
    assert set(mass) == {"bos", "e", "m"}
    assert all(v.shape == (loaded.info.n_layers, 3) for v in mass.values())
    for name, slot in (("bos", 0), ("e", 1), ("m", 2)):
        want = torch.stack([w[:, :, first:first + t.shape[1]][..., slots == slot].sum(-1)
                            .mean((1, 2)) for w in maps])
        torch.testing.assert_close(mass[name], want)
    total = sum(mass.values())
    if spec == "mem":  # the text's own tokens take the rest
        assert (total < 1).all()
    else:  # every key is one of bos, e, m
        torch.testing.assert_close(total, torch.ones_like(total))
