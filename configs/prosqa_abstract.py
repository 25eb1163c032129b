"""Abstract-CoT on the default job's small graphs (`prosqa_tiny`), with the default job's model:
64 reserved abstract tokens stand in for the verbal chain, decoded under the abstract constraint.

`python train.py --config prosqa_abstract` runs the warm-up by policy iteration
(latent.train.abstract): 2 rounds, each a bottlenecked SFT run on [x; c; z; y] (the answer may
not attend to the chain c; round 1 draws z at random, round 2 samples it from pi(z | x, c)) and
a self-distillation run on [x; z'; y] with z' ~ pi(z' | x). Data, model and optimizer are those
of the CoT arm of `scripts/latent_comparison.py --family tiny` (prosqa_tiny_coconut without
latents), so the two compare under one budget (`train.time_limit_minutes`).

    python train.py --config prosqa_abstract --workdir runs/prosqa_abstract
    python eval.py --workdir runs/prosqa_abstract/round2/distill
"""

import dataclasses

from latent.config import AbstractConfig, LatentConfig
from latent.config_io import load_preset

STEPS_PER_PHASE = 1750  # 4 phases: the default job's 7000 steps


def get_config():
    base = load_preset("prosqa_tiny_coconut")
    return base.replace(
        task=dataclasses.replace(base.task, format="abstract"),
        train=dataclasses.replace(base.train, steps=STEPS_PER_PHASE, eval_every=STEPS_PER_PHASE),
        latent=LatentConfig(),
        abstract=AbstractConfig(num_tokens=64, max_tokens=8, rounds=2),
    )
