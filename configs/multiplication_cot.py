"""CoT SFT on 3-digit x 3-digit multiplication (`multiplication_3x3`, digits least-significant
first, partial products as steps: Deng et al.'s implicit-CoT layout) with the default job's
model: the CoT side of the multiplication measurements against `multiplication_abstract` and
`multiplication_abstract_keyed` (`scripts/latent_comparison.py --family multiplication`).
`task.name=multiplication` gives the 4 x 4 task of the implicit-CoT work.

Model (gated Qwen3-style d=64 x 4, Canon layers), optimizer (AdamW lr 3e-3, constant, weight
decay 0.01), batch 16 and 9,600 training examples of `prosqa_tiny_coconut`, without latents;
`task.max_len=128`, answers of up to 64 new tokens, 7,000 steps (the 4 x 1,750 of
`multiplication_abstract`'s warm-up). Against the keyed preset it runs with that preset's data
and decay (`task.n_train=48000 optimizer.weight_decay=0.1`) under the same 20 minutes.

Results: docs/results/abstract_cot.md (the CoT column of the `multiplication_3x3` rows, each with
the overrides and budget it ran under).

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
