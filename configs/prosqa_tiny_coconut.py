"""Coconut on small shortcut-free graphs, with the default job's model: the CPU-sized member of the
CoT / no-CoT / Coconut / SWITCH comparison (`scripts/latent_comparison.py --family tiny`), and
the recipe the default job runs on a shorter curriculum.

Task: `prosqa_three_step`, 9,600 training graphs (`N_TRAIN`) of 8-11 nodes, every question 3
steps, the distractor as deep from its person as the target from the root, so no single
statement gives the answer away. Model, optimizer and batch size of `prosqa_mini_cot` (gated
Qwen3-style decoder d=64 x 4 layers with Canon layers; AdamW lr 3e-3, 100 warm-up steps, weight
decay 0.01; batch 16), the schedule constant, as in Coconut.

Curriculum: stage 0 is plain CoT for `stage0_epochs`=8 epochs (the skill the later stages
compress); stages 1-2 then replace the first 1-2 steps by one continuous thought each (c=1),
`epochs_per_stage`=2 epochs apiece; from stage 3 on every step is dropped and two thoughts stand
for the three (`max_latent_stage=2`, `pad_latent_to_max`): evaluation decodes
`question <bot> [2 thoughts] <eot> ### answer`, the last hop made by the answer itself. The
preset's own `train.steps` are 16 epochs of 600 steps, the last 4 with every step latent; the
comparison runs it open-ended under its 40-minute limit.

The optimizer is reset at each stage, as in Coconut, and the learning rate warms up again over
100 steps after each reset (`latent.reset_warmup_steps`). The measured runs had that re-warm by
accident (until issue 21 a reset restarted the schedule); rerun without it, fresh Adam moments at
the full rate moved every weight at once and the all-latent stage fell to chance. With it the
preset updates exactly as those runs did.

Two choices beyond Coconut's recipe decided the all-latent stage; without either it sat at chance:
- `model.feedback="soft"`: a thought's input is the expected next-token embedding p^T E (Soft
  Thinking), so a thought that concludes a step looks to later positions like the word it names,
  which the answer already learned to copy from written chains.
- `latent.thought_loss=1.0`: what the last thought of each replaced step receives is trained to
  name the step's last word (the node it reaches). It takes both: with the hidden-state feedback
  and this target the last step's node was in the thoughts while the answer after <eot> stayed
  at chance (it never learned to read a hidden-state thought); with soft feedback and no target
  the thought is trained only through the answer word, which copying one of the two options
  gets half right without reading anything.
Also unlike Coconut's recipe: stage 0 longer than the others (`stage0_epochs`), so the chains
are learned before they go latent, and fewer thoughts than steps. Three thoughts (c=1,
`latent.max_latent_stage=3`) or two per step (c=2, 6 thoughts) scored about the same with more
positions per answer.

Results: docs/results/latent_comparison.md (the "Coconut" rows of the first table; "The optimizer
reset (issue 21)" for the re-warm; "Against the aims" for the curve, the token counts and what
the thoughts hold; the probe table and the notes under it for soft feedback and the thought loss).

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
