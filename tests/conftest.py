"""Shared fixtures: tiny random models of three families, random proto-token batches for them,
and the `--device` option."""
import pytest
import torch
from threadpoolctl import threadpool_limits

from protoscope.geometry.models.loading import resolve_device, tiny_model


def pytest_addoption(parser):
    parser.addoption("--device", default="cpu",
                     help="device for model tests: cpu (default), cuda, cuda:N or mps")


@pytest.fixture(scope="session")
def device(request) -> str:
    name = request.config.getoption("--device")
    resolve_device(name)  # fail once, clearly, if the device is not on this machine
    return name


@pytest.fixture(scope="session")
def tiny_llama(device):
    """Shared across the session: tests must not modify it."""
    return tiny_model("llama", seed=0, device=device)


@pytest.fixture(scope="session")
def tiny_neox(device):
    """Shared across the session: tests must not modify it."""
    return tiny_model("gpt_neox", seed=0, device=device)


@pytest.fixture(scope="session")
def tiny_gemma(device):
    """Gemma 3 family: its embedding module scales rows by sqrt(d_model). Do not modify."""
    return tiny_model("gemma3", seed=0, device=device)


@pytest.fixture(scope="session")
def fit_llama(device):
    """A tiny llama whose outputs respond to its inputs strongly enough (initializer_range 0.3)
    for proto-token fitting to converge in tens of steps; with the default 0.02 the random
    model's logits barely move and no short target is ever reconstructed."""
    return tiny_model("llama", seed=0, device=device, initializer_range=0.3)


def _proto_batch(loaded, b=3, n=7, seed=0):
    """b random (e, m) pairs at the scale of the model's token embeddings and b random
    n-token targets: (e [b, d], m [b, d], target ids [b, n]), seeded."""
    g = torch.Generator().manual_seed(seed)
    d, v = loaded.info.d_model, loaded.info.vocab_size
    scale = loaded.info.embedding_std
    return (torch.randn(b, d, generator=g) * scale, torch.randn(b, d, generator=g) * scale,
            torch.randint(0, v, (b, n), generator=g))


@pytest.fixture(scope="session")
def proto_batch():
    """`proto_batch(loaded, b=3, n=7, seed=0)`: a seeded random batch for a decoder test."""
    return _proto_batch


@pytest.fixture(scope="session", autouse=True)
def one_thread():
    """Tests run torch on one thread: tiny models gain nothing from a second one, and on a
    shared 2-core machine two threads made one tiny step ~20x slower. Session-wide, so
    module-scoped fixtures that fit small runs are covered too."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    with threadpool_limits(1):
        yield
    torch.set_num_threads(before)


@pytest.fixture
def config(tmp_path):
    """A run config of three short texts in a .txt file on the "tiny" model, 2 seeds at 3 tokens."""
    from protoscope.geometry.engine.recipes import resolve_recipe
    from protoscope.geometry.runs.fit import RunConfig

    path = tmp_path / "texts.txt"
    path.write_text("the cat sat on the mat\n\nwe went to the city at night\n\nthis is a good one for you\n")
    return RunConfig(model="tiny", texts=str(path), seeds=2, lengths=(3,),
                     recipe=resolve_recipe("default", max_steps=60))
