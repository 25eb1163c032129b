"""Discrete codes for chain-of-thought steps (Token-Assorted style, issue 5).

    hiddens = step_hiddens(graphdef, params, tokenizer, examples)       # [n_steps, D] per example
    vq, history = train_vq_autoencoder(np.concatenate(hiddens))
    codes = encode_steps(vq, hiddens)                                   # one code per step
    mixed = code_prefix_examples(examples, codes, seed=0)               # "codes" task format

A trained LM reads each example's CoT text once; the post-final-norm hidden states of a step's
tokens, mean-pooled, summarise that step. A small VQ autoencoder (MLP encoder, EMA codebook of
`latent.nn.vq`, MLP decoder) turns every summary into one of K codes. The LM is then trained on
examples whose first m steps (m uniform in 0..n_steps) are replaced by `<abs_code>` tokens.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from tqdm.auto import tqdm

from latent.data.parts import encode_parts
from latent.data.pipeline import bucket_length
from latent.data.shapes import round_up
from latent.data.special_tokens import ABSTRACT_FORMAT
from latent.data.tasks import Example
from latent.nn.vq import VectorQuantizer, VQOutput, codebook_usage

_HIGHEST = jax.lax.Precision.HIGHEST
LOG_EVERY = 50  # history granularity of train_vq_autoencoder
_ENCODE_CHUNK = 4096  # rows per jitted call when encoding: one compiled shape for any N


# ----------------------------------------------------------------------------- step hidden states


def cot_step_ids(example: Example, tokenizer) -> tuple[list[int], list[tuple[int, int]]]:
    """The CoT training record's ids (prompt + steps + "### answer" + eos) and each step's
    [start, end) token span; a span covers the step's words and its closing newline.

    The ids are the example's `latent.data.parts` joined, as the CoT record joins them, so the
    span boundaries are exact.
    """
    parts = encode_parts(example, tokenizer)
    spans, start = [], len(parts.question)
    for i, step_ids in enumerate(parts.steps):
        if not len(step_ids):
            raise ValueError(f"step {i} {example.steps[i]!r} of question {example.question[:40]!r}... has no tokens")
        spans.append((start, start + len(step_ids)))
        start += len(step_ids)
    return np.concatenate([parts.question, parts.chain(), parts.answer]).tolist(), spans


def step_hiddens(
    graphdef, params, tokenizer, examples: Sequence[Example], *, batch_size: int = 64, max_len: int = 256
) -> list[np.ndarray]:
    """Per example, the mean post-final-norm hidden state over each step's tokens: float32
    [n_steps, D] (a step's span: `cot_step_ids`).

    One forward per example over its whole training record, batched with left padding
    (positions come from the padding mask, as in training). Examples are grouped by length so
    little is padded; lengths are bucketed (multiples of 32) and the step axis padded to a
    multiple of 8, so a few shapes compile. Raises ValueError naming the first example longer
    than `max_len` tokens (filter with `cot_step_ids` first: training dropped those too).
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1; got {batch_size}")
    tokenized = [cot_step_ids(example, tokenizer) for example in examples]
    for index, (ids, _) in enumerate(tokenized):
        if len(ids) > max_len:
            raise ValueError(f"example {index} has {len(ids)} tokens (prompt + steps + answer + eos) > max_len={max_len}")

    @jax.jit
    def pooled_BxSxD(params, tokens_BxT, padding_BxT, step_of_BxT, steps_S):
        model = nnx.merge(graphdef, params)
        hidden_BxTxD = model(tokens_BxT, padding_mask=padding_BxT).hidden.astype(jnp.float32)
        # step_of is -1 outside any step, so those positions match no column of the one-hot
        onehot_BxTxS = (step_of_BxT[..., None] == steps_S).astype(jnp.float32)
        sums_BxSxD = jnp.einsum("bts,btd->bsd", onehot_BxTxS, hidden_BxTxD, precision=_HIGHEST)
        counts_BxS = jnp.sum(onehot_BxTxS, axis=1)
        return sums_BxSxD / jnp.maximum(counts_BxS, 1.0)[..., None]

    results: list[np.ndarray | None] = [None] * len(examples)
    by_length = sorted(range(len(examples)), key=lambda i: len(tokenized[i][0]))
    for start in range(0, len(by_length), batch_size):
        chunk = by_length[start : start + batch_size]
        rows = chunk + [chunk[-1]] * (batch_size - len(chunk))  # a full batch: one compiled batch size
        T = bucket_length(max(len(tokenized[i][0]) for i in rows), max_len)
        S = max(8, round_up(max(len(tokenized[i][1]) for i in rows), 8))
        tokens_BxT = np.full((batch_size, T), tokenizer.pad_id, np.int32)
        padding_BxT = np.zeros((batch_size, T), bool)
        step_of_BxT = np.full((batch_size, T), -1, np.int32)
        for b, i in enumerate(rows):
            ids, spans = tokenized[i]
            offset = T - len(ids)  # left padding shifts every span by the same amount
            tokens_BxT[b, offset:] = ids
            padding_BxT[b, offset:] = True
            for s, (lo, hi) in enumerate(spans):
                step_of_BxT[b, offset + lo : offset + hi] = s
        out_BxSxD = np.asarray(pooled_BxSxD(params, tokens_BxT, padding_BxT, step_of_BxT, jnp.arange(S)))
        for b, i in enumerate(chunk):
            results[i] = out_BxSxD[b, : len(tokenized[i][1])].copy()
    return results


# ----------------------------------------------------------------------------- VQ autoencoder


class InputStat(nnx.Variable):
    """Standardisation constants of the training hiddens: set once, never trained."""


class AutoencoderTerms(NamedTuple):
    recon_loss: jax.Array  # [] mean squared error in standardised units (predicting the mean scores 1)
    vq: VQOutput
    z_NxC: jax.Array  # encoder outputs, what the codebook's EMA update needs


def _mlp(d_in: int, d_hidden: int, d_out: int, rngs: nnx.Rngs) -> nnx.Sequential:
    return nnx.Sequential(nnx.Linear(d_in, d_hidden, rngs=rngs), nnx.gelu, nnx.Linear(d_hidden, d_out, rngs=rngs))


class VQAutoencoder(nnx.Module):
    """h [N, D] -> standardise -> encoder -> nearest of `num_codes` codes [code_dim] -> decoder -> h.

    Inputs are centred per dimension and divided by one scalar std (the root mean variance), so
    the hidden states' scale does not matter while their geometry (which dims vary more) is
    kept. Call `set_input_stats` with the training hiddens before training.
    """

    def __init__(self, dim: int, code_dim: int, num_codes: int, *, hidden: int | None = None, beta: float = 0.25,
                 rngs: nnx.Rngs):
        hidden = dim if hidden is None else hidden
        for name, value in (("dim", dim), ("code_dim", code_dim), ("num_codes", num_codes), ("hidden", hidden)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"VQAutoencoder {name} must be a positive int; got {value!r}")
        self.dim, self.code_dim, self.num_codes = dim, code_dim, num_codes
        self.input_mean_D = InputStat(jnp.zeros((dim,), jnp.float32))
        self.input_std = InputStat(jnp.ones((), jnp.float32))
        self.encoder = _mlp(dim, hidden, code_dim, rngs)
        self.quantizer = VectorQuantizer(num_codes, code_dim, beta=beta, rngs=rngs)
        self.decoder = _mlp(code_dim, hidden, dim, rngs)

    def set_input_stats(self, h_NxD) -> None:
        h_NxD = jnp.asarray(h_NxD, jnp.float32)
        self._check(h_NxD, "set_input_stats")
        self.input_mean_D[...] = jnp.mean(h_NxD, axis=0)
        std = jnp.sqrt(jnp.mean(jnp.var(h_NxD, axis=0)))
        self.input_std[...] = jnp.where(std > 0, std, 1.0)  # constant data: nothing to rescale

    def standardize(self, h_NxD: jax.Array) -> jax.Array:
        return (h_NxD.astype(jnp.float32) - self.input_mean_D[...]) / self.input_std[...]

    def encode(self, h_NxD: jax.Array) -> jax.Array:
        """Encoder outputs z [N, code_dim] (before quantisation)."""
        return self.encoder(self.standardize(h_NxD))

    def terms(self, h_NxD: jax.Array) -> tuple[jax.Array, AutoencoderTerms]:
        """(loss = reconstruction MSE + commitment loss, its parts), all in standardised units."""
        self._check(h_NxD, "input")
        x_NxD = self.standardize(h_NxD)
        z_NxC = self.encoder(x_NxD)
        vq = self.quantizer(z_NxC)
        recon_loss = jnp.mean((self.decoder(vq.quantized) - x_NxD) ** 2)
        return recon_loss + vq.commitment_loss, AutoencoderTerms(recon_loss, vq, z_NxC)

    def __call__(self, h_NxD: jax.Array) -> tuple[jax.Array, VQOutput]:
        """(reconstruction [N, D] in the input's units, quantiser output)."""
        self._check(h_NxD, "input")
        vq = self.quantizer(self.encode(h_NxD))
        return self.decoder(vq.quantized) * self.input_std[...] + self.input_mean_D[...], vq

    def _check(self, h_NxD, what: str) -> None:
        if h_NxD.ndim != 2 or h_NxD.shape[1] != self.dim:
            raise ValueError(f"VQAutoencoder {what} must have shape [N, {self.dim}]; got {tuple(h_NxD.shape)}")


def _kmeans_plus_plus(z_NxC: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """k seeds drawn with probability proportional to the squared distance to the nearest seed
    so far: well-separated groups each get a code from the start instead of waiting for restarts."""
    seeds = [z_NxC[rng.integers(len(z_NxC))]]
    dist_N = np.sum((z_NxC - seeds[0]) ** 2, axis=1)
    for _ in range(k - 1):
        total = dist_N.sum()
        pick = rng.choice(len(z_NxC), p=dist_N / total) if total > 0 else rng.integers(len(z_NxC))
        seeds.append(z_NxC[pick])
        dist_N = np.minimum(dist_N, np.sum((z_NxC - seeds[-1]) ** 2, axis=1))
    return np.stack(seeds).astype(np.float32)


def train_vq_autoencoder(
    h_NxD,
    *,
    num_codes: int = 64,
    code_dim: int = 16,
    steps: int = 2000,
    batch_size: int = 256,
    lr: float = 1e-3,
    restart_every: int = 100,
    seed: int = 0,
    progress: bool = True,
    hidden: int | None = None,
    beta: float = 0.25,
) -> tuple[VQAutoencoder, list[dict]]:
    """A VQAutoencoder fitted to the rows of h [N, D], and its training history.

    Adam moves the nnx.Params (encoder, decoder); the codebook moves only by its EMA update,
    inside the same jitted step. The codebook starts at k-means++ seeds of the initial encoder
    outputs; dead codes are restarted every `restart_every` steps (0: never), but not within the
    last `restart_every` steps, so no fresh copy of a code is left untrained at the end. Batches
    are drawn with replacement. History, every LOG_EVERY steps and at the last: step, recon_loss
    and commitment (means over the window, standardised units: predicting the mean scores 1),
    perplexity and dead_fraction of the codes the window's batches were assigned.
    """
    h_NxD = np.asarray(h_NxD, np.float32)
    if h_NxD.ndim != 2 or h_NxD.shape[0] == 0:
        raise ValueError(f"hidden states must be a non-empty [N, D] array; got shape {h_NxD.shape}")
    if not np.isfinite(h_NxD).all():
        raise ValueError(f"hidden states [N={h_NxD.shape[0]}, D={h_NxD.shape[1]}] hold non-finite values")
    for name, value in (("steps", steps), ("batch_size", batch_size)):
        if value < 1:
            raise ValueError(f"train_vq_autoencoder {name} must be >= 1; got {value}")
    if restart_every < 0:
        raise ValueError(f"train_vq_autoencoder restart_every must be >= 0 (0: never); got {restart_every}")

    model = VQAutoencoder(h_NxD.shape[1], code_dim, num_codes, hidden=hidden, beta=beta, rngs=nnx.Rngs(seed))
    model.set_input_stats(h_NxD)
    rng = np.random.default_rng(seed)
    sample_M = rng.choice(len(h_NxD), size=min(len(h_NxD), 4096), replace=False)
    seeds_KxC = jnp.asarray(_kmeans_plus_plus(np.asarray(model.encode(jnp.asarray(h_NxD[sample_M]))), num_codes, rng))
    # count 1 per code, so codebook = sum / smooth(count) holds with sum = codebook
    model.quantizer.codebook_KxD[...] = seeds_KxC
    model.quantizer.ema_sum_KxD[...] = seeds_KxC * model.quantizer.ema_count_K[...][:, None]

    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    tx = optax.adam(lr)
    opt_state = tx.init(params)
    data_NxD = jnp.asarray(h_NxD)

    @jax.jit
    def train_step(params, rest, opt_state, data_NxD, key):
        h_BxD = data_NxD[jax.random.randint(key, (batch_size,), 0, data_NxD.shape[0])]

        def loss_fn(params):
            return nnx.merge(graphdef, params, rest).terms(h_BxD)

        (_, terms), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        params = optax.apply_updates(params, updates)
        model = nnx.merge(graphdef, params, rest)
        model.quantizer.ema_update(terms.z_NxC, terms.vq.codes)
        _, _, rest = nnx.split(model, nnx.Param, ...)
        return params, rest, opt_state, (terms.recon_loss, terms.vq.commitment_loss, terms.vq.encodings_counts_K)

    @jax.jit
    def restart(params, rest, key):
        model = nnx.merge(graphdef, params, rest)
        num_restarted = model.quantizer.restart_dead_codes(key)
        return nnx.split(model, nnx.Param, ...)[2], num_restarted

    key = jax.random.PRNGKey(seed)
    history, window = [], []
    bar = tqdm(total=steps, desc="vq autoencoder", unit="step", disable=not progress)
    for step in range(1, steps + 1):
        key, step_key, restart_key = jax.random.split(key, 3)
        params, rest, opt_state, metrics = train_step(params, rest, opt_state, data_NxD, step_key)
        window.append(metrics)
        if restart_every and step % restart_every == 0 and step <= steps - restart_every:
            rest, _ = restart(params, rest, restart_key)
        if step % LOG_EVERY == 0 or step == steps:
            recon_W, commit_W, counts_WxK = (np.asarray(x) for x in jax.device_get(jax.tree.map(
                lambda *xs: jnp.stack(xs), *window)))
            usage = codebook_usage(jnp.asarray(counts_WxK.sum(axis=0)))
            row = {"step": step, "recon_loss": float(recon_W.mean()), "commitment": float(commit_W.mean()),
                   "perplexity": float(usage["perplexity"]), "dead_fraction": float(usage["dead_fraction"])}
            history.append(row)
            window = []
            bar.set_postfix(recon=f"{row['recon_loss']:.4f}", ppl=f"{row['perplexity']:.1f}")
        bar.update(1)
    bar.close()
    return nnx.merge(graphdef, params, rest), history


def _apply_in_chunks(model: VQAutoencoder, h_NxD: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(reconstruction [N, D] float32, codes [N] int) of every row, in fixed-size jitted chunks."""
    graphdef, state = nnx.split(model)

    @jax.jit
    def apply(state, h_BxD):
        recon_BxD, vq = nnx.merge(graphdef, state)(h_BxD)
        return recon_BxD, vq.codes

    h_NxD = np.asarray(h_NxD, np.float32).reshape(-1, model.dim)
    recon, codes = [], []
    for start in range(0, len(h_NxD), _ENCODE_CHUNK):
        chunk_BxD = h_NxD[start : start + _ENCODE_CHUNK]
        padded_BxD = np.zeros((_ENCODE_CHUNK, model.dim), np.float32)
        padded_BxD[: len(chunk_BxD)] = chunk_BxD
        recon_BxD, codes_B = jax.device_get(apply(state, padded_BxD))
        recon.append(recon_BxD[: len(chunk_BxD)])
        codes.append(codes_B[: len(chunk_BxD)])
    if not recon:
        return np.zeros((0, model.dim), np.float32), np.zeros((0,), np.int64)
    return np.concatenate(recon), np.concatenate(codes).astype(np.int64)


def encode_steps(model: VQAutoencoder, hiddens: Sequence[np.ndarray]) -> list[list[int]]:
    """One code per step: per example, the codes of its [n_steps, D] hidden states."""
    for index, h in enumerate(hiddens):
        if np.ndim(h) != 2 or np.shape(h)[1] != model.dim:
            raise ValueError(f"hiddens[{index}] must have shape [n_steps, {model.dim}]; got {np.shape(h)}")
    if not hiddens:
        return []
    _, codes_N = _apply_in_chunks(model, np.concatenate([np.asarray(h, np.float32) for h in hiddens]))
    bounds = np.cumsum([0] + [len(h) for h in hiddens])
    return [[int(c) for c in codes_N[lo:hi]] for lo, hi in itertools.pairwise(bounds)]


def autoencoder_report(model: VQAutoencoder, h_NxD) -> dict[str, float]:
    """How well the codes describe h [N, D], in the input's units: reconstruction MSE, the MSE of
    predicting the rows' mean (what a single code could do at best), their ratio, and the usage
    of the codebook over these rows (perplexity, dead fraction, max share, codes used)."""
    h_NxD = np.asarray(h_NxD, np.float32)
    recon_NxD, codes_N = _apply_in_chunks(model, h_NxD)
    recon_mse = float(np.mean((recon_NxD - h_NxD) ** 2))
    mean_mse = float(np.mean((h_NxD - h_NxD.mean(axis=0)) ** 2))
    usage = codebook_usage(jnp.asarray(np.bincount(codes_N, minlength=model.num_codes)))
    return {
        "recon_mse": recon_mse,
        "mean_predictor_mse": mean_mse,
        "relative_mse": recon_mse / mean_mse if mean_mse > 0 else float("nan"),
        "perplexity": float(usage["perplexity"]),
        "dead_fraction": float(usage["dead_fraction"]),
        "max_share": float(usage["max_share"]),
        "codes_used": len(np.unique(codes_N)),
    }


# ----------------------------------------------------------------------------- mixed examples


def code_prefix_examples(examples: Sequence[Example], codes: Sequence[Sequence[int]], *, seed: int) -> list[Example]:
    """Examples for the "codes" task format: the first m steps (m uniform in 0..n_steps, drawn by
    np.random.default_rng([seed, index])) replaced by their code tokens in meta["abstract"]."""
    if len(codes) != len(examples):
        raise ValueError(f"codes has {len(codes)} entries for {len(examples)} examples")
    mixed = []
    for index, (example, example_codes) in enumerate(zip(examples, codes)):
        if len(example_codes) != len(example.steps):
            raise ValueError(f"codes[{index}] has {len(example_codes)} codes for {len(example.steps)} steps")
        m = int(np.random.default_rng([seed, index]).integers(0, len(example.steps) + 1))
        abstract = [ABSTRACT_FORMAT.format(int(c)) for c in example_codes[:m]]
        mixed.append(Example(example.question, example.steps[m:], example.answer,
                             meta={**example.meta, "abstract": abstract}))
    return mixed
