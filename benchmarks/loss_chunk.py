"""The output head over a large vocabulary, as ratios measured in one run:

    nice python benchmarks/loss_chunk.py [--vocab 50257] [--chunk 32] [--repeats 5]

A GPT-2-small-ish but CPU-sized decoder (d_model 256, 4 layers, vocab 50,257, batch 8 x 256
positions) on synthetic Coconut-shaped sequences: a left-padded question of `--prefix` positions
(unlabelled, ~60% of the sequence as in ProsQA CoT), `--k` latent slots, a right-padded suffix
(<eot>, steps, answer) whose tokens after the first are labelled. For each step, compiled temp
bytes (`memory_analysis`, the compiler's own count) and the median step time:

- plain, old: SFT on the same sequences (the k slots hold a token), full [B, T, V] logits;
- plain, new: train.loss_chunk, the head only at the labelled positions (`label_positions`),
  `--chunk` positions at a time;
- plain, labels only: the head at the labelled positions in one chunk (what gathering alone saves);
- latent, old / new: Coconut's step (prefix pass, scan over the k slots, suffix pass), its suffix
  loss from logits / chunked from hidden states.

Every step processes the same B x T positions, so tokens/s ratios are inverse step-time ratios.
A second, small shape (`--small`: the default preset's model, d 64, vocab 128, batch 16) shows
what the new path costs where the head is cheap. Steps alternate (old, new, ...) and the median
of each is kept, so machine noise hits all alike. Results go to benchmarks/results/loss_chunk.json.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import time
from pathlib import Path
from typing import NamedTuple

import jax
import numpy as np
from flax import nnx

from latent.config import OptimizerConfig
from latent.config_io import load_preset
from latent.data import pipeline
from latent.methods.coconut.objective import latent_objective
from latent.methods.sft import sft_objective
from latent.models import presets
from latent.nn.transformer import Transformer
from latent.train.optimizer import make_optimizer
from latent.train.step import init_state, make_train_step


class Shape(NamedTuple):
    name: str
    model: object  # ModelConfig
    batch: int
    prefix: int
    k: int
    suffix: int


def latent_batch(shape: Shape, vocab: int, seed: int = 0) -> dict:
    """A Coconut batch: every row's question fills 80-100% of the prefix (left-padded), all k
    slots real, the suffix 70-100% full (right-padded), labelled after its first token (<eot>)."""
    rng = np.random.default_rng(seed)
    B, P, K, S = shape.batch, shape.prefix, shape.k, shape.suffix
    prefix_mask = np.arange(P)[None] >= (P - rng.integers(int(0.8 * P), P + 1, B))[:, None]
    suffix_mask = np.arange(S)[None] < rng.integers(int(0.7 * S), S + 1, B)[:, None]
    suffix_loss_mask = suffix_mask & (np.arange(S)[None] > 0)
    return {
        "prefix": np.where(prefix_mask, rng.integers(0, vocab, (B, P)), 0).astype(np.int32),
        "prefix_mask": prefix_mask,
        "latent_mask": np.ones((B, K), bool),
        "suffix": np.where(suffix_mask, rng.integers(0, vocab, (B, S)), 0).astype(np.int32),
        "suffix_mask": suffix_mask,
        "suffix_loss_mask": suffix_loss_mask,
        "thought_targets": np.full((B, K), -1, np.int32),
    }


def as_plain(batch: dict, latent_id: int, bucket: int) -> dict:
    """The same sequences as one token batch (benchmarks/latent_step.py's), with label_positions."""
    tokens = np.concatenate([batch["prefix"], np.full(batch["latent_mask"].shape, latent_id), batch["suffix"]], 1)
    mask = np.concatenate([batch["prefix_mask"], batch["latent_mask"], batch["suffix_mask"]], 1)
    loss_mask = np.concatenate(
        [np.zeros_like(batch["prefix_mask"]), np.zeros_like(batch["latent_mask"]), batch["suffix_loss_mask"]], 1)
    out = {"tokens": tokens.astype(np.int32), "padding_mask": mask, "loss_mask": loss_mask}
    return out | {"label_positions": pipeline.label_positions(loss_mask, pipeline.label_width(loss_mask, bucket))}


def measure(shape: Shape, chunk: int, repeats: int) -> dict:
    model = Transformer(shape.model, rngs=nnx.Rngs(0))
    graphdef, params = nnx.split(model, nnx.Param)
    optimizer, schedule = make_optimizer(OptimizerConfig(), 100)
    state = init_state(params, optimizer)
    latent = latent_batch(shape, shape.model.vocab_size)
    plain = as_plain(latent, latent_id=1, bucket=32)
    everywhere = {k: v for k, v in plain.items() if k != "label_positions"}
    steps = {  # name: (objective, batch)
        "plain_old": (sft_objective, everywhere),
        "plain_new": (lambda m, b: sft_objective(m, b, loss_chunk=chunk), plain),
        "plain_labels_only": (lambda m, b: sft_objective(m, b, loss_chunk=10**9), plain),
        "latent_old": (latent_objective("full"), latent),
        "latent_new": (latent_objective("full", loss_chunk=chunk), latent),
    }
    compiled, temp_bytes, losses = {}, {}, {}
    for name, (objective, batch) in steps.items():
        jitted = jax.jit(make_train_step(graphdef, optimizer, schedule, objective=objective))
        compiled[name] = jitted.lower(state, batch).compile()
        temp_bytes[name] = compiled[name].memory_analysis().temp_size_in_bytes
        losses[name] = float(jax.block_until_ready(compiled[name](state, batch))[1]["loss"])  # warm-up
    seconds = {name: [] for name in steps}
    for _ in range(repeats):
        for name, (_, batch) in steps.items():
            start = time.perf_counter()
            jax.block_until_ready(compiled[name](state, batch))
            seconds[name].append(time.perf_counter() - start)
    median = {name: statistics.median(s) for name, s in seconds.items()}
    positions = shape.batch * (shape.prefix + shape.k + shape.suffix)
    return {
        "shape": shape._asdict() | {"model": {f: getattr(shape.model, f) for f in
                                                        ("vocab_size", "d_model", "n_layers", "d_ff", "tie_embeddings")}},
        "chunk": chunk,
        "label_width": int(plain["label_positions"].shape[1]),
        "labelled_fraction": float(plain["loss_mask"].sum() / plain["padding_mask"].sum()),
        "loss": losses,
        "temp_bytes": temp_bytes,
        "step_s_median": median,
        "step_s_all": seconds,
        "tokens_per_s": {name: positions / s for name, s in median.items()},
        "ratios": {
            "plain_new_over_old_temp": temp_bytes["plain_new"] / temp_bytes["plain_old"],
            "plain_new_over_old_time": median["plain_new"] / median["plain_old"],
            "plain_old_over_latent_old_time": median["plain_old"] / median["latent_old"],
            "plain_new_over_latent_old_time": median["plain_new"] / median["latent_old"],
            "plain_new_over_latent_new_time": median["plain_new"] / median["latent_new"],
            "latent_new_over_old_temp": temp_bytes["latent_new"] / temp_bytes["latent_old"],
            "latent_new_over_old_time": median["latent_new"] / median["latent_old"],
        },
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--vocab", type=int, default=50257)
    parser.add_argument("--chunk", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--no-small", dest="small", action="store_false", help="skip the default preset's shape")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "loss_chunk.json"))
    args = parser.parse_args()

    large = Shape("gpt2_vocab", presets.gpt2(vocab_size=args.vocab, d_model=256, n_layers=4, n_heads=4, n_kv_heads=4,
                                             d_ff=1024, max_seq_len=512), batch=8, prefix=154, k=6, suffix=96)
    shapes = [large]
    if args.small:
        default_model = dataclasses.replace(load_preset("default").model, vocab_size=128)
        shapes.append(Shape("default_preset", default_model, batch=16, prefix=64, k=2, suffix=62))
    out = {"load_before": os.getloadavg(), "jax": jax.__version__, "xla_flags": os.environ.get("XLA_FLAGS", "")}
    for shape in shapes:
        out[shape.name] = measure(shape, args.chunk, args.repeats)
        print(shape.name, json.dumps(out[shape.name]["ratios"], indent=2), flush=True)
        print("  temp MB", {k: round(v / 2**20, 1) for k, v in out[shape.name]["temp_bytes"].items()})
        print("  step s", {k: round(v, 3) for k, v in out[shape.name]["step_s_median"].items()}, flush=True)
    out["load_after"] = os.getloadavg()
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
