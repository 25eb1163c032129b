"""Coconut on small shortcut-free graphs (`prosqa_three_step`: 8-11 nodes, every question 3 steps,
the distractor as deep from its person as the target from the root, so no single statement gives
the answer away), with the default job's model (d=64 x 4, Canon layers): the CPU-sized member of
the CoT / no-CoT / Coconut / SWITCH comparison (`scripts/latent_comparison.py --family tiny`).

Stage 0 is plain CoT for `stage0_epochs` epochs (the skill the later stages compress); stages
1-2 then replace the first 1-2 steps by one continuous thought each (c=1), `epochs_per_stage`
epochs apiece; from stage 3 on every step is dropped and two thoughts stand for the three
(`max_latent_stage=2`, `pad_latent_to_max`): evaluation decodes `question <bot> [2 thoughts] <eot>
### answer`, the last hop made by the answer itself. The optimizer is reset at each stage, as in
Coconut, and the learning rate warms up again over 100 steps after each reset
(`latent.reset_warmup_steps`): without that re-warm the all-latent stage sat at chance (47.0-50.0%
from step 8,400 to 10,800, README), with it the preset updates exactly as the measured 40-minute
run did (whose reset restarted the schedule).

Two choices beyond Coconut's recipe, both measured in README.md ("Latent reasoning under one
budget"); without either, the all-latent stage sat at chance here:
- `model.feedback="soft"`: a thought's input is the expected next-token embedding p^T E (Soft
  Thinking), so a thought that concludes a step looks to later positions like the word it names.
- `latent.thought_loss=1.0`: what the last thought of each replaced step receives is trained to
  name the step's last word (the node it reaches). It takes both: with the hidden-state feedback
  and this target, the last step's node was in the thoughts (77% teacher-forced) while the
  answer after <eot> stayed at 46.5%; with soft feedback and no target, 47.0%.
Also unlike Coconut's recipe: stage 0 longer than the others (`stage0_epochs`), so the chains
are learned before they go latent, and fewer thoughts than steps. Measured alternatives (README):
c=2 with a thought per step for all three (6 thoughts) and c=1 with three thoughts scored within
1.5 points of this one (87.5 and 90.0% against 89.0%).

    python train.py --config prosqa_tiny_coconut --workdir runs/prosqa_tiny_coconut
"""

import dataclasses

from latent.config import LatentConfig
from latent.config_io import load_preset

N_TRAIN, STAGE0_EPOCHS, EPOCHS_PER_STAGE, STAGES = 9600, 8, 2, 2


def get_config():
    base = load_preset("prosqa_mini_cot")  # model, optimizer and batch size of the CoT job on small graphs
    steps_per_epoch = N_TRAIN // base.train.batch_size
    return base.replace(
        model=base.model.replace(feedback="soft"),
        task=dataclasses.replace(base.task, name="prosqa_three_step", n_train=N_TRAIN),
        optimizer=dataclasses.replace(base.optimizer, schedule="constant"),
        train=dataclasses.replace(
            base.train, steps=(STAGE0_EPOCHS + (STAGES + 2) * EPOCHS_PER_STAGE) * steps_per_epoch, eval_every=1200,
        ),
        eval=dataclasses.replace(base.eval, max_new_tokens=32),
        latent=LatentConfig(
            mode="coconut", c_thought=1, stage0_epochs=STAGE0_EPOCHS, epochs_per_stage=EPOCHS_PER_STAGE,
            max_latent_stage=STAGES, pad_latent_to_max=True, reset_optimizer=True, reset_warmup_steps=100,
            thought_loss=1.0,
        ),
    )
