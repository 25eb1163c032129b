"""The built-in default job (`python train.py`): Coconut's continuous thoughts on small
shortcut-free graphs, sized to train on a 2-core CPU in about 15 minutes.

The task is `prosqa_three_step`: 8-11-node ProsQA-style graphs whose every question takes 3
steps and whose distractor is as deep from its person as the target is from the root, so no
single statement gives the answer away (the one-statement guess scores 49.5%) and an answer
without reasoning stays at chance (no-CoT: 45.0%, README). The model is the small gated
decoder of `prosqa_mini_cot` (d=64 x 4 layers, Canon layers), the recipe that of
`prosqa_tiny_coconut` (soft feedback, a thought loss naming each step's node, the optimizer
reset at each stage) with a shorter curriculum: `STAGE0_EPOCHS` of written chains, then one
epoch per stage replaces one more step by a continuous thought, until two thoughts stand for
all three steps. Evaluation decodes `question <bot> [2 thoughts] <eot> ### answer`.

    python train.py && python eval.py --workdir runs/default

Measured (README, "Measured here"): 82.5% on the validation split at the final step (85.0% at step
6,000) with 7 tokens and 2 thoughts per answer, where answering from one statement scores 49.5%.

The 40-minute version of this comparison, CoT and SWITCH included, is in README.md ("Latent
reasoning under one budget").
"""

import dataclasses

from latent.config_io import load_preset

N_TRAIN, STAGE0_EPOCHS, EPOCHS_PER_STAGE, STAGES, FINAL_EPOCHS = 9600, 5, 1, 2, 5


def get_config():
    base = load_preset("prosqa_tiny_coconut")
    steps_per_epoch = N_TRAIN // base.train.batch_size
    epochs = STAGE0_EPOCHS + STAGES * EPOCHS_PER_STAGE + FINAL_EPOCHS
    return base.replace(
        task=dataclasses.replace(base.task, n_train=N_TRAIN),
        train=dataclasses.replace(base.train, steps=epochs * steps_per_epoch, eval_every=1200, checkpoint_every=600),
        latent=dataclasses.replace(base.latent, stage0_epochs=STAGE0_EPOCHS, epochs_per_stage=EPOCHS_PER_STAGE),
    )
