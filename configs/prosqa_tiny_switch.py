"""SWITCH on the comparison's small shortcut-free graphs (`prosqa_three_step`), with the default
job's model: the model learns to open `<swi>`, think in latent slots, and close with `</swi>`.
The CPU-sized member of `scripts/latent_comparison.py --family tiny`.

Steps 1-2 of each 3-step chain (`switch_start=0`, `switch_span=2`) go inside `<swi> ... </swi>`
and step 3 stays written; after `stage0_epochs` of the text with markers, every `epochs_per_stage` epochs one more of them
becomes a latent slot (c=1), until the whole span is latent. Evaluation lets the model switch
itself (policy "model", at most `eval.latent_budget` slots per span).

As in `prosqa_tiny_coconut`, a thought's input is the expected next-token embedding (soft
feedback, inherited) and `latent.thought_loss` trains the position feeding each slot to name the
node its step reaches; that label takes the place of the `<latent>` "stay" label there.

Why the first two steps: step 1 is where the chain is chosen (which of the person's categories
leads to an option). Written out in front of a span of steps 2-3 it fit the training questions
(90% teacher-forced) and not the validation ones (43%, against 96.5% valid first steps for CoT),
so the answers stayed at chance; inside the span, the choice is made in latent steps, as in
Coconut.

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
