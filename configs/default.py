"""The built-in default job (`python train.py`): Coconut's continuous thoughts on small
shortcut-free graphs, sized to train on a 2-core CPU in about 15 minutes.

Task: `prosqa_three_step`, 9,600 training graphs (`N_TRAIN`) of 8-11 nodes whose every question
takes 3 steps and whose distractor is as deep from its person as the target is from the root, so
no single statement gives the answer away and an answer without reasoning stays at chance (on the
`prosqa_mini` graphs of the earlier default job, `prosqa_mini_cot`, one statement does give it
away). Model, optimizer and batch size: those of `prosqa_mini_cot` (gated Qwen3-style decoder,
d=64 x 4 layers, Canon layers; AdamW lr 3e-3, batch 16) with `prosqa_tiny_coconut`'s constant
schedule. Method: `prosqa_tiny_coconut`'s recipe (c=1, soft feedback, a thought loss naming each
step's node, the optimizer reset at each stage with a 100-step re-warm; that preset's docstring
says why each) on a shorter curriculum, to fit the budget: `STAGE0_EPOCHS`=5 epochs of written
chains, then one epoch per stage (`EPOCHS_PER_STAGE`) replaces one more step by a continuous
thought, until after `STAGES`=2 stages two thoughts stand for all three steps, trained on for
`FINAL_EPOCHS`=5 epochs: 12 epochs of 600 steps, 7,200 steps in all, validated every 1,200.
Evaluation decodes `question <bot> [2 thoughts] <eot> ### answer`.

    python train.py && python eval.py --workdir runs/default

Results: docs/results/measured.md ("The default job": accuracy along the curriculum, tokens and
thoughts per answer, the one-statement guess, wall time). The 40-minute comparison on the same
graphs, with CoT, no-CoT, SWITCH and the longer curriculum of `prosqa_tiny_coconut`:
docs/results/latent_comparison.md.
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
