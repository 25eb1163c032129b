"""Abstract-CoT on `prosqa_three_step` with two departures from the paper's warm-up that make z
carry the chain here: round 1's z names each step's node (`abstract.round1=keyed`: one abstract
token per node through a seeded one-to-one map) and the self-distillation run learns the z the
bottleneck model writes with the chain in view (`abstract.distill_z=teacher`). One round: a
bottleneck run on [x; c; z_keyed; y], then self-distillation on [x; z'; y].

Measured (README.md, "Abstract-CoT against CoT"): 80.0% with 3.0 abstract tokens against CoT's
77.5% with 20.0 reasoning tokens, 40 minutes each on one core; the distilled model's z is the
keyed chain token for token on 68.5% of validation questions, and it answers all of those right.
That run had `train.time_limit_minutes=40` for the whole warm-up (7,441 bottleneck and 9,516
distillation steps); here each phase runs `STEPS_PER_PHASE` steps, about as many.

    python train.py --config prosqa_abstract_keyed --workdir runs/prosqa_abstract_keyed
    python eval.py --workdir runs/prosqa_abstract_keyed/round1/distill
"""

import dataclasses

from latent.config import load_preset


STEPS_PER_PHASE = 9000


def get_config():
    base = load_preset("prosqa_abstract")
    return base.replace(
        train=dataclasses.replace(base.train, steps=STEPS_PER_PHASE, eval_every=1750),
        abstract=dataclasses.replace(base.abstract, rounds=1, round1="keyed", distill_z="teacher"),
    )
