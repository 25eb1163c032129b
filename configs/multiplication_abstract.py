"""Abstract-CoT on 3-digit x 3-digit multiplication: the warm-up of `prosqa_abstract` (2 rounds
of bottleneck SFT + self-distillation, round 1's z drawn at random, z' ~ pi(z' | x); 64 abstract
tokens, spans of at most 8) on the data, model and optimizer of `multiplication_cot` (9,600
examples; d=64 x 4, Canon layers; AdamW lr 3e-3 constant, batch 16): 4 runs of 1,750 steps, as
many in all as `multiplication_cot`'s 7,000.

Here too the paper's recipe failed to make z carry the chain; `multiplication_abstract_keyed` is
the variant whose z names the partial products.

Results: docs/results/abstract_cot.md ("Abstract-CoT's own recipe and the other variants
measured", the `multiplication_3x3` paper-recipe row).

    python train.py --config multiplication_abstract --workdir runs/multiplication_abstract
    python eval.py --workdir runs/multiplication_abstract/round2/distill
"""

import dataclasses

from latent.config import AbstractConfig
from latent.config_io import load_preset


def get_config():
    base = load_preset("multiplication_cot")
    return base.replace(
        task=dataclasses.replace(base.task, format="abstract"),
        train=dataclasses.replace(base.train, steps=1750, eval_every=1750),
        abstract=AbstractConfig(num_tokens=64, max_tokens=8, rounds=2),
    )
