"""How g runs: ``channels_last`` (memory format of g's weights and inputs) and ``compile`` (torch.compile of
g's forward, in place) change neither g's maps, losses and gradients nor the checkpoint's ``net.*`` names.

Compiling with the default Inductor backend took 132 s for the tiny g's first forward + backward on the
shared 2-core machine, so the default tests compile with ``backend="aot_eager"`` (TorchDynamo's graph
capture and AOTAutograd's joint forward/backward graph, without Inductor's C++ code generation); the
Inductor run is the ``slow`` test at the end.
"""
import functools

import pytest
import torch

from tests.helpers.tiny_module import tiny_module
from wwbl.networks import GroundingNet

PHRASES = ["a red cube", "a blue ball"]


@pytest.fixture
def aot_eager_compile(monkeypatch):
    """torch.compile with the aot_eager backend; yields the graphs TorchDynamo captured."""
    graphs = []

    def backend(graph_module, example_inputs):
        graphs.append(graph_module)
        return torch._dynamo.lookup_backend("aot_eager")(graph_module, example_inputs)

    monkeypatch.setattr(torch, "compile", functools.partial(torch.compile, backend=backend))
    yield graphs


def _images():
    torch.manual_seed(5)
    return torch.rand(2, 3, 64, 64)


def _losses_and_grads(module):
    module.net.zero_grad()
    terms = module.compute_losses(_images(), PHRASES)
    terms["loss"].backward()
    return terms, {name: p.grad.clone() for name, p in module.net.named_parameters()}


def _assert_same_training_signal(module, reference):
    terms, grads = _losses_and_grads(module)
    ref_terms, ref_grads = _losses_and_grads(reference)
    for key, value in ref_terms.items():
        assert terms[key].item() == pytest.approx(value.item(), rel=1e-5, abs=1e-6), key
    for name, grad in ref_grads.items():
        assert torch.allclose(grads[name], grad, rtol=1e-4, atol=1e-6), name


def test_channels_last_g_gives_the_same_maps_losses_and_gradients():
    reference, module = tiny_module().train(), tiny_module(channels_last=True).train()
    conv = module.net.encoder[0]
    assert conv.weight.is_contiguous(memory_format=torch.channels_last) and not conv.weight.is_contiguous()
    seen = []
    conv.register_forward_pre_hook(lambda _, args: seen.append(args[0].is_contiguous(
        memory_format=torch.channels_last)))
    text = module.clip.encode_text(PHRASES)
    with torch.no_grad():
        maps, ref_maps = module(_images(), text), reference(_images(), text)
    assert seen == [True] and maps.dtype == torch.float32  # the input was converted too
    assert torch.allclose(maps, ref_maps, atol=1e-5)
    _assert_same_training_signal(module, reference)
    assert module.state_dict().keys() == reference.state_dict().keys()


def test_channels_last_validation_maps_match():
    reference, module = tiny_module().eval(), tiny_module(channels_last=True).eval()
    args = (_images(), [["a cat", "the cat"], ["a dog"]], [1, 0])
    assert torch.allclose(module.predict_maps(*args), reference.predict_maps(*args), atol=1e-5)


def test_compile_wraps_g_in_place_and_keeps_its_names_and_results(aot_eager_compile):
    reference, module = tiny_module().train(), tiny_module(compile=True).train()
    assert type(module.net) is GroundingNet and module.net._compiled_call_impl is not None
    assert module.clip.model._compiled_call_impl is None  # the frozen CLIP is left alone
    assert module.state_dict().keys() == reference.state_dict().keys()
    assert module.export_spec() == reference.export_spec()
    _assert_same_training_signal(module, reference)
    assert aot_eager_compile  # g really ran compiled
    reference.load_state_dict(module.state_dict())  # the compiled g's weights load into a plain one


@pytest.mark.slow
def test_compile_with_inductor_gives_the_same_training_signal():
    _assert_same_training_signal(tiny_module(compile=True, channels_last=True).train(), tiny_module().train())
