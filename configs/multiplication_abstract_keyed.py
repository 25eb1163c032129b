"""Abstract-CoT on 3-digit x 3-digit multiplication with a keyed round 1 and teacher
distillation (as `prosqa_abstract_keyed`): round 1's z names each partial product a * b_j,
unshifted, two digits per token (6 tokens; `abstract.num_tokens=110` holds the 100 digit pairs
and 10 single digits), and the self-distillation run learns the z the bottleneck model writes
reading the chain. Model (d=64 x 4, Canon layers), lr 3e-3 and batch 16 of `multiplication_cot`;
three departures, each for what the runs showed:
- 48,000 training examples, not 9,600, and weight decay 0.1, not 0.01 (the CoT arm it is
  measured against gets the same). The distilled answer has to learn to add three partial
  products read from z, and it does so in a sudden jump after a long stretch near zero; with
  weight decay 0.01 the jump came late or not at all depending on the seed; with 0.1 every seed
  tried (0-4) made it within the budget. Why the stronger decay helps was not measured.
- A short bottleneck run (1,750 steps) and a long distillation (26,000), each with a cosine
  schedule ending with it. The bottleneck model answers from the chain through z's positions,
  not from z (`eval.py` reports `chain_leak`: with another question's chain its answer is that
  chain's), so it has nothing to teach the answer; it only has to write z from the chain, which
  1,750 steps are enough for. The distillation is where the answer learns to add the partial
  products.
- The whole warm-up fits in 20 minutes on one core, the CoT arm's budget; the limit is a cap.
The keys are the partial products, unshifted: a z naming the running totals the chain also
writes, or the partial products aligned to their columns (`abstract.key_layout=aligned`), did
worse.

Results: docs/results/abstract_cot.md (the `multiplication_3x3` rows of the first table; the
recipe table under its first note, which tried each departure; "The bottleneck run teaches the
answer nothing about z"; "The distilled model learns late" for when each seed jumped; "What the
key names matters").

    python train.py --config multiplication_abstract_keyed --workdir runs/multiplication_abstract_keyed
    python eval.py --workdir runs/multiplication_abstract_keyed/round1/distill
"""

import dataclasses

from latent.config_io import load_preset

MINUTES, N_TRAIN, WEIGHT_DECAY, BOTTLENECK_STEPS, DISTILL_STEPS = 20, 48_000, 0.1, 1_750, 26_000


def get_config():
    keyed = load_preset("prosqa_abstract_keyed")  # the recipe: one round, keyed round 1, teacher distillation
    base = load_preset("multiplication_abstract")  # model, optimizer
    return base.replace(
        task=dataclasses.replace(base.task, n_train=N_TRAIN),
        optimizer=dataclasses.replace(base.optimizer, schedule="cosine", weight_decay=WEIGHT_DECAY),
        train=dataclasses.replace(base.train, steps=keyed.train.steps, time_limit_minutes=MINUTES),
        abstract=dataclasses.replace(keyed.abstract, num_tokens=110, bottleneck_steps=BOTTLENECK_STEPS,
                                     distill_steps=DISTILL_STEPS),
    )
