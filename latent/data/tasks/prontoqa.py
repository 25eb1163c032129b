"""ProntoQA-style deduction (Saparov & He 2023, in Coconut's layout): "True or false: Alex is happy.".

The question states a fictional ontology as shuffled sentences, then two facts about a person,
then the query. Its shape copies the real validation file exactly (checked on all 200 items):

* a chain of `hops` concepts c1 -> ... -> cH ("Tumpuses are gorpuses."), the person being a c1;
* every chain concept carries a property ("Wumpuses are sour."); each c_i before the last also
  has a side branch s_i with its own property, and cH has two subclasses, one with a property;
* the person is also a member of a distractor concept D (with a property and a subclass);
* one extra concept E has the queried property with the opposite polarity, so the property
  word alone does not give the answer;
* the query asks "P" or "not P"; the answer is "True" when that matches cH's property.

Steps are the real file's two-sentence steps, "Alex is a tumpus. Tumpuses are gorpuses.", one per
hop, ending with the property rule and the conclusion "Alex is happy.". Each rule is written as
"Every X is ...", "Each X is ..." or "Xes are ..." with the real file's frequencies (1/4, 1/4,
1/2), and 30% of the other properties are negated, as there.

`meta` follows the file's keys: `idx_to_symbol` is [person, c1..cH, other concepts sorted],
`edges` the subclass pairs, `root` 0, `target` the index of cH, `neg_target` the index of E
(the concept that contradicts the answer; the real file's value carries no such meaning), and
`chain_concepts`.
"""

from __future__ import annotations

import dataclasses
import random

from latent.data.tasks.base import Example, Task, check_count
from latent.data.tasks.names import (
    PRONTOQA_CONCEPTS,
    PRONTOQA_PERSONS,
    PRONTOQA_PROPERTIES,
    indefinite_article,
    plural,
)

_RULE_FORMS = ("every", "each", "plural", "plural")  # drawn uniformly: 1/4, 1/4, 1/2


@dataclasses.dataclass(frozen=True)
class ProntoQAConfig:
    hops: int = 5  # chain length; the answer takes hops + 1 steps
    negation_prob: float = 0.3  # chance that a property not asked about is negated
    persons: tuple[str, ...] = PRONTOQA_PERSONS
    concepts: tuple[str, ...] = PRONTOQA_CONCEPTS
    properties: tuple[str, ...] = PRONTOQA_PROPERTIES

    def __post_init__(self):
        if self.hops < 1:
            raise ValueError(f"hops must be >= 1, got {self.hops}")
        if not 0 <= self.negation_prob <= 1:
            raise ValueError(f"negation_prob must be in [0, 1], got {self.negation_prob}")
        if len(set(self.concepts)) < self.concepts_needed:
            raise ValueError(f"hops={self.hops} needs {self.concepts_needed} distinct concepts")
        if len(set(self.properties)) < self.hops * 2 + 1 or not self.persons:
            raise ValueError(f"hops={self.hops} needs {self.hops * 2 + 1} distinct properties and a person")

    @property
    def concepts_needed(self) -> int:
        # chain, side branches, cH's two children, the distractor D and its child, E.
        return self.hops + (self.hops - 1) + 2 + 2 + 1


SIZES = {"default": ProntoQAConfig(), "small": ProntoQAConfig(hops=3)}


def _rule(rng: random.Random, subject: str, obj: str, negated: bool = False, is_concept: bool = True) -> str:
    """One ontology sentence about all members of `subject`, in a randomly chosen form."""
    form = rng.choice(_RULE_FORMS)
    negation = "not " if negated else ""
    if form == "plural":
        return f"{plural(subject).capitalize()} are {negation}{plural(obj) if is_concept else obj}."
    quantifier = "Every" if form == "every" else "Each"
    obj = f"{indefinite_article(obj)} {obj}" if is_concept else obj
    return f"{quantifier} {subject} is {negation}{obj}."


def make_example(rng: random.Random, cfg: ProntoQAConfig) -> Example:
    hops = cfg.hops
    person = rng.choice(cfg.persons)
    names = iter(rng.sample(cfg.concepts, cfg.concepts_needed))
    chain = [next(names) for _ in range(hops)]
    branches = [next(names) for _ in range(hops - 1)]
    last_children = [next(names), next(names)]
    distractor, distractor_child, contradicting = next(names), next(names), next(names)
    asked, *other_properties = rng.sample(cfg.properties, 2 * hops + 1)
    other_properties = iter(other_properties)
    asked_negated = rng.random() < 0.5

    def property_rule(concept: str) -> str:
        return _rule(rng, concept, next(other_properties), rng.random() < cfg.negation_prob, is_concept=False)

    subclass_edges = []
    rules, chain_rules = [], []
    for i, concept in enumerate(chain):
        if i + 1 < hops:
            chain_rules.append(_rule(rng, concept, chain[i + 1]))
            rules += [chain_rules[-1], _rule(rng, concept, branches[i]), property_rule(concept)]
            rules.append(property_rule(branches[i]))
            subclass_edges += [(concept, chain[i + 1]), (concept, branches[i])]
    last = chain[-1]
    chain_rules.append(_rule(rng, last, asked, asked_negated, is_concept=False))
    rules += [chain_rules[-1], *(_rule(rng, last, child) for child in last_children)]
    rules.append(property_rule(rng.choice(last_children)))
    rules += [_rule(rng, distractor, distractor_child), property_rule(distractor)]
    rules.append(_rule(rng, contradicting, asked, not asked_negated, is_concept=False))
    subclass_edges += [(last, child) for child in last_children] + [(distractor, distractor_child)]
    rng.shuffle(rules)

    memberships = [f"{person} is {indefinite_article(c)} {c}." for c in (chain[0], distractor)]
    rng.shuffle(memberships)
    query_negated = rng.random() < 0.5
    query = f"{person} is {'not ' if query_negated else ''}{asked}."
    question = " ".join(rules + memberships) + f" True or false: {query}"

    steps = [f"{person} is {indefinite_article(c)} {c}. {rule}" for c, rule in zip(chain, chain_rules)]
    steps.append(f"{person} is {'not ' if asked_negated else ''}{asked}.")

    symbols = [person, *chain, *sorted(set(branches + last_children + [distractor, distractor_child, contradicting]))]
    index = {name: i for i, name in enumerate(symbols)}
    meta = {
        "idx_to_symbol": symbols,
        "edges": [[index[a], index[b]] for a, b in subclass_edges],
        "root": 0,
        "target": hops,
        "neg_target": index[contradicting],
        "chain_concepts": chain,
    }
    answer = "True" if query_negated == asked_negated else "False"
    return Example(question=question, steps=tuple(steps), answer=answer, meta=meta)


class ProntoQA(Task):
    """ProntoQA generator; `ProntoQA()` is the real 5-hop format, `ProntoQA("small")` 3 hops.

    Keyword arguments override `ProntoQAConfig` fields, e.g. `ProntoQA(hops=4)`.
    """

    def __init__(self, size: str = "default", **overrides):
        if size not in SIZES:
            raise ValueError(f"unknown ProntoQA size {size!r}; known: {sorted(SIZES)}")
        self.config = dataclasses.replace(SIZES[size], **overrides)
        self.name = "prontoqa" if size == "default" else f"prontoqa_{size}"

    def generate(self, n: int, seed: int) -> list[Example]:
        rng = random.Random(seed)
        return [make_example(rng, self.config) for _ in range(check_count(n))]
