"""Coconut evaluation decodes each example with the thoughts training gave it: past the last
stage without latent.pad_latent_to_max an example with fewer steps than max_latent_stage gets
fewer slots (latent.methods.coconut.curriculum.stage_layout), in training and now in evaluation too."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from latent.config_io import apply_overrides, load_preset
from latent.data.splits import fit_tokenizer, resolve_vocab
from latent.data.tasks import Example
from latent.eval.evaluator import Evaluator
from latent.infer.engine import make_generate
from latent.methods.coconut import CoconutSource, curriculum
from latent.models import presets
from latent.nn import Transformer

NAMES = ["wumpus", "yumpus", "zumpus", "impus", "rompus", "dumpus"]


def example(n_steps: int, i: int) -> Example:
    chain = NAMES[i % 2: i % 2 + n_steps + 1]
    steps = [f"Every {a} is a {b}." for a, b in zip(chain, chain[1:])]
    return Example(question=f"Tom is a {chain[0]}. {' '.join(steps)} Is Tom a {chain[-1]}?",
                   steps=steps, answer=f"Tom is a {chain[-1]}.")


def test_eval_thoughts_per_example_equal_what_training_gave_at_that_stage():
    examples = [example(n, i) for i, n in enumerate([2, 3, 3, 2, 2, 3])]
    cfg = apply_overrides(load_preset("tiny"), [
        "latent.mode=coconut", "latent.max_latent_stage=3", "latent.c_thought=1", "latent.epochs_per_stage=1",
        "latent.pad_latent_to_max=false", "train.batch_size=6", "eval.max_new_tokens=2",
    ])
    tokenizer = fit_tokenizer(examples, [], "cot")
    cfg = resolve_vocab(cfg, tokenizer)
    source = CoconutSource(cfg, examples, tokenizer, batch_size=6)  # one epoch per step: stage = step
    step = 5  # a model trained for 5 steps last saw stage 4, past max_latent_stage = 3
    stage = source.trained_stage(step)
    assert stage == 4
    trained = curriculum.collate_latent(source.records, [stage] * 6, tokenizer, cfg.latent, None,
                                        curriculum.num_slots(stage, cfg.latent))
    trained_slots = trained["latent_mask"].sum(axis=1).tolist()
    assert trained_slots == [2, 3, 3, 2, 2, 3]  # each example's own min(#steps, 3)

    graphdef, params = nnx.split(Transformer(cfg.model, rngs=nnx.Rngs(0)))
    results = Evaluator(graphdef, cfg.model, tokenizer, examples, lambda p, e: False, cfg.eval,
                        max_len=cfg.task.max_len, progress=False, policy="fixed",
                        latent_steps=source.eval_latent_steps(step, examples))(params)
    by_index = {r["index"]: r["latent_steps"] for r in results["records"]}
    assert [by_index[i] for i in range(6)] == trained_slots


def test_per_example_thoughts_decode_as_each_example_alone():
    cfg = presets.llama(vocab_size=40, d_model=32, n_layers=2, n_heads=4, d_ff=64, max_seq_len=64)
    graphdef, params = nnx.split(Transformer(cfg, rngs=nnx.Rngs(1)))
    bot, eot = 2, 3
    prompt = jnp.asarray([[0, 11, 12, bot], [13, 14, 15, bot]], jnp.int32)
    mask = prompt != 0
    args = (graphdef, cfg, 4, -1, 0, 0.0, 1.0)
    mixed = make_generate(*args, policy="fixed", latent_steps=3, eot_id=eot)(
        params, prompt, mask, jax.random.PRNGKey(0), None, jnp.asarray([1, 3], jnp.int32))
    assert list(np.asarray(mixed.latent_steps)) == [1, 3]
    for b, k in enumerate([1, 3]):
        alone = make_generate(*args, policy="fixed", latent_steps=k, eot_id=eot)(
            params, prompt[b:b + 1, int(b == 0):], mask[b:b + 1, int(b == 0):], jax.random.PRNGKey(0))
        assert list(np.asarray(mixed.tokens[b])) == list(np.asarray(alone.tokens[0]))
