"""Runs that start from a Hugging Face model directory, and `latent.export` back to one.

Tiny random transformers models with a byte-level BPE tokenizer trained here (no hub): the
method's tokens are added as single ids, the embedding grows, a few Coconut steps train, the
export loads in transformers with the logits of the run's checkpoint.
"""

from __future__ import annotations

import json
import typing

import jax
import numpy as np
import pytest
import tokenizers
import torch
import transformers
from flax import nnx
from tokenizers import decoders, models, pre_tokenizers, trainers

from latent.config import ConfigError, Family
from latent.config_io import apply_overrides, load_preset
from latent.data.pipeline import format_example
from latent.data.special_tokens import SPECIAL
from latent.data.tasks import get_task
from latent.data.tokenizer import Tokenizer
from latent.models import hf
from latent.models.vocab import grow_by_tokens
from latent.nn import Transformer
from latent.train import init_from
from tests.models.hf_reference import random_hf_model, tiny_hf_config

FAMILIES = typing.get_args(Family)
TOL = 1e-4
EOT = "<|endoftext|>"
COCONUT = ["latent.mode=coconut", "latent.epochs_per_stage=1", "latent.first_stage=1", "latent.max_latent_stage=2",
           "latent.reset_optimizer=true"]


def task_texts(n: int = 60) -> list[str]:
    texts = []
    for example in get_task("prosqa_small").generate(n, seed=0):
        texts += list(format_example(example, "cot"))
    return texts


def bpe_tokenizer(texts, vocab_size: int = 400) -> tokenizers.Tokenizer:
    """A GPT-2-style byte-level BPE tokenizer (with `<|endoftext|>` and a `<<` token), trained here."""
    backend = tokenizers.Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=[EOT], show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    backend.train_from_iterator([*texts, *["a << b << c"] * 200], trainer=trainer)
    return backend


def hf_directory(family: str, path, texts, **config_overrides):
    """A tiny random transformers model of `family` with its tokenizer.json, saved to `path`."""
    backend = bpe_tokenizer(texts)
    vocab = backend.get_vocab_size()
    overrides = dict(vocab_size=vocab, **config_overrides)
    if family == "gpt2":
        overrides.update(n_positions=256, bos_token_id=0, eos_token_id=0)
    else:
        overrides.update(max_position_embeddings=256)
    reference = random_hf_model(tiny_hf_config(family, **overrides))
    reference.save_pretrained(path)
    backend.save(str(path / "tokenizer.json"))
    return reference


def coconut_config(source, *extra):
    return apply_overrides(load_preset("tiny"), [
        *COCONUT, f"train.init_from={source}", "train.steps=2", "train.batch_size=4", "task.n_train=40",
        "task.n_valid=4", "task.max_len=200", "eval.max_new_tokens=4", "train.new_token_init=copy:<<", *extra,
    ])


def torch_logits(model, tokens) -> np.ndarray:
    with torch.no_grad():
        return model(input_ids=torch.tensor(tokens, dtype=torch.long)).logits.float().numpy()


def assert_close(ours, theirs, tol=TOL):
    diff = np.abs(np.asarray(ours, np.float32) - theirs).max()
    assert diff <= tol, f"max |logit diff| {diff:.3g} > {tol}"


def merged(model_cfg, params):
    graphdef = nnx.graphdef(nnx.eval_shape(lambda: Transformer(model_cfg, rngs=nnx.Rngs(0))))
    return nnx.merge(graphdef, params)


# ----------------------------------------------------------------------------- tokenizers


def test_method_tokens_are_single_ids_of_a_gpt2_style_bpe_and_round_trip():
    tok = Tokenizer(bpe_tokenizer(task_texts(20)))
    with pytest.raises(KeyError, match="<pad>"):
        tok.pad_id  # GPT-2 has no pad token: the run adds one
    cfg = load_preset("tiny")
    tokens = init_from.method_tokens(cfg, tok)
    assert SPECIAL.eos not in tokens  # the tokenizer's own EOS is used, not a new one
    before = tok.vocab_size
    tok.add_special_tokens(tokens)
    assert tok.vocab_size == before + len(tokens)
    for token in tokens:
        assert tok.encode(token) == [tok.id_of(token)], token
    assert tok.eos_id == tok.id_of(EOT) and tok.pad_id == tok.id_of(SPECIAL.pad)
    text = f"Tom is a cat.\n{SPECIAL.bot}{SPECIAL.latent}{SPECIAL.latent}{SPECIAL.eot} ### <abs_3><endabstract> yes{EOT}"
    ids = tok.encode(text)
    assert tok.decode(ids) == text
    assert ids.count(tok.id_of(SPECIAL.latent)) == 2


def test_eos_is_the_tokenizers_own_even_when_eos_was_added():
    tok = Tokenizer(bpe_tokenizer(task_texts(20)))
    tok.add_special_tokens([SPECIAL.eos])
    assert tok.eos_id == tok.id_of(EOT)  # GPT-2 ends text with <|endoftext|>, what its weights learned
    word_level = Tokenizer.fit_word_level(["Tom is a cat."])
    assert word_level.eos_id == word_level.id_of(SPECIAL.eos) == 1


@pytest.mark.parametrize("tied", [True, False])
def test_copy_rule_sets_new_rows_to_that_tokens_row(tied):
    tok = Tokenizer(bpe_tokenizer(task_texts(20)))
    source_id = tok.token_to_id("<<")
    assert source_id is not None and tok.encode("<<") == [source_id]
    from latent.models import presets

    cfg = presets.gpt2(vocab_size=tok.vocab_size, d_model=16, n_layers=1, n_heads=2, d_ff=32, tie_embeddings=tied)
    _, params = nnx.split(Transformer(cfg, rngs=nnx.Rngs(0)))
    old_embed = np.asarray(params["embed"][...])
    new_cfg, params, added = grow_by_tokens(cfg, params, tok, [SPECIAL.bot, SPECIAL.eot, SPECIAL.pad], "copy:<<")
    assert set(added) == {SPECIAL.bot, SPECIAL.eot, SPECIAL.pad} and min(added.values()) >= cfg.vocab_size
    assert new_cfg.vocab_size >= tok.vocab_size and new_cfg.vocab_size % 64 == 0
    embed = np.asarray(params["embed"][...])
    np.testing.assert_array_equal(embed[: cfg.vocab_size], old_embed)
    for token_id in added.values():
        np.testing.assert_array_equal(embed[token_id], old_embed[source_id])
        if not tied:
            head = np.asarray(params["lm_head"][...])
            np.testing.assert_array_equal(head[:, token_id], head[:, source_id])


def test_copy_rule_refuses_a_token_that_is_not_one_id():
    tok = Tokenizer(bpe_tokenizer(task_texts(20)))
    from latent.models import presets

    cfg = presets.gpt2(vocab_size=tok.vocab_size, d_model=16, n_layers=1, n_heads=2, d_ff=32)
    _, params = nnx.split(Transformer(cfg, rngs=nnx.Rngs(0)))
    with pytest.raises(ConfigError, match=r"train.new_token_init='copy:zebra crossing'.*'zebra crossing' is not a single token"):
        grow_by_tokens(cfg, params, tok, [SPECIAL.bot], "copy:zebra crossing")
    with pytest.raises(ConfigError, match="train.new_token_init"):
        apply_overrides(load_preset("tiny"), ["train.new_token_init=copy"])


# ----------------------------------------------------------------------------- sources


def test_init_from_names_its_kind_and_clear_errors(tmp_path, monkeypatch):
    monkeypatch.delenv("LATENT_NO_SUCH_DIR", raising=False)
    with pytest.raises(ConfigError, match=r"environment variable.*LATENT_NO_SUCH_DIR"):
        init_from.resolve_source("$LATENT_NO_SUCH_DIR")
    with pytest.raises(ConfigError, match="is not a run directory or a Hugging Face model directory"):
        init_from.resolve_source(str(tmp_path / "missing"))
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(ConfigError, match=r"neither checkpoints/.*nor \*.safetensors"):
        init_from.resolve_source(str(tmp_path))
    (tmp_path / "model.safetensors").write_bytes(b"")
    assert init_from.resolve_source(str(tmp_path)) == ("huggingface", tmp_path.absolute())
    (tmp_path / "checkpoints").mkdir()
    assert init_from.resolve_source(str(tmp_path))[0] == "run"


def test_model_overrides_that_contradict_the_hf_config_are_refused(tmp_path):
    hf_directory("gpt2", tmp_path, task_texts(10))
    cfg = coconut_config(tmp_path)
    init_from.check_init_from(cfg, ["model.dtype=bfloat16", "model.attention_impl=dot_product", "model.d_model=32", "train.steps=3"])  # agrees
    with pytest.raises(ConfigError, match=r"model.d_model=64 \(the checkpoint has 32\) contradicts"):
        init_from.check_init_from(cfg, ["model.d_model=64"])


# ----------------------------------------------------------------------------- end to end


def _sequences(tokenizer, vocab_before: int) -> np.ndarray:
    """Token rows over the original vocabulary and, in the second row, the added tokens."""
    rng = np.random.default_rng(0)
    rows = rng.integers(0, vocab_before, size=(2, 12))
    new_ids = [tokenizer.id_of(t) for t in (SPECIAL.bot, SPECIAL.latent, SPECIAL.eot, SPECIAL.pad, "<abs_1>")]
    rows[1, 3:3 + len(new_ids)] = new_ids
    return rows.astype(np.int32)


@pytest.mark.slow
@pytest.mark.parametrize("family", FAMILIES)
def test_train_from_hf_directory_then_export_loads_in_transformers(family, tmp_path):
    from latent import sharding
    from latent.export import export_run
    from latent.run import load_run
    from latent.train.loop import train

    source = tmp_path / "hf"
    reference = hf_directory(family, source, task_texts())
    vocab_before = reference.config.vocab_size
    cfg = coconut_config(source)

    # imported (tokens added, embedding grown) then exported, before any training: the original on its vocabulary
    mesh = sharding.make_mesh(cfg.mesh)
    start_cfg, params, tokenizer, record = init_from.load_start(cfg, mesh)
    assert start_cfg.model.family == family and start_cfg.model.vocab_size > vocab_before
    hf.save(merged(start_cfg.model, params), tmp_path / "imported")
    imported = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "imported", attn_implementation="eager")
    original_rows = np.random.default_rng(1).integers(0, vocab_before, size=(2, 10))
    assert_close(torch_logits(imported.float().eval(), original_rows)[..., :vocab_before],
                 torch_logits(reference, original_rows), tol=1e-5)

    summary = train(cfg, tmp_path / "run", progress=False)
    assert summary["step"] == 2
    written = json.loads((tmp_path / "run" / "init_from.json").read_text())
    assert written["kind"] == "huggingface" and written["path"] == str(source.absolute())
    assert written["new_token_init"] == "copy:<<" and written["added_tokens"] == record["added_tokens"]
    assert json.loads((tmp_path / "run" / "config.json").read_text())["train"]["init_from"] == str(source)

    out = export_run(tmp_path / "run", tmp_path / "exported")
    run = load_run(tmp_path / "run")
    graphdef, run_tokenizer = run.graphdef, run.tokenizer
    ours = nnx.merge(graphdef, run.params)
    exported = transformers.AutoModelForCausalLM.from_pretrained(out, attn_implementation="eager").float().eval()
    assert type(exported) is type(reference)
    rows = _sequences(run_tokenizer, vocab_before)
    assert_close(ours(jax.numpy.asarray(rows)).logits, torch_logits(exported, rows))
    trained = np.asarray(run.params["embed"][...])
    assert not np.allclose(trained[: vocab_before], np.asarray(params["embed"][...])[:vocab_before])  # it trained

    hf_tokenizer = transformers.AutoTokenizer.from_pretrained(out)
    text = f"Tom is a cat.\n{SPECIAL.bot}{SPECIAL.latent}{SPECIAL.eot} ### yes"
    assert hf_tokenizer(text)["input_ids"] == run_tokenizer.encode(text)
    assert hf_tokenizer.eos_token_id == run_tokenizer.eos_id == run_tokenizer.id_of(EOT)
    assert hf_tokenizer.pad_token_id == run_tokenizer.pad_id


def write_coconut_json(path, examples) -> str:
    path.write_text(json.dumps([{"question": e.question, "steps": list(e.steps), "answer": e.answer} for e in examples]))
    return str(path)


@pytest.mark.slow
def test_prosqa_coconut_gpt2_preset_runs_resumes_and_evaluates_without_the_hf_directory(tmp_path, capsys):
    import shutil

    from latent.eval.run import evaluate_workdir
    from latent.train.loop import train

    examples = get_task("prosqa_small").generate(44, seed=3)
    source = tmp_path / "gpt2"
    hf_directory("gpt2", source, task_texts())
    cfg = apply_overrides(load_preset("prosqa_coconut_gpt2"), [
        f"train.init_from={source}", f"task.path={write_coconut_json(tmp_path / 'train.json', examples[:40])}",
        f"task.valid_path={write_coconut_json(tmp_path / 'valid.json', examples[40:])}", "train.steps=2",
        "train.batch_size=8", "train.checkpoint_every=1", "task.max_len=200", "eval.max_new_tokens=4",
        "eval.batch_size=4", "checkpoint.async_save=false",
    ])
    assert cfg.optimizer.grad_accum == 4 and cfg.train.new_token_init == "copy:<<"
    workdir = tmp_path / "run"
    with pytest.warns(UserWarning, match=r"model section comes from its config.json \(model.vocab_size, model.d_model"):
        assert train(cfg, workdir, progress=False, stop_at_step=1)["step"] == 1
    record = json.loads((workdir / "init_from.json").read_text())
    tokenizer = Tokenizer.from_file(workdir / "tokenizer.json")
    assert record["kind"] == "huggingface" and record["added_tokens"][SPECIAL.bot] == tokenizer.id_of(SPECIAL.bot)
    shutil.rmtree(source)  # resuming and evaluating read the run directory only
    assert train(cfg, workdir, progress=False)["step"] == 2
    results = evaluate_workdir(workdir, progress=False)
    assert results["n"] == 4 and results["checkpoint_step"] == 2 and 0.0 <= results["accuracy"] <= 1.0


def test_prosqa_coconut_gpt2_preset_without_its_directory_is_one_clear_error(monkeypatch, tmp_path, capsys):
    import train as train_cli

    monkeypatch.delenv("LATENT_GPT2_DIR", raising=False)
    with pytest.raises(SystemExit) as exit_info:
        train_cli.main(["--config", "prosqa_coconut_gpt2", "--workdir", str(tmp_path / "run"), "--no-progress"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: train.init_from='$LATENT_GPT2_DIR'") and "LATENT_GPT2_DIR" in err and "\n" not in err


@pytest.mark.slow
def test_export_of_a_run_from_scratch_loads_in_transformers_and_canon_is_refused(tmp_path, capsys):
    from latent.export import main as export_main
    from latent.run import load_run
    from latent.train.loop import train

    base = ["train.steps=2", "task.n_train=40", "task.n_valid=4", "eval.max_new_tokens=4", "model.attn_gate=none"]
    train(apply_overrides(load_preset("tiny"), base), tmp_path / "run", progress=False)
    out = export_main(["--workdir", str(tmp_path / "run"), "--out", str(tmp_path / "hf")])
    run = load_run(tmp_path / "run")
    graphdef, tokenizer = run.graphdef, run.tokenizer
    exported = transformers.AutoModelForCausalLM.from_pretrained(out, attn_implementation="eager").float().eval()
    rows = np.random.default_rng(0).integers(0, tokenizer.vocab_size, size=(2, 9)).astype(np.int32)
    assert_close(nnx.merge(graphdef, run.params)(jax.numpy.asarray(rows)).logits, torch_logits(exported, rows))
    hf_tokenizer = transformers.AutoTokenizer.from_pretrained(out)
    text = "Tom is a wumpus.\n<bot><latent><eot> ### Tom is a wumpus."
    assert hf_tokenizer(text)["input_ids"] == tokenizer.encode(text)
    assert hf_tokenizer.decode(tokenizer.encode(text)) == tokenizer.decode(tokenizer.encode(text))
    assert hf_tokenizer.eos_token == SPECIAL.eos and hf_tokenizer.pad_token_id == tokenizer.pad_id == 0

    train(apply_overrides(load_preset("tiny"), [*base, "train.steps=1", "model.canon=2"]), tmp_path / "canon",
          progress=False)
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        export_main(["--workdir", str(tmp_path / "canon"), "--out", str(tmp_path / "canon_hf")])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "model.canon=2" in err and "\n" not in err
    assert not (tmp_path / "canon_hf").exists()


def test_a_finished_warmup_directory_with_a_stray_empty_checkpoints_dir_starts_from_its_final_phase(tmp_path):
    # a warm-up directory's top may hold an empty checkpoints/ (its own train.py call); before the
    # fix it was taken for a run directory, and init_from failed with "holds no complete checkpoint"
    final = tmp_path / "round2" / "distill"
    final.mkdir(parents=True)
    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "warmup.json").write_text(json.dumps({"final": str(final)}) + "\n")
    assert init_from.resolve_source(str(tmp_path)) == ("run", final)
