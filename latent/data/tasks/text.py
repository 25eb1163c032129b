"""Natural-text corpora for language modelling (`task.name=text:<corpus>`), available offline.

No corpus is downloaded: each one is text that Python or a declared dependency ships. Sizes are
those of Python 3.11.7 and reasoning-gym 0.1.25 (another Python version ships other text); tokens
under the `gated_text` preset's 2,048-id byte-level BPE.

  corpus      what                                                    characters  tokens   license
  pydoc       the Python Language Reference's topics as `help()`       464,970    136,925  PSF-2.0
              shows them (`pydoc_data.topics.topics`, 79 documents)
  docstrings  the standard library's own docstrings of >= 200          1,209,676  397,312  PSF-2.0
              characters (module, class, function), one document per
              module (320), tests, IDLE, turtledemo and lib2to3 left out
  verne       "In the Year 2889", Jules and Michel Verne, 1889:           33,406   13,712  public domain
              Project Gutenberg eBook #19362 as reasoning-gym ships it
              (`reasoning_gym/data/in_the_year_2889.txt`), its header
              and licence cut off

`text:a+b+...` joins several: `text:pydoc+docstrings+verne` (the preset's) is 1,708,052
characters, 547,949 tokens (3.1 characters a token) in 999 regions. It is technical English (a
language reference's prose and grammar, API documentation with code examples) and one short
story: enough for the sink and activation measures of the gated-attention study on a CPU, not
for a language model anyone would use.

Splits are by region, never by window: each document is cut at blank lines into regions of at
least REGION_CHARS characters (a document's last region may be shorter), and a `task.seed`-drawn
`task.valid_fraction` of the regions (at least one) is the validation split, the rest training;
both keep corpus order. A region is an `Example` whose `question` holds its text (`steps` and
`answer` empty), so the run's splits, caches and `eval.n_examples` treat regions as examples.

Windows (`window_records`): a split's regions are tokenized one by one and joined into one stream
with EOS after each region; windows of `max_len` tokens start every `max_len - 1` tokens, so
consecutive windows share one token and every token of the stream but the first is a target of
exactly one window (its first token is its context, not a target; the last window may be
shorter). Every window starts with a real token at its first position, which every later query
attends to: where the attention sink forms.
"""

from __future__ import annotations

import functools
import importlib.resources
import random
import re

import numpy as np

from latent.data.tasks.base import Example, Task, check_count
from latent.errors import ConfigError

PREFIX = "text:"
DOCSTRING_CHARS = 200  # shorter docstrings are mostly one-line summaries and argument lists
REGION_CHARS = 2000  # a region is at least this long (but a document's last): ~550 tokens, a few windows
GUTENBERG_START = re.compile(r"\*\*\* START OF TH(?:E|IS) PROJECT GUTENBERG EBOOK[^*]*\*\*\*")
GUTENBERG_END = re.compile(r"\*\*\* END OF TH(?:E|IS) PROJECT GUTENBERG EBOOK")


def _pydoc_documents() -> list[tuple[str, str]]:
    from pydoc_data.topics import topics

    return [(f"pydoc/{name}", topics[name]) for name in sorted(topics)]


def _verne_documents() -> list[tuple[str, str]]:
    text = (importlib.resources.files("reasoning_gym") / "data" / "in_the_year_2889.txt").read_text(encoding="utf-8")
    start, end = GUTENBERG_START.search(text), GUTENBERG_END.search(text)
    if start is None or end is None:
        raise ConfigError("reasoning-gym's in_the_year_2889.txt has no Project Gutenberg start and end markers; "
                          "this version of reasoning-gym ships another text")
    return [("verne/in_the_year_2889", text[start.end():end.start()].strip())]


# Parts of the standard library that are not its modules' documentation: tests, the IDLE editor's
# and the turtle demos' sources, the 2to3 fixers, installed packages.
_NOT_DOCUMENTATION = ("test", "tests", "idlelib", "turtledemo", "lib2to3", "site-packages", "__pycache__")


def _docstring_documents() -> list[tuple[str, str]]:
    """Each standard-library module's docstrings of at least DOCSTRING_CHARS characters (its own,
    its classes' and functions', in the order ast.walk meets them), one document per module, the
    modules in path order."""
    import ast
    import sysconfig
    from pathlib import Path

    root = Path(sysconfig.get_paths()["stdlib"])
    documents = []
    for path in sorted(root.rglob("*.py")):
        parts = path.relative_to(root).parts
        if any(part in _NOT_DOCUMENTATION or part.startswith("test") for part in parts):
            continue
        try:
            tree = ast.parse(path.read_text(encoding="utf-8"))
        except (SyntaxError, UnicodeDecodeError, ValueError):
            continue
        docstrings = [ast.get_docstring(node) for node in ast.walk(tree)
                      if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))]
        long_ones = [d for d in docstrings if d and len(d) >= DOCSTRING_CHARS]
        if long_ones:
            documents.append((f"docstrings/{'/'.join(parts)}", "\n\n".join(long_ones)))
    return documents


# corpus name -> its documents, (name, text) in a fixed order
CORPORA = {"pydoc": _pydoc_documents, "docstrings": _docstring_documents, "verne": _verne_documents}


@functools.cache
def corpus_documents(corpus: str) -> tuple[tuple[str, str], ...]:
    """The (name, text) documents of `corpus`, read once per process (the docstrings take seconds)."""
    return tuple(CORPORA[corpus]())


def is_text_name(name: str) -> bool:
    return isinstance(name, str) and name.startswith(PREFIX)


def corpus_names(name: str, field: str = "task.name") -> list[str]:
    """The corpora `text:a+b` joins; a ConfigError naming `field` for an unknown or empty one."""
    parts = name.removeprefix(PREFIX).split("+")
    for part in parts:
        if part not in CORPORA:
            raise ConfigError(f"{field}={name!r}: {part!r} is not a text corpus; known: "
                              f"{', '.join(sorted(CORPORA))} (join several with +, e.g. text:pydoc+verne)")
    return parts


def regions_of(document: str, min_chars: int = REGION_CHARS) -> list[str]:
    """`document` cut at blank lines into pieces of at least `min_chars` characters (the last may
    be shorter); joined back with the blank lines they were cut at, they are the document."""
    paragraphs = re.split(r"(\n\s*\n)", document)  # odd items: the blank-line separators, kept
    regions, current = [], ""
    for i, piece in enumerate(paragraphs):
        current += piece
        if i % 2 == 1 and len(current) >= min_chars:  # a region ends with the blank line after a paragraph
            regions.append(current)
            current = ""
    if current.strip():
        regions.append(current)
    elif current and regions:
        regions[-1] += current
    return regions


class TextCorpus(Task):
    """The regions of one or more corpora (module docstring). `generate(n, seed)` gives the first
    n regions of the `seed`-shuffled order, in corpus order: the validation split is
    `generate(k, task.seed)` and training the other regions (`split`)."""

    scorer_name = "none"  # nothing is decoded: a text run is evaluated by its loss

    def __init__(self, name: str):
        self.name = name
        self.corpora = corpus_names(name)

    @functools.cached_property
    def regions(self) -> list[Example]:
        regions = []
        for corpus in self.corpora:
            for document, text in corpus_documents(corpus):
                for k, region in enumerate(regions_of(text)):
                    regions.append(Example(region, (), "", {"document": document, "region": k}))
        return regions

    def _order(self, seed: int) -> list[int]:
        order = list(range(len(self.regions)))
        random.Random(seed).shuffle(order)
        return order

    def generate(self, n: int, seed: int) -> list[Example]:
        chosen = set(self._order(seed)[: check_count(n)])
        return [region for i, region in enumerate(self.regions) if i in chosen]

    def split(self, valid_fraction: float, seed: int) -> tuple[list[Example], list[Example]]:
        """(train, valid) regions, disjoint, both in corpus order: a `seed`-drawn `valid_fraction`
        of the regions (at least one) validates."""
        if not 0 < valid_fraction < 1:
            raise ConfigError(f"task.valid_fraction={valid_fraction}: a text corpus holds out a share of its regions "
                              "for validation, so it must be in (0, 1)")
        n_valid = max(1, round(valid_fraction * len(self.regions)))
        held_out = set(self._order(seed)[:n_valid])
        return ([r for i, r in enumerate(self.regions) if i not in held_out],
                [r for i, r in enumerate(self.regions) if i in held_out])

    def score(self, prediction, example) -> bool:
        return False  # no answers to score: a text run reports its loss


def token_stream(regions, tokenizer) -> np.ndarray:
    """int32 [N]: the regions' tokens one after the other, EOS after each."""
    pieces = [np.asarray([*tokenizer.encode(r.question), tokenizer.eos_id], np.int32) for r in regions]
    return np.concatenate([np.zeros(0, np.int32), *pieces])


def window_starts(n_tokens: int, window: int) -> list[int]:
    """Where windows of `window` tokens start in a stream of `n_tokens`: every `window - 1` tokens,
    so each token but the first is a target of exactly one window; a last window shorter than 2
    tokens (no target) is left out."""
    if window < 2:
        raise ConfigError(f"task.max_len={window}: a text window needs at least 2 tokens (a context and a target)")
    return [start for start in range(0, max(n_tokens - 1, 0), window - 1)]


def window_records(regions, tokenizer, max_len: int):
    """(records, 0): the windows of `regions` (module docstring) as latent.data.pipeline Records:
    tokens [<= max_len], loss_mask True on every token but the first (each is predicted from the
    ones before it in the window); none is dropped."""
    from latent.data.pipeline import Record

    stream_N = token_stream(regions, tokenizer)
    records = []
    for index, start in enumerate(window_starts(len(stream_N), max_len)):
        tokens_T = stream_N[start : start + max_len]
        loss_mask_T = np.ones(len(tokens_T), bool)
        loss_mask_T[0] = False
        records.append(Record(tokens_T, loss_mask_T, prompt_len=1, source_index=index))
    return records, 0
