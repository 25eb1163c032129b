"""A thin wrapper over a Hugging Face `tokenizers.Tokenizer` with the project's special tokens.

Two sources, one interface:

* `Tokenizer.fit_word_level(texts)`: a word-level vocabulary for small synthetic tasks
  (ProsQA/ProntoQA-style logic, digit-by-digit arithmetic), where every word is one token.
* `Tokenizer.from_file(path)`: any `tokenizer.json` (GPT-2, Qwen, ...), to which latent presets
  add the markers they need with `add_special_tokens`.

All tokenization is done by the `tokenizers` library; this module only configures it. The
word-level decoding rules are stored in the saved `tokenizer.json` itself (as a decoder), so any
`tokenizers`-based loader decodes our files exactly as we do.

Round-trip guarantee of the word-level tokenizer: `decode(encode(text)) == text` holds exactly
when `text` is in canonical form, that is

* it is a sequence of tokens, each a special token, a newline "\\n", a single digit, a run of
  other letters/underscores, or a run of other non-space characters (punctuation, "###");
* every word is in the vocabulary (an unknown word comes back as `<unk>`);
* consecutive tokens are separated by exactly one space, except: no space before a token made
  only of `. , ? : ! ;`; no space on either side of "\\n"; no space between two special tokens
  known when the tokenizer was fitted (registry + `extra_tokens`);
* there is no other whitespace (no tabs, "\\r", double or leading/trailing spaces).

So "Every shumpus is a rempus.\\nTom is a terpus.\\n### Tom is a lempus.", "1 2 3 * 4 5 6" and
"<bot><latent><latent><eot> Tom" round-trip, while "123" decodes as "1 2 3", "t-shirt" as
"t - shirt" and "a  b" as "a b". `decode(..., skip_special=True)` drops special tokens (and
`<unk>`) but keeps newlines. A tokenizer loaded with `from_file` round-trips as well as that
tokenizer does (exactly, for byte-level BPE such as GPT-2 and Qwen).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from os import PathLike
from pathlib import Path

import tokenizers
from tokenizers import AddedToken, Regex, decoders, models, pre_tokenizers, trainers

from latent.data.special_tokens import DEFAULT_NUM_ABSTRACT, SPECIAL, all_special_tokens

NEWLINE = "\n"
# End-of-sequence tokens, tried in order. A pretrained tokenizer's own EOS (GPT-2 and Qwen
# `<|endoftext|>`, Llama-2 `</s>`, Llama-3 `<|end_of_text|>`) comes before the project's `<eos>`:
# it is the token the pretrained weights learned to end text with, even if `<eos>` was added.
EOS_FALLBACKS = ("<|endoftext|>", "</s>", "<|end_of_text|>", SPECIAL.eos)
_NO_SPACE_BEFORE = ".,?:!;"


def word_level_pre_tokenizer() -> pre_tokenizers.PreTokenizer:
    """How the word-level tokenizer cuts text into words: on whitespace and punctuation, digits one by one."""
    return pre_tokenizers.Sequence([pre_tokenizers.Whitespace(), pre_tokenizers.Digits(individual_digits=True)])


def word_level_pieces(text: str) -> list[str]:
    """The words the word-level tokenizer makes of `text` (newlines and other whitespace dropped):
    two texts with the same pieces differ only in whitespace, which that tokenizer cannot write."""
    return [piece for piece, _ in word_level_pre_tokenizer().pre_tokenize_str(text)]


class UnknownTokenError(KeyError):
    """A token string that is not in the vocabulary (a KeyError with a readable message)."""

    def __str__(self) -> str:  # KeyError would show the message repr-quoted
        return str(self.args[0])


def _word_level_decoder(specials: list[str]) -> decoders.Decoder:
    """Join word-level tokens back into text (see the module docstring for the exact rules)."""
    alternation = "|".join(re.escape(t) for t in specials)
    return decoders.Sequence([
        # Put a space before every token but the first. No token starts with a space (the
        # pre-tokenizer drops whitespace), so the " " prefix that would suppress it never occurs.
        decoders.WordPiece(prefix=" ", cleanup=False),
        decoders.Fuse(),
        decoders.Replace(Regex(rf" (?=[{re.escape(_NO_SPACE_BEFORE)}]+(?: |\z))"), ""),
        decoders.Replace(Regex(r" ?\n ?"), NEWLINE),
        decoders.Replace(Regex(rf"(?<={alternation}) (?={alternation})"), ""),
    ])


class Tokenizer:
    """Text <-> ids with the project's special tokens; wraps a `tokenizers.Tokenizer`.

    `backend` is the wrapped library object, for anything this class does not expose.
    """

    def __init__(self, backend: tokenizers.Tokenizer):
        self.backend = backend

    # ----------------------------------------------------------------------------------------
    # construction and persistence

    @classmethod
    def fit_word_level(
        cls,
        texts: Iterable[str],
        *,
        num_abstract: int = DEFAULT_NUM_ABSTRACT,
        extra_tokens: Iterable[str] = (),
    ) -> Tokenizer:
        """A word-level tokenizer whose vocabulary is every word of `texts`.

        Ids: the registry tokens first (`<pad>`=0, `<eos>`=1, ...), then `<unk>`, `extra_tokens`
        (also special: never split, dropped by skip_special), the words by decreasing frequency,
        and last "\\n". Words split on whitespace and punctuation, digits one by one.
        """
        specials = list(dict.fromkeys([*all_special_tokens(num_abstract), SPECIAL.unk, *extra_tokens]))
        for tok in specials:
            if not isinstance(tok, str) or not tok or any(c.isspace() for c in tok):
                raise ValueError(f"special tokens must be non-empty strings without whitespace, got {tok!r}")

        backend = tokenizers.Tokenizer(models.WordLevel(unk_token=SPECIAL.unk))
        backend.pre_tokenizer = word_level_pre_tokenizer()
        # The trainer gives a special token a second, clashing id if it also counts it as a word,
        # so special tokens are cut out of the training text (they get their ids from the trainer).
        cut = re.compile("|".join(re.escape(t) for t in sorted(specials, key=len, reverse=True)))
        trainer = trainers.WordLevelTrainer(vocab_size=2**31, special_tokens=specials, show_progress=False)
        backend.train_from_iterator((cut.sub(" ", t) for t in texts), trainer=trainer)
        # The trainer registers its special tokens as added special tokens (never split). The
        # newline is added afterwards as an ordinary token so skip_special keeps it.
        backend.add_tokens([AddedToken(NEWLINE, normalized=False, special=False)])
        backend.decoder = _word_level_decoder(specials)
        return cls(backend)

    @classmethod
    def fit_byte_level_bpe(cls, texts: Iterable[str], vocab_size: int, *, num_abstract: int = 0) -> Tokenizer:
        """A byte-level BPE (GPT-2's pre-tokenization and byte alphabet) of at most `vocab_size`
        ids trained on `texts`, for natural text (latent.data.tasks.text). Ids: the registry
        tokens first (`<pad>`=0, `<eos>`=1, ...), then the 256 bytes, then the merges. Any text
        round-trips exactly; no `<unk>`. The same texts give the same tokenizer."""
        specials = all_special_tokens(num_abstract)
        smallest = len(specials) + len(pre_tokenizers.ByteLevel.alphabet())
        if vocab_size < smallest:
            raise ValueError(f"a byte-level BPE needs a vocabulary of at least {smallest} ids (the special tokens "
                             f"and 256 bytes); got {vocab_size}")
        backend = tokenizers.Tokenizer(models.BPE())
        backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        backend.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=specials, show_progress=False,
                                      initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
        backend.train_from_iterator(texts, trainer=trainer)
        return cls(backend)

    @classmethod
    def from_file(cls, path: str | PathLike) -> Tokenizer:
        """Load a Hugging Face `tokenizer.json` (or a directory holding one)."""
        path = Path(path)
        if path.is_dir():
            path = path / "tokenizer.json"
        if not path.is_file():
            raise FileNotFoundError(f"tokenizer file not found: {path}")
        try:
            backend = tokenizers.Tokenizer.from_file(str(path))
        except Exception as err:  # the library raises a bare Exception with a serde message
            raise ValueError(f"{path} is not a Hugging Face tokenizer.json: {err}") from err
        return cls(backend)

    @classmethod
    def from_json(cls, text: str) -> Tokenizer:
        """From the `tokenizer.json` text itself (checkpoints carry it inline)."""
        return cls(tokenizers.Tokenizer.from_str(text))

    def to_json(self) -> str:
        return self.backend.to_str()

    def save(self, path: str | PathLike) -> Path:
        """Write `tokenizer.json` (to `path`, or into it if it is a directory); returns the file."""
        path = Path(path)
        if path.is_dir():
            path = path / "tokenizer.json"
        self.backend.save(str(path))
        return path

    def add_special_tokens(self, tokens: Iterable[str]) -> int:
        """Make `tokens` special (single ids, never split); returns how many got new ids.

        Tokens already in the vocabulary keep their ids. On a word-level tokenizer, tokens added
        here are not glued to neighbouring special tokens when decoding (pass them as
        `extra_tokens` to fit_word_level for that).
        """
        before = self.vocab_size
        self.backend.add_special_tokens([AddedToken(t, normalized=False, special=True) for t in tokens])
        return self.vocab_size - before

    # ----------------------------------------------------------------------------------------
    # text <-> ids

    def encode(self, text: str) -> list[int]:
        """Token ids of `text`, without template tokens: the data pipeline places BOS/EOS itself."""
        return self.backend.encode(text, add_special_tokens=False).ids

    def encode_batch(self, texts: Iterable[str]) -> list[list[int]]:
        return [e.ids for e in self.backend.encode_batch(list(texts), add_special_tokens=False)]

    def decode(self, ids: Iterable[int], skip_special: bool = False) -> str:
        """Text of `ids` (any int iterable, e.g. a numpy row); skip_special drops special tokens."""
        return self.backend.decode([int(i) for i in ids], skip_special_tokens=skip_special)

    # ----------------------------------------------------------------------------------------
    # vocabulary

    def token_to_id(self, token: str) -> int | None:
        return self.backend.token_to_id(token)

    def id_of(self, token: str) -> int:
        """Id of `token`; raises UnknownTokenError (a KeyError) naming it if it is missing."""
        i = self.backend.token_to_id(token)
        if i is None:
            raise UnknownTokenError(
                f"token {token!r} is not in the vocabulary; add it with "
                f"Tokenizer.add_special_tokens([{token!r}]) or fit_word_level(..., extra_tokens=[{token!r}])"
            )
        return i

    @property
    def vocab_size(self) -> int:
        """Number of ids, added tokens included (a model's embedding table may be larger)."""
        return self.backend.get_vocab_size(with_added_tokens=True)

    @property
    def pad_id(self) -> int:
        return self.id_of(SPECIAL.pad)

    @property
    def eos_id(self) -> int:
        """The tokenizer's own EOS if it has one, else `<eos>` (first of EOS_FALLBACKS present)."""
        for tok in EOS_FALLBACKS:
            i = self.backend.token_to_id(tok)
            if i is not None:
                return i
        raise UnknownTokenError(
            f"no end-of-sequence token: none of {list(EOS_FALLBACKS)} is in the vocabulary; "
            f"add one with Tokenizer.add_special_tokens([{SPECIAL.eos!r}])"
        )

    @property
    def special_ids(self) -> dict[str, int]:
        """Every special token and its id, in id order."""
        added = sorted(self.backend.get_added_tokens_decoder().items())
        return {t.content: i for i, t in added if t.special}

    def __repr__(self) -> str:
        model = type(self.backend.model).__name__
        return f"Tokenizer({model}, vocab_size={self.vocab_size}, special={len(self.special_ids)})"
