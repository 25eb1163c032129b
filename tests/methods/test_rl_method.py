"""RL as a method: GRPO learns a reward with a known optimum (and the wrong sign does not), train.py
runs it from an SFT run with its metrics logged, a resumed RL run repeats the same rollouts and
losses, HRPO runs from a CoT run (its gate fresh), and what it cannot do yet is refused by name."""

from __future__ import annotations

import json
import sys
import warnings
from pathlib import Path

import jax
import numpy as np
import optax
import pytest
from flax import nnx

from latent.config import ConfigError
from latent.data.splits import fit_tokenizer, resolve_vocab
from latent.data.tasks import get_task
from latent.infer.engine import make_generate
from latent.methods import method_of
from latent.methods.rl.objective import advantages, policy_loss
from latent.methods.rl.replay import replay
from latent.methods.rl.rollout import rollout
from latent.methods.rl.step import make_rl_step
from latent.nn import Transformer
from latent.train.loop import train
from latent.train.step import init_state
from tests.conftest import tiny_run as tiny


def _learn_one_token(sign: float, steps: int = 40) -> float:
    """GRPO on one-token outputs rewarded when the token is `target`: the share of the last step's
    samples that are `target` (chance: 1 / vocabulary)."""
    examples = get_task("prosqa_small").generate(8, seed=0)
    tokenizer = fit_tokenizer(examples, [], "cot")
    cfg = resolve_vocab(tiny("rl.group_size=8", "rl.max_new_tokens=1"), tokenizer)
    graphdef, params = nnx.split(Transformer(cfg.model, rngs=nnx.Rngs(0)))
    target = tokenizer.id_of("###")
    prompts = [tokenizer.encode(e.question) for e in examples]
    P = max(map(len, prompts))
    prompt_BxP = np.full((len(prompts), P), tokenizer.pad_id, np.int32)
    mask_BxP = np.zeros((len(prompts), P), bool)
    for b, ids in enumerate(prompts):
        prompt_BxP[b, P - len(ids):], mask_BxP[b, P - len(ids):] = ids, True
    generate = make_generate(graphdef, cfg.model, 1, tokenizer.eos_id, tokenizer.pad_id, 1.0, 1.0, group_size=8)
    schedule = optax.constant_schedule(3e-2)
    optimizer = optax.adam(schedule)

    def objective(model, batch):
        replayed = replay(model, batch["rollouts"])
        return policy_loss(replayed.logprobs, batch["rollouts"].logprobs_NxT, batch["advantage_N"],
                           batch["rollouts"].mask_NxT, loss="clip", clip_low=0.2, clip_high=0.28,
                           aggregation="sequence_mean", max_tokens=1)

    step = jax.jit(make_rl_step(graphdef, optimizer, schedule, objective, inner_epochs=1))
    state = init_state(params, optimizer)
    for t in range(steps):
        rollouts = rollout(generate, state.params, prompt_BxP, mask_BxP, jax.random.PRNGKey(t))
        hit_N = np.asarray(rollouts.tokens_NxT[:, 0] == target, np.float32)
        advantage_N = sign * np.asarray(advantages(hit_N.reshape(-1, 8), "grpo", 1e-6)).reshape(-1)
        state, _ = step(state, {"rollouts": rollouts, "advantage_N": advantage_N})
    return float(hit_N.mean())


@pytest.mark.slow
def test_grpo_learns_a_one_token_reward_and_a_wrong_sign_does_not():
    assert _learn_one_token(+1.0) >= 0.95
    assert _learn_one_token(-1.0) <= 0.05


def _sft_run(tmp_path):
    workdir = tmp_path / "sft"
    train(tiny("train.steps=4", "task.n_train=32", "task.n_valid=8", "eval.max_new_tokens=8"), workdir, progress=False)
    return workdir


RL_ARGS = ("method=rl", "rl.group_size=2", "rl.prompts_per_step=4", "rl.max_new_tokens=8", "rl.inner_epochs=2",
           "task.n_train=32", "task.n_valid=8", "eval.max_new_tokens=8", "train.log_every=1")


@pytest.mark.slow
def test_train_py_runs_rl_from_an_sft_run_logs_its_metrics_and_resumes_to_the_same_losses(tmp_path):
    init = _sft_run(tmp_path)
    cfg = tiny(*RL_ARGS, f"train.init_from={init}", "train.steps=4", "train.eval_every=4", "train.checkpoint_every=2")
    straight = train(cfg, tmp_path / "straight", progress=False)
    assert straight["step"] == 4 and straight["eval"]["n"] == 8
    assert straight["train_step_compiles"] == len(straight["batch_shapes"])  # one compile per prompt-width bucket
    rows = [json.loads(line) for line in (tmp_path / "straight" / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in rows if "loss" in r]
    for key in ("reward_mean", "reward_std", "accuracy", "clip_fraction", "entropy", "generated_tokens",
                "rollout_s", "loss_first", "grad_norm"):
        assert all(np.isfinite(r[key]) for r in steps), key
    assert all(0 <= r["groups_with_signal"] <= 1 for r in steps)
    assert all(r["groups_with_signal"] > 0 or r["reward_std"] == 0 for r in steps)
    assert [r["step"] for r in steps] == [1, 2, 3, 4]
    # the step's time split: learning is measured between rollouts, from the second step on
    assert "learn_s" not in steps[0] and all(r["learn_s"] > 0 and 0 < r["rollout_share"] < 1 for r in steps[1:])
    from latent.eval.curves import panels_for, read_rows

    assert (tmp_path / "straight" / "curves.png").read_bytes()[:4] == b"\x89PNG"
    panels = [keys for keys, _, _ in panels_for(read_rows(tmp_path / "straight" / "metrics.jsonl"))]
    assert ("reward_mean", "accuracy") in panels  # an RL run's curves hold its rewards
    assert ("reward_mean", "accuracy") not in [k for k, _, _ in panels_for(read_rows(init / "metrics.jsonl"))]

    # scripts/rl_report.py reads the run against its start: the SFT run's last evaluation, the RL run's
    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))
    import rl_report

    rl_report.main([str(tmp_path / "straight"), "--out", str(tmp_path / "report" / "rl")])
    report = json.loads((tmp_path / "report" / "rl.json").read_text())[0]
    sft_evals = [r for r in read_rows(init / "metrics.jsonl") if "eval_accuracy" in r]
    assert report["steps"] == 4 and report["started_from"] == str(init)
    assert report["start_eval"]["accuracy"] == sft_evals[-1]["eval_accuracy"]
    assert report["last_eval"]["accuracy"] == straight["eval"]["accuracy"]
    assert "`rl.group_size=2`" in (tmp_path / "report" / "rl.md").read_text()
    assert (tmp_path / "report" / "rl.png").read_bytes()[:4] == b"\x89PNG"

    train(cfg, tmp_path / "resumed", progress=False, stop_at_step=2)
    train(cfg, tmp_path / "resumed", progress=False)
    resumed = [json.loads(line) for line in (tmp_path / "resumed" / "metrics.jsonl").read_text().splitlines()]
    by_step = {r["step"]: r for r in resumed if "loss" in r}
    for r in steps:
        assert by_step[r["step"]]["loss"] == r["loss"] and by_step[r["step"]]["reward_mean"] == r["reward_mean"]


def test_what_rl_cannot_do_yet_is_refused_by_name_and_switch_runs_are_not(tmp_path):
    with pytest.raises(ConfigError, match="method=rl continues a trained model: set train.init_from"):
        method_of(tiny("method=rl")).check(tiny("method=rl"))
    switch = tiny("method=rl", "train.init_from=/somewhere", "latent.mode=switch", "eval.max_latent_total=7")
    method_of(switch).check(switch)  # Switch-GRPO: SWITCH rollouts replay
    # A SWITCH rollout's latent steps take positions: rl.max_new_tokens plus the cap must fit a learned table.
    assert method_of(switch).train_positions(switch) == {"rl.max_new_tokens": switch.rl.max_new_tokens,
                                                         "eval.max_latent_total": 7}
    text = tiny("method=rl", "rl.max_new_tokens=9")
    assert method_of(text).train_positions(text) == {"rl.max_new_tokens": 9}


def test_rollouts_the_batch_devices_cannot_split_are_refused_before_training():
    """train() checks the rows its RL step takes (rl.prompts_per_step x rl.group_size) against the
    mesh's batch devices, as it checks train.batch_size, instead of failing inside the sharding."""
    from types import SimpleNamespace

    from latent.train.loop import check_batch_divides

    mesh = SimpleNamespace(shape={"data": 4, "fsdp": 2, "tensor": 1})
    with pytest.raises(ConfigError, match=r"rl.prompts_per_step=4 x rl.group_size=3 = 12 rollouts must be "
                                          r"divisible by data\*fsdp=8"):
        check_batch_divides(tiny("method=rl", "train.batch_size=8", "rl.prompts_per_step=4", "rl.group_size=3"), mesh)
    check_batch_divides(tiny("method=rl", "train.batch_size=8", "rl.prompts_per_step=4", "rl.group_size=4"), mesh)
    check_batch_divides(tiny("train.batch_size=8", "rl.prompts_per_step=4", "rl.group_size=3"), mesh)  # not RL: unread


@pytest.mark.parametrize("rl_args, source_args, message", [
    (("latent.mode=switch",), (), r"'model' policy \(switch.*writes <swi> and </swi>.*is a 'none'-policy run \(sft"),
    (("task.format=abstract",), (), r"'none' policy \(abstract_cot.*writes abstract tokens <abs_i>.*task.format=cot\)"),
    (("latent.mode=coconut",), ("latent.mode=switch",), r"'fixed' policy.*<bot> and <eot>.*a 'model'-policy run \(switch"),
    ((), ("latent.mode=coconut",), r"'none' policy \(sft.*writes text.*a 'fixed'-policy run \(coconut"),
])
def test_rl_refuses_a_start_whose_model_never_learned_its_policys_tokens(rl_args, source_args, message):
    cfg = tiny("method=rl", "train.init_from=runs/x", *rl_args)
    with pytest.raises(ConfigError, match=message):
        method_of(cfg).check_start(cfg, "run", tiny(*source_args))


def test_rl_continues_runs_of_its_own_policy_hrpo_a_text_run_and_only_text_from_hugging_face():
    for args in [(), ("latent.mode=switch",), ("latent.mode=coconut",), ("task.format=abstract",)]:
        cfg = tiny("method=rl", "train.init_from=runs/x", *args)
        method_of(cfg).check_start(cfg, "run", tiny(*args))  # an RL run continues as its SFT run would
        method_of(cfg).check_start(cfg, "run", cfg)
    hrpo = tiny("method=rl", "train.init_from=runs/x", "model.feedback=hrpo")
    method_of(hrpo).check_start(hrpo, "run", tiny())
    method_of(hrpo).check_start(hrpo, "huggingface", None)
    switch = tiny("method=rl", "train.init_from=hf", "latent.mode=switch")
    with pytest.raises(ConfigError, match="is a Hugging Face model, whose model never learned them"):
        method_of(switch).check_start(switch, "huggingface", None)


@pytest.mark.slow
def test_switch_grpo_from_a_cot_run_stops_before_reading_weights_and_writes_nothing(tmp_path):
    init = _sft_run(tmp_path)
    with pytest.raises(ConfigError, match="writes <swi> and </swi>"):
        train(tiny(*RL_ARGS, "latent.mode=switch", f"train.init_from={init}"), tmp_path / "rl", progress=False)
    assert not (tmp_path / "rl").exists()


def test_rl_warns_once_when_no_group_has_unequal_rewards_for_twenty_batches():
    from types import SimpleNamespace

    from latent.methods.rl.method import NO_SIGNAL_STEPS, RolloutSource

    source = SimpleNamespace(_steps_without_signal=0)
    warn = lambda share: RolloutSource._warn_if_no_signal(source, share)  # noqa: E731
    for _ in range(NO_SIGNAL_STEPS - 1):
        warn(0.0)
    warn(0.25)  # one group with signal starts the count again
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for _ in range(NO_SIGNAL_STEPS - 1):
            warn(0.0)
    with pytest.warns(UserWarning, match="20 batches of rollouts in a row had equal rewards.*task.n_train beyond"):
        warn(0.0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        warn(0.0)  # once


def test_an_rl_run_decodes_and_is_prompted_as_the_method_it_continues():
    from latent.methods import resolve_policy

    assert method_of(tiny("method=rl")).name == "rl"
    assert resolve_policy(tiny("method=rl", "latent.mode=coconut")) == "fixed"
    assert resolve_policy(tiny("method=rl", "task.format=abstract")) == "none"
    assert resolve_policy(tiny("method=rl", "model.feedback=hrpo")) == "hrpo"  # HRPO: a text run with the gate
    assert resolve_policy(tiny("method=rl", "model.feedback=hrpo", "latent.mode=coconut")) == "fixed"  # thoughts' rule
    assert resolve_policy(tiny("model.feedback=hrpo")) == "none"  # SFT does not decode with the gate
    assert method_of(tiny("method=rl")).updates_per_step(tiny("method=rl", "rl.inner_epochs=3")) == 3


@pytest.mark.slow
def test_rl_from_a_coconut_run_samples_and_evaluates_with_the_thoughts_its_stage_gives(tmp_path):
    coconut = ("latent.mode=coconut", "latent.epochs_per_stage=1", "latent.max_latent_stage=2", "task.n_train=16",
               "task.n_valid=8", "train.batch_size=8", "eval.max_new_tokens=8")
    train(tiny(*coconut, "train.steps=5", "train.eval_every=5"), tmp_path / "sft", progress=False)  # reaches stage 2
    cfg = tiny(*coconut, *RL_ARGS[:5], f"train.init_from={tmp_path / 'sft'}", "train.steps=2", "train.eval_every=2",
               "train.log_every=1")
    summary = train(cfg, tmp_path / "rl", progress=False)
    rows = [json.loads(line) for line in (tmp_path / "rl" / "metrics.jsonl").read_text().splitlines()]
    assert all(r["thoughts"] > 0 for r in rows if "loss" in r)  # the rollouts ran the stage's thoughts
    assert summary["eval"]["policy"] == "fixed" and summary["eval"]["mean_latent_steps"] > 0


@pytest.mark.slow
def test_a_kl_run_compares_with_the_started_from_model(tmp_path):
    """At the first update the params are the reference: the KL is 0; it grows as the policy moves."""
    init = _sft_run(tmp_path)
    cfg = tiny(*RL_ARGS, "rl.inner_epochs=1", "rl.kl_coef=0.5", "optimizer.lr=0.01", "optimizer.warmup_steps=0",
               f"train.init_from={init}", "train.steps=3", "train.eval_every=3")
    train(cfg, tmp_path / "kl", progress=False)
    kls = [json.loads(line)["kl"] for line in (tmp_path / "kl" / "metrics.jsonl").read_text().splitlines()
           if '"kl"' in line]
    assert len(kls) == 3 and abs(kls[0]) < 1e-6 and kls[2] > 1e-6


@pytest.mark.slow
def test_a_resumed_kl_run_reads_its_reference_from_the_checkpoint(tmp_path):
    """A KL run killed at step 2 resumes to the losses and KLs of one run straight through after
    train.init_from has gone: the frozen reference is in the checkpoint, not loaded again."""
    init = _sft_run(tmp_path)
    cfg = tiny(*RL_ARGS, "rl.inner_epochs=1", "rl.kl_coef=0.5", "optimizer.lr=0.01", "optimizer.warmup_steps=0",
               f"train.init_from={init}", "train.steps=4", "train.eval_every=4", "train.checkpoint_every=2")
    train(cfg, tmp_path / "straight", progress=False)
    train(cfg, tmp_path / "resumed", progress=False, stop_at_step=2)
    init.rename(tmp_path / "moved")
    train(cfg, tmp_path / "resumed", progress=False)

    def by_step(run):
        rows = [json.loads(line) for line in (tmp_path / run / "metrics.jsonl").read_text().splitlines()]
        return {r["step"]: (r["loss"], r["kl"]) for r in rows if "kl" in r}

    straight, resumed = by_step("straight"), by_step("resumed")
    assert sorted(straight) == [1, 2, 3, 4] and straight[4][1] > 1e-6
    assert resumed == straight


@pytest.mark.slow
def test_switch_grpo_from_a_switch_run_samples_spans_and_replays_them(tmp_path):
    """A tiny SWITCH SFT run, then method=rl for 2 steps: the rollouts open latent spans (the
    model policy, under the eval caps), the replay recomputes them, and the metrics are finite."""
    switch = ("latent.mode=switch", "latent.epochs_per_stage=1", "latent.switch_span=2", "task.n_train=16",
              "task.n_valid=8", "train.batch_size=8", "eval.max_new_tokens=8", "eval.latent_budget=2",
              "eval.max_latent_total=4")
    train(tiny(*switch, "train.steps=6", "train.eval_every=6"), tmp_path / "sft", progress=False)
    cfg = tiny(*switch, *RL_ARGS[:5], f"train.init_from={tmp_path / 'sft'}", "train.steps=2", "train.eval_every=2",
               "train.log_every=1")
    summary = train(cfg, tmp_path / "rl", progress=False)
    steps = [json.loads(line) for line in (tmp_path / "rl" / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in steps if "loss" in r]
    assert [r["step"] for r in steps] == [1, 2]
    for key in ("loss", "reward_mean", "clip_fraction", "entropy", "grad_norm", "thoughts", "latent_spans"):
        assert all(np.isfinite(r[key]) for r in steps), key
    assert all(0 <= r["thoughts"] <= 4 for r in steps) and sum(r["thoughts"] for r in steps) > 0
    assert abs(steps[0]["ratio_mean"] - 1.0) < 1e-5  # the train step's replay equals the rollouts (lr 0 at step 1)
    assert summary["eval"]["policy"] == "model"


@pytest.mark.slow
def test_abstract_cot_rl_continues_a_finished_warmup_under_constrained_decoding(tmp_path):
    """The paper's recipe end to end: a one-round warm-up, then method=rl from the warm-up's
    directory (its distilled model): rollouts write abstract spans under the constraint, the first
    update's replay equals them, and an unfinished warm-up is refused by name."""
    from latent.methods.abstract_cot.warmup import warmup

    abstract = ("task.format=abstract", "abstract.num_tokens=8", "abstract.max_tokens=3", "task.n_train=32",
                "task.n_valid=8", "eval.max_new_tokens=12")
    summary = warmup(tiny(*abstract, "train.steps=4", "abstract.rounds=1"), tmp_path / "warmup", progress=False)
    cfg = tiny(*abstract, *RL_ARGS[:5], "rl.max_new_tokens=12", f"train.init_from={tmp_path / 'warmup'}",
               "train.steps=2", "train.eval_every=2", "train.log_every=1")
    result = train(cfg, tmp_path / "rl", progress=False)
    record = json.loads((tmp_path / "rl" / "init_from.json").read_text())
    assert record["path"] == summary["final"] == str(tmp_path / "warmup" / "round1" / "distill")
    steps = [json.loads(line) for line in (tmp_path / "rl" / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in steps if "loss" in r]
    assert [r["step"] for r in steps] == [1, 2] and all(np.isfinite(r["loss"]) for r in steps)
    assert all(r["abstract_tokens"] > 0 for r in steps)  # the constraint makes every rollout open a span
    assert abs(steps[0]["ratio_mean"] - 1.0) < 1e-5  # the renormalised replay equals the rollouts
    assert result["eval"]["n"] == 8

    (tmp_path / "warmup" / "warmup.json").unlink()  # as if the warm-up had stopped before its end
    with pytest.raises(ConfigError, match="the Abstract-CoT warm-up in .* has not finished.*round1/distill"):
        train(cfg, tmp_path / "rl2", progress=False)
def test_a_fresh_feedback_starts_where_the_init_run_has_none_and_a_trained_one_is_not_dropped():
    """model.feedback=hrpo on a run whose feedback has no parameters (a CoT run's identity): the gate
    starts fresh at sigmoid(Lambda)^8 = 0.99, every other tensor is the run's, with a warning. From a
    run that trained a feedback with parameters (codi) the switch would drop them: refused."""
    from pathlib import Path

    from latent.train.init_from import with_fresh_feedback

    cot = tiny().model
    _, params = nnx.split(Transformer(cot, rngs=nnx.Rngs(0)))
    with pytest.warns(UserWarning, match="model.feedback='hrpo' starts its parameters fresh.*0.99"):
        started = with_fresh_feedback(cot, cot.replace(feedback="hrpo"), params, 3, Path("cot"))
    assert float(jax.nn.sigmoid(started["feedback"]["log_a"][...]).max() ** 8) == pytest.approx(0.99)
    # a start nearer the middle (model.hrpo_start_token_weight): the fresh gate is there
    with pytest.warns(UserWarning, match="sigmoid\\(Lambda\\)\\^8 = 0.5 of token embedding"):
        middle = with_fresh_feedback(cot, cot.replace(feedback="hrpo", hrpo_start_token_weight=0.5), params, 3, Path("cot"))
    assert float(jax.nn.sigmoid(middle["feedback"]["log_a"][...]).max() ** 8) == pytest.approx(0.5, abs=1e-5)
    assert started["feedback"]["w_r"]["kernel"][...].shape == (cot.d_model, cot.d_model)
    before, after = dict(jax.tree.leaves_with_path(params)), dict(jax.tree.leaves_with_path(started))
    assert {str(path[0].key) for path in set(after) - set(before)} == {"feedback"}
    for path, leaf in before.items():
        np.testing.assert_array_equal(np.asarray(after[path]), np.asarray(leaf), err_msg=str(path))
    nnx.merge(nnx.graphdef(Transformer(cot.replace(feedback="hrpo"), rngs=nnx.Rngs(0))), started)  # the run's model
    codi = cot.replace(feedback="codi")
    _, trained = nnx.split(Transformer(codi, rngs=nnx.Rngs(0)))
    with pytest.raises(ConfigError, match="trained model.feedback='codi'.*would drop"):
        with_fresh_feedback(codi, cot.replace(feedback="hrpo"), trained, 0, Path("codi"))


@pytest.mark.slow
def test_hrpo_rl_from_a_cot_run_trains_a_fresh_gate_logs_its_mix_and_resumes(tmp_path):
    """`train.py method=rl train.init_from=COT_RUN model.feedback=hrpo`: the rollouts feed the gated
    hybrid before the answer marker, the first update is at ratio 1, the gate starts at 0.99 token
    and moves (rewards by length give advantages), the run evaluates with the same policy, and a
    resumed run repeats the same losses and gate metrics."""
    init = _sft_run(tmp_path)
    cfg = tiny(*RL_ARGS, "rl.inner_epochs=1", f"train.init_from={init}", "model.feedback=hrpo", "rl.reward_length=-0.1",
               "optimizer.lr=0.01", "optimizer.warmup_steps=0", "train.steps=4", "train.eval_every=4",
               "train.checkpoint_every=2")
    with pytest.warns(UserWarning, match="HRPO's gate at sigmoid"):
        summary = train(cfg, tmp_path / "hrpo", progress=False)
    assert summary["eval"]["policy"] == "hrpo"
    steps = [r for r in map(json.loads, (tmp_path / "hrpo" / "metrics.jsonl").read_text().splitlines()) if "loss" in r]
    assert [r["step"] for r in steps] == [1, 2, 3, 4]
    for key in ("loss", "reward_mean", "grad_norm", "hrpo_a", "hrpo_token_weight", "hybrid_tokens"):
        assert all(np.isfinite(r[key]) for r in steps), key
    assert abs(steps[0]["ratio_mean"] - 1.0) < 1e-5
    assert all(r["hybrid_tokens"] > 0 for r in steps)
    assert steps[0]["hrpo_token_weight"] == pytest.approx(0.99, abs=1e-6)  # the fresh gate, before its first update
    assert 0.99 < steps[0]["hrpo_a"] < 1.0
    assert abs(steps[-1]["hrpo_token_weight"] - steps[0]["hrpo_token_weight"]) > 1e-6  # RL trains the gate

    train(cfg, tmp_path / "resumed", progress=False, stop_at_step=2)
    train(cfg, tmp_path / "resumed", progress=False)
    resumed = [json.loads(line) for line in (tmp_path / "resumed" / "metrics.jsonl").read_text().splitlines()]
    by_step = {r["step"]: r for r in resumed if "loss" in r}
    for r in steps:
        for key in ("loss", "reward_mean", "hrpo_a", "hrpo_token_weight"):
            assert by_step[r["step"]][key] == r[key], (r["step"], key)


@pytest.mark.slow
def test_the_abstract_batch_a_compile_takes_is_the_batch_an_hrpo_step_draws():
    """RolloutSource.abstract_batch (what tpu/aot.py compiles the RL step for) has every array of the
    batch `next` samples, with its shape and dtype: here every prompt is drawn, so the widest bucket."""
    from latent.data.splits import fit_run_tokenizer, load_splits

    cfg = tiny("method=rl", "model.feedback=hrpo", "rl.group_size=2", "rl.prompts_per_step=8", "rl.max_new_tokens=8",
               "task.n_train=8", "task.n_valid=4", "rl.kl_coef=0.1")
    method = method_of(cfg)
    train_examples, valid_examples, _ = load_splits(cfg)
    tokenizer = fit_run_tokenizer(cfg, train_examples, valid_examples)
    cfg = resolve_vocab(cfg, tokenizer)
    source = method.compile_source(cfg, train_examples, tokenizer, cfg.train.batch_size)  # no train.init_from needed
    params = nnx.split(Transformer(cfg.model, rngs=nnx.Rngs(0)))[1]
    source._reference_params = params  # the KL's reference, which a real run loads from train.init_from
    drawn = source.next(0, params)
    abstract = source.abstract_batch(jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), params), 0)
    assert jax.tree.structure(abstract) == jax.tree.structure(drawn)  # the same fields filled (hybrid_NxT, ...)
    assert drawn["rollouts"].hidden_part_NxTxD is not None and "ref_logp_NxT" in drawn
    for path, want in jax.tree_util.tree_leaves_with_path(drawn):
        got = dict(jax.tree_util.tree_leaves_with_path(abstract))[path]
        assert (got.shape, got.dtype) == (np.shape(want), jax.dtypes.canonicalize_dtype(np.asarray(want).dtype)), path
