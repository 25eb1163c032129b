"""Natural-text corpora (task.name=text:...): regions, seeded disjoint splits, the BPE, the windows."""

import numpy as np
import pytest

from latent.config import ConfigError
from latent.data.splits import fit_run_tokenizer, load_splits, load_valid
from latent.data.tasks import check_task_name, get_task
from latent.data.tasks.text import TextCorpus, regions_of, token_stream, window_records, window_starts
from latent.data.tokenizer import Tokenizer
from latent.methods import method_of
from tests.conftest import tiny_run


def text_run(*overrides):
    return tiny_run("task.name=text:verne", "model.vocab_size=320", "task.max_len=64", *overrides)


def test_regions_cut_at_blank_lines_and_join_back_to_the_document():
    paragraphs = [f"paragraph {i} " + "word " * (7 * i + 3) for i in range(12)]
    document = "\n\n".join(paragraphs) + "\n"
    regions = regions_of(document, min_chars=100)
    assert "".join(regions) == document
    assert all(len(r) >= 100 for r in regions[:-1])
    assert all(r.startswith("paragraph") for r in regions)  # never cut inside a paragraph


def test_every_corpus_loads_and_regions_rebuild_their_documents():
    from latent.data.tasks.text import CORPORA, corpus_documents

    for corpus in CORPORA:
        documents = corpus_documents(corpus)
        assert documents and all(text.strip() for _, text in documents)
        regions = TextCorpus(f"text:{corpus}").regions
        by_document = {}
        for region in regions:
            by_document.setdefault(region.meta["document"], []).append(region.question)
        assert {name: "".join(parts) for name, parts in by_document.items()} == dict(documents)
    verne = corpus_documents("verne")[0][1]
    assert "Project Gutenberg" not in verne[:200] and "fairyland" in verne  # the licence header is cut off


def test_the_split_is_seeded_disjoint_and_covers_every_region():
    corpus = TextCorpus("text:pydoc+verne")
    train, valid = corpus.split(0.1, seed=7)
    assert corpus.split(0.1, seed=7) == (train, valid)
    assert TextCorpus("text:pydoc+verne").split(0.1, seed=7) == (train, valid)  # a new instance: the same split
    assert corpus.split(0.1, seed=8)[1] != valid
    key = lambda r: (r.meta["document"], r.meta["region"])  # noqa: E731
    assert not {key(r) for r in train} & {key(r) for r in valid}
    assert not {r.question for r in train} & {r.question for r in valid}
    assert sorted(map(key, train + valid)) == sorted(map(key, corpus.regions))
    assert len(valid) == round(0.1 * len(corpus.regions))
    assert valid == corpus.generate(len(valid), seed=7)  # the split is generate's prefix


def test_run_splits_and_tokenizer_come_from_the_training_regions():
    cfg = text_run()
    train, valid, scorer = load_splits(cfg)
    assert load_valid(cfg) == valid and scorer.name == "none"
    tokenizer = fit_run_tokenizer(cfg, train, valid)
    assert tokenizer.vocab_size <= 320 and tokenizer.pad_id == 0 and tokenizer.eos_id == 1
    assert tokenizer.to_json() == fit_run_tokenizer(cfg, train, valid).to_json()  # deterministic
    assert tokenizer.to_json() == Tokenizer.fit_byte_level_bpe([r.question for r in train], 320).to_json()
    text = valid[0].question
    assert tokenizer.decode(tokenizer.encode(text)) == text  # byte level: any text round-trips


def test_windows_make_every_token_but_the_first_a_target_exactly_once():
    cfg = text_run()
    train, valid, _ = load_splits(cfg)
    tokenizer = fit_run_tokenizer(cfg, train, valid)
    stream_N = token_stream(valid, tokenizer)
    assert np.sum(stream_N == tokenizer.eos_id) == len(valid)  # EOS after each region
    records, dropped = window_records(valid, tokenizer, max_len=16)
    assert dropped == 0 and len(records) > 3
    target_count_N = np.zeros(len(stream_N), int)
    for start, record in zip(window_starts(len(stream_N), 16), records):
        assert 2 <= len(record.tokens) <= 16
        np.testing.assert_array_equal(record.tokens, stream_N[start : start + len(record.tokens)])
        assert not record.loss_mask[0] and record.loss_mask[1:].all()  # the first token is context only
        target_count_N[start : start + len(record.tokens)] += record.loss_mask
    assert target_count_N[0] == 0 and (target_count_N[1:] == 1).all()
    assert window_starts(10, 4) == [0, 3, 6] and window_starts(11, 4) == [0, 3, 6, 9] and window_starts(1, 4) == []


def test_text_names_and_fields_are_checked():
    with pytest.raises(ConfigError, match=r"task.name='text:shakespeare'.*known: docstrings, pydoc, verne"):
        check_task_name("text:shakespeare")
    assert get_task("text:verne").name == "text:verne"
    with pytest.raises(ConfigError, match="task.path is not read"):
        load_splits(text_run("task.path=x.json"))
    with pytest.raises(ConfigError, match=r"task.valid_fraction=0.0"):
        load_splits(text_run("task.valid_fraction=0"))
    with pytest.raises(ConfigError, match=r"model.vocab_size=100 .*at least 265"):
        cfg = text_run("model.vocab_size=100")
        fit_run_tokenizer(cfg, *load_splits(cfg)[:2])


def test_a_text_corpus_is_language_modelling():
    assert method_of(text_run()).name == "lm"
    assert method_of(tiny_run()).name == "sft"
    with pytest.raises(ConfigError, match="more than one method"):
        method_of(text_run("latent.mode=coconut"))
    with pytest.raises(ConfigError, match="task.format=no_cot|abstract"):
        method_of(text_run()).check(text_run("task.format=abstract").replace(method="lm"))
