"""SWITCH on generated ProsQA: the model learns to open `<swi>`, think in latent slots, and close
with `</swi>`.

Each example wraps 2 reasoning steps (from the second one on) in `<swi> ... </swi>`; every
`epochs_per_stage` epochs one more of them becomes a latent slot (c=1), until the whole span is
latent. Evaluation lets the model switch itself (policy "model", at most `eval.latent_budget`
slots per span). To choose the span by entropy instead, train a CoT run first and point at it:
`latent.switch_rule=entropy latent.switch_model=runs/prosqa_cot`. Sized for a 2-core CPU; on an
accelerator raise model.*, task.n_train and train.steps.

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
