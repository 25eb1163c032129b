"""eval.py --analysis probe (latent.eval.probe, latent.eval.states): the probe recovers a planted
linear signal and sits at chance on shuffled labels; the graph targets of a hand-made question;
the CoT node positions; the CLI end to end on a tiny Coconut run; clear errors."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from latent.data.tasks import Example
from latent.errors import ConfigError, DataError
from latent.eval.probe import (
    accuracy,
    example_graph,
    fit_probes,
    probe_probabilities,
    shuffled_labels,
    step_targets,
)
from latent.eval.states import node_positions, step_states
from tests.conftest import eval_cli, tiny_run, word_tokenizer


def planted(rng, n, means_CxD, noise):
    """Rows x = means[y] + noise, y uniform over the classes."""
    y_N = rng.integers(0, len(means_CxD), n)
    return means_CxD[y_N] + noise * rng.normal(size=(n, means_CxD.shape[1])) + 5.0, y_N  # + 5: off-centre features


def test_a_planted_linear_signal_is_recovered_and_shuffled_labels_stay_at_chance():
    rng = np.random.default_rng(0)
    C, D, n_test, shuffles = 10, 16, 2000, 30
    means_CxD = 1.5 * rng.normal(size=(C, D))
    x_train, y_train = planted(rng, 1000, means_CxD, noise=1.5)
    x_test, y_test = planted(rng, n_test, means_CxD, noise=1.5)
    chance = np.bincount(y_test).max() / n_test  # ~0.1: balanced classes
    # Probe 0 reads the planted states; probe 1 reads pure noise with the same labels.
    y_PxN = np.stack([y_train, y_train])
    y_PxN[:, :50] = -1  # unlabelled rows are ignored
    probes = fit_probes(np.stack([x_train, rng.normal(size=x_train.shape)]), y_PxN, C)
    acc_P = accuracy(probe_probabilities(probes, np.stack([x_test, rng.normal(size=x_test.shape)])),
                     np.stack([y_test, y_test]))
    assert acc_P[0] > 0.8 > chance + 0.6
    # Without signal the held-out accuracy is ~Binomial(n_test, 1/C) / n_test: std sqrt(0.1 * 0.9 / 2000) = 0.007.
    assert abs(acc_P[1] - chance) < 0.03

    # Shuffled labels on the planted states: each fit maps every class cluster to some random class, so
    # one shuffle's accuracy is the share of clusters it happens to map to their own class, ~Binomial(C, 1/C) / C
    # (std 0.095 around 0.1). The mean over 30 shuffles has std 0.095 / sqrt(30) = 0.017: 0.06 is 3.5 std, while
    # a control whose labels leaked would score like the probe (> 0.8).
    y_SxN = np.repeat(y_PxN[:1], shuffles, axis=0)
    control = fit_probes(np.repeat(x_train[None], shuffles, axis=0), shuffled_labels(y_SxN, np.random.default_rng(1)), C)
    control_S = accuracy(probe_probabilities(control, np.repeat(x_test[None], shuffles, axis=0)),
                         np.repeat(y_test[None], shuffles, axis=0))
    assert abs(control_S.mean() - chance) < 0.06


def test_shuffled_labels_permute_only_the_labelled_rows_of_each_probe():
    y_PxN = np.array([[0, 1, 2, -1, 3], [-1, -1, 4, 4, 1]])
    shuffled = shuffled_labels(y_PxN, np.random.default_rng(0))
    np.testing.assert_array_equal(shuffled < 0, y_PxN < 0)
    for p in range(2):
        assert sorted(shuffled[p]) == sorted(y_PxN[p])


def small_graph_example() -> Example:
    """Tom -> wumpus -> zumpus -> impus (the gold chain); Tom -> yumpus -> rompus; yumpus -> zumpus;
    Sam -> grimpus (the other side)."""
    names = ["Tom", "Sam", "wumpus", "yumpus", "zumpus", "rompus", "impus", "grimpus"]
    edges = [[0, 2], [0, 3], [2, 4], [3, 4], [3, 5], [4, 6], [1, 7]]
    steps = ["Tom is a wumpus.", "Every wumpus is a zumpus.", "Every zumpus is an impus."]
    return Example(question="... Is Tom a impus or grimpus?", steps=steps, answer="Tom is an impus.",
                   meta={"idx_to_symbol": names, "edges": edges, "root": 0, "target": 6, "neg_target": 7})


def test_the_targets_of_a_hand_made_graph():
    graph = example_graph(small_graph_example(), 0)
    assert graph.path == (0, 2, 4, 6)
    assert graph.hops == {0: 0, 2: 1, 3: 1, 4: 2, 5: 2, 6: 3}  # Sam's side is unreachable
    assert sorted(graph.frontier(0)) == [2, 3] and sorted(graph.frontier(1)) == [4, 5] and graph.frontier(2) == [6]

    classes = {name: c for c, name in enumerate(sorted(graph.names))}  # class index: alphabetical
    targets = step_targets([graph], np.array([[0, 1, 2, 3, -1]]), classes)
    c = classes
    assert targets.label_NxR.tolist() == [[c["wumpus"], c["zumpus"], c["impus"], -1, -1]]  # no 4th step
    frontier = [sorted(np.flatnonzero(row)) for row in targets.frontier_NxRxC[0]]
    assert frontier == [sorted([c["wumpus"], c["yumpus"]]), sorted([c["zumpus"], c["rompus"]]), [c["impus"]], [], []]
    assert targets.graph_NxC[0].all()  # every class here is a node of this graph


def test_examples_without_a_graph_or_a_chain_through_it_are_named():
    with pytest.raises(DataError, match=r"example 3 has no graph \(meta lacks \['idx_to_symbol', 'edges', 'root'\]\)"):
        example_graph(Example(question="2+2?", steps=("2+2=4",), answer="4"), 3)
    broken = small_graph_example()
    broken = Example(broken.question, (*broken.steps[:2], "So the answer is near."), broken.answer, broken.meta)
    with pytest.raises(DataError, match=r"example 0, step 3 \('So the answer is near.'\): its last word is not a node"):
        example_graph(broken, 0)


def test_cot_node_positions_are_the_token_before_each_steps_node():
    example = small_graph_example()
    tokenizer = word_tokenizer([example])
    from latent.data.parts import encode_parts

    parts = encode_parts(example, tokenizer)
    tokens = np.concatenate([parts.question, parts.chain(), parts.answer])
    positions = node_positions(example, tokenizer)
    assert [tokenizer.decode([int(tokens[p + 1])]).strip() for p in positions] == ["wumpus", "zumpus", "impus"]
    assert [tokenizer.decode([int(tokens[p])]).strip() for p in positions] == ["a", "a", "an"]


def test_a_run_with_nothing_to_probe_is_refused():
    run = SimpleNamespace(cfg=tiny_run("task.format=no_cot"), workdir=Path("runs/x"), meta={})
    with pytest.raises(ConfigError, match=r"runs/x is a sft run with task.format=no_cot: it has no latent slots"):
        step_states(run, [small_graph_example()])


@pytest.mark.slow
def test_eval_py_analysis_probe_end_to_end_on_a_tiny_coconut_run(tmp_path, capsys):
    from latent.train.loop import train

    # Stage 2 from the start: every prosqa_small example (2-3 steps) has 2 latent slots.
    cfg = tiny_run("latent.mode=coconut", "latent.first_stage=2", "latent.max_latent_stage=2", "train.steps=2",
                   "task.n_train=120", "task.n_valid=24", "eval.max_new_tokens=4")
    train(cfg, tmp_path, progress=False)
    capsys.readouterr()
    results = eval_cli("--workdir", str(tmp_path), "--analysis", "probe", "--batch-size", "16")
    out = capsys.readouterr().out

    saved = json.loads((tmp_path / "probe_valid.json").read_text())
    assert saved == json.loads(json.dumps(results))
    assert saved["analysis"] == "probe" and saved["checkpoint_step"] == 2
    assert (saved["method"], saved["kind"], saved["stage"]) == ("coconut", "latent", 2)
    assert saved["positions"] == ["slot 1 (step 1)", "slot 2 (step 2)"]
    L1 = cfg.model.n_layers + 1
    assert saved["layers"] == ["input"] + [f"block {layer}" for layer in range(1, L1)]
    assert saved["n_test"] == 24 and 0 < saved["n_train"] <= 120
    for key in ("accuracy", "control"):
        values = np.asarray(saved[key], float)
        assert values.shape == (2, L1) and np.all((values >= 0) & (values <= 1)), key
    frontier = saved["frontier"]
    for key in ("frontier_mass", "other_mass", "gold_mass"):
        assert np.asarray(frontier[key], float).shape == (2, L1), key
    # the gold node is on the frontier, and the masses are shares of one softmax
    assert np.all(np.asarray(frontier["gold_mass"]) <= np.asarray(frontier["frontier_mass"]) + 1e-6)
    assert np.all(np.asarray(frontier["frontier_mass"]) + np.asarray(frontier["other_mass"]) <= 1 + 1e-6)
    assert all(0 < chance < 1 for chance in saved["chance"]) and saved["n_test_per_position"] == [24, 24]
    png = tmp_path / "probe_valid.png"
    assert saved["plot"] == str(png) and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "control" in out and "probe mass on frontier" in out

    # Data without graphs: one clear line, exit status 2.
    data = tmp_path / "arithmetic.jsonl"
    data.write_text(json.dumps({"question": "What is 2 plus 2?", "steps": ["2 plus 2 is 4."], "answer": "4"}) + "\n")
    with pytest.raises(SystemExit) as refused:
        eval_cli("--workdir", str(tmp_path), "--analysis", "probe", "--data", str(data), "--out", str(tmp_path / "x.json"))
    assert refused.value.code == 2
    assert "error: example 0 has no graph (meta lacks ['idx_to_symbol', 'edges', 'root'])" in capsys.readouterr().err
