"""Coconut on generated ProntoQA: `prosqa_coconut` with the ProntoQA task (c=1, stages up to 6,
then every step latent).

Everything but the task is `prosqa_coconut`'s (Coconut's recipe: identity feedback, no thought
loss, stages of 2 epochs, the optimizer reset at each stage; d=128 x 4 layers, 6,000 training
examples, AdamW lr 2e-3 constant, batch 32 for 20 epochs); `task.max_len=512`.

Results: none reported for this preset yet (docs/results/ holds no ProntoQA run).

    python train.py --config prontoqa_coconut --workdir runs/prontoqa_coconut
    python eval.py --workdir runs/prontoqa_coconut --data ../shared/data/prontoqa_valid.json
"""

import dataclasses

from latent.config import Config
from latent.config_io import load_preset


def get_config() -> Config:
    base = load_preset("prosqa_coconut")
    return base.replace(task=dataclasses.replace(base.task, name="prontoqa", max_len=512))
