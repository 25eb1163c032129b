"""Abstract-CoT on 3-digit x 3-digit multiplication with a keyed round 1 and teacher
distillation (as `prosqa_abstract_keyed`): round 1's z names each partial product a * b_j,
unshifted, two digits per token (6 tokens; `abstract.num_tokens=110` holds the 100 digit pairs
and 10 single digits), and the self-distillation run learns the z the bottleneck model writes
reading the chain. Data, model and optimizer of `multiplication_cot`.

Measured in README.md ("Abstract-CoT against CoT"), one core, budget included, against
`multiplication_cot` given the same time: with 20 minutes for the whole warm-up (this preset)
92.5% with 6 abstract tokens against CoT's 99.5% with 35; with 50 minutes 13.0% against 99.5%.
In both the distilled model wrote the partial products right (100% / 99% of spans), and it sat
near 0% for its first ~7,000-12,000 steps; in the 50-minute run the answer never learned to sum
them. This preset itself, 20 minutes on one core: 83.0% (train.seed=0) and 10.5% (train.seed=1).
Not yet a reliable recipe: the aim (within 3 points of CoT) is not met here.

    python train.py --config multiplication_abstract_keyed --workdir runs/multiplication_abstract_keyed
    python eval.py --workdir runs/multiplication_abstract_keyed/round1/distill
"""

import dataclasses

from latent.config import load_preset

MINUTES = 20


def get_config():
    keyed = load_preset("prosqa_abstract_keyed")  # the recipe: one round, keyed round 1, teacher distillation
    base = load_preset("multiplication_abstract")  # data, model, optimizer
    return base.replace(
        train=dataclasses.replace(base.train, steps=keyed.train.steps, time_limit_minutes=MINUTES),
        abstract=dataclasses.replace(keyed.abstract, num_tokens=110),  # 100 digit pairs and 10 digits
    )
