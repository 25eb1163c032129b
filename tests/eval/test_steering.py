"""eval.py --analysis steering (latent.eval.steering): alpha 0 is the identity (bit-equal), the
latent layout's full pass reproduces the recurrence, a planted direction is recovered by the
mean difference and the probe, a planted steering effect gives the slope's sign, a direction's
cosine with itself across identical checkpoints is 1, and the CLI end to end on a tiny run with
three checkpoints (and with one), with one-line errors for data without the concept. The node
concept (CoT runs) and the latent-vs-text-mode concept (SWITCH runs): their read positions, alpha 0
bit-identical, a steering direction along P(target)'s (P(<swi>)'s) gradient giving the slope its
sign, planted multi-class states separated and shuffled ones not, and the mode concept refused on a
run without SWITCH spans."""

from __future__ import annotations

import json
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from latent.data.special_tokens import SPECIAL
from latent.data.tasks import Example, get_task
from latent.errors import ConfigError, DataError
from latent.eval import steering as st
from latent.models import presets
from latent.nn import Transformer
from latent.nn.recurrence import continuous_thought_forward
from tests.conftest import eval_cli, tiny_model_fields, tiny_run, word_tokenizer


def tiny_model(vocab_size: int, max_seq_len: int = 256):
    return Transformer(presets.qwen3(**tiny_model_fields(vocab_size=vocab_size, max_seq_len=max_seq_len)),
                       rngs=nnx.Rngs(0))


def text_setup(n=6):
    examples = get_task("prosqa_small").generate(n, seed=3)
    tokenizer = word_tokenizer(examples)
    model = tiny_model(tokenizer.vocab_size)
    graphdef, params = nnx.split(model)
    run = types.SimpleNamespace(cfg=tiny_run(), tokenizer=tokenizer, graphdef=graphdef, params=params, meta={},
                                workdir="runs/x", step=0)
    return run, examples, model


def test_alpha_zero_is_bit_identical_to_no_steering():
    run, examples, model = text_setup()
    seq = st.text_sequences(run, examples, batch_size=4)[0]
    forward = st.make_forward(run.graphdef)
    inputs, at_BxT = st.device_inputs(seq), st.read_mask(seq)
    L, D = model.cfg.n_layers, model.cfg.d_model
    plain = model(jnp.asarray(seq.tokens_BxT), padding_mask=jnp.asarray(seq.padding_BxT)).logits
    plain_BxV = np.asarray(plain)[np.arange(len(seq.position_B)), seq.position_B]
    unsteered, _ = forward(run.params, inputs)
    zero, _ = forward(run.params, inputs, np.zeros((L, D), np.float32), at_BxT)
    np.testing.assert_array_equal(np.asarray(zero), np.asarray(unsteered))
    np.testing.assert_allclose(np.asarray(unsteered), plain_BxV, atol=1e-6)  # eager vs jitted: fusion order only
    moved, _ = forward(run.params, inputs, np.ones((L, D), np.float32), at_BxT)
    assert not np.array_equal(np.asarray(moved), np.asarray(unsteered))
    # the read position predicts the first option's token in one class and the second's in the other
    next_BxT = np.asarray(seq.tokens_BxT)[np.arange(len(seq.position_B)), seq.position_B + 1]
    np.testing.assert_array_equal(next_BxT, np.where(seq.label_B == 1, seq.first_id_B, seq.second_id_B))


def test_the_latent_full_pass_reproduces_the_recurrence():
    examples = [e for e in get_task("prosqa_small").generate(40, seed=3) if len(e.steps) == 2][:4]
    tokenizer = word_tokenizer(examples)
    tokenizer.add_special_tokens([SPECIAL.bot, SPECIAL.eot, SPECIAL.latent])
    model = tiny_model(tokenizer.vocab_size)
    graphdef, params = nnx.split(model)
    cfg = tiny_run("latent.mode=coconut", "latent.max_latent_stage=2")
    run = types.SimpleNamespace(cfg=cfg, tokenizer=tokenizer, graphdef=graphdef, params=params, meta={"stage": 2})
    seq = st.latent_sequences(run, examples, batch_size=4)[0]
    logits_BxV, _ = st.make_forward(graphdef)(params, st.device_inputs(seq))

    from latent.eval.states import latent_batches
    from latent.methods import method_of

    records = method_of(cfg).source(cfg, examples, tokenizer, batch_size=1).records
    K, (batch,) = latent_batches(records, tokenizer, cfg.latent, 2, 4)
    out = continuous_thought_forward(model, batch["prefix"], batch["prefix_mask"], batch["latent_mask"].sum(1),
                                     batch["suffix"], batch["suffix_mask"], max_latent=K)
    suffix_position_B = seq.position_B - batch["prefix"].shape[1] - K
    recurrent_BxV = np.asarray(out.logits)[np.arange(4), suffix_position_B]
    np.testing.assert_allclose(np.asarray(logits_BxV), recurrent_BxV, atol=2e-4)


def planted_states(n=800, L=3, D=16, seed=0):
    rng = np.random.default_rng(seed)
    u_D = rng.normal(size=D)
    u_D /= np.linalg.norm(u_D)
    label_N = rng.integers(0, 2, n)
    x_NxLxD = rng.normal(size=(n, L, D)) + 3.0 * label_N[:, None, None] * u_D
    return x_NxLxD.astype(np.float32), label_N, u_D


def test_the_directions_recover_a_planted_one_and_separate_it():
    x_NxLxD, label_N, u_D = planted_states()
    fit_N = np.arange(len(label_N)) % 2 == 0
    mean_diff_LxD = st.mean_difference(x_NxLxD[fit_N], label_N[fit_N])
    assert np.all(st.cosine(mean_diff_LxD, np.tile(u_D, (3, 1))) > 0.9)
    probe_LxD, accuracy_L = st.probe_directions(x_NxLxD, label_N, fit_N, ~fit_N)
    assert np.all(st.cosine(probe_LxD, np.tile(u_D, (3, 1))) > 0.9) and np.all(accuracy_L > 0.85)
    assert np.all(st.nearest_mean_accuracy(x_NxLxD, label_N, fit_N, ~fit_N) > 0.85)
    # shuffled classes: no direction to find
    shuffled = np.random.default_rng(1).permutation(label_N)
    _, chance_L = st.probe_directions(x_NxLxD, shuffled, fit_N, ~fit_N)
    assert np.all(chance_L < 0.7)
    v_LxD = st.steering_vectors(mean_diff_LxD, x_NxLxD)
    np.testing.assert_allclose(np.linalg.norm(v_LxD, axis=1), np.linalg.norm(x_NxLxD, axis=2).mean(0), rtol=1e-5)


def test_a_planted_steering_effect_gives_the_slope_its_sign():
    """Steer the last block's output along (and against) the gradient of the first option's logit
    margin: P(first) must rise with alpha along it and fall against it."""
    run, examples, model = text_setup()
    seq = st.text_sequences(run, examples, batch_size=6)[0]
    forward = st.make_forward(run.graphdef)
    inputs, at_BxT = st.device_inputs(seq), st.read_mask(seq)
    L, D = model.cfg.n_layers, model.cfg.d_model
    rows = np.arange(len(seq.position_B))

    def margin(add_D):
        logits_BxV, _ = forward(run.params, inputs, jnp.zeros((L, D)).at[L - 1].set(add_D), at_BxT)
        return (logits_BxV[rows, seq.first_id_B] - logits_BxV[rows, seq.second_id_B]).sum()

    g_D = np.asarray(jax.grad(margin)(jnp.zeros(D)))
    v_D = g_D / np.linalg.norm(g_D)
    alphas = (-0.2, -0.1, 0.0, 0.1, 0.2)
    for sign in (1.0, -1.0):
        p_A = []
        for alpha in alphas:
            add_LxD = np.zeros((L, D), np.float32)
            add_LxD[L - 1] = sign * alpha * v_D
            p_B, _, entropy_B = st.answer_readout(forward(run.params, inputs, add_LxD, at_BxT)[0], seq)
            assert np.all((p_B > 0) & (p_B < 1)) and np.all(entropy_B >= 0)
            p_A.append(p_B.mean())
        assert np.sign(st.slope(alphas, p_A)) == sign


def test_a_direction_is_cosine_one_with_itself_across_identical_checkpoints():
    x_NxLxD, label_N, _ = planted_states()
    directions = {"mean_difference": st.mean_difference(x_NxLxD, label_N), "probe": x_NxLxD[0]}
    cosines = st.across_checkpoints([{"directions": directions}, {"directions": dict(directions)}])
    for kind in ("mean_difference", "probe"):
        assert cosines[kind]["consecutive"] == [[1.0, 1.0, 1.0]]
        assert cosines[kind]["to_last"] == [[1.0, 1.0, 1.0], [1.0, 1.0, 1.0]]
    opposite = st.across_checkpoints([{"directions": directions},
                                      {"directions": {k: -v for k, v in directions.items()}}])
    assert opposite["mean_difference"]["consecutive"] == [[-1.0, -1.0, -1.0]]


def test_a_question_without_two_options_is_named():
    with pytest.raises(DataError, match="example 3 has no two-option question"):
        st.first_named_is_right(Example(question="What is 2 plus 2?", steps=(), answer="4"), 3)


@pytest.mark.slow
def test_eval_py_analysis_steering_over_three_checkpoints(tmp_path, capsys):
    from latent.train.loop import train

    cfg = tiny_run("latent.mode=coconut", "latent.first_stage=1", "latent.max_latent_stage=1", "train.steps=6",
                   "train.checkpoint_every=2", "checkpoint.keep=5", "checkpoint.keep_best=false", "task.n_train=32",
                   "task.n_valid=16", "train.eval_every=1000")
    train(cfg, tmp_path, progress=False)
    capsys.readouterr()
    results = eval_cli("--workdir", str(tmp_path), "--analysis", "steering", "--batch-size", "8")
    out = capsys.readouterr().out
    saved = json.loads((tmp_path / "steering_valid.json").read_text())
    assert saved == json.loads(json.dumps(results))
    assert saved["steps"] == [2, 4, 6] and [c["step"] for c in saved["checkpoints"]] == [2, 4, 6]
    assert saved["method"] == "coconut" and saved["alpha0_bit_equal"]
    L, A = cfg.model.n_layers, len(st.ALPHAS)
    for c in saved["checkpoints"]:
        assert len(c["separability"]) == L and len(c["slope"]) == L and np.asarray(c["p_first"]).shape == (L, A)
        assert c["n_fit"] + c["n_test"] == 16 and all(0 <= s <= 1 for s in c["separability"])
    assert np.asarray(saved["cosine"]["mean_difference"]["consecutive"]).shape == (2, L)
    assert saved["cosine"]["mean_difference"]["to_last"][-1] == [1.0] * L
    png = tmp_path / "steering_valid.png"
    assert saved["plot"] == str(png) and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "alpha 0 bit-identical to no steering: True" in out

    # --step 2: the run's history up to step 2, one checkpoint, said in the table
    one = eval_cli("--workdir", str(tmp_path), "--analysis", "steering", "--step", "2", "--out",
                   str(tmp_path / "one.json"))
    assert one["steps"] == [2] and one["cosine"]["mean_difference"]["consecutive"] == []
    assert "one checkpoint: no trend across training" in capsys.readouterr().out

    data = tmp_path / "arithmetic.jsonl"
    data.write_text("".join(json.dumps({"question": f"What is {i} plus 2?", "steps": [], "answer": str(i + 2)}) + "\n"
                            for i in range(4)))
    with pytest.raises(SystemExit) as refused:
        eval_cli("--workdir", str(tmp_path), "--analysis", "steering", "--data", str(data), "--out", str(tmp_path / "x.json"))
    assert refused.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: example 0 has no two-option question")

    # the mode concept on a run without SWITCH spans: one line, exit status 2, before any forward pass
    with pytest.raises(SystemExit) as refused:
        eval_cli("--workdir", str(tmp_path), "--analysis", "steering", "--steer-concept", "mode", "--out",
                 str(tmp_path / "mode.json"))
    assert refused.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: --steer-concept mode reads a SWITCH run's latent spans")
    assert "has latent.mode=coconut" in err[0] and not (tmp_path / "mode.json").exists()


# ----------------------------------------------------------------------------- the node concept


def node_setup(n=8):
    run, examples, model = text_setup(n)
    classes = st.node_classes(examples)
    batches = st.node_batches(run, examples, 4, classes)
    return run, examples, model, classes, batches


def test_node_positions_predict_each_steps_node_and_the_target_is_another_node_of_the_graph():
    run, examples, _, classes, batches = node_setup()
    names = {c: name for name, c in classes.items()}
    targets = st.node_targets(batches, classes, np.ones(len(classes), bool), run.tokenizer)
    for batch, (step_B, target_B, target_id_B) in zip(batches, targets):
        tokens_BxT = batch.inputs["tokens"]
        for b, graph in enumerate(batch.graphs):
            valid = np.flatnonzero(batch.valid_BxR[b])
            assert len(valid) == len(graph.path) - 1  # a word tokenizer: every step names its node
            for r in valid:
                next_token = tokens_BxT[b, batch.inputs["read"][b, r] + 1]
                assert next_token == batch.right_id_BxR[b, r] == run.tokenizer.encode(names[batch.class_BxR[b, r]])[0]
                assert names[batch.class_BxR[b, r]] == graph.names[graph.path[r + 1]]
            step = step_B[b]
            assert step in valid and target_B[b] != batch.class_BxR[b, step]
            assert names[target_B[b]] in graph.names and target_id_B[b] == run.tokenizer.encode(names[target_B[b]])[0]


def test_node_steering_alpha_zero_is_bit_identical_and_the_report_has_every_layer():
    run, examples, model, classes, batches = node_setup()
    forward = st.make_read_forward(run.graphdef)
    L, D = model.cfg.n_layers, model.cfg.d_model
    plain, _ = forward(run.params, batches[0].inputs)
    B, T = batches[0].inputs["tokens"].shape
    zero, _ = forward(run.params, batches[0].inputs, np.zeros((L, B, D), np.float32), np.ones((B, T), np.float32))
    np.testing.assert_array_equal(np.asarray(zero), np.asarray(plain))

    report = st.node_report(run, examples, batch_size=4)
    assert report["alpha0_bit_equal"] and report["n_steered"] > 0 and report["n_classes"] == len(classes)
    for key in ("separability", "mean_difference_separability", "slope", "margin_slope", "entropy_slope", "steering_norm"):
        assert len(report[key]) == L and all(np.isfinite(report[key])), key
    assert np.asarray(report["p_target"]).shape == (L, len(st.ALPHAS))
    assert report["directions"]["mean_difference"].shape == (L, len(classes) * D)
    a0 = st.ALPHAS.index(0.0)
    assert all(row[a0] == report["base_p_target"] for row in report["p_target"])  # alpha 0 is the unsteered pass


def test_steering_along_p_targets_gradient_gives_the_node_slope_its_sign():
    """Each target class's vector is the gradient of the summed P(target) with respect to it at the
    last block: a first-order increase, so P(target) must rise with alpha along it, fall against it."""
    run, examples, model, classes, batches = node_setup()
    targets = st.node_targets(batches, classes, np.ones(len(classes), bool), run.tokenizer)
    forward = st.make_read_forward(run.graphdef)
    L, D, C = model.cfg.n_layers, model.cfg.d_model, len(classes)

    def total_p(v_CxD):
        total = 0.0
        for batch, (step_B, target_B, target_id_B) in zip(batches, targets):
            add_LxBxD = jnp.zeros((L, len(step_B), D)).at[L - 1].set(v_CxD[target_B] * (step_B >= 0)[:, None])
            logits_BxRxV, _ = forward(run.params, batch.inputs, add_LxBxD, st.steered_mask(batch, step_B))
            rows = np.flatnonzero((step_B >= 0) & (batch.row_B % 2 == 1))  # the held-out examples the readout means
            log_p = jax.nn.log_softmax(logits_BxRxV[rows, step_B[rows]], axis=-1)
            total += jnp.exp(log_p[np.arange(len(rows)), target_id_B[rows]]).sum()
        return total

    g_CxD = np.asarray(jax.grad(total_p)(jnp.zeros((C, D))))
    v_CxLxD = np.zeros((C, L, D), np.float32)
    v_CxLxD[:, L - 1] = g_CxD / np.linalg.norm(g_CxD)
    alphas = (-0.2, -0.1, 0.0, 0.1, 0.2)
    for sign in (1.0, -1.0):
        p_A = [st.node_readout(st.node_steered_logits(forward, run.params, batches, targets, sign * v_CxLxD, L - 1, a),
                               batches, targets)["p"] for a in alphas]
        assert np.sign(st.slope(alphas, p_A)) == sign


def test_a_planted_node_signal_is_separated_and_shuffled_classes_are_not():
    rng = np.random.default_rng(0)
    C, L, D, n = 5, 2, 16, 1000
    u_CxD = rng.normal(size=(C, D))
    label_N = rng.integers(0, C, n)
    x_NxLxD = (rng.normal(size=(n, L, D)) + 2.5 * u_CxD[label_N][:, None]).astype(np.float32)
    fit_N, test_N = st.example_split(np.arange(n))
    mean_diff_CxLxD = st.class_mean_differences(x_NxLxD[fit_N], label_N[fit_N], C)
    for c in range(C):  # class c's mean minus the others' is c's planted vector minus the others' mean
        expected_D = u_CxD[c] - u_CxD[np.arange(C) != c].mean(0)
        assert np.all(st.cosine(mean_diff_CxLxD[c], np.tile(expected_D, (L, 1))) > 0.9)
    _, accuracy_L = st.multiclass_probe(x_NxLxD, label_N, C, fit_N, test_N)
    assert np.all(accuracy_L > 0.9) and np.all(st.nearest_class_mean_accuracy(x_NxLxD, label_N, fit_N, test_N) > 0.9)
    shuffled = rng.permutation(label_N)
    _, chance_L = st.multiclass_probe(x_NxLxD, shuffled, C, fit_N, test_N)
    assert np.all(chance_L < 0.35) and np.all(st.nearest_class_mean_accuracy(x_NxLxD, shuffled, fit_N, test_N) < 0.35)


# ----------------------------------------------------------------------------- the mode concept


def switch_setup(n=8, stage=2):
    examples = [e for e in get_task("prosqa_small").generate(60, seed=3) if len(e.steps) >= 3][:n]
    tokenizer = word_tokenizer(examples)
    tokenizer.add_special_tokens([SPECIAL.swi, SPECIAL.swi_end, SPECIAL.latent])
    model = tiny_model(tokenizer.vocab_size)
    graphdef, params = nnx.split(model)
    cfg = tiny_run("latent.mode=switch", "latent.switch_start=1")
    run = types.SimpleNamespace(cfg=cfg, tokenizer=tokenizer, graphdef=graphdef, params=params, meta={"stage": stage},
                                workdir="runs/s", step=0)
    return run, examples, model


def test_mode_positions_are_text_before_the_span_and_states_are_slots_and_text():
    run, examples, _ = switch_setup()
    swi = run.tokenizer.id_of(SPECIAL.swi)
    for batch in st.mode_batches(run, examples, 4):
        tokens_BxT, embed_mask_BxT = batch.inputs["tokens"], batch.inputs["embed_mask"]
        rows = np.arange(len(tokens_BxT))
        assert np.all(tokens_BxT[rows, batch.decision_B + 1] == swi)  # the decision position predicts <swi>
        assert np.all(batch.read_valid_BxR[rows, batch.decision_B])
        for b in rows:
            read = np.flatnonzero(batch.read_valid_BxR[b])
            assert np.all(batch.inputs["padding"][b, read]) and not np.any(tokens_BxT[b, read] == swi)
            assert read[-1] == batch.decision_B[b]
            states = batch.inputs["state"][b][batch.state_valid_BxS[b]]
            labels = batch.state_label_BxS[b][batch.state_valid_BxS[b]]
            assert labels.sum() == (labels == 0).sum() == 2  # stage 2: two slots, as many text positions
            assert np.all(embed_mask_BxT[b, states[labels == 1]]) and not np.any(embed_mask_BxT[b, states[labels == 0]])
            assert np.all(batch.inputs["padding"][b, states])


def test_mode_steering_alpha_zero_is_bit_identical_and_its_gradient_gives_the_slope_its_sign():
    run, examples, model = switch_setup()
    report = st.mode_report(run, examples, batch_size=4)
    L, D = model.cfg.n_layers, model.cfg.d_model
    assert report["alpha0_bit_equal"] and report["stage"] == 2
    for key in ("separability", "mean_difference_separability", "slope", "margin_slope", "decision_slope"):
        assert len(report[key]) == L and all(np.isfinite(report[key])), key
    assert np.asarray(report["p_swi"]).shape == (L, len(st.ALPHAS))

    batches = st.mode_batches(run, examples, 4)
    forward = st.make_read_forward(run.graphdef)
    swi = run.tokenizer.id_of(SPECIAL.swi)

    def total_p(v_D):
        total = 0.0
        for batch in batches:
            B, T = batch.inputs["tokens"].shape
            at_BxT = np.zeros((B, T), np.float32)
            at_BxT[:, : batch.read_valid_BxR.shape[1]] = batch.read_valid_BxR
            add_LxBxD = jnp.zeros((L, B, D)).at[L - 1].set(jnp.broadcast_to(v_D, (B, D)))
            p_BxR = jax.nn.softmax(forward(run.params, batch.inputs, add_LxBxD, at_BxT)[0], axis=-1)[..., swi]
            held_out = (batch.row_B % 2 == 1)[:, None] & batch.read_valid_BxR
            total += (jnp.where(held_out, p_BxR, 0.0).sum(1) / np.maximum(batch.read_valid_BxR.sum(1), 1)).sum()
        return total

    g_D = np.asarray(jax.grad(total_p)(jnp.zeros(D)))
    v_LxD = np.zeros((L, D), np.float32)
    v_LxD[L - 1] = g_D / np.linalg.norm(g_D)
    alphas = (-0.2, -0.1, 0.0, 0.1, 0.2)
    for sign in (1.0, -1.0):
        p_A = [st.mode_readout(st.mode_steered_logits(forward, run.params, batches, sign * v_LxD, L - 1, a), batches, swi)["p"]
               for a in alphas]
        assert np.sign(st.slope(alphas, p_A)) == sign


def test_the_mode_concept_needs_a_switch_run_and_slots():
    run, examples, _ = text_setup()
    with pytest.raises(ConfigError, match="--steer-concept mode reads a SWITCH run's latent spans .* has latent.mode=none"):
        st.check_concept("mode", run, examples)
    switch_run, switch_examples, _ = switch_setup(stage=0)
    with pytest.raises(st.NoSlots, match="stage 0, which has no latent slots"):
        st.mode_batches(switch_run, switch_examples, 4)
    with pytest.raises(ConfigError, match="--steer-concept node reads the written steps of a text run"):
        st.check_concept("node", switch_run, switch_examples)
    with pytest.raises(ConfigError, match="'nodes' is not a steering concept"):
        st.SteeringAnalysis("nodes")


def test_steer_concept_needs_the_steering_analysis(capsys):
    with pytest.raises(SystemExit) as refused:
        eval_cli("--workdir", "runs/none", "--steer-concept", "node")
    assert refused.value.code == 2
    assert "--steer-concept picks --analysis steering's concept" in capsys.readouterr().err


@pytest.mark.slow
def test_eval_py_steers_the_node_concept_of_a_cot_run_and_the_mode_concept_of_a_switch_run(tmp_path, capsys):
    from latent.train.loop import train

    common = ("train.steps=4", "train.checkpoint_every=2", "checkpoint.keep=5", "checkpoint.keep_best=false",
              "task.n_train=32", "task.n_valid=16", "train.eval_every=1000")
    runs = {"node": (tmp_path / "cot", tiny_run(*common)),
            "mode": (tmp_path / "switch", tiny_run("latent.mode=switch", "latent.first_stage=1", *common))}
    for concept, (workdir, cfg) in runs.items():
        train(cfg, workdir, progress=False)
        capsys.readouterr()
        saved_path = workdir / f"steering_{concept}.json"
        eval_cli("--workdir", str(workdir), "--analysis", "steering", "--steer-concept", concept, "--out", str(saved_path))
        out = capsys.readouterr().out
        saved = json.loads(saved_path.read_text())
        assert saved["concept"] == concept and saved["steps"] == [2, 4] and saved["alpha0_bit_equal"]
        assert saved["output"] == st.OUTPUTS[concept] and f"slope d{st.OUTPUTS[concept]}/dalpha" in out
        L, A = cfg.model.n_layers, len(st.ALPHAS)
        probability = {"node": "p_target", "mode": "p_swi"}[concept]
        for c in saved["checkpoints"]:
            assert len(c["separability"]) == L and len(c["slope"]) == L and len(c["margin_slope"]) == L
            assert np.asarray(c[probability]).shape == (L, A) and all(0 <= s <= 1 for s in c["separability"])
        assert np.asarray(saved["cosine"]["mean_difference"]["consecutive"]).shape == (1, L)
        assert np.asarray(saved["cosine"]["probe"]["to_last"]).shape == (2, L)
        assert saved["plot"] and saved_path.with_suffix(".png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # the node concept reads written steps: a SWITCH run is refused in one line
    with pytest.raises(SystemExit) as refused:
        eval_cli("--workdir", str(tmp_path / "switch"), "--analysis", "steering", "--steer-concept", "node",
                 "--out", str(tmp_path / "x.json"))
    assert refused.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: --steer-concept node reads the written steps of a text run")
