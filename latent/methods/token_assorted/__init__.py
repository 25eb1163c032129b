"""Token-Assorted (task.format=codes): the first m steps of each example replaced by discrete
VQ codes of their hidden states, the rest written out.

    vq_codes.py   step hidden states -> VQ autoencoder -> one code per step -> the codes data
                  file (scripts/vq_codes.py), which train.py then trains on

Its batches and prompts are the abstract layouts' `codes` layout (latent.methods.abstract_cot.layouts):
the codes are abstract tokens <abs_k>, decoded under the abstract constraint.
"""

from __future__ import annotations

from latent.methods import register_method
from latent.methods.abstract_cot import AbstractSpans


@register_method
class TokenAssorted(AbstractSpans):
    name = "token_assorted"
    selected_by = "task.format=codes (a data file written by scripts/vq_codes.py)"

    def claims(self, cfg) -> bool:
        return cfg.task.format == "codes"
