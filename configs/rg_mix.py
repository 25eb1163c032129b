"""CoT SFT on a weighted mix of three reasoning-gym datasets (`task.name=rg:...`,
latent/data/tasks/reasoning_gym.py), sized for a 2-core CPU: the verifiable multi-domain start that
GRPO (`method=rl train.init_from=runs/rg_mix`) continues with reasoning-gym's scorers as rewards.

    python train.py --config rg_mix --workdir runs/rg_mix
    python train.py --config rg_mix --workdir runs/rg_mix_rl method=rl train.init_from=runs/rg_mix train.steps=500

The datasets, and why (token counts are of the word-level tokenizer, prompt + CoT target):
- `chain_sum` (arithmetic), 2 of 5: 2-3 terms of 1-2 digits added or subtracted. Its steps are the
  partial sums ("15 - 43 = -28"), so each line is one small operation, as the multiplication
  task's partial products are (which this model size learns to 99%). 31 tokens in the median, 47 at most.
- `leg_counting` (counting, a word problem), 2 of 5: 2-3 kinds of animal, 1-9 of each. Its steps
  are one line per animal with the running total ("3 spiders have 3 * 8 = 24 legs, 12 + 24 = 36"):
  a lookup (legs of 37 animals), a one-digit product and a sum per line. 79 tokens in the median, 106 at most.
- `syllogism` (simple logic), 1 of 5: two premises and a conclusion, "Yes" or "No", with
  `invalid_ratio=0.5` so the answers are balanced (48% / 52%; reasoning-gym's default gives 69%
  "Yes"). No steps (none are written for it): the answer follows from the quantifiers' pattern.
  42 tokens at most.
The three together use a vocabulary of about 240 words, and a validation split's words all occur
in 5,000 training examples (no unknown token when the tokenizer is fitted on the training split alone).

Left out: `gsm_symbolic` (word problems) is supported with its own worked steps, but its 85
templates use about 1,500 words, the median CoT example is 149 tokens and 6% pass task.max_len=256:
GSM8K-like language that a model this small does not learn from scratch here (with a pretrained
model, `train.init_from`, it is the natural next dataset). `basic_arithmetic` and `products` are
arithmetic without cheap steps; `letter_counting` cannot be learned with a word-level tokenizer
(a word is one token, its letters unseen).

Model, optimizer and batch of `prosqa_mini_cot` (gated Qwen3-style d=64 x 4 layers with Canon
layers; AdamW lr 3e-3; batch 16), 20,000 training examples, answers of up to 96 new tokens.
"""

import dataclasses
import json

from latent.config_io import load_preset

MIX = "rg:chain_sum:2,leg_counting:2,syllogism:1"
OPTIONS = {
    "chain_sum": {"min_terms": 2, "max_terms": 3, "min_digits": 1, "max_digits": 2},
    "leg_counting": {"min_animals": 2, "max_animals": 3, "min_instances": 1, "max_instances": 9},
    "syllogism": {"invalid_ratio": 0.5},
}


def get_config():
    base = load_preset("prosqa_mini_cot")  # model, optimizer and batch size of the small CPU jobs
    return base.replace(
        task=dataclasses.replace(base.task, name=MIX, options=json.dumps(OPTIONS), format="cot", n_train=20000,
                                 n_valid=200, max_len=256),
        train=dataclasses.replace(base.train, steps=6000, eval_every=1500),
        eval=dataclasses.replace(base.eval, max_new_tokens=96),
    )
