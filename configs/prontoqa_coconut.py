"""Coconut on generated ProntoQA: `prosqa_coconut` with the ProntoQA task (c=1, stages up to 6,
then every step latent).

    python train.py --config prontoqa_coconut --workdir runs/prontoqa_coconut
    python eval.py --workdir runs/prontoqa_coconut --data ../shared/data/prontoqa_valid.json
"""

import dataclasses

from latent.config import Config
from latent.config_io import load_preset


def get_config() -> Config:
    base = load_preset("prosqa_coconut")
    return base.replace(task=dataclasses.replace(base.task, name="prontoqa", max_len=512))
