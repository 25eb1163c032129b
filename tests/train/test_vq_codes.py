"""VQ codes for CoT steps: pooled step hiddens equal an unpadded forward's, the autoencoder
separates clean clusters into pure codes, and code prefixes are drawn reproducibly."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from latent.data.tasks import Example, cot_text
from latent.methods.token_assorted.vq_codes import (
    autoencoder_report,
    code_prefix_examples,
    cot_step_ids,
    encode_steps,
    step_hiddens,
    train_vq_autoencoder,
)
from latent.models import presets
from latent.nn import Transformer
from tests.conftest import word_tokenizer

CFG = presets.gated(presets.llama(vocab_size=128, d_model=32, n_layers=2, n_heads=4, n_kv_heads=2, d_ff=64,
                                  max_seq_len=128))

EXAMPLES = [
    Example("Is Tom a wumpus?", ("Tom is a rempus.", "Every rempus is a wumpus."), "Tom is a wumpus."),
    Example("Is Ann a zumpus or a rempus, or maybe a wumpus?", ("Ann is a zumpus.",), "Ann is a zumpus."),
    Example("Is Bob a rempus?", ("Bob is a zumpus.", "Every zumpus is a tumpus.", "Every tumpus is a rempus."),
            "Bob is a rempus."),
    Example("Is Eve a tumpus?", (), "Eve is a tumpus."),
]


def _tokenizer():
    return word_tokenizer(EXAMPLES)


def test_step_hiddens_equal_per_step_means_of_an_unpadded_forward():
    tokenizer = _tokenizer()
    model = Transformer(CFG, rngs=nnx.Rngs(0))
    graphdef, params = nnx.split(model)
    # batch 3 over 4 examples: different lengths in one batch, and a part-filled last batch
    hiddens = step_hiddens(graphdef, params, tokenizer, EXAMPLES, batch_size=3, max_len=128)
    # the reference: one example at a time, no padding (jitted only because eager is slow)
    unpadded_hidden = jax.jit(lambda params, ids_1xT: nnx.merge(graphdef, params)(ids_1xT).hidden[0])
    assert [h.shape for h in hiddens] == [(len(e.steps), 32) for e in EXAMPLES]
    for example, h_SxD in zip(EXAMPLES, hiddens):
        ids, spans = cot_step_ids(example, tokenizer)
        assert tokenizer.decode(ids[:-1]) == "".join(cot_text(example))
        hidden_TxD = np.asarray(unpadded_hidden(params, jnp.asarray([ids], jnp.int32)))
        expected_SxD = np.stack([hidden_TxD[lo:hi].mean(axis=0) for lo, hi in spans]) if spans else np.zeros((0, 32))
        np.testing.assert_allclose(h_SxD, expected_SxD, atol=1e-5)
    # the steps are told apart (a wrong span or offset would pool the same positions)
    assert not np.allclose(hiddens[2][0], hiddens[2][1], atol=1e-3)


def test_step_hiddens_names_an_example_that_is_too_long():
    tokenizer = _tokenizer()
    graphdef, params = nnx.split(Transformer(CFG, rngs=nnx.Rngs(0)))
    length = len(cot_step_ids(EXAMPLES[2], tokenizer)[0])
    with pytest.raises(ValueError, match=f"example 2 has {length} tokens"):
        step_hiddens(graphdef, params, tokenizer, EXAMPLES, max_len=length - 1)


def _clusters(n_per=64, k=8, dim=32, seed=0):
    rng = np.random.default_rng(seed)
    centres_KxD = rng.normal(size=(k, dim)) * 3.0
    labels_N = np.repeat(np.arange(k), n_per)
    # large scale and offset: standardisation must make them irrelevant
    h_NxD = 50.0 * (centres_KxD[labels_N] + 0.05 * rng.normal(size=(len(labels_N), dim))) + 7.0
    return h_NxD.astype(np.float32), labels_N


def test_vq_autoencoder_reconstructs_clusters_with_one_pure_code_each():
    h_NxD, labels_N = _clusters()
    model, history = train_vq_autoencoder(h_NxD, num_codes=8, code_dim=8, steps=500, batch_size=128,
                                          lr=3e-3, progress=False)
    assert [row["step"] for row in history] == list(range(50, 501, 50))
    assert set(history[0]) == {"step", "recon_loss", "commitment", "perplexity", "dead_fraction"}
    report = autoencoder_report(model, h_NxD)
    assert report["recon_mse"] < 0.05 * report["mean_predictor_mse"], report
    # encode_steps splits the flat codes back per "example" (here 3 rows, then 0, then the rest)
    per_example = encode_steps(model, [h_NxD[:3], h_NxD[3:3], h_NxD[3:]])
    assert [len(c) for c in per_example] == [3, 0, len(h_NxD) - 3]
    codes_N = np.asarray(per_example[0] + per_example[2])
    code_of_cluster = []
    for k in range(8):
        cluster_codes = np.unique(codes_N[labels_N == k])
        assert len(cluster_codes) == 1, f"cluster {k} maps to codes {cluster_codes}"
        code_of_cluster.append(int(cluster_codes[0]))
    assert len(set(code_of_cluster)) == 8, code_of_cluster
    assert report["perplexity"] == pytest.approx(8.0, rel=1e-3) and report["dead_fraction"] == 0.0


def test_vq_autoencoder_rejects_bad_hidden_states():
    with pytest.raises(ValueError, match=r"shape \(5,\)"):
        train_vq_autoencoder(np.zeros(5), steps=1, progress=False)
    with pytest.raises(ValueError, match="non-finite"):
        train_vq_autoencoder(np.full((4, 3), np.nan), steps=1, progress=False)


def test_code_prefix_examples_replace_a_random_prefix_reproducibly():
    examples = [Example(f"q{i}", tuple(f"s{i}_{j}" for j in range(3)), f"a{i}", meta={"id": i}) for i in range(200)]
    codes = [[(7 * i + j) % 64 for j in range(3)] for i in range(200)]
    mixed = code_prefix_examples(examples, codes, seed=3)
    assert mixed == code_prefix_examples(examples, codes, seed=3)
    assert mixed != code_prefix_examples(examples, codes, seed=4)
    prefix_lengths = set()
    for example, example_codes, out in zip(examples, codes, mixed):
        m = len(out.meta["abstract"])
        prefix_lengths.add(m)
        assert out.steps == example.steps[m:] and len(out.steps) + m == 3
        assert out.meta["abstract"] == [f"<abs_{c}>" for c in example_codes[:m]]
        assert (out.question, out.answer, out.meta["id"]) == (example.question, example.answer, example.meta["id"])
    assert prefix_lengths == {0, 1, 2, 3}
    assert "abstract" not in examples[0].meta  # inputs untouched
    with pytest.raises(ValueError, match=r"codes\[1\] has 2 codes for 3 steps"):
        code_prefix_examples(examples[:2], [codes[0], codes[1][:2]], seed=0)
