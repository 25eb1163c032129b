"""model.remat: a block's backward recomputes its activations instead of keeping them. The values
and gradients must be those of the plain model, and the remat must really be in the program."""

from __future__ import annotations

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from latent.models import presets
from latent.nn import Transformer
from tests.conftest import tiny_model_fields


def loss_and_grads(cfg, tokens_BxT):
    model = Transformer(cfg, rngs=nnx.Rngs(0))
    graphdef, params = nnx.split(model)

    def loss(p):
        logits_BxTxV = nnx.merge(graphdef, p)(tokens_BxT).logits
        logprobs_BxTxV = jax.nn.log_softmax(logits_BxTxV[:, :-1].astype(jnp.float32))
        return -jnp.mean(jnp.take_along_axis(logprobs_BxTxV, tokens_BxT[:, 1:, None], axis=-1))

    return jax.jit(jax.value_and_grad(loss))(params), jax.make_jaxpr(jax.grad(loss))(params)


@pytest.mark.parametrize("remat", ["full", "dots"])
def test_remat_gives_the_plain_models_loss_and_gradients(remat):
    cfg = presets.gated(presets.llama(**tiny_model_fields(canon=3)), "elementwise")
    tokens_BxT = jax.random.randint(jax.random.PRNGKey(1), (2, 12), 0, cfg.vocab_size)
    (loss, grads), plain_jaxpr = loss_and_grads(cfg, tokens_BxT)
    (remat_loss, remat_grads), remat_jaxpr = loss_and_grads(cfg.replace(remat=remat), tokens_BxT)
    np.testing.assert_allclose(remat_loss, loss, rtol=1e-6)
    for path, g in jax.tree_util.tree_leaves_with_path(grads):
        np.testing.assert_allclose(dict(jax.tree_util.tree_leaves_with_path(remat_grads))[path], g,
                                   rtol=1e-5, atol=1e-7, err_msg=jax.tree_util.keystr(path))
    # the backward recomputes each block in its own remat region; the plain model has none
    remat_regions = lambda jaxpr: len(re.findall(r"\b(?:remat2|checkpoint)\[", str(jaxpr)))  # noqa: E731
    assert remat_regions(remat_jaxpr) == cfg.n_layers and remat_regions(plain_jaxpr) == 0


def test_a_remat_model_decodes_with_a_cache_as_the_plain_one():
    from latent.nn.kv_cache import KVCache

    cfg = presets.llama(**tiny_model_fields(canon=2))
    tokens_BxT = jax.random.randint(jax.random.PRNGKey(2), (2, 6), 0, cfg.vocab_size)
    outputs = []
    for remat in ("none", "full"):
        model = Transformer(cfg.replace(remat=remat), rngs=nnx.Rngs(0))
        cache = KVCache.init(cfg, batch_size=2, max_len=8)
        first = model(tokens_BxT[:, :4], cache=cache)
        outputs.append(model(tokens_BxT[:, 4:], cache=first.cache).logits)
    np.testing.assert_array_equal(outputs[1], outputs[0])
