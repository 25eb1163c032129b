"""CoT SFT on 3-digit x 3-digit multiplication (`multiplication_3x3`, digits least-significant
first, partial products as steps: Deng et al.'s implicit-CoT layout) with the default job's
model: the CoT side of the multiplication measurement against `multiplication_abstract`.
`task.name=multiplication` gives the 4 x 4 task of the implicit-CoT work.

    python train.py --config multiplication_cot --workdir runs/multiplication_cot
"""

import dataclasses

from latent.config import LatentConfig
from latent.config_io import load_preset


def get_config():
    base = load_preset("prosqa_tiny_coconut")  # model, optimizer, batch size, n_train
    return base.replace(
        task=dataclasses.replace(base.task, name="multiplication_3x3", format="cot", max_len=128),
        train=dataclasses.replace(base.train, steps=7000, eval_every=1750),
        eval=dataclasses.replace(base.eval, max_new_tokens=64),
        latent=LatentConfig(),
    )
