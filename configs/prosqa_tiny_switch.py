"""SWITCH on the comparison's small shortcut-free graphs (`prosqa_three_step`), with the default
job's model: the model learns to open `<swi>`, think in latent slots, and close with `</swi>`.
The CPU-sized member of `scripts/latent_comparison.py --family tiny`.

Steps 2-3 of each 3-step chain (`switch_start=1` counts from 0) go inside `<swi> ... </swi>`;
after `stage0_epochs` of the text with markers, every `epochs_per_stage` epochs one more of them
becomes a latent slot (c=1), until the whole span is latent. Evaluation lets the model switch
itself (policy "model", at most `eval.latent_budget` slots per span).

As in `prosqa_tiny_coconut`, a thought's input is the expected next-token embedding (soft
feedback, inherited) and `latent.thought_loss` trains the position feeding each slot to name the
node its step reaches; that label takes the place of the `<latent>` "stay" label there.

    python train.py --config prosqa_tiny_switch --workdir runs/prosqa_tiny_switch
"""

import dataclasses

from latent.config import LatentConfig, load_preset


def get_config():
    base = load_preset("prosqa_tiny_coconut")  # same model, data, optimizer and budget per epoch
    return base.replace(
        eval=dataclasses.replace(base.eval, max_new_tokens=64, latent_budget=3, max_latent_total=6),
        latent=LatentConfig(
            mode="switch", c_thought=1, stage0_epochs=8, epochs_per_stage=2, switch_rule="fixed", switch_start=1,
            switch_span=2, reset_optimizer=True, thought_loss=1.0,
        ),
    )
