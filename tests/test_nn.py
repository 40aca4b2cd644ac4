"""minigrad.nn and the GPT: names and shapes as nanoGPT's, init, tying, the whole-model gradcheck."""

import math

import numpy as np
import pytest

import minigrad as mg
from minigrad import nn

TINY = mg.GPTConfig(vocab_size=7, block_size=5, n_layer=2, n_head=2, n_embd=8)


def nanogpt_shapes(V, T, L, C):
    shapes = {"transformer.wte.weight": (V, C), "transformer.wpe.weight": (T, C)}
    for i in range(L):
        h = f"transformer.h.{i}."
        shapes.update({
            h + "ln_1.weight": (C,), h + "ln_1.bias": (C,),
            h + "attn.c_attn.weight": (3 * C, C), h + "attn.c_attn.bias": (3 * C,),
            h + "attn.c_proj.weight": (C, C), h + "attn.c_proj.bias": (C,),
            h + "ln_2.weight": (C,), h + "ln_2.bias": (C,),
            h + "mlp.c_fc.weight": (4 * C, C), h + "mlp.c_fc.bias": (4 * C,),
            h + "mlp.c_proj.weight": (C, 4 * C), h + "mlp.c_proj.bias": (C,),
        })
    shapes.update({"transformer.ln_f.weight": (C,), "transformer.ln_f.bias": (C,), "lm_head.weight": (V, C)})
    return shapes


def test_state_dict_names_and_shapes_follow_nanogpt():
    model = mg.GPT(mg.GPTConfig(vocab_size=65))
    state = model.state_dict()
    assert {k: v.shape for k, v in state.items()} == nanogpt_shapes(65, 128, 4, 64)
    # tied: one parameter, counted once; the default model's exact size
    assert model.lm_head.weight is model.transformer.wte.weight
    assert "lm_head.weight" not in dict(model.named_parameters())
    assert model.num_parameters() == sum(v.size for k, v in state.items() if k != "lm_head.weight") == 212_416


def test_init_follows_nanogpt():
    model = mg.GPT(mg.GPTConfig(vocab_size=65, n_layer=4, n_embd=256))
    s = model.state_dict()
    assert abs(s["transformer.h.0.mlp.c_fc.weight"].std() - 0.02) < 0.001
    assert abs(s["transformer.h.1.attn.c_proj.weight"].std() - 0.02 / math.sqrt(8)) < 0.0005
    assert abs(s["transformer.h.1.mlp.c_proj.weight"].std() - 0.02 / math.sqrt(8)) < 0.0005
    assert np.all(s["transformer.h.0.attn.c_attn.bias"] == 0) and np.all(s["transformer.ln_f.weight"] == 1)
    assert all(v.dtype == np.float32 for v in s.values())


def test_initial_loss_is_log_vocab():
    model = mg.GPT(mg.GPTConfig(vocab_size=65))
    rng = np.random.default_rng(0)
    idx, targets = rng.integers(0, 65, (8, 128)), rng.integers(0, 65, (8, 128))
    logits, loss = model(idx, targets)
    assert logits.shape == (8, 128, 65)
    assert abs(loss.item() - math.log(65)) < 0.05
    assert model(idx)[1] is None


def test_load_state_dict_round_trip_and_errors():
    a, b = mg.GPT(TINY, seed=1), mg.GPT(TINY, seed=2)
    b.load_state_dict(a.state_dict())
    for (name, pa), (_, pb) in zip(a.named_parameters(), b.named_parameters()):
        np.testing.assert_array_equal(pa.data, pb.data, err_msg=name)
    assert b.lm_head.weight is b.transformer.wte.weight  # loading keeps the tie
    state = a.state_dict()
    state["transformer.h.0.attn.c_attn.weight"] = np.zeros((3, 3), np.float32)
    with pytest.raises(ValueError, match=r"transformer.h.0.attn.c_attn.weight has shape \(3, 3\)"):
        b.load_state_dict(state)
    del state["transformer.ln_f.bias"]
    with pytest.raises(ValueError, match="missing keys.*ln_f.bias"):
        b.load_state_dict(state)


def test_gpt_forward_rejects_bad_input():
    model = mg.GPT(TINY)
    with pytest.raises(ValueError, match="exceeds block_size 5"):
        model(np.zeros((1, 6), dtype=np.int64))
    with pytest.raises(ValueError, match=r"integers of shape \(B, T\)"):
        model(np.zeros((1, 3)))
    with pytest.raises(ValueError, match="divisible"):
        mg.GPTConfig(n_embd=10, n_head=4)


def test_whole_gpt_gradcheck_float64():
    """Every parameter, the tied embedding included, through the loss, on a sample of elements."""
    model = mg.GPT(TINY, seed=3).to(dtype=np.float64)
    rng = np.random.default_rng(0)
    # larger weights than the init, so every path carries a gradient well above finite-difference noise
    for p in model.parameters():
        p.data = p.data + rng.normal(0, 0.3, p.shape)
    idx, targets = rng.integers(0, 7, (2, 5)), rng.integers(0, 7, (2, 5))
    named = list(model.named_parameters())
    for name, p in named:
        p.name = name
    assert mg.gradcheck(lambda *ps: model(idx, targets)[1], [p for _, p in named], max_elements=12)


def test_tied_gradient_is_the_sum_of_both_uses():
    idx, targets = np.array([[1, 2, 3, 1]]), np.array([[2, 3, 1, 4]])
    tied = mg.GPT(TINY, seed=0).to(dtype=np.float64)
    tied(idx, targets)[1].backward()
    untied = mg.GPT(TINY, seed=0).to(dtype=np.float64)
    untied.lm_head.weight = mg.Tensor(untied.transformer.wte.weight.data.copy(), requires_grad=True)
    untied(idx, targets)[1].backward()
    from_embedding, from_head = untied.transformer.wte.weight.grad, untied.lm_head.weight.grad
    assert np.abs(from_embedding).sum() > 0 and np.abs(from_head).sum() > 0
    np.testing.assert_allclose(tied.transformer.wte.weight.grad, from_embedding + from_head, rtol=1e-12, atol=1e-15)


def test_generate_shapes_top_k_and_determinism():
    model = mg.GPT(TINY, seed=0)
    start = np.zeros((2, 1), dtype=np.int64)
    a = model.generate(start, 12, rng=np.random.default_rng(5))
    b = model.generate(start, 12, rng=np.random.default_rng(5))
    assert a.shape == (2, 13) and np.array_equal(a, b) and a.min() >= 0 and a.max() < 7
    greedy = model.generate(start, 6, top_k=1, rng=np.random.default_rng(0))
    again = model.generate(start, 6, top_k=1, rng=np.random.default_rng(99))
    assert np.array_equal(greedy, again)  # top_k=1 is argmax whatever the rng


def test_module_train_eval_and_parameters():
    model = mg.GPT(TINY)
    assert model.eval() is model and not model.transformer.h[1].attn.training
    model.train()
    assert model.transformer.h[1].mlp.c_fc.training
    assert len(model.parameters()) == len(list(model.named_parameters())) == len(model.state_dict()) - 1
    lin = nn.Linear(3, 2, rng=np.random.default_rng(0))
    assert [n for n, _ in lin.named_parameters()] == ["weight", "bias"]


def test_matches_pytorch_twin():
    """llm.c-style: logits, loss and every gradient against the same model in PyTorch (when installed)."""
    torch = pytest.importorskip("torch")
    from torch_gpt import TorchGPT  # tests/torch_gpt.py: it imports torch

    config = mg.GPTConfig(vocab_size=11, block_size=8, n_layer=2, n_head=2, n_embd=16)
    model = mg.GPT(config, seed=4).to(dtype=np.float64)
    twin = TorchGPT.from_minigrad(model)
    rng = np.random.default_rng(1)
    idx, targets = rng.integers(0, 11, (3, 8)), rng.integers(0, 11, (3, 8))
    logits, loss = model(idx, targets)
    loss.backward()
    t_logits, t_loss = twin(torch.from_numpy(idx), torch.from_numpy(targets))
    t_loss.backward()
    np.testing.assert_allclose(logits.data, t_logits.detach().numpy(), rtol=1e-10, atol=1e-12)
    assert abs(loss.item() - t_loss.item()) < 1e-12
    t_params = dict(twin.named_parameters())
    for name, p in model.named_parameters():
        np.testing.assert_allclose(p.grad, t_params[name].grad.numpy(), rtol=1e-8, atol=1e-12, err_msg=name)


def test_a_frozen_parameter_stays_in_the_state_dict_and_is_not_trained():
    """requires_grad_(False) freezes a weight: it gets no gradient and AdamW leaves it alone, but it is
    still a parameter, so a checkpoint holds it and an unfrozen model's state dict loads into this one."""
    model, reference = mg.GPT(TINY, seed=1), mg.GPT(TINY, seed=2)
    frozen = model.transformer.h[0].mlp.c_fc.weight
    frozen.requires_grad_(False)
    assert model.state_dict().keys() == reference.state_dict().keys()
    model.load_state_dict(reference.state_dict())
    np.testing.assert_array_equal(frozen.data, reference.transformer.h[0].mlp.c_fc.weight.data)
    before = frozen.data.copy()
    opt = model.configure_optimizer(lr=1e-2, weight_decay=0.1)
    idx = np.random.default_rng(0).integers(0, TINY.vocab_size, (2, TINY.block_size))
    _, loss = model(idx, idx)
    loss.backward()
    opt.step()
    assert frozen.grad is None
    np.testing.assert_array_equal(frozen.data, before)
    assert model.transformer.h[0].mlp.c_proj.weight.grad is not None
