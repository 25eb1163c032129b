"""Abstract-CoT on `prosqa_three_step` with two departures from the paper's warm-up that make z
carry the chain here: round 1's z names each step's node (`abstract.round1=keyed`: one abstract
token per node through a seeded one-to-one map) and the self-distillation run learns the z the
bottleneck model writes with the chain in view (`abstract.distill_z=teacher`). One round: a
bottleneck run on [x; c; z_keyed; y], then self-distillation on [x; z'; y].

The run measured in README.md ("Abstract-CoT against CoT"), budget included: 40 minutes for the
whole warm-up, shared evenly by its two runs, which made 7,441 bottleneck and 9,516 distillation
steps on one core; those step counts are now the phases' own (a warm-up stops at a phase cut short
by the time limit, which stays as a cap; the schedule is constant, so the counts change nothing else). It reached 80.0% with 3.0 abstract tokens against CoT's 77.5% with 20.0 reasoning tokens
in the same 40 minutes. The distilled model sat at chance for its first 3,500 steps: a shorter
budget can stop it there.

    python train.py --config prosqa_abstract_keyed --workdir runs/prosqa_abstract_keyed
    python eval.py --workdir runs/prosqa_abstract_keyed/round1/distill
"""

import dataclasses

from latent.config_io import load_preset

MINUTES = 40


def get_config():
    base = load_preset("prosqa_abstract")
    return base.replace(
        train=dataclasses.replace(base.train, steps=1_000_000, time_limit_minutes=MINUTES),
        abstract=dataclasses.replace(base.abstract, rounds=1, round1="keyed", distill_z="teacher",
                                     bottleneck_steps=7_441, distill_steps=9_516),
    )
