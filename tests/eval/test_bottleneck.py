"""chain_leak: does a bottleneck model's answer read z and x, or the chain c?"""

from __future__ import annotations

import numpy as np
import pytest
from flax import nnx

from latent.data.special_tokens import SPECIAL
from latent.data.tasks.multiplication import Multiplication
from latent.data.tokenizer import Tokenizer
from latent.methods.abstract_cot import layouts as abstract
from latent.methods.abstract_cot.chain_leak import chain_leak, model_predictor
from latent.models import presets
from latent.nn import Transformer

EXAMPLES = Multiplication(3).generate(12, seed=0)
SPANS = [["<abs_1>", "<abs_2>"]] * len(EXAMPLES)
TOK = Tokenizer.fit_word_level([t for e in EXAMPLES for t in (e.question, *e.steps, "### " + e.answer)], num_abstract=8)


def reader(source_segment):
    """A stand-in model whose answer is that of the example owning its `source_segment` (x or c):
    predicts the answer tokens of whichever example's question (or chain) is in the sequence."""
    answer_of = {}
    for e in EXAMPLES:
        (r,), _ = abstract.tokenize_abstract_examples([e], TOK, "abstract_bottleneck", 256, num_tokens=8, seed=0)
        answer_of[tuple(r.tokens[r.segments == source_segment])] = e.answer

    def predict(tokens_BxT, padding_BxT, segments_BxT):
        out = np.full(tokens_BxT.shape, -1)
        for b in range(len(tokens_BxT)):
            answer = answer_of[tuple(tokens_BxT[b][segments_BxT[b] == source_segment])]
            wanted = [TOK.id_of(SPECIAL.end_abstract), *TOK.encode(f"### {answer}"), TOK.eos_id]
            positions = np.flatnonzero(segments_BxT[b] == abstract.ANSWER)
            out[b, positions[:-1]] = wanted[1:]  # at each answer position, the next answer token
        return out

    return predict


def test_an_answer_that_reads_x_keeps_its_answer_and_one_that_reads_c_follows_the_chain():
    from_x = chain_leak(reader(abstract.QUESTION), TOK, EXAMPLES, SPANS, num_tokens=8, max_len=256, batch_size=5)
    assert from_x["n"] == len(EXAMPLES)
    assert from_x["own"] == from_x["swapped_vs_question"] == 1.0
    assert from_x["swapped_vs_chain"] < 0.8  # other products share some digits and the marker
    from_c = chain_leak(reader(abstract.COT), TOK, EXAMPLES, SPANS, num_tokens=8, max_len=256, batch_size=5)
    assert from_c["own"] == from_c["swapped_vs_chain"] == 1.0
    assert from_c["swapped_vs_question"] < 0.8


@pytest.mark.parametrize("n_layers", [1, 2])
def test_the_answer_reads_the_chain_only_through_zs_hidden_states(n_layers):
    """With the model's own predictor: one layer, the answer sees only x and z's inputs, so
    swapping c changes none of its predictions; two layers, c reaches it through z's positions."""
    cfg = presets.qwen3(vocab_size=TOK.vocab_size, d_model=32, n_layers=n_layers, n_heads=4, n_kv_heads=2, d_ff=64,
                        max_seq_len=256)
    graphdef, params = nnx.split(Transformer(cfg, rngs=nnx.Rngs(0)))
    predict, calls = model_predictor(graphdef, params), []

    def recording(tokens_BxT, padding_BxT, segments_BxT):
        calls.append((predict(tokens_BxT, padding_BxT, segments_BxT), segments_BxT))
        return calls[-1][0]

    leak = chain_leak(recording, TOK, EXAMPLES, SPANS, num_tokens=8, max_len=256)
    (own, own_segments), (swapped, swapped_segments), _ = calls  # one batch per condition
    same = (own[own_segments == abstract.ANSWER] == swapped[swapped_segments == abstract.ANSWER]).all()
    assert same == (n_layers == 1)
    if n_layers == 1:
        assert leak["own"] == leak["swapped_vs_question"]
    with pytest.raises(ValueError, match="at least 2 examples"):
        chain_leak(predict, TOK, EXAMPLES[:1], SPANS[:1], num_tokens=8, max_len=256)


def test_the_chain_leak_analysis_runs_the_model_on_params_and_compiles_once(monkeypatch):
    """As an Evaluator's analysis (latent.eval.analyses.ChainLeak) chain_leak gets a predict
    function jitted once on params: the numbers of model_predictor, and new params trace nothing."""
    from types import SimpleNamespace

    from latent.config import EvalConfig
    from latent.methods.abstract_cot.analyses import ChainLeak

    cfg = presets.qwen3(vocab_size=TOK.vocab_size, d_model=32, n_layers=2, n_heads=4, n_kv_heads=2, d_ff=64,
                        max_seq_len=256)
    graphdef, params = nnx.split(Transformer(cfg, rngs=nnx.Rngs(0)))
    other_params = nnx.split(Transformer(cfg, rngs=nnx.Rngs(1)))[1]
    evaluator = SimpleNamespace(graphdef=graphdef, tokenizer=TOK, examples=EXAMPLES, max_len=256,
                                eval_cfg=EvalConfig(batch_size=100))
    traced, mask = [], abstract.bottleneck_attention_mask
    monkeypatch.setattr(abstract, "bottleneck_attention_mask", lambda *a: traced.append(1) or mask(*a))
    analysis = ChainLeak(SPANS, num_tokens=8)
    leak = analysis([], evaluator, params)
    traces = len(traced)
    other = analysis([], evaluator, other_params)
    assert traces > 0 and len(traced) == traces  # the same compiled predict
    assert leak == chain_leak(model_predictor(graphdef, params), TOK, EXAMPLES, SPANS, num_tokens=8, max_len=256)
    assert other == chain_leak(model_predictor(graphdef, other_params), TOK, EXAMPLES, SPANS, num_tokens=8, max_len=256)
