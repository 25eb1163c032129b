"""Abstract-CoT layouts: [x; c; z; y] with the answer blind to c, [x; z; y], round-1 random spans."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from latent.data.parts import encode_parts
from latent.data.pipeline import collate
from latent.data.tasks import Example
from latent.data.tasks.multiplication import Multiplication
from latent.data.tokenizer import Tokenizer
from latent.infer.engine import make_generate
from latent.methods.abstract_cot import bottleneck_objective
from latent.methods.abstract_cot import layouts as abstract
from latent.models import presets
from latent.models.vocab import abstract_vocab_of
from latent.nn import Transformer

EXAMPLE = Example("Every cat is a mammal. Is Tom a mammal or a fish?", ("Tom is a cat.", "Every cat is a mammal."), "Tom is a mammal.")
TOK = Tokenizer.fit_word_level([EXAMPLE.question, *EXAMPLE.steps, "### " + EXAMPLE.answer, "Tom is a dog. A bird."], num_abstract=8)


def _records(fmt, examples=(EXAMPLE,), **kw):
    records, dropped = abstract.tokenize_abstract_examples(list(examples), TOK, fmt, 256, num_tokens=8, seed=0, **kw)
    assert dropped == 0
    return records


def test_bottleneck_layout_segments_and_labels():
    given = Example(EXAMPLE.question, EXAMPLE.steps, EXAMPLE.answer, meta={"abstract": "<abs_3> <abs_5>"})
    (record,) = _records("abstract_bottleneck", [given])
    parts = {seg: TOK.decode(record.tokens[record.segments == seg]) for seg in (abstract.QUESTION, abstract.COT, abstract.ABSTRACT, abstract.ANSWER)}
    assert parts[abstract.QUESTION] == EXAMPLE.question + "\n"
    assert parts[abstract.COT] == "Tom is a cat.\nEvery cat is a mammal.\n"
    assert parts[abstract.ABSTRACT] == "<beginabstract><abs_3><abs_5>"
    assert parts[abstract.ANSWER] == "<endabstract> ### Tom is a mammal. <eos>"
    labelled = (record.segments == abstract.ABSTRACT) | (record.segments == abstract.ANSWER)
    np.testing.assert_array_equal(record.loss_mask, labelled)  # z and y only, never x or c
    (plain,) = _records("abstract", [given])
    assert TOK.decode(plain.tokens) == EXAMPLE.question + "\n<beginabstract><abs_3><abs_5><endabstract> ### Tom is a mammal. <eos>"


def test_codes_layout_replaces_a_prefix_of_steps_and_labels_the_rest():
    coded = Example(EXAMPLE.question, EXAMPLE.steps[1:], EXAMPLE.answer, meta={"abstract": ["<abs_6>"]})
    uncoded = Example(EXAMPLE.question, EXAMPLE.steps, EXAMPLE.answer, meta={"abstract": []})
    first, second = _records("codes", [coded, uncoded])
    assert TOK.decode(first.tokens) == (
        EXAMPLE.question + "\n<beginabstract><abs_6><endabstract> Every cat is a mammal.\n### Tom is a mammal. <eos>"
    )
    np.testing.assert_array_equal(first.loss_mask, first.segments != abstract.QUESTION)
    assert abstract.ABSTRACT not in second.segments  # m = 0: plain CoT, no span
    with pytest.raises(ValueError, match="needs meta\\['abstract'\\]"):
        _records("codes", [EXAMPLE])


def test_round_one_draws_one_to_half_a_step_of_random_tokens_per_step_reproducibly():
    parts = encode_parts(EXAMPLE, TOK)
    lengths = [len(TOK.encode(s + "\n")) for s in EXAMPLE.steps]
    draws = [abstract.abstract_of(EXAMPLE, i, parts, 8, seed=0) for i in range(200)]
    assert abstract.abstract_of(EXAMPLE, 7, parts, 8, seed=0) == draws[7]  # seeded by (seed, index)
    totals = [len(d) for d in draws]
    assert min(totals) == len(lengths) and max(totals) == sum(n // 2 for n in lengths)
    assert len({t for d in draws for t in d}) == 8  # uniform over the abstract vocabulary
    assert max(len(abstract.abstract_of(EXAMPLE, i, parts, 8, seed=0, max_tokens=2)) for i in range(50)) == 2
    with pytest.raises(ValueError, match=r"<abs_0>..<abs_7>"):
        given = Example("q", (), "a", meta={"abstract": ["<abs_9>"]})
        abstract.abstract_of(given, 0, encode_parts(given, TOK), 8, seed=0)


def test_bottleneck_mask_hides_only_cot_keys_from_answer_side_queries():
    segments = np.asarray([[0, 1, 1, 2, 2, 3, 3, 4, 4]])
    mask = abstract.bottleneck_attention_mask(segments)[0]
    answer_rows, cot_cols = np.flatnonzero(segments[0] == 4), np.flatnonzero(segments[0] == 2)
    assert not mask[np.ix_(answer_rows, cot_cols)].any()
    mask[np.ix_(answer_rows, cot_cols)] = True
    assert mask.all()  # nothing else is hidden


CFG1 = presets.qwen3(vocab_size=128, d_model=32, n_layers=1, n_heads=4, n_kv_heads=2, d_ff=64, max_seq_len=128)


def _changed_cot(record):
    tokens = record.tokens.copy()
    cot = record.segments == abstract.COT
    tokens[cot] = np.roll(tokens[cot], 3)  # other CoT words, same layout
    return tokens


def test_answer_logits_do_not_change_when_the_cot_does_under_the_mask():
    """One layer: the answer side reads only x and z's inputs, so changing c changes nothing
    there under the mask (and does change it without the mask, so the check can fail). With
    more layers c still reaches the answer, but only through z's hidden states: the bottleneck."""
    (record,) = _records("abstract_bottleneck")
    model = Transformer(CFG1, rngs=nnx.Rngs(0))
    batch = collate([record], pad_id=TOK.pad_id, max_len=256)
    answer_side = batch["segments"][0] == abstract.ANSWER
    mask = abstract.bottleneck_attention_mask(batch["segments"])
    other = batch["tokens"].copy()
    other[0, -len(record.tokens):] = _changed_cot(record)
    logits = [model(t, padding_mask=batch["padding_mask"], attention_mask=mask).logits[0] for t in (batch["tokens"], other)]
    np.testing.assert_allclose(np.asarray(logits[0])[answer_side], np.asarray(logits[1])[answer_side], atol=1e-6)
    assert not np.allclose(np.asarray(logits[0])[~answer_side], np.asarray(logits[1])[~answer_side], atol=1e-3)
    free = [model(t, padding_mask=batch["padding_mask"]).logits[0] for t in (batch["tokens"], other)]
    assert not np.allclose(np.asarray(free[0])[answer_side], np.asarray(free[1])[answer_side], atol=1e-3)

    loss, count, _ = bottleneck_objective(model, {k: jnp.asarray(v) for k, v in batch.items()})
    assert int(count) == int(record.loss_mask[1:].sum())  # next-token labels on z and y
    assert np.isfinite(float(loss))


def test_engine_hides_the_chain_after_endabstract_like_the_training_mask():
    """Bottleneck decoding from a prompt holding x + c: every generated token equals the argmax
    of a full pass over the whole sequence under the training mask."""
    cfg = presets.gated(presets.qwen3(vocab_size=128, d_model=32, n_layers=2, n_heads=4, n_kv_heads=2, d_ff=64, max_seq_len=128))
    model = Transformer(cfg, rngs=nnx.Rngs(4))
    vocab = abstract_vocab_of(TOK, 8)
    (prompt,), _ = abstract.tokenize_abstract_prompts([EXAMPLE], TOK, "abstract_bottleneck", 256, open_span=True)
    graphdef, params = nnx.split(model)
    out = make_generate(graphdef, cfg, 10, -1, TOK.pad_id, 0.0, 1.0, abstract=vocab, abstract_max=2)(
        params, jnp.asarray(prompt.tokens[None]), jnp.ones((1, len(prompt.tokens)), bool), jax.random.PRNGKey(0),
        jnp.asarray(prompt.segments[None] == abstract.COT),
    )
    generated = np.asarray(out.tokens[0])
    end = list(generated).index(vocab.end_id)
    tokens = np.concatenate([prompt.tokens, generated])
    segments = np.concatenate([prompt.segments, np.full(end, abstract.ABSTRACT), np.full(len(generated) - end, abstract.ANSWER)])
    full = model(jnp.asarray(tokens[None]), attention_mask=abstract.bottleneck_attention_mask(segments[None])).logits[0]
    predicted = np.asarray(full[len(prompt.tokens) - 1 : -1])
    in_span = np.isin(np.arange(cfg.vocab_size), [*vocab.ids, vocab.end_id])
    for t in range(len(generated)):
        if t != end:  # inside the span the choice is over the allowed set; after it, free
            allowed = in_span if t < end else np.ones(cfg.vocab_size, bool)
            assert generated[t] == int(np.argmax(np.where(allowed, predicted[t], -np.inf)))
    # the check can fail: without the mask a full pass would predict other answer tokens
    unmasked = np.argmax(np.asarray(model(jnp.asarray(tokens[None])).logits[0, len(prompt.tokens) - 1 : -1]), -1)
    assert (unmasked[end + 1 :] != generated[end + 1 :]).any()


def test_keyed_round1_names_each_steps_result_one_to_one():
    from latent.config import ConfigError
    from latent.data.special_tokens import abstract_tokens

    assert abstract.step_result("Every rompus is a hilpus.") == "hilpus"
    assert abstract.step_result("6 9 8 0") == [6, 9, 8, 0]
    assert abstract.step_result("+ 0 0 8 4 4 ( 6 9 6 5 4 )") == [6, 9, 6, 5, 4]  # the running total
    words = [Example("q", ("Tom is a cat.", "Every cat is a mammal."), "a"), Example("q", ("Ann is a mammal.",), "b")]
    (tom, ann) = abstract.keyed_abstract(words, 8, max_tokens=4)
    assert len(tom) == 2 and tom[0] != tom[1] and ann == [tom[1]]  # "mammal" gets the same token twice
    assert set(tom) <= set(abstract_tokens(8))
    assert abstract.keyed_abstract(words, 8, max_tokens=1) == [[tom[0]], ann]  # cut to m_max
    digits = [Example("q", ("6 9 8 0", "+ 0 0 8 4 4 ( 6 9 6 5 4 )"), "6 9 6 5 4")]  # no factors in meta
    assert abstract.keyed_abstract(digits, 110, max_tokens=8) == [["<abs_69>", "<abs_80>", "<abs_69>", "<abs_65>", "<abs_104>"]]
    # a generated multiplication example: the partial products 896 * 1, 896 * 5, 896 * 5, unshifted,
    # 4 digits least-significant first ("0896" -> 6 9 8 0), two per token
    product = Multiplication(3).make_example(896, 551)
    assert abstract.step_results(product) == [[6, 9, 8, 0], [0, 8, 4, 4], [0, 8, 4, 4]]
    assert abstract.keyed_abstract([product], 110, max_tokens=8) == [["<abs_69>", "<abs_80>", "<abs_8>", "<abs_44>"]
                                                                   + ["<abs_8>", "<abs_44>"]]
    forward = Multiplication(3, reverse_digits=False).make_example(896, 551)
    assert abstract.step_results(forward) == [[0, 8, 9, 6], [4, 4, 8, 0], [4, 4, 8, 0]]
    # aligned: 896 * 5 * 10 and 896 * 5 * 100 in their columns, less the whole pair of zeros in
    # front of the last; the second product's odd length ends on a single digit (<abs_104>)
    assert abstract.step_results(product, aligned=True) == [[6, 9, 8, 0], [0, 0, 8, 4, 4], [0, 8, 4, 4]]
    aligned = abstract.keyed_abstract([product], 110, max_tokens=8, aligned=True)
    assert aligned == [["<abs_69>", "<abs_80>", "<abs_0>", "<abs_84>", "<abs_104>", "<abs_8>", "<abs_44>"]]
    # the columns add up: pairs as base-100 digits, product i's token t at column pair t + offset
    pair = lambda name: int(name[5:-1]) % 10 * 10 + int(name[5:-1]) // 10 if int(name[5:-1]) < 100 else int(name[5:-1]) - 100
    columns = [pair(aligned[0][0]) + pair(aligned[0][2]), pair(aligned[0][1]) + pair(aligned[0][3]) + pair(aligned[0][5]),
               pair(aligned[0][4]) + pair(aligned[0][6])]
    assert sum(c * 100 ** t for t, c in enumerate(columns)) == 896 * 551
    with pytest.raises(ConfigError, match="aligned needs least-significant-first digits"):
        abstract.step_results(forward, aligned=True)
    with pytest.raises(ConfigError, match="2 distinct words .* more than abstract.num_tokens=1"):
        abstract.keyed_abstract(words, 1, max_tokens=4)
    # keying other examples by these ones' map (a validation split by the training examples)
    unseen = [Example("q", ("Ann is a cat.", "Every cat is a bird."), "c")]
    assert abstract.keyed_abstract(unseen, 8, max_tokens=4, key_examples=words) == [[tom[0], abstract.UNKEYED]]
    with pytest.raises(ConfigError, match="numeric steps need abstract.num_tokens >= 110"):
        abstract.keyed_abstract(digits, 64, max_tokens=8)
