"""Abstract-CoT on 3-digit x 3-digit multiplication: the warm-up of `prosqa_abstract` (2 rounds
of bottleneck SFT + self-distillation) on the data, model and optimizer of
`multiplication_cot`.

    python train.py --config multiplication_abstract --workdir runs/multiplication_abstract
    python eval.py --workdir runs/multiplication_abstract/round2/distill
"""

import dataclasses

from latent.config import AbstractConfig
from latent.config_io import load_preset


def get_config():
    base = load_preset("multiplication_cot")
    return base.replace(
        task=dataclasses.replace(base.task, format="abstract"),
        train=dataclasses.replace(base.train, steps=1750, eval_every=1750),
        abstract=AbstractConfig(num_tokens=64, max_tokens=8, rounds=2),
    )
