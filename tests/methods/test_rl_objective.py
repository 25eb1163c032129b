"""The RL objective (latent.methods.rl.objective) against hand-written numpy references: group
advantages, the clipped / GPPO policy loss and its gradient for every aggregation, with KL and
entropy terms, and REINFORCE with the group baseline when the ratio is 1. In float64."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from latent.methods.rl.objective import ADVANTAGES, AGGREGATIONS, POLICY_LOSSES, advantages, policy_loss

EXACT = dict(rtol=1e-9, atol=1e-12)  # float64 throughout
LOW, HIGH = 0.2, 0.28  # clip_low, clip_high: the ratio's range is [0.8, 1.28]
MAX_TOKENS = 7


@pytest.fixture(autouse=True)
def x64():
    with jax.enable_x64(True):
        yield


# ----------------------------------------------------------------------------- numpy references


def advantages_reference(rewards, kind, eps):
    adv = np.zeros_like(rewards)
    groups, size = rewards.shape
    for b, i in itertools.product(range(groups), range(size)):
        group = rewards[b]
        mean = sum(group) / size
        if kind == "grpo":
            std = np.sqrt(sum((r - mean) ** 2 for r in group) / size)
            adv[b, i] = (group[i] - mean) / (std + eps)
        elif kind == "dr_grpo":
            adv[b, i] = group[i] - mean
        else:
            adv[b, i] = group[i] - sum(group[j] for j in range(size) if j != i) / (size - 1)
    return adv


def token_weights(mask, aggregation, max_tokens):
    """d loss / d (token term): what each sampled token's term is multiplied by."""
    lengths = mask.sum(1)
    rows = max((lengths > 0).sum(), 1)
    if aggregation == "token_mean":
        per_row = np.full(len(mask), 1.0 / lengths.sum())
    elif aggregation == "sequence_mean":
        per_row = 1.0 / (rows * np.maximum(lengths, 1))
    else:
        per_row = np.full(len(mask), 1.0 / (rows * max_tokens))
    return per_row[:, None] * mask


def policy_loss_reference(logp, old_logp, adv, mask, *, loss, aggregation, clip_low=LOW, clip_high=HIGH,
                          ref_logp=None, kl_coef=0.0, entropy=None, entropy_coef=0.0):
    """(loss, d loss / d logp, d loss / d entropy, metrics), token by token from the formulas, with
    the gradient written out: d rho / d logp = rho; d k3 / d logp = 1 - exp(ref - logp)."""
    m = mask.astype(bool)
    weights = token_weights(m.astype(float), aggregation, MAX_TOKENS)
    value = np.zeros_like(logp)
    grad = np.zeros_like(logp)
    clipped = np.zeros_like(m)
    ratios, kls = [], []
    lo, hi = 1 - clip_low, 1 + clip_high
    for i, t in zip(*np.nonzero(m)):
        a = adv[i]
        rho = np.exp(logp[i, t] - old_logp[i, t])
        ratios.append(rho)
        if a > 0 and rho > hi:  # the min takes (1 + eps_high) A: flat in rho
            clipped[i, t] = True
            value[i, t] = -hi * a
            grad[i, t] = -hi * a if loss == "gppo" else 0.0
        elif a < 0 and rho < lo:  # the min takes (1 - eps_low) A
            clipped[i, t] = True
            value[i, t] = -lo * a
            grad[i, t] = -lo * a if loss == "gppo" else 0.0
        else:
            value[i, t] = -rho * a
            grad[i, t] = -rho * a
    pg_loss = float(np.sum(weights * value))
    if ref_logp is not None:
        for i, t in zip(*np.nonzero(m)):
            d = ref_logp[i, t] - logp[i, t]
            kls.append(np.exp(d) - d - 1)
            value[i, t] += kl_coef * kls[-1]
            grad[i, t] += kl_coef * (1 - np.exp(d))
    grad_entropy = np.zeros_like(logp)
    if entropy is not None:
        value -= entropy_coef * np.where(m, entropy, 0.0)
        grad_entropy = -entropy_coef * weights
    metrics = {"pg_loss": pg_loss, "clip_fraction": clipped.sum() / m.sum(), "ratio_mean": np.mean(ratios)}
    if ref_logp is not None:
        metrics["kl"] = np.mean(kls)
    if entropy is not None:
        metrics["entropy"] = np.mean(entropy[m])
    return float(np.sum(weights * value)), weights * grad, grad_entropy, metrics


# ----------------------------------------------------------------------------- a batch


def rollout_batch(seed=0):
    """N = 2 prompts x 3 outputs of up to T = 6 tokens (the last row a padding row with none), the
    ratios drawn inside [0.8, 1.28] and beyond each bound, advantages of both signs and a 0;
    padding positions hold values that would be inf or NaN if read."""
    rng = np.random.default_rng(seed)
    lengths = np.array([6, 3, 1, 5, 4, 0])
    mask = (np.arange(6)[None, :] < lengths[:, None]).astype(np.float64)
    logp = -rng.uniform(0.1, 3.0, size=mask.shape)
    ratio = rng.choice([0.5, 0.7, 0.75, 0.9, 1.0, 1.1, 1.2, 1.3, 1.5, 2.0], size=mask.shape)
    old_logp = logp - np.log(ratio)
    ref_logp = logp + rng.normal(0, 0.5, size=mask.shape)
    entropy = rng.uniform(0.0, 2.0, size=mask.shape)
    adv = np.array([1.3, -0.7, 0.0, -1.9, 0.6, 0.4])
    pad = mask == 0
    logp[pad], old_logp[pad], ref_logp[pad], entropy[pad] = 50.0, -1e4, 1e4, np.nan
    return dict(logp=logp, old_logp=old_logp, adv=adv, mask=mask, ref_logp=ref_logp, entropy=entropy)


def sampled_ratios(b):
    """rho on sampled tokens, 1 on padding."""
    return np.exp(np.where(b["mask"] == 1, b["logp"] - b["old_logp"], 0.0))


def test_the_batch_has_ratios_inside_and_beyond_each_bound_for_both_signs():
    b = rollout_batch()
    m = b["mask"] == 1
    ratio, adv = sampled_ratios(b), np.broadcast_to(b["adv"][:, None], m.shape)
    for sign in (adv > 0, adv < 0):
        for region in (ratio < 1 - LOW, (ratio > 1 - LOW) & (ratio < 1 + HIGH), ratio > 1 + HIGH):
            assert (m & sign & region).any()


# ----------------------------------------------------------------------------- advantages


@pytest.mark.parametrize("kind", sorted(ADVANTAGES))
def test_advantages_equal_the_reference(kind):
    rng = np.random.default_rng(1)
    rewards = rng.integers(0, 2, size=(4, 5)) + 0.1 * rng.normal(size=(4, 5))
    got = advantages(jnp.asarray(rewards), kind, 1e-6)
    np.testing.assert_allclose(got, advantages_reference(rewards, kind, 1e-6), **EXACT)
    assert got.dtype == jnp.float64


@pytest.mark.parametrize("kind", sorted(ADVANTAGES))
@pytest.mark.parametrize("dtype", [jnp.float64, jnp.float32])
def test_a_group_of_equal_rewards_has_no_advantage(kind, dtype):
    """Exactly 0, in float32 too: there a mean of equal rewards such as 0.9 is off by a rounding
    error that grpo's division by a std near 0 would blow up to about 0.06."""
    for group in (3, 7, 8):
        rewards = jnp.asarray(np.array([1.0, 0.0, 0.3, 0.1, 0.9, 1.1])[:, None].repeat(group, 1), dtype)
        np.testing.assert_array_equal(advantages(rewards, kind, 1e-6), np.zeros(rewards.shape))


def test_grpo_scales_by_the_population_std_and_rloo_by_g_over_g_minus_one():
    rewards = jnp.array([[1.0, 0.0, 0.0, 0.0]])  # mean 1/4, population std sqrt(3)/4
    np.testing.assert_allclose(advantages(rewards, "grpo", 0.0), [[np.sqrt(3), -1 / np.sqrt(3), -1 / np.sqrt(3), -1 / np.sqrt(3)]], **EXACT)
    np.testing.assert_allclose(advantages(rewards, "rloo"), [[1.0, -1 / 3, -1 / 3, -1 / 3]], **EXACT)
    np.testing.assert_allclose(advantages(rewards, "rloo"), 4 / 3 * advantages(rewards, "dr_grpo"), **EXACT)


# ----------------------------------------------------------------------------- the policy loss


def run_loss(b, **options):
    """policy_loss's (loss, d/d logp, d/d entropy, metrics) on batch `b`."""

    def loss_of(logp, entropy):
        return policy_loss(logp, b["old_logp"], b["adv"], b["mask"], max_tokens=MAX_TOKENS, entropy_NxT=entropy,
                           ref_logp_NxT=b["ref_logp"], **options)

    (value, metrics), (grad_logp, grad_entropy) = jax.value_and_grad(loss_of, argnums=(0, 1), has_aux=True)(
        jnp.asarray(b["logp"]), jnp.asarray(b["entropy"])
    )
    return value, grad_logp, grad_entropy, metrics


@pytest.mark.parametrize("loss, aggregation", list(itertools.product(POLICY_LOSSES, AGGREGATIONS)))
def test_loss_and_gradient_equal_the_numpy_reference(loss, aggregation):
    b = rollout_batch()
    options = dict(loss=loss, aggregation=aggregation, clip_low=LOW, clip_high=HIGH, kl_coef=0.05, entropy_coef=0.01)
    value, grad_logp, grad_entropy, metrics = run_loss(b, **options)
    want, want_grad, want_grad_entropy, want_metrics = policy_loss_reference(
        b["logp"], b["old_logp"], b["adv"], b["mask"], loss=loss, aggregation=aggregation,
        ref_logp=b["ref_logp"], kl_coef=0.05, entropy=b["entropy"], entropy_coef=0.01,
    )
    np.testing.assert_allclose(value, want, **EXACT)
    np.testing.assert_allclose(grad_logp, want_grad, **EXACT)
    np.testing.assert_allclose(grad_entropy, want_grad_entropy, **EXACT)
    assert set(metrics) == set(want_metrics)
    for name, expected in want_metrics.items():
        np.testing.assert_allclose(metrics[name], expected, err_msg=name, **EXACT)
    assert 0 < metrics["clip_fraction"] < 1


@pytest.mark.parametrize("aggregation", AGGREGATIONS)
def test_without_kl_or_entropy_the_loss_is_the_policy_term(aggregation):
    b = rollout_batch(seed=3)
    value, metrics = policy_loss(b["logp"], b["old_logp"], b["adv"], b["mask"], aggregation=aggregation,
                                 max_tokens=MAX_TOKENS)
    want, *_ = policy_loss_reference(b["logp"], b["old_logp"], b["adv"], b["mask"], loss="clip", aggregation=aggregation)
    np.testing.assert_allclose(value, want, **EXACT)
    np.testing.assert_allclose(metrics["pg_loss"], want, **EXACT)
    assert set(metrics) == {"pg_loss", "clip_fraction", "ratio_mean"}


def test_gppo_keeps_the_clipped_value_and_a_bounded_gradient_beyond_the_range():
    b = rollout_batch()
    m = b["mask"] == 1
    ratio, adv = sampled_ratios(b), np.broadcast_to(b["adv"][:, None], m.shape)
    high_side, low_side = m & (adv > 0) & (ratio > 1 + HIGH), m & (adv < 0) & (ratio < 1 - LOW)
    inside = m & ~high_side & ~low_side
    assert high_side.any() and low_side.any() and inside.any()
    common = dict(aggregation="sequence_mean", clip_low=LOW, clip_high=HIGH)
    clip_value, clip_grad, _, _ = run_loss(b, loss="clip", **common)
    gppo_value, gppo_grad, _, _ = run_loss(b, loss="gppo", **common)
    np.testing.assert_allclose(gppo_value, clip_value, **EXACT)
    weights = token_weights(b["mask"], "sequence_mean", MAX_TOKENS)
    # beyond the range: clip's gradient is 0, GPPO's -(1 +- eps) A per token (the loss is -surrogate)
    np.testing.assert_array_equal(np.asarray(clip_grad)[high_side | low_side], 0.0)
    np.testing.assert_allclose(np.asarray(gppo_grad)[high_side], -((1 + HIGH) * adv * weights)[high_side], **EXACT)
    np.testing.assert_allclose(np.asarray(gppo_grad)[low_side], -((1 - LOW) * adv * weights)[low_side], **EXACT)
    assert np.all(np.asarray(gppo_grad)[high_side | low_side] != 0)
    # inside (and beyond the bound that does not matter for the sign): the same gradient, -rho A
    np.testing.assert_allclose(np.asarray(gppo_grad)[inside], np.asarray(clip_grad)[inside], **EXACT)
    np.testing.assert_allclose(np.asarray(clip_grad)[inside], -(ratio * adv * weights)[inside], **EXACT)


def test_jitted_equals_eager():
    b = rollout_batch()
    options = dict(loss="gppo", aggregation="sequence_sum", max_tokens=MAX_TOKENS)
    jitted = jax.jit(policy_loss, static_argnames=("loss", "aggregation", "max_tokens"))
    eager_value, eager_metrics = policy_loss(b["logp"], b["old_logp"], b["adv"], b["mask"], ref_logp_NxT=b["ref_logp"],
                                             kl_coef=0.1, **options)
    jit_value, jit_metrics = jitted(b["logp"], b["old_logp"], b["adv"], b["mask"], ref_logp_NxT=b["ref_logp"],
                                    kl_coef=jnp.float64(0.1), **options)
    np.testing.assert_allclose(jit_value, eager_value, **EXACT)
    for name in eager_metrics:
        np.testing.assert_allclose(jit_metrics[name], eager_metrics[name], **EXACT)


def test_a_term_without_its_inputs_or_an_unknown_option_is_refused():
    b = rollout_batch()
    args = (b["logp"], b["old_logp"], b["adv"], b["mask"])
    with pytest.raises(ValueError, match=r"kl_coef=0.1 needs the reference's log-probs"):
        policy_loss(*args, kl_coef=0.1)
    with pytest.raises(ValueError, match=r"entropy_coef=0.1 needs the policy's entropies"):
        policy_loss(*args, entropy_coef=0.1)
    with pytest.raises(ValueError, match=r"sequence_sum' divides by max_tokens"):
        policy_loss(*args, aggregation="sequence_sum")
    with pytest.raises(ValueError, match=r"unknown policy loss 'ppo'"):
        policy_loss(*args, loss="ppo")
    with pytest.raises(ValueError, match=r"unknown advantage 'gae'"):
        advantages(jnp.zeros((2, 4)), "gae")
    with pytest.raises(ValueError, match=r"G >= 2 outputs per prompt"):
        advantages(jnp.zeros((2, 1)), "rloo")


# ----------------------------------------------------------------------------- REINFORCE


def tiny_policy(seed=0, prompts=2, group=4, tokens=5, features=3, vocab=6):
    """A policy whose logits are a linear map of fixed random features; N = prompts * group
    outputs sampled from it, of lengths 1..tokens."""
    keys = jax.random.split(jax.random.key(seed), 4)
    n = prompts * group
    features_NxTxF = jax.random.normal(keys[0], (n, tokens, features), jnp.float64)
    weight_FxV = jax.random.normal(keys[1], (features, vocab), jnp.float64)
    sampled_NxT = jax.random.categorical(keys[2], features_NxTxF @ weight_FxV)
    lengths_N = jax.random.randint(keys[3], (n,), 1, tokens + 1)
    mask_NxT = (jnp.arange(tokens)[None, :] < lengths_N[:, None]).astype(jnp.float64)

    def logp_of(weight_FxV):
        logp_NxTxV = jax.nn.log_softmax(features_NxTxF @ weight_FxV, axis=-1)
        return jnp.take_along_axis(logp_NxTxV, sampled_NxT[..., None], axis=-1)[..., 0]

    return features_NxTxF, weight_FxV, sampled_NxT, mask_NxT, logp_of


def reinforce_reference(features, weight, sampled, mask, adv, aggregation):
    """-sum_i (A_i / norm_i) grad_W log pi(o_i), with grad_W log pi(o_i) = sum_t x_it (onehot(o_it) - p_it)^T
    and norm_i what the aggregation divides output i's tokens by."""
    features, weight, sampled, mask = map(np.asarray, (features, weight, sampled, mask))
    logits = features @ weight
    probs = np.exp(logits - logits.max(-1, keepdims=True))
    probs /= probs.sum(-1, keepdims=True)
    onehot = np.eye(weight.shape[1])[sampled]
    lengths, rows = mask.sum(1), (mask.sum(1) > 0).sum()
    norm = {"token_mean": np.full(len(mask), lengths.sum()), "sequence_mean": rows * lengths,
            "sequence_sum": np.full(len(mask), rows * MAX_TOKENS)}[aggregation]
    grad = np.zeros_like(weight)
    for i in range(len(mask)):
        grad_log_pi = np.einsum("tf,tv->fv", features[i] * mask[i][:, None], onehot[i] - probs[i])
        grad -= adv[i] / norm[i] * grad_log_pi
    return grad


@pytest.mark.parametrize("loss, aggregation", list(itertools.product(POLICY_LOSSES, AGGREGATIONS)))
def test_at_ratio_one_the_gradient_is_reinforce_with_the_group_baseline(loss, aggregation):
    features, weight, sampled, mask, logp_of = tiny_policy()
    old_logp = logp_of(weight)  # one inner epoch: the params that sampled are the params trained
    rewards = jax.random.uniform(jax.random.key(7), (2, 4), jnp.float64)

    def loss_of(weight, adv, clip_low, clip_high):
        return policy_loss(logp_of(weight), old_logp, adv, mask, loss=loss, clip_low=clip_low, clip_high=clip_high,
                           aggregation=aggregation, max_tokens=MAX_TOKENS)[0]

    # the clip off, and the default range (a ratio of 1 is inside it)
    for kind, (clip_low, clip_high) in itertools.product(sorted(ADVANTAGES), [(1e9, 1e9), (LOW, HIGH)]):
        adv = advantages(rewards, kind).reshape(-1)
        want = reinforce_reference(features, weight, sampled, mask, np.asarray(adv), aggregation)
        got = jax.grad(loss_of)(weight, adv, clip_low, clip_high)
        np.testing.assert_allclose(got, want, err_msg=f"{kind}, clip {clip_low}", **EXACT)
