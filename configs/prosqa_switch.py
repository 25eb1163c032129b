"""SWITCH on generated ProsQA: the model learns to open `<swi>`, think in latent slots, and close
with `</swi>`.

Model, data and optimizer of `prosqa_coconut` (d=128 x 4 layers, 6,000 full-size graphs, AdamW
lr 2e-3 constant, batch 32), 12 epochs. Each example wraps 2 reasoning steps (from the second
one on: `switch_start=1`, `switch_span=2`) in `<swi> ... </swi>`; every `epochs_per_stage`=3
epochs one more of them becomes a latent slot (c=1, identity feedback, no thought loss), until
the whole span is latent; the optimizer is reset at each stage. Evaluation lets the model switch
itself (policy "model", at most `eval.latent_budget`=4 slots per span, 8 in all). To choose the
span by entropy instead, train a CoT run first and point at it:
`latent.switch_rule=entropy latent.switch_model=runs/prosqa_cot`. Sized for a 2-core CPU; on an
accelerator raise model.*, task.n_train and train.steps.

Results: none reported for this preset yet; `scripts/latent_comparison.py --family full` runs it.
On the comparison's small graphs a span that left step 1 written stayed at chance, with or
without thought targets, where a span over steps 1-2 did not (docs/results/latent_comparison.md,
the "SWITCH" rows; `prosqa_tiny_switch` says why).

    python train.py --config prosqa_switch --workdir runs/prosqa_switch
    python eval.py --workdir runs/prosqa_switch --data ../shared/data/prosqa_valid.json
"""

import dataclasses

from latent.config import Config, LatentConfig
from latent.config_io import load_preset


def get_config() -> Config:
    base = load_preset("prosqa_coconut")  # same model, data, optimizer and budget per epoch
    return base.replace(
        train=dataclasses.replace(base.train, steps=12 * base.task.n_train // base.train.batch_size),
        eval=dataclasses.replace(base.eval, max_new_tokens=96, latent_budget=4, max_latent_total=8),
        latent=LatentConfig(
            mode="switch", c_thought=1, epochs_per_stage=3, switch_rule="fixed", switch_start=1, switch_span=2,
            reset_optimizer=True,
        ),
    )
