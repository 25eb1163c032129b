"""Abstract-CoT on 3-digit x 3-digit multiplication with a keyed round 1 and teacher
distillation (as `prosqa_abstract_keyed`): round 1's z names each partial product a * b_j,
unshifted, two digits per token (6 tokens; `abstract.num_tokens=110` holds the 100 digit pairs
and 10 single digits), and the self-distillation run learns the z the bottleneck model writes
reading the chain. Data, model and optimizer of `multiplication_cot`.

The run measured in README.md ("Abstract-CoT against CoT"), budget included: 50 minutes for the
whole warm-up on one core, against `multiplication_cot` given the same 50 minutes. The
distilled model stays near 0% for its first ~7,000 steps before it learns the partial products.

    python train.py --config multiplication_abstract_keyed --workdir runs/multiplication_abstract_keyed
    python eval.py --workdir runs/multiplication_abstract_keyed/round1/distill
"""

import dataclasses

from latent.config import load_preset

MINUTES = 50


def get_config():
    base = load_preset("multiplication_abstract")
    return base.replace(
        train=dataclasses.replace(base.train, steps=1_000_000, time_limit_minutes=MINUTES),
        abstract=dataclasses.replace(base.abstract, num_tokens=110, rounds=1, round1="keyed", distill_z="teacher"),
    )
