"""Can a model config learn content lookup? Multi-query associative recall, trained from scratch.

    python scripts/recall_probe.py                                  # default job's model shape
    python scripts/recall_probe.py --layers 2 --plain --lr 1e-3 --steps 4000

A sequence lists `--pairs` key-value pairs, then asks for every key again in a shuffled order:
`k1 v1 k2 v2 ... | kq1 vq1 kq2 vq2 ...`; the loss is on the asked values only. Keys and values
are drawn afresh for each sequence, so the only way past chance is to find the earlier
occurrence of the asked key and copy the token after it: the lookup that ProsQA's chain needs
("Tom is a" -> the object of the statement about Tom). Prints loss and accuracy on the asked
values every `--log-every` steps. Without any lookup, copying a listed value that has not been
asked for yet scores the mean of 1/pairs, ..., 1/1 (0.408 with 6 pairs): look for accuracy well
above that.
"""

from __future__ import annotations

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from latent.models import presets
from latent.nn.transformer import Transformer

N_KEYS = N_VALUES = 30
N_FILLERS = 4  # vocab 64 = 30 keys + 30 values + 4 fillers


def recall_batch(rng: np.random.Generator, batch_size: int, pairs: int, gap: int = 0) -> np.ndarray:
    """int32 [B, 2 * pairs * (2 + gap)]: the pairs (keys 0..29, values 30..59), then each key again
    with its value. `gap` fixed filler tokens (60, 61, ...) sit between every key and its value, as
    "is a" sits between "Tom" and his concept in ProsQA."""
    if not 0 <= gap <= N_FILLERS:
        raise ValueError(f"--gap must be in 0..{N_FILLERS}; got {gap}")
    keys_BxP = np.stack([rng.choice(N_KEYS, pairs, replace=False) for _ in range(batch_size)])
    values_BxP = N_KEYS + rng.integers(0, N_VALUES, (batch_size, pairs))
    order_BxP = np.stack([rng.permutation(pairs) for _ in range(batch_size)])
    width = 2 + gap
    seq_BxPxW = np.empty((batch_size, 2 * pairs, width), np.int32)
    seq_BxPxW[:, :, 1:-1] = N_KEYS + N_VALUES + np.arange(gap)
    seq_BxPxW[:, :pairs, 0], seq_BxPxW[:, :pairs, -1] = keys_BxP, values_BxP
    seq_BxPxW[:, pairs:, 0] = np.take_along_axis(keys_BxP, order_BxP, 1)
    seq_BxPxW[:, pairs:, -1] = np.take_along_axis(values_BxP, order_BxP, 1)
    return seq_BxPxW.reshape(batch_size, -1)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--d-model", type=int, default=64)
    parser.add_argument("--plain", action="store_true", help="no output gate, no QK-norm")
    parser.add_argument("--gpt2", action="store_true", help="GPT-2 block (learned positions) instead of Qwen3")
    parser.add_argument("--canon", type=int, default=0, help="model.canon: previous positions mixed into each attention input")
    parser.add_argument("--init-std", type=float, default=0.02)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--pairs", type=int, default=6)
    parser.add_argument("--gap", type=int, default=0, help="filler tokens between each key and its value")
    parser.add_argument("--log-every", type=int, default=500)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    shape = dict(vocab_size=64, d_model=args.d_model, n_layers=args.layers, n_heads=4, max_seq_len=2 * args.pairs * (2 + args.gap))
    if args.gpt2:
        cfg = presets.gpt2(**shape, d_ff=4 * args.d_model)
    else:
        cfg = presets.gated(presets.qwen3(**shape, n_kv_heads=2, d_ff=3 * args.d_model, rope_theta=10000.0))
        if args.plain:
            cfg = cfg.replace(attn_gate="none", qk_norm=False)
    cfg = cfg.replace(init_std=args.init_std, canon=args.canon)
    model = Transformer(cfg, rngs=nnx.Rngs(args.seed))
    optimizer = nnx.Optimizer(model, optax.adamw(args.lr, b2=0.95, weight_decay=0.01), wrt=nnx.Param)
    width = 2 + args.gap
    # Inputs are seq[:, :-1]; position i predicts token i + 1. The asked values sit at
    # pairs * width + width - 1 + j * width, so they are predicted one position earlier.
    first_asked_value = args.pairs * width + width - 1
    asked = slice(first_asked_value - 1, None, width)

    @nnx.jit
    def train_step(model, optimizer, seq_BxT):
        def loss_fn(model):
            logits_BxQxV = model(seq_BxT[:, :-1]).logits[:, asked]
            target_BxQ = seq_BxT[:, first_asked_value::width]
            loss = optax.softmax_cross_entropy_with_integer_labels(logits_BxQxV, target_BxQ).mean()
            return loss, (jnp.argmax(logits_BxQxV, -1) == target_BxQ).mean()

        (loss, accuracy), grads = nnx.value_and_grad(loss_fn, has_aux=True)(model)
        optimizer.update(model, grads)
        return loss, accuracy

    rng = np.random.default_rng(args.seed)
    start = time.perf_counter()
    for step in range(1, args.steps + 1):
        loss, accuracy = train_step(model, optimizer, jnp.asarray(recall_batch(rng, args.batch_size, args.pairs, args.gap)))
        if step % args.log_every == 0 or step == args.steps:
            print(f"step {step}: loss {float(loss):.3f}, accuracy {float(accuracy):.3f}, "
                  f"{time.perf_counter() - start:.0f} s", flush=True)
    jax.block_until_ready(loss)


if __name__ == "__main__":
    main()
