"""The shared decoder agrees with the model's own forward pass, for every arrangement."""
import pytest
import torch
import torch.nn.functional as F

from protoscope.geometry.engine.arrangements import LAYOUTS, parse_arrangement
from protoscope.geometry.engine.decoder import Decoder
from protoscope.geometry.errors import ProtoscopeError

SPECS = list(LAYOUTS) + ["bos " + s for s in LAYOUTS]


@pytest.mark.parametrize("spec", SPECS)
@pytest.mark.parametrize("family", ["tiny_llama", "tiny_neox", "tiny_gemma"])
def test_decoder_matches_model_forward(spec, family, request, proto_batch):
    loaded = request.getfixturevalue(family)
    e, m, t = proto_batch(loaded)
    decoder = Decoder(loaded, spec)
    out = decoder(e, m, t)
    x, first = decoder.inputs(e, m, t)
    logits = loaded.model(inputs_embeds=x).logits[:, first : first + t.shape[1]].float()
    assert torch.equal(out.predicted, logits.argmax(-1))
    ref = F.cross_entropy(logits.transpose(1, 2), t, reduction="none")
    torch.testing.assert_close(out.loss, ref, atol=1e-5, rtol=1e-5)
    assert out.correct.shape == t.shape and out.accuracy.shape == (3,)


def test_chunked_head_equals_one_chunk_with_gradients(tiny_llama, proto_batch):
    e, m, t = proto_batch(tiny_llama, n=9)
    grads = []
    for max_logits in (1 << 30, tiny_llama.info.vocab_size * 3 * 2):  # one chunk; chunks of 2
        e_ = e.clone().requires_grad_(True)
        out = Decoder(tiny_llama, "bos e m*", max_logits=max_logits)(e_, m, t, grad=True)
        out.total_loss.sum().backward()
        grads.append((out.loss.detach(), e_.grad))
    torch.testing.assert_close(grads[0][0], grads[1][0])
    torch.testing.assert_close(grads[0][1], grads[1][1], atol=1e-6, rtol=1e-4)


def test_layouts_follow_the_paper():
    assert parse_arrangement("e m*").layout(4) == ([1, 2, 2, 2], 0)
    assert parse_arrangement("e m*+1").layout(3) == ([1, 2, 2, 2], 1)
    assert parse_arrangement("bos e m*").layout(3) == ([0, 1, 2, 2], 1)
    assert parse_arrangement("(e m)*").layout(5) == ([1, 2, 1, 2, 1], 0)
    assert parse_arrangement("e*/2 m*/2").layout(5) == ([1, 1, 1, 2, 2], 0)
    assert parse_arrangement("mem").layout(4) == ([1, 3, 4, 5], 0)  # then t_1 .. t_3
    assert parse_arrangement("bos  e   m*").spec == "bos e m*"
    assert parse_arrangement("e*").uses == {"e"}


def test_bad_spec_names_the_allowed_ones():
    with pytest.raises(ProtoscopeError, match="allowed are 'e m\\*'"):
        parse_arrangement("m e*")


def test_one_vector_on_rope_model_predicts_the_same_token_everywhere(tiny_llama, proto_batch):
    """With `e*` every position sees only copies of e; with RoPE and causal attention the
    attention output is the same at every position, so the prediction is too."""
    e, m, t = proto_batch(tiny_llama, b=4, n=6)
    out = Decoder(tiny_llama, "e*")(e, m, t)
    assert torch.equal(out.predicted, out.predicted[:, :1].expand_as(out.predicted))


def test_mem_baseline_reads_the_text_itself(tiny_llama, proto_batch):
    e, m, t = proto_batch(tiny_llama, b=2, n=5)
    decoder = Decoder(tiny_llama, "mem")
    x, first = decoder.inputs(e, m, t)
    torch.testing.assert_close(x[:, 1:], tiny_llama.embed(t[:, :-1]))
    torch.testing.assert_close(x[:, 0], e)


def test_mem_on_gemma_equals_the_models_forward_on_token_ids(tiny_gemma):
    """The teacher-forced tokens and the BOS vector are in the scaled space Gemma feeds its
    first layer (rows x sqrt(d_model)): decoding [mem] with e = the embedding of t_1 is the
    model's own forward on the ids `bos t_1 .. t_n`."""
    g = torch.Generator().manual_seed(1)
    t = torch.randint(4, tiny_gemma.info.vocab_size, (3, 6), generator=g)
    e = tiny_gemma.embed(t[:, 0])
    out = Decoder(tiny_gemma, "bos mem")(e, e, t[:, 1:])
    bos = torch.full((3, 1), tiny_gemma.info.bos_token_id)
    with torch.no_grad():
        logits = tiny_gemma.model(input_ids=torch.cat([bos, t], 1)).logits[:, 1:-1].float()
    ref = F.cross_entropy(logits.transpose(1, 2), t[:, 1:], reduction="none")
    torch.testing.assert_close(out.loss, ref, atol=1e-5, rtol=1e-5)
