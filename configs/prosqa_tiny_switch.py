"""SWITCH on the comparison's small shortcut-free graphs (`prosqa_three_step`), with the default
job's model: the model learns to open `<swi>`, think in latent slots, and close with `</swi>`.
The CPU-sized member of `scripts/latent_comparison.py --family tiny`.

Model (d=64 x 4, Canon layers), data (9,600 graphs), optimizer (AdamW lr 3e-3 constant, batch
16) and `train.steps` of `prosqa_tiny_coconut`. Steps 1-2 of each 3-step chain
(`switch_start=0`, `switch_span=2`) go inside `<swi> ... </swi>` and step 3 stays written; after
`stage0_epochs`=8 epochs of the text with markers, every `epochs_per_stage`=2 epochs one more of
them becomes a latent slot (c=1), until the whole span is latent: the Coconut preset's stage
lengths. Evaluation lets the model switch itself (policy "model", at most `eval.latent_budget`=3
slots per span and 6 in all).

As in `prosqa_tiny_coconut`, a thought's input is the expected next-token embedding (soft
feedback, inherited) and `latent.thought_loss=1.0` trains the position feeding each slot to name
the node its step reaches; that label takes the place of the `<latent>` "stay" label there. The
optimizer is reset at each stage (Adam moments only; the schedule runs on) with no re-warm
(`latent.reset_warmup_steps` stays 0): the preset was rerun as it is after issue 21's reset fix.

Why the first two steps: step 1 is where the chain is chosen (which of the person's categories
leads to an option). Written out in front of a span of steps 2-3 it fit the training questions
and not the validation ones (where CoT's written first steps are nearly always valid), so the
answers stayed at chance, with or without thought targets; inside the span, the choice is made in
latent steps, as in Coconut.

Results: docs/results/latent_comparison.md (the "SWITCH" rows of the first table: the preset
after and before the reset fix, and the steps 2-3 variants; "Against the aims", the SWITCH item,
for what its thoughts hold and why steps 2-3 failed).

    python train.py --config prosqa_tiny_switch --workdir runs/prosqa_tiny_switch
"""

import dataclasses

from latent.config import LatentConfig
from latent.config_io import load_preset


def get_config():
    base = load_preset("prosqa_tiny_coconut")  # same model, data, optimizer and budget per epoch
    return base.replace(
        eval=dataclasses.replace(base.eval, max_new_tokens=64, latent_budget=3, max_latent_total=6),
        latent=LatentConfig(
            mode="switch", c_thought=1, stage0_epochs=8, epochs_per_stage=2, switch_rule="fixed", switch_start=0,
            switch_span=2, reset_optimizer=True, thought_loss=1.0,
        ),
    )
