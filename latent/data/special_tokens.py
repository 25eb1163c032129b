"""The one registry of special token strings used across the project.

Data builders, models and tokenizers all import their marker strings from here, so a latent
marker is spelled the same way everywhere and a tokenizer can be checked against the full list.

    from latent.data.special_tokens import SPECIAL, all_special_tokens
    ids = tok.encode(f"{question}\\n{SPECIAL.bot}{SPECIAL.latent * 3}{SPECIAL.eot}")
"""

from __future__ import annotations

from dataclasses import dataclass

ABSTRACT_FORMAT = "<abs_{}>"
DEFAULT_NUM_ABSTRACT = 64


@dataclass(frozen=True)
class SpecialTokens:
    """String constants for every special token (frozen: these are spellings, not settings)."""

    pad: str = "<pad>"
    eos: str = "<eos>"
    bot: str = "<bot>"  # begin of a latent thought
    eot: str = "<eot>"  # end of a latent thought
    latent: str = "<latent>"  # one latent slot; its embedding is replaced by a hidden state
    swi: str = "<swi>"  # opens a SWITCH latent span
    swi_end: str = "</swi>"  # closes a SWITCH latent span
    begin_abstract: str = "<beginabstract>"
    end_abstract: str = "<endabstract>"
    # Only word-level tokenizers need an unknown-word token (byte-level BPE never does), so it is
    # not part of all_special_tokens(); fit_word_level adds it itself.
    unk: str = "<unk>"


SPECIAL = SpecialTokens()


def abstract_tokens(m: int) -> list[str]:
    """The `m` abstract tokens `<abs_0>` .. `<abs_{m-1}>`."""
    if isinstance(m, bool) or not isinstance(m, int) or m < 0:
        raise ValueError(f"number of abstract tokens must be a non-negative int, got {m!r}")
    return [ABSTRACT_FORMAT.format(i) for i in range(m)]


def all_special_tokens(num_abstract: int = DEFAULT_NUM_ABSTRACT) -> list[str]:
    """Every project special token, in a fixed order.

    The order is part of the contract: a word-level tokenizer gives these ids 0, 1, 2, ... so
    `<pad>` is 0 (zero-filled batches are padding) and `<eos>` is 1.
    """
    s = SPECIAL
    return [
        s.pad, s.eos, s.bot, s.eot, s.latent, s.swi, s.swi_end, s.begin_abstract, s.end_abstract,
        *abstract_tokens(num_abstract),
    ]
