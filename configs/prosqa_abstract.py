"""Abstract-CoT with the paper's warm-up on the comparison's shortcut-free graphs
(`prosqa_three_step`, inherited from `prosqa_tiny_coconut`), with the default job's model: 64
reserved abstract tokens stand in for the verbal chain, decoded under the abstract constraint
(spans of at most `abstract.max_tokens`=8).

`python train.py --config prosqa_abstract` runs the warm-up by policy iteration
(latent.methods.abstract_cot.warmup): 2 rounds, each a bottlenecked SFT run on [x; c; z; y] (the answer may
not attend to the chain c; round 1 draws z at random, round 2 samples it from pi(z | x, c)) and
a self-distillation run on [x; z'; y] with z' ~ pi(z' | x): 4 runs of `STEPS_PER_PHASE`=1,750
steps, each from the previous one's weights. Data (9,600 graphs), model (d=64 x 4, Canon layers)
and optimizer (AdamW lr 3e-3 constant, batch 16) are those of the CoT arm of
`scripts/latent_comparison.py --family tiny` (prosqa_tiny_coconut without latents), so the two
compare under one budget (`train.time_limit_minutes`, which bounds the whole warm-up).

On these graphs the paper's recipe leaves the abstract tokens empty: sampled from the question
alone they do not name the result, and nothing in SFT rewards a z that does (the paper follows
the warm-up with RL). `prosqa_abstract_keyed` is the variant whose z carries the chain.

Results: docs/results/abstract_cot.md ("Abstract-CoT's own recipe and the other variants
measured": the `prosqa_three_step` paper-recipe rows and the notes under the table; the
`prosqa_tiny` row is the same recipe on earlier, easier graphs).

    python train.py --config prosqa_abstract --workdir runs/prosqa_abstract
    python eval.py --workdir runs/prosqa_abstract/round2/distill
"""

import dataclasses

from latent.config import AbstractConfig, LatentConfig
from latent.config_io import load_preset

STEPS_PER_PHASE = 1750  # 4 phases: 7,000 steps in all (the default job's budget before issue 21)


def get_config():
    base = load_preset("prosqa_tiny_coconut")
    return base.replace(
        task=dataclasses.replace(base.task, format="abstract"),
        train=dataclasses.replace(base.train, steps=STEPS_PER_PHASE, eval_every=STEPS_PER_PHASE),
        latent=LatentConfig(),
        abstract=AbstractConfig(num_tokens=64, max_tokens=8, rounds=2),
    )
