"""Vector quantiser: nearest codes, straight-through gradients, EMA updates against a numpy
reference, learning cluster means, dead-code restarts, usage metrics, psum under shard_map."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from latent.nn.vq import (
    CodebookStat,
    VectorQuantizer,
    VQStats,
    codebook_usage,
    laplace_smooth,
    quantize,
    update_codebook,
)
from tests.conftest import xla_flags

ROOT = Path(__file__).resolve().parents[2]
K, D = 4, 3  # one codebook shape throughout, so the jitted helpers compile as rarely as possible

# jitted entry points: on a shared CPU one compile is far cheaper than op-by-op dispatch
fast_quantize = jax.jit(quantize, static_argnames="beta")
call = nnx.jit(lambda vq, x, mask=None: vq(x, mask))
ema_update = nnx.jit(lambda vq, x, codes, mask=None: vq.ema_update(x, codes, mask))
restart = nnx.jit(lambda vq, key: vq.restart_dead_codes(key))


def set_stats(vq: VectorQuantizer, count_K, sum_KxD, codebook_KxD):
    vq.ema_count_K[...] = jnp.asarray(count_K, jnp.float32)
    vq.ema_sum_KxD[...] = jnp.asarray(sum_KxD, jnp.float32)
    vq.codebook_KxD[...] = jnp.asarray(codebook_KxD, jnp.float32)


def numpy_ema(count_K, sum_KxD, x_NxD, codes_N, mask_N, decay, eps):
    """Hand-written VQ-VAE-2 EMA step with Laplace smoothing, float64, one vector at a time."""
    count_K, sum_KxD = np.array(count_K, np.float64), np.array(sum_KxD, np.float64)
    n_K, s_KxD = np.zeros_like(count_K), np.zeros_like(sum_KxD)
    for x_D, code, valid in zip(x_NxD, codes_N, mask_N):
        if valid:
            n_K[code] += 1
            s_KxD[code] += x_D
    count_K = decay * count_K + (1 - decay) * n_K
    sum_KxD = decay * sum_KxD + (1 - decay) * s_KxD
    n = count_K.sum()
    smoothed_K = (count_K + eps) / (n + len(count_K) * eps) * n
    return count_K, sum_KxD, sum_KxD / smoothed_K[:, None]


def test_codes_match_brute_force_nearest_neighbour_with_first_index_on_ties():
    rng = np.random.RandomState(0)
    # small integers keep every distance exact in float32, so ties are real ties
    x_NxD = rng.randint(-2, 3, (64, D)).astype(np.float32)
    codebook_KxD = rng.randint(-2, 3, (8, D)).astype(np.float32)
    codebook_KxD[5] = codebook_KxD[2]  # a duplicate code: index 2 must always win over 5
    out = fast_quantize(jnp.asarray(x_NxD), jnp.asarray(codebook_KxD), beta=0.25)
    dist_NxK = ((x_NxD[:, None, :] - codebook_KxD[None]) ** 2).sum(-1)
    expected_N = np.array([np.flatnonzero(row == row.min())[0] for row in dist_NxK])
    distinct_NxK = np.delete(dist_NxK, 5, axis=1)
    assert (distinct_NxK == distinct_NxK.min(1, keepdims=True)).sum(1).max() > 1  # ties between distinct codes
    np.testing.assert_array_equal(np.asarray(out.codes), expected_N)
    assert out.codes.dtype == jnp.int32 and not np.any(np.asarray(out.codes) == 5)
    np.testing.assert_array_equal(np.asarray(out.quantized), codebook_KxD[expected_N])
    np.testing.assert_array_equal(np.asarray(out.encodings_counts_K), np.bincount(expected_N, minlength=8))


def test_straight_through_gradient_is_identity():
    vq = VectorQuantizer(K, D, rngs=nnx.Rngs(0))
    rng = np.random.RandomState(1)
    x, w = jnp.asarray(rng.randn(2, 5, D), jnp.float32), jnp.asarray(rng.randn(2, 5, D), jnp.float32)
    codebook_KxD = vq.codebook_KxD[...]
    grad = jax.jit(jax.grad(lambda x: jnp.sum(w * quantize(x, codebook_KxD, beta=vq.beta).quantized)))(x)
    np.testing.assert_array_equal(np.asarray(grad), np.asarray(w))
    out = call(vq, x)
    np.testing.assert_allclose(out.quantized, codebook_KxD[out.codes], atol=1e-6)
    assert np.abs(np.asarray(out.quantized - x)).max() > 0.1  # the forward value really is q, not x


def test_commitment_loss_value_and_gradient_ignore_padding_and_spare_the_codebook():
    beta = 0.3
    vq = VectorQuantizer(K, D, beta=beta, rngs=nnx.Rngs(0))
    x = np.random.RandomState(1).randn(4, 6, D).astype(np.float32)
    mask = np.ones((4, 6), bool)
    mask[1, 4:] = mask[3, 2:] = False
    x[~mask] = np.nan  # padding may hold anything
    x, codebook_KxD = jnp.asarray(x), vq.codebook_KxD[...]
    out = call(vq, x, jnp.asarray(mask))
    q = np.asarray(codebook_KxD)[np.asarray(out.codes)]
    valid = int(mask.sum())
    diff = np.where(mask[..., None], np.asarray(x) - q, 0.0)
    np.testing.assert_allclose(out.commitment_loss, beta * np.sum(diff**2) / (valid * D), rtol=1e-6)
    np.testing.assert_array_equal(out.encodings_counts_K, np.bincount(np.asarray(out.codes)[mask], minlength=K))

    loss = lambda x, c: quantize(x, c, jnp.asarray(mask), beta=beta).commitment_loss
    grad_x, grad_c = jax.jit(jax.grad(loss, argnums=(0, 1)))(x, codebook_KxD)
    np.testing.assert_allclose(grad_x, 2 * beta * diff / (valid * D), rtol=1e-5, atol=1e-7)
    # no path to the codebook: it is not a Param, and the loss stops its gradient
    np.testing.assert_array_equal(grad_c, np.zeros((K, D)))
    assert jax.tree.leaves(nnx.state(vq, nnx.Param)) == []
    assert len(jax.tree.leaves(nnx.state(vq, CodebookStat))) == 3


def test_ema_update_matches_numpy_reference_for_two_steps_with_mask():
    decay, eps = 0.9, 0.5  # a large eps so that the Laplace smoothing moves the result
    vq = VectorQuantizer(K, D, decay=decay, eps=eps, rngs=nnx.Rngs(0))
    count0, sum0 = np.asarray(vq.ema_count_K[...]), np.asarray(vq.ema_sum_KxD[...])
    rng = np.random.RandomState(0)
    x1, x2 = rng.randn(2, 4, 6, D).astype(np.float32)
    mask1, mask2 = rng.rand(2, 4, 6) > 0.3
    x1[~mask1] = np.nan  # padded vectors must be ignored
    codes1 = np.asarray(call(vq, jnp.asarray(x1)).codes)
    codes2 = rng.choice([0, 1, 3], (4, 6))  # code 2 gets nothing in the second batch

    ema_update(vq, jnp.asarray(x1), jnp.asarray(codes1), jnp.asarray(mask1))
    ema_update(vq, jnp.asarray(x2), jnp.asarray(codes2), jnp.asarray(mask2))

    ref = numpy_ema(count0, sum0, x1.reshape(-1, D), codes1.ravel(), mask1.ravel(), decay, eps)
    ref = numpy_ema(*ref[:2], x2.reshape(-1, D), codes2.ravel(), mask2.ravel(), decay, eps)
    for got, want in zip((vq.ema_count_K, vq.ema_sum_KxD, vq.codebook_KxD), ref):
        np.testing.assert_allclose(got[...], want, rtol=1e-5, atol=1e-6)
    unsmoothed = ref[1] / ref[0][:, None]
    assert np.abs(unsmoothed - ref[2]).max() > 1e-2  # the check above does see the smoothing


def test_ema_updates_move_codebook_to_cluster_means():
    rng = np.random.RandomState(0)
    means_4xD = np.array([[3.0, 3.0, 0.0], [-3.0, 3.0, 0.0], [3.0, -3.0, 0.0], [-3.0, -3.0, 0.0]])
    labels_N = np.repeat(np.arange(4), 64)
    x_NxD = jnp.asarray(means_4xD[labels_N] + 0.3 * rng.randn(256, D), jnp.float32)
    vq = VectorQuantizer(K, D, decay=0.9, rngs=nnx.Rngs(0))
    start_KxD = 20.0 + 0.01 * rng.randn(K, D)  # all codes far off on one side: one takes everything
    set_stats(vq, np.ones(K), start_KxD, start_KxD)

    @nnx.jit
    def step(vq, x, key):
        vq.ema_update(x, vq(x).codes)
        return vq.restart_dead_codes(key)

    before = call(vq, x_NxD).commitment_loss
    restarted = sum(int(step(vq, x_NxD, key)) for key in jax.random.split(jax.random.key(1), 200))
    out = call(vq, x_NxD)
    codes_N = np.asarray(out.codes)
    cluster_code = [np.unique(codes_N[labels_N == c]) for c in range(4)]
    assert all(len(c) == 1 for c in cluster_code), cluster_code  # every cluster maps to one code
    cluster_code = np.concatenate(cluster_code)
    assert sorted(cluster_code) == [0, 1, 2, 3]  # ... and to a different one
    empirical_4xD = np.stack([np.asarray(x_NxD)[labels_N == c].mean(0) for c in range(4)])
    np.testing.assert_allclose(vq.codebook_KxD[...][cluster_code], empirical_4xD, atol=1e-2)
    assert restarted >= 3  # three codes started dead and had to be restarted
    assert float(out.commitment_loss) < 0.25 * 0.1 < float(before)


def test_restart_splits_the_most_used_code_into_a_never_used_one():
    rng = np.random.RandomState(0)
    centres_3xD = 2.0 * np.eye(3, D)
    labels_N = np.repeat([0, 1, 2], [30, 20, 10])  # code 0 is the most used
    x_NxD = jnp.asarray(centres_3xD[labels_N] + 0.1 * rng.randn(60, D), jnp.float32)
    vq = VectorQuantizer(K, D, decay=0.8, rngs=nnx.Rngs(0))
    codebook = np.concatenate([centres_3xD, np.full((1, D), -20.0)])  # code 3 is never the nearest
    set_stats(vq, np.ones(K), codebook, codebook)
    for _ in range(30):
        ema_update(vq, x_NxD, call(vq, x_NxD).codes)
    count_before, book_before = np.asarray(vq.ema_count_K[...]), np.asarray(vq.codebook_KxD[...])
    assert count_before[3] < vq.dead_threshold * count_before.sum() and count_before.argmax() == 0

    assert int(restart(vq, jax.random.key(0))) == 1
    count, book = np.asarray(vq.ema_count_K[...]), np.asarray(vq.codebook_KxD[...])
    share = (count_before[0] + count_before[3]) / 2
    np.testing.assert_allclose(count, [share, count_before[1], count_before[2], share], rtol=1e-6)
    np.testing.assert_allclose(count.sum(), count_before.sum(), rtol=1e-6)
    np.testing.assert_array_equal(book[:3], book_before[:3])
    offset = np.abs(book[3] - book[0]).max()
    assert 0 < offset < 0.1 * book_before.std()
    smoothed = np.asarray(laplace_smooth(jnp.asarray(count), vq.eps))
    np.testing.assert_allclose(vq.ema_sum_KxD[...], book * smoothed[:, None], rtol=1e-5, atol=1e-6)
    # the copy takes over part of cluster 0 at once, and nothing of the other clusters
    counts = np.asarray(call(vq, x_NxD).encodings_counts_K)
    assert counts[3] > 0 and counts[0] + counts[3] == 30 and list(counts[1:3]) == [20, 10]


def test_restart_without_dead_codes_changes_nothing():
    vq = VectorQuantizer(K, D, rngs=nnx.Rngs(0))
    set_stats(vq, [3.0, 0.5, 1.0, 2.0], np.ones((K, D)), np.arange(12.0).reshape(K, D))
    before = jax.tree.map(np.asarray, vq.stats)
    assert int(restart(vq, jax.random.key(0))) == 0
    for got, want in zip(vq.stats, before):
        np.testing.assert_array_equal(got, want)
    # a higher threshold (0.25 * 6.5 = 1.625) makes codes 1 and 2 dead: code 0's pool is split in three
    vq.dead_threshold = 0.25
    assert int(restart(vq, jax.random.key(0))) == 2
    np.testing.assert_allclose(vq.ema_count_K[...], [(3.0 + 0.5 + 1.0) / 3] * 3 + [2.0], rtol=1e-6)
    np.testing.assert_array_equal(vq.codebook_KxD[...][3], before.codebook_KxD[3])


def test_codebook_usage_uniform_and_one_hot():
    usage = jax.jit(codebook_usage, static_argnames="dead_threshold")
    uniform = usage(jnp.full((8,), 5.0))
    np.testing.assert_allclose(uniform["perplexity"], 8.0, rtol=1e-6)
    np.testing.assert_allclose([uniform["dead_fraction"], uniform["max_share"]], [0.0, 1 / 8], rtol=1e-6)
    one_hot = usage(jnp.zeros((8,)).at[3].set(7.0))
    np.testing.assert_allclose([one_hot["perplexity"], one_hot["dead_fraction"], one_hot["max_share"]],
                               [1.0, 7 / 8, 1.0], rtol=1e-6)
    two = usage(jnp.array([1.0, 3.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0]))
    p = np.array([0.25, 0.75])
    np.testing.assert_allclose(two["perplexity"], np.exp(-(p * np.log(p)).sum()), rtol=1e-6)
    rare = usage(jnp.array([1.0, 3.0, 0.5, 95.5]), dead_threshold=0.01)  # p = 0.01, 0.03, 0.005, 0.955
    np.testing.assert_allclose(rare["dead_fraction"], 0.5)


def sharded_case():
    """Stats and a [8, 6] batch of 3-d vectors with padding, shared with the shard_map script."""
    rng = np.random.RandomState(0)
    count_K = rng.rand(K).astype(np.float32) + 0.5
    sum_KxD = rng.randn(K, D).astype(np.float32)
    codebook_KxD = sum_KxD / np.asarray(laplace_smooth(jnp.asarray(count_K), 0.1))[:, None]
    stats = VQStats(jnp.asarray(count_K), jnp.asarray(sum_KxD), jnp.asarray(codebook_KxD))
    x = rng.randn(8, 6, D).astype(np.float32)
    codes = rng.randint(0, K, (8, 6)).astype(np.int32)
    codes[:2] = 0  # the first shard sees only code 0, so shard-local statistics would differ
    mask = rng.rand(8, 6) > 0.25
    return stats, jnp.asarray(x), jnp.asarray(codes), jnp.asarray(mask)


def test_psum_under_shard_map_and_sharded_jit_match_one_device():
    script = f"""
import json, sys
sys.path.insert(0, {str(ROOT)!r})
import jax
from functools import partial
from jax.sharding import AxisType, NamedSharding, PartitionSpec as P
assert jax.device_count() == 8, jax.devices()
from tests.nn.test_vq import sharded_case
from latent.nn.vq import update_codebook
mesh = jax.make_mesh((4,), ("data",), axis_types=(AxisType.Auto,), devices=jax.devices()[:4])
put = lambda a, spec: jax.device_put(a, NamedSharding(mesh, spec))
stats, x, codes, mask = sharded_case()
stats = put(stats, P())
x, codes, mask = (put(a, P("data")) for a in (x, codes, mask))
update = partial(update_codebook, decay=0.9, eps=0.1)
results = {{}}
results["shard_map"] = jax.jit(jax.shard_map(
    partial(update, axis_name="data"), mesh=mesh, in_specs=(P(), P("data"), P("data"), P("data")), out_specs=P(),
))(stats, x, codes, mask)
results["local"] = jax.jit(jax.shard_map(  # no psum: each shard keeps its own statistics
    lambda *a: jax.tree.map(lambda t: t[None], update(*a)), mesh=mesh,
    in_specs=(P(), P("data"), P("data"), P("data")), out_specs=P("data"),
))(stats, x, codes, mask)
sharded = jax.jit(update)(stats, x, codes, mask)
assert len(sharded.codebook_KxD.sharding.device_set) == 4
results["jit"] = sharded
print(json.dumps({{k: [v.tolist() for v in r] for k, r in results.items()}}))
"""
    env = dict(os.environ, XLA_FLAGS=xla_flags("--xla_force_host_platform_device_count=8"), JAX_PLATFORMS="cpu")
    result = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    results = json.loads(result.stdout.strip().splitlines()[-1])
    stats, x, codes, mask = sharded_case()
    reference = jax.jit(update_codebook, static_argnames=("decay", "eps"))(stats, x, codes, mask, decay=0.9, eps=0.1)
    for name in ("shard_map", "jit"):
        for got, want in zip(results[name], reference):
            np.testing.assert_allclose(np.asarray(got), want, rtol=1e-5, atol=1e-6, err_msg=name)
    # without the psum the first shard's codebook really is different: the check above can fail
    assert np.abs(np.asarray(results["local"][2])[0] - np.asarray(reference.codebook_KxD)).max() > 1e-2
