"""eval.py --analysis steering (latent.eval.steering): alpha 0 is the identity (bit-equal), the
latent layout's full pass reproduces the recurrence, a planted direction is recovered by the
mean difference and the probe, a planted steering effect gives the slope's sign, a direction's
cosine with itself across identical checkpoints is 1, and the CLI end to end on a tiny run with
three checkpoints (and with one), with one-line errors for data without the concept."""

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
from latent.errors import DataError
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
