"""Numerical parity with Hugging Face transformers (PyTorch, CPU, float32) for every imported family."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import transformers

from latent.models import hf
from latent.nn import SDPA_CORES
from tests.models.hf_reference import (
    decode_with_cache,
    hf_logits,
    make_jitted,
    padded_batch,
    random_hf_model,
    tiny_hf_config,
)

TOL = 1e-4

# (family, transformers config overrides): GQA/MQA/MHA, tied and untied heads, biases, head_dim.
CASES = {
    "gpt2-tied": ("gpt2", {}),
    "gpt2-untied": ("gpt2", {"tie_word_embeddings": False}),
    "llama-gqa": ("llama", {}),
    "llama-mqa-tied-bias": ("llama", {"num_key_value_heads": 1, "tie_word_embeddings": True,
                                      "attention_bias": True, "mlp_bias": True}),
    "qwen2-gqa": ("qwen2", {}),
    "qwen2-mha-tied": ("qwen2", {"num_key_value_heads": 4, "tie_word_embeddings": True}),
    "qwen3-gqa": ("qwen3", {}),
    "qwen3-tied-theta": ("qwen3", {"tie_word_embeddings": True, "rope_parameters": {"rope_type": "default", "rope_theta": 500.0}}),
    "qwen3_next-gated": ("qwen3_next", {}),
    "qwen3_next-tied-fullrope": ("qwen3_next", {"tie_word_embeddings": True,
                                                "rope_parameters": {"rope_type": "default", "rope_theta": 10000.0, "partial_rotary_factor": 0.5}}),
}


# Every case with the einsum core; each other core (model.attention_impl) on one case per family,
# with GQA, MQA and the output gate among them, to keep the added runtime small.
OTHER_CORE_CASES = ("gpt2-tied", "llama-mqa-tied-bias", "qwen2-gqa", "qwen3-gqa", "qwen3_next-gated")
RUNS = [(case, "einsum") for case in sorted(CASES)] + [
    (case, impl) for impl in sorted(set(SDPA_CORES) - {"einsum"}) for case in OTHER_CORE_CASES
]


@pytest.fixture(scope="module", params=RUNS, ids=[f"{case}-{impl}" for case, impl in RUNS])
def pair(request, tmp_path_factory):
    case, attention_impl = request.param
    family, overrides = CASES[case]
    reference = random_hf_model(tiny_hf_config(family, **overrides))
    directory = tmp_path_factory.mktemp(case)
    reference.save_pretrained(directory)
    ours = hf.load(directory, attention_impl=attention_impl)
    assert ours.cfg.attention_impl == attention_impl
    return reference, ours, directory


def _assert_close_at_real(ours, theirs, mask):
    diff = np.abs(np.asarray(ours) - theirs)[mask]
    assert diff.max() <= TOL, f"max |logit diff| {diff.max():.3g} > {TOL}"


def test_full_forward_odd_length(pair):
    reference, ours, _ = pair
    tokens, mask, positions = padded_batch([13, 13], 13)
    theirs = hf_logits(reference, tokens, mask, positions)
    _assert_close_at_real(ours(tokens).logits, theirs, mask)


def test_full_forward_padded_batch(pair):
    reference, ours, _ = pair
    tokens, mask, positions = padded_batch([11, 7, 4], 11, seed=1)
    theirs = hf_logits(reference, tokens, mask, positions)
    logits, _ = make_jitted(ours)(tokens, mask)
    _assert_close_at_real(logits, theirs, mask)


def test_prefill_then_cached_decode(pair):
    reference, ours, _ = pair
    tokens, mask, positions = padded_batch([12, 9, 5], 12, seed=2)
    theirs = hf_logits(reference, tokens, mask, positions)
    _assert_close_at_real(decode_with_cache(ours, tokens, mask, prefill=6), theirs, mask)


def test_round_trip_gives_identical_logits(pair, tmp_path):
    reference, ours, _ = pair
    hf.save(ours, tmp_path)
    reloaded = transformers.AutoModelForCausalLM.from_pretrained(tmp_path, attn_implementation="eager").float().eval()
    assert type(reloaded) is type(reference)
    tokens, mask, positions = padded_batch([10, 6], 10, seed=3)
    np.testing.assert_array_equal(
        hf_logits(reloaded, tokens, mask, positions), hf_logits(reference, tokens, mask, positions)
    )


def test_sharded_checkpoints_both_ways(tmp_path):
    reference = random_hf_model(tiny_hf_config("qwen3"))
    reference.save_pretrained(tmp_path / "theirs", max_shard_size="20KB")
    assert (tmp_path / "theirs" / hf.INDEX_FILE).exists()
    ours = hf.load(tmp_path / "theirs")
    tokens, mask, positions = padded_batch([9], 9)
    _assert_close_at_real(ours(tokens).logits, hf_logits(reference, tokens, mask, positions), mask)

    hf.save(ours, tmp_path / "ours", max_shard_bytes=20_000)
    assert len(list((tmp_path / "ours").glob("*.safetensors"))) > 1
    reloaded = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "ours", attn_implementation="eager").float().eval()
    np.testing.assert_array_equal(
        hf_logits(reloaded, tokens, mask, positions), hf_logits(reference, tokens, mask, positions)
    )
    _assert_close_at_real(hf.load(tmp_path / "ours")(tokens).logits, hf_logits(reference, tokens, mask, positions), mask)


@pytest.mark.parametrize("attention_impl", sorted(SDPA_CORES))
def test_qwen3_next_attention_layer_matches_elementwise_gate(attention_impl):
    """Qwen3NextAttention (the gated full-attention layer) against latent's Attention."""
    import jax.numpy as jnp
    from flax import nnx
    from transformers.models.qwen3_next import modeling_qwen3_next as q3n

    from latent.models import presets
    from latent.nn import make_attention, rotary_cos_sin

    config = tiny_hf_config("qwen3_next", attention_bias=True)
    config._attn_implementation = "eager"
    torch.manual_seed(0)
    theirs = q3n.Qwen3NextAttention(config, layer_idx=0).float().eval()
    with torch.no_grad():
        for param in theirs.parameters():
            param.add_(0.2 * torch.randn_like(param))
    rotary = q3n.Qwen3NextRotaryEmbedding(config)

    cfg = presets.qwen3_next(
        d_model=32, n_heads=4, n_kv_heads=2, head_dim=16, qkv_bias=True, out_bias=True, attention_impl=attention_impl
    )
    assert cfg.attn_gate == "elementwise"
    ours = make_attention(cfg, rngs=nnx.Rngs(0))
    for name in ("q_proj", "k_proj", "v_proj", "o_proj"):
        linear = getattr(theirs, name)
        getattr(ours, name).kernel[...] = jnp.asarray(linear.weight.detach().numpy().T)
        getattr(ours, name).bias[...] = jnp.asarray(linear.bias.detach().numpy())
    ours.q_norm.scale[...] = jnp.asarray(theirs.q_norm.weight.detach().numpy())
    ours.k_norm.scale[...] = jnp.asarray(theirs.k_norm.weight.detach().numpy())

    B, T = 2, 9
    x = torch.randn(B, T, 32)
    position_ids = torch.arange(T)[None].repeat(B, 1)
    cos, sin = rotary(x, position_ids)
    causal = torch.full((T, T), torch.finfo(torch.float32).min).triu(1)[None, None].repeat(B, 1, 1, 1)
    with torch.no_grad():
        expected = theirs(x, position_embeddings=(cos, sin), attention_mask=causal)[0].numpy()

    positions = jnp.asarray(position_ids.numpy())
    y, _ = ours(
        jnp.asarray(x.numpy()),
        rotary=rotary_cos_sin(positions, cfg.rotary_dim, cfg.rope_theta),
        mask_BxTxS=jnp.tril(jnp.ones((T, T), bool))[None].repeat(B, 0),
    )
    assert np.abs(np.asarray(y) - expected).max() <= 1e-5


def test_bfloat16_checkpoint_loads_into_float32_params(tmp_path):
    reference = random_hf_model(tiny_hf_config("qwen2")).to(torch.bfloat16)
    reference.save_pretrained(tmp_path)
    ours = hf.load(tmp_path)
    assert ours.embed[...].dtype == np.float32
    expected = reference.model.embed_tokens.weight.detach().float().numpy()
    np.testing.assert_array_equal(np.asarray(ours.embed[...]), expected)
    bf16 = hf.load(tmp_path, param_dtype="bfloat16", dtype="bfloat16")
    assert bf16.embed[...].dtype == np.dtype("bfloat16")
