"""Verifiable rewards of rollouts: the task's scorer, plus optional format and length terms.

    reward_i = rl.reward_correct * credit_i + rl.reward_format * has_marker_i + rl.reward_length * tokens_i

credit_i: the scorer's credit (latent.data.tasks.scoring, the run's task.scorer) of the text after
the last answer marker "###", in [0, 1]: 1 or 0 as `correct_i` for every scorer but a task's own
partial credit (reasoning-gym's scorers, latent.data.tasks.reasoning_gym); correct_i (accuracy):
the scorer judges it right; has_marker_i: the output holds the marker at all; tokens_i: the
tokens it emitted (EOS included). Every part is returned, so each can be logged.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from latent.data.tasks import extract_answer
from latent.data.tasks.formats import ANSWER_MARKER


def rollout_rewards(texts: Sequence[str], examples: Sequence, score, rl_cfg, lengths_N, credit=None) -> dict[str, np.ndarray]:
    """float32 [N] arrays: `reward`, and its parts `credit`, `correct`, `has_marker`, `tokens`; `texts[i]`
    is output i decoded (EOS left out), `examples[i]` the example it answers (repeated per sample);
    `credit(prediction, example) -> float` (a Scorer's `credit`; None: `score` as 1 or 0)."""
    if len(texts) != len(examples) or len(texts) != len(lengths_N):
        raise ValueError(f"{len(texts)} outputs, {len(examples)} examples and {len(lengths_N)} lengths must match")
    answers = [extract_answer(t) for t in texts]
    correct_N = np.asarray([bool(score(a, e)) for a, e in zip(answers, examples)], np.float32)
    credit_N = correct_N if credit is None else np.asarray([float(credit(a, e)) for a, e in zip(answers, examples)],
                                                           np.float32)
    marker_N = np.asarray([ANSWER_MARKER in t for t in texts], np.float32)
    tokens_N = np.asarray(lengths_N, np.float32)
    reward_N = rl_cfg.reward_correct * credit_N + rl_cfg.reward_format * marker_N + rl_cfg.reward_length * tokens_N
    return {"reward": reward_N.astype(np.float32), "credit": credit_N, "correct": correct_N, "has_marker": marker_N,
            "tokens": tokens_N}
