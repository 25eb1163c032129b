"""Compare the ProsQA generator with the real validation file, as Markdown tables.

    python scripts/prosqa_stats.py                      # real file vs 300 generated examples
    python scripts/prosqa_stats.py --size small --n 1000

The real file is read from `../shared/data/prosqa_valid.json` next to the checkout (or --real);
without it only the generated column is shown. The output is what `docs/data.md` quotes.
"""

from __future__ import annotations

import argparse
import statistics
from collections import Counter, deque
from pathlib import Path

from latent.data.tasks import Example, ProsQA, load_examples

REPO = Path(__file__).resolve().parents[1]

DEFAULT_REAL = REPO.parent / "shared" / "data" / "prosqa_valid.json"


def _distance(edges, source, target) -> int:
    children = {}
    for parent, child in edges:
        children.setdefault(parent, []).append(child)
    dist, queue = {source: 0}, deque([source])
    while queue:
        u = queue.popleft()
        for v in children.get(u, []):
            if v not in dist:
                dist[v] = dist[u] + 1
                queue.append(v)
    return dist.get(target, -1)


def _distractor_distance(example: Example) -> int:
    """Hops from the nearest other person to the distractor (neg_target)."""
    meta = example.meta
    names = meta["idx_to_symbol"]
    persons = [i for i, name in enumerate(names) if name[0].isupper() and i != meta["root"]]
    found = [d for p in persons if (d := _distance(meta["edges"], p, meta["neg_target"])) >= 0]
    return min(found, default=-1)


MEASURES = {
    "nodes (idx_to_symbol)": lambda e: len(e.meta["idx_to_symbol"]),
    "edges": lambda e: len(e.meta["edges"]),
    "path length (steps)": lambda e: len(e.steps),
    "question words": lambda e: len(e.question.split()),
    "persons": lambda e: sum(name[0].isupper() for name in e.meta["idx_to_symbol"]),
    "distractor hops from its person": _distractor_distance,
}
HISTOGRAMS = ("nodes (idx_to_symbol)", "path length (steps)", "persons", "distractor hops from its person")


def answer_form_share(examples: list[Example]) -> float:
    """Share of answers that read exactly "<root> is a <target>."."""
    names = lambda e, key: e.meta["idx_to_symbol"][e.meta[key]]  # noqa: E731
    return statistics.mean(e.answer == f"{names(e, 'root')} is a {names(e, 'target')}." for e in examples)


def _summary(values: list[int]) -> str:
    return f"{statistics.mean(values):.2f} ± {statistics.pstdev(values):.2f} [{min(values)}, {max(values)}]"


def _binned(values: list[int], width: int) -> Counter:
    return Counter(v // width * width for v in values)


def report(columns: dict[str, list[Example]]) -> str:
    names = list(columns)
    lines = ["| measure: mean ± sd [min, max] | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
    for measure, fn in MEASURES.items():
        lines.append(f"| {measure} | " + " | ".join(_summary([fn(e) for e in exs]) for exs in columns.values()) + " |")
    shares = " | ".join(f"{answer_form_share(exs):.0%}" for exs in columns.values())
    lines.append(f'| answer = "<root> is a <target>." | {shares} |')

    for measure in (*HISTOGRAMS, "question words"):
        width = 20 if measure == "question words" else 1
        counts = {name: _binned([MEASURES[measure](e) for e in exs], width) for name, exs in columns.items()}
        keys = sorted(set().union(*counts.values()))
        lines += ["", f"Histogram of {measure}" + (f" (bins of {width})" if width > 1 else "") + ", % of examples:", ""]
        lines.append("| value | " + " | ".join(str(k) for k in keys) + " |")
        lines.append("|---" * (len(keys) + 1) + "|")
        for name, exs in columns.items():
            lines.append(f"| {name} | " + " | ".join(f"{100 * counts[name][k] / len(exs):.0f}" for k in keys) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--real", type=Path, default=DEFAULT_REAL, help="real ProsQA JSON file")
    parser.add_argument("--n", type=int, default=300, help="generated examples")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--size", default="default", help="ProsQA size preset (default, small, tiny, mini)")
    args = parser.parse_args(argv)

    columns = {}
    if args.real.is_file():
        columns[f"real ({len(load_examples(args.real))}, {args.real.name})"] = load_examples(args.real)
    else:
        print(f"(real file {args.real} not found: generated column only)\n")
    columns[f"generated ({args.n}, size={args.size}, seed={args.seed})"] = ProsQA(args.size).generate(args.n, args.seed)
    print(report(columns))


if __name__ == "__main__":
    main()
