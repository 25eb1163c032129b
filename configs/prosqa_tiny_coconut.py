"""Coconut on small shortcut-free graphs (`prosqa_three_step`: 8-11 nodes, every question 3 steps,
the distractor as deep from its person as the target from the root, so no single statement gives
the answer away), with the default job's model (d=64 x 4, Canon layers): the CPU-sized member of
the CoT / no-CoT / Coconut / SWITCH comparison (`scripts/latent_comparison.py --family tiny`).

Stages of `epochs_per_stage` epochs: stage 0 is plain CoT (the skill the later stages compress),
stages 1-3 replace the first 1-3 steps by one continuous thought each; from stage 3 on every
step is latent and evaluation decodes `question <bot> [3 thoughts] <eot> ### answer`.
The optimizer is reset at each stage, as in Coconut.

    python train.py --config prosqa_tiny_coconut --workdir runs/prosqa_tiny_coconut
"""

import dataclasses

from latent.config import LatentConfig, load_preset

N_TRAIN, EPOCHS_PER_STAGE, STAGES = 9600, 2, 3


def get_config():
    base = load_preset("default")  # model, optimizer, batch size and task of the default job
    steps_per_epoch = N_TRAIN // base.train.batch_size
    return base.replace(
        task=dataclasses.replace(base.task, name="prosqa_three_step", n_train=N_TRAIN),
        optimizer=dataclasses.replace(base.optimizer, schedule="constant"),
        train=dataclasses.replace(
            base.train, steps=(STAGES + 2) * EPOCHS_PER_STAGE * steps_per_epoch, eval_every=1500,
        ),
        eval=dataclasses.replace(base.eval, max_new_tokens=32),
        latent=LatentConfig(
            mode="coconut", c_thought=1, epochs_per_stage=EPOCHS_PER_STAGE, max_latent_stage=STAGES,
            pad_latent_to_max=True, reset_optimizer=True,
        ),
    )
