"""Task generators, scorers, formats and the file loader (latent.data.tasks)."""

from __future__ import annotations

import json
import re
import statistics
from collections import deque

import pytest

from latent.data.tasks import (
    TASKS,
    DataError,
    Example,
    FileTask,
    Multiplication,
    ProntoQA,
    ProsQA,
    cot_text,
    extract_answer,
    get_task,
    load_examples,
    no_cot_text,
)

# ------------------------------------------------------------------------------ determinism


@pytest.mark.parametrize("name", sorted(TASKS))
def test_same_seed_same_examples_and_prefix(name):
    task = get_task(name)
    first = task.generate(6, seed=7)
    assert first == get_task(name).generate(6, seed=7)
    assert task.generate(3, seed=7) == first[:3]
    assert all(isinstance(e, Example) and isinstance(e.steps, tuple) for e in first)


@pytest.mark.parametrize("name", sorted(TASKS))
def test_different_seeds_differ(name):
    task = get_task(name)
    assert [e.question for e in task.generate(5, 0)] != [e.question for e in task.generate(5, 1)]


def test_unknown_task_lists_known_names():
    with pytest.raises(ValueError) as err:
        get_task("prosqa_huge")
    for name in TASKS:
        assert name in str(err.value)


def test_overrides_reach_the_config():
    task = get_task("prosqa_small", path_length=(3, 3))
    assert all(len(e.steps) == 3 for e in task.generate(20, 0))
    assert all(len(e.steps) == 5 for e in get_task("prontoqa", hops=4).generate(5, 0))
    with pytest.raises(ValueError):
        ProsQA(num_nodes=(10, 5))


# ------------------------------------------------------------------------------ ProsQA


def _hops(edges, source) -> dict:
    """Breadth-first distance from `source` to every node it reaches (itself at 0)."""
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
    return dist


def check_prosqa_example(example: Example):
    """The invariants every ProsQA example (real or generated) satisfies."""
    meta = example.meta
    names, edges = meta["idx_to_symbol"], [tuple(e) for e in meta["edges"]]
    root, target, neg = meta["root"], meta["target"], meta["neg_target"]
    reachable = set(_hops(edges, root))
    assert target in reachable and neg not in reachable

    # The steps walk edges of the graph from the root to the target, each stated in the question.
    statement_edge = {}
    for parent, child in edges:
        subject = names[parent] if names[parent][0].isupper() else f"Every {names[parent]}"
        statement_edge[f"{subject} is a {names[child]}."] = (parent, child)
    node = root
    for step in example.steps:
        assert step in example.question
        parent, child = statement_edge[step]
        assert parent == node
        node = child
    assert node == target
    assert len(statement_edge) == len(edges) == example.question.count(".")

    assert example.answer == f"{names[root]} is a {names[target]}."
    person, a, b = names[root], names[target], names[neg]
    assert example.question.endswith((f"Is {person} a {a} or {b}?", f"Is {person} a {b} or {a}?"))


@pytest.mark.parametrize("size", ["default", "small"])
def test_generated_prosqa_graphs_are_valid(size):
    task = ProsQA(size)
    examples = task.generate(100, seed=3)
    low, high = task.config.path_length
    for example in examples:
        check_prosqa_example(example)
        assert low <= len(example.steps) <= high
    # The distractor comes first about half of the time.
    first = sum(e.question.rsplit(" a ", 1)[1].startswith(e.answer.split()[-1][:-1]) for e in examples)
    assert 20 < first < 80


@pytest.mark.parametrize("name, steps", [("prosqa_two_step", 2), ("prosqa_three_step", 3)])
def test_matched_distractor_is_as_deep_as_the_target(name, steps):
    for example in get_task(name).generate(100, seed=1):
        check_prosqa_example(example)
        meta = example.meta  # nodes 0 and 1 are the two initial people, one of them the root
        assert _hops(meta["edges"], 1 - meta["root"])[meta["neg_target"]] == len(example.steps) == steps


def test_uniform_path_length_balances_step_counts():
    # Unbalanced, 5-7-node graphs rarely hold a 3-step path; balanced, about half the examples do.
    unbalanced = ProsQA("mini", uniform_path_length=False).generate(400, seed=0)
    balanced = ProsQA("mini").generate(400, seed=0)
    assert sum(len(e.steps) == 3 for e in unbalanced) < 100
    assert 160 < sum(len(e.steps) == 3 for e in balanced) < 240
    for example in balanced:
        check_prosqa_example(example)
        assert len(example.steps) in (2, 3)


def test_prosqa_score_is_lenient_on_form_strict_on_content():
    task = ProsQA("small")
    example = task.generate(1, seed=5)[0]
    names, meta = example.meta["idx_to_symbol"], example.meta
    right = example.answer
    for variant in (right, right.upper(), right.lower().rstrip("."), f"  {right}  ", right.replace(" ", "  ")):
        assert task.score(variant, example), variant
    wrong = f"{names[meta['root']]} is a {names[meta['neg_target']]}."
    for variant in (wrong, names[meta["target"]], right + " Yes.", "", right[:-1] + "s."):
        assert not task.score(variant, example), variant


# ------------------------------------------------------------------------------ ProntoQA


def check_prontoqa_example(example: Example, hops: int):
    """The invariants every ProntoQA example (real or generated) satisfies."""
    meta, steps = example.meta, example.steps
    person = meta["idx_to_symbol"][0]
    assert len(steps) == hops + 1 and len(meta["chain_concepts"]) == hops
    assert meta["idx_to_symbol"][meta["target"]] == meta["chain_concepts"][-1]
    for concept, step in zip(meta["chain_concepts"], steps):
        membership, rule = step.split(". ", 1)
        assert re.fullmatch(rf"{person} is an? {concept}", membership)
        assert rule in example.question
    query = example.question.split("True or false: ")[1]
    assert (query == steps[-1]) == (example.answer == "True")
    # 4 * hops + 3 ontology sentences, two facts about the person, the query.
    assert example.question.count(".") == 4 * hops + 6


@pytest.mark.parametrize("size,hops", [("default", 5), ("small", 3)])
def test_prontoqa_examples_are_consistent(size, hops):
    examples = ProntoQA(size).generate(50, seed=11)
    for example in examples:
        check_prontoqa_example(example, hops)
    assert 10 < sum(e.answer == "True" for e in examples) < 40


def test_prontoqa_score():
    task = ProntoQA()
    example = next(e for e in task.generate(20, 0) if e.answer == "True")
    assert all(task.score(p, example) for p in ("True", "true", " TRUE. "))
    assert not any(task.score(p, example) for p in ("False", "Tru", "True or false"))


# ------------------------------------------------------------------------------ multiplication


def _number(spelled: str, reverse: bool = True) -> int:
    digits = spelled.replace(" ", "")
    return int(digits[::-1] if reverse else digits)


@pytest.mark.parametrize("digits,b_digits", [(4, 4), (3, 5), (1, 1), (6, 2)])
def test_multiplication_steps_are_long_multiplication(digits, b_digits):
    task = Multiplication(digits, b_digits)
    for example in task.generate(30, seed=digits):
        a_text, b_text = example.question.split(" * ")
        a, b = _number(a_text), _number(b_text)
        assert len(a_text.split()) == digits and len(b_text.split()) == b_digits
        total = 0
        for j, step in enumerate(example.steps):
            match = re.fullmatch(r"(?:\+ )?([\d ]+?)(?: \( ([\d ]+) \))?", step)
            partial = _number(match.group(1))
            assert partial == a * int(str(b)[::-1][j]) * 10**j
            total += partial
            if j:
                assert _number(match.group(2)) == total
        assert len(example.steps) == b_digits
        assert total == a * b == _number(example.answer) == example.meta["product"]


def test_multiplication_known_example_and_score():
    task = Multiplication()
    example = task.make_example(1234, 5678)
    assert example.question == "4 3 2 1 * 8 7 6 5"
    assert example.steps[0] == "2 7 8 9 0"
    assert example.answer == "2 5 6 6 0 0 7 0"  # 7006652 reversed, padded to 8 digits
    assert task.score("25660070", example) and task.score(" 2 5 6 6 0 0 7 0 .", example)
    assert not task.score("2 5 6 6 0 0 7 1", example)
    assert not task.score("2 5 6 6 0 0 7", example)
    assert not task.score("2 5 6 6 0 0 7 0 x", example)
    forward = Multiplication(reverse_digits=False).make_example(1234, 5678)
    assert forward.question == "1 2 3 4 * 5 6 7 8" and forward.answer == "0 7 0 0 6 6 5 2"


def test_multiplication_credit_counts_the_digits_written_right():
    """RL's partial credit: digit positions right over the longer length; 1 exactly when score is."""
    task = Multiplication()
    example = task.make_example(1234, 5678)  # answer 2 5 6 6 0 0 7 0
    assert task.credit("2 5 6 6 0 0 7 0 .", example) == 1.0 and task.score("2 5 6 6 0 0 7 0 .", example)
    assert task.credit("2 5 6 6 0 0 7 1", example) == 7 / 8  # the last digit wrong
    assert task.credit("2 5 6 6", example) == 4 / 8  # right as far as it goes, half the length
    assert task.credit("2 5 6 6 0 0 7 0 0 0", example) == 8 / 10  # too long: not full credit
    assert task.credit("9 9 9 9 9 9 9 9", example) == 0.0
    assert task.credit("2 5 x", example) == 0.0  # not a digit string


# ------------------------------------------------------------------------------ formats


def test_cot_and_no_cot_layout():
    example = Example("Is Tom a a or b?", ("Tom is a c.", "Every c is a a."), "Tom is a a.")
    prompt, target = cot_text(example)
    assert prompt + target == "Is Tom a a or b?\nTom is a c.\nEvery c is a a.\n### Tom is a a."
    assert prompt.rstrip("\n") == example.question
    prompt, target = no_cot_text(example)
    assert (prompt, target) == ("Is Tom a a or b?\n", "### Tom is a a.")
    assert cot_text(Example("q", (), "a")) == ("q\n", "### a")


def test_extract_answer():
    assert extract_answer("Tom is a c.\n### Tom is a a. ") == "Tom is a a."
    assert extract_answer("### x ### y\n") == "y"
    assert extract_answer("  no marker ") == "no marker"
    assert extract_answer("###") == ""


# ------------------------------------------------------------------------------ loader


def _records(examples):
    return [{"question": e.question, "steps": list(e.steps), "answer": e.answer, **e.meta} for e in examples]


def test_loader_round_trip_json_and_jsonl(tmp_path):
    examples = ProsQA("small").generate(5, seed=0)
    json_path = tmp_path / "data.json"
    json_path.write_text(json.dumps(_records(examples), indent=1))
    jsonl_path = tmp_path / "data.jsonl"
    jsonl_path.write_text("\n".join(json.dumps(r) for r in _records(examples)) + "\n\n")
    assert load_examples(json_path) == examples
    assert load_examples(str(jsonl_path)) == examples
    assert load_examples(json_path)[0].meta["edges"] == examples[0].meta["edges"]


def test_missing_file_names_the_path(tmp_path):
    path = tmp_path / "nope.json"
    with pytest.raises(FileNotFoundError, match="nope.json"):
        load_examples(path)


def test_malformed_jsonl_line_names_file_and_line(tmp_path):
    path = tmp_path / "broken.jsonl"
    good = json.dumps({"question": "q", "steps": [], "answer": "a"})
    path.write_text(f"{good}\n{good}\n{{\"question\": \n")
    with pytest.raises(DataError) as err:
        load_examples(path)
    assert "broken.jsonl" in str(err.value) and "line 3" in str(err.value)
    assert isinstance(err.value, ValueError)


def test_malformed_json_names_file_and_line(tmp_path):
    path = tmp_path / "broken.json"
    path.write_text('[\n {"question": "q", "steps": [], "answer": "a"},\n {"question": }\n]')
    with pytest.raises(DataError, match=r"broken\.json.*line 3"):
        load_examples(path)


@pytest.mark.parametrize(
    "item,key",
    [
        ({"question": "q", "steps": []}, "answer"),
        ({"steps": [], "answer": "a"}, "question"),
        ({"question": "q", "steps": "one step", "answer": "a"}, "steps"),
        ({"question": "q", "steps": [], "answer": 300}, "answer"),
    ],
)
def test_bad_item_names_file_index_and_key(tmp_path, item, key):
    path = tmp_path / "items.json"
    path.write_text(json.dumps([{"question": "q", "steps": [], "answer": "a"}, item]))
    with pytest.raises(DataError) as err:
        load_examples(path)
    message = str(err.value)
    assert "items.json" in message and "item 1" in message and repr(key) in message
    jsonl = tmp_path / "items.jsonl"
    jsonl.write_text(json.dumps(item) + "\n")
    with pytest.raises(DataError, match=rf"items\.jsonl: line 1.*{key}"):
        load_examples(jsonl)


def test_file_task_numeric_score_and_sampling(tmp_path):
    path = tmp_path / "gsm.json"
    items = [{"question": f"q{i}", "steps": ["<<1+1=2>>"], "answer": str(300 + i)} for i in range(10)]
    path.write_text(json.dumps(items))
    task = FileTask(path)
    assert task.name == "gsm"
    example = load_examples(path)[0]
    assert all(task.score(p, example) for p in ("300", "300.0", " 300. ", "$300", "3E2"))
    assert not any(task.score(p, example) for p in ("301", "30", "300 apples", ""))
    sample = task.generate(4, seed=1)
    assert sample == task.generate(4, seed=1) and len({e.question for e in sample}) == 4
    with pytest.raises(ValueError, match="10 examples"):
        task.generate(11, seed=0)


# ------------------------------------------------------------------------------ real data


@pytest.mark.parametrize(
    "file_name,task",
    [("prosqa_valid.json", ProsQA()), ("prontoqa_valid.json", ProntoQA()), ("gsm_valid.json", None)],
)
def test_real_files_load_and_score_themselves(file_name, task, shared_data):
    path = shared_data(file_name)
    examples = load_examples(path)
    assert examples and all(e.steps for e in examples)
    task = task or FileTask(path)
    for example in examples:
        assert task.score(example.answer, example)
        assert task.score(extract_answer(cot_text(example)[1]), example)


def test_real_prosqa_satisfies_the_generator_invariants(shared_data):
    for example in load_examples(shared_data("prosqa_valid.json")):
        check_prosqa_example(example)


def test_real_prontoqa_satisfies_the_generator_invariants(shared_data):
    for example in load_examples(shared_data("prontoqa_valid.json")):
        check_prontoqa_example(example, hops=5)


def test_default_prosqa_matches_real_statistics(shared_data):
    real = load_examples(shared_data("prosqa_valid.json"))
    generated = ProsQA().generate(300, seed=0)
    for measure in (lambda e: len(e.meta["idx_to_symbol"]), lambda e: len(e.steps)):
        real_mean = statistics.mean(map(measure, real))
        generated_mean = statistics.mean(map(measure, generated))
        assert abs(generated_mean - real_mean) <= 0.15 * real_mean
