"""Tokenizer wrapper: word-level round trips, special tokens, tokenizer.json I/O, errors."""

import json

import numpy as np
import pytest
import tokenizers
from tokenizers import decoders, models, pre_tokenizers, trainers

from latent.data.special_tokens import SPECIAL, SpecialTokens, abstract_tokens, all_special_tokens
from latent.data.tokenizer import Tokenizer, UnknownTokenError

PROSQA = "Every shumpus is a rempus.\nTom is a terpus.\n### Tom is a lempus."
ROUND_TRIP = [
    PROSQA,
    "1 2 3 * 4 5 6",
    "<bot><latent><latent><eot> Tom",
    "Is Tom a lempus or a scrompus?\n<bot><latent><eot>\n### Tom is a lempus.",
    "Answer: 5, yes! No; wait...\n\nTom <eos>",
    "<beginabstract><abs_0><abs_63><endabstract> Tom",
    "<swi><latent></swi> Tom is a rempus. <pad><pad>",
]
CORPUS = [*ROUND_TRIP, "0 7 8 9 = 5"]


@pytest.fixture(scope="module")
def word():
    return Tokenizer.fit_word_level(CORPUS)


# -------------------------------------------------------------------------------- registry


def test_registry_order_and_abstract_tokens():
    toks = all_special_tokens(3)
    assert toks[:2] == ["<pad>", "<eos>"]
    assert toks[-3:] == ["<abs_0>", "<abs_1>", "<abs_2>"]
    assert len(all_special_tokens()) == 9 + 64 and len(set(all_special_tokens())) == 73
    assert abstract_tokens(0) == []
    assert SpecialTokens().bot == SPECIAL.bot == "<bot>" and SPECIAL.swi_end == "</swi>"
    with pytest.raises(ValueError):
        abstract_tokens(-1)
    with pytest.raises(AttributeError):
        SPECIAL.bot = "<b>"  # frozen


# -------------------------------------------------------------------------------- word level


@pytest.mark.parametrize("text", ROUND_TRIP)
def test_word_level_round_trip(word, text):
    assert word.decode(word.encode(text)) == text


def test_word_level_splits_words_punctuation_digits_newlines(word):
    ids = word.encode("Tom is a lempus.\n1 2")
    assert [word.backend.id_to_token(i) for i in ids] == ["Tom", "is", "a", "lempus", ".", "\n", "1", "2"]
    # Non-canonical spacing normalises (documented): digits are tokens of their own.
    assert word.decode(word.encode("123  Tom .")) == "1 2 3 Tom."


def test_pad_eos_ids_and_special_tokens_never_split(word):
    assert word.pad_id == 0 and word.eos_id == 1
    for i, tok in enumerate(all_special_tokens()):
        assert word.id_of(tok) == i
        assert word.encode(tok) == [i]
    assert word.special_ids["<unk>"] == word.id_of("<unk>")
    assert list(word.special_ids)[:2] == ["<pad>", "<eos>"] and "\n" not in word.special_ids
    # Glued to words, specials are still single ids.
    assert word.encode("Tom<bot>a") == [word.id_of("Tom"), word.id_of("<bot>"), word.id_of("a")]


def test_special_tokens_are_not_vocabulary_words(word):
    # Special tokens in the training text must not reappear as ordinary words with a second id.
    vocab = word.backend.get_vocab(with_added_tokens=False)
    assert sorted(vocab.values()) == list(range(len(vocab)))
    assert not {"<", ">", "bot", "latent"} & set(vocab)
    assert word.vocab_size == len(set(word.backend.get_vocab(with_added_tokens=True).values()))


def test_skip_special_keeps_newlines(word):
    ids = word.encode("Tom<bot><latent><eot> is\na rempus.<eos>")
    assert word.decode(ids, skip_special=True) == "Tom is\na rempus."


def test_unknown_word_maps_to_unk(word):
    ids = word.encode("Tom is a zorblax.")
    assert ids[3] == word.id_of("<unk>")
    assert word.decode(ids) == "Tom is a <unk>."


def test_num_abstract_and_extra_tokens():
    tok = Tokenizer.fit_word_level(["<q> Tom <q>"], num_abstract=2, extra_tokens=["<q>"])
    assert tok.token_to_id("<abs_1>") is not None and tok.token_to_id("<abs_2>") is None
    assert tok.encode("<q><abs_1> Tom") == [tok.id_of("<q>"), tok.id_of("<abs_1>"), tok.id_of("Tom")]
    assert tok.decode(tok.encode("<q><abs_1> Tom")) == "<q><abs_1> Tom"
    with pytest.raises(ValueError, match="whitespace"):
        Tokenizer.fit_word_level(["a"], extra_tokens=["<a b>"])


def test_encode_batch_and_decode_arrays(word):
    assert word.encode_batch(ROUND_TRIP[:2]) == [word.encode(t) for t in ROUND_TRIP[:2]]
    assert word.decode(np.asarray(word.encode(PROSQA), dtype=np.int32)) == PROSQA


def test_id_of_missing_token_names_it(word):
    assert word.token_to_id("<nope>") is None
    with pytest.raises(KeyError) as info:
        word.id_of("<nope>")
    assert isinstance(info.value, UnknownTokenError)
    assert "<nope>" in str(info.value) and "add_special_tokens" in str(info.value)


def test_save_load_identical(word, tmp_path):
    path = word.save(tmp_path / "tokenizer.json")
    loaded = Tokenizer.from_file(path)
    assert loaded.backend.to_str() == word.backend.to_str()
    assert Tokenizer.from_file(tmp_path).vocab_size == word.vocab_size  # a directory works too
    for text in CORPUS:
        assert loaded.encode(text) == word.encode(text)
        assert loaded.decode(loaded.encode(text)) == word.decode(word.encode(text))
    assert loaded.special_ids == word.special_ids


# -------------------------------------------------------------------------------- from_file


@pytest.fixture
def bpe_file(tmp_path):
    """A tiny GPT-2-style byte-level BPE tokenizer.json, trained in memory."""
    bpe = tokenizers.Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=300, special_tokens=["<|endoftext|>"], show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    bpe.train_from_iterator(CORPUS, trainer=trainer)
    path = tmp_path / "tokenizer.json"
    bpe.save(str(path))
    return path


def test_from_file_bpe_and_add_special_tokens(bpe_file):
    tok = Tokenizer.from_file(bpe_file)
    endoftext = tok.id_of("<|endoftext|>")
    assert tok.eos_id == endoftext  # the tokenizer's own EOS while <eos> is absent
    with pytest.raises(KeyError, match="<pad>"):
        tok.pad_id
    assert len(tok.encode("<bot>")) > 1  # not yet a token: split into pieces

    size = tok.vocab_size
    latent = all_special_tokens(4)
    assert tok.add_special_tokens(latent) == len(latent)
    assert tok.add_special_tokens(latent) == 0  # idempotent
    assert tok.vocab_size == size + len(latent)
    # <pad> is the new one; EOS stays the tokenizer's own, which pretrained weights learned to emit
    assert tok.pad_id == size and tok.eos_id == endoftext and tok.id_of("<eos>") == size + 1
    for t in latent:
        assert tok.encode(t) == [tok.id_of(t)]
    text = "Tom is a lempus.\n<bot><latent><latent><eot> 1 2 3"
    assert tok.decode(tok.encode(text)) == text  # byte-level BPE round-trips exactly
    assert set(latent) | {"<|endoftext|>"} == set(tok.special_ids)


def test_from_file_errors(tmp_path):
    missing = tmp_path / "nope" / "tokenizer.json"
    with pytest.raises(FileNotFoundError, match="nope"):
        Tokenizer.from_file(missing)
    bad = tmp_path / "config.json"
    bad.write_text(json.dumps({"model_type": "gpt2", "vocab_size": 10}))
    with pytest.raises(ValueError, match="config.json"):
        Tokenizer.from_file(bad)
    garbage = tmp_path / "garbage.json"
    garbage.write_text("not json at all")
    with pytest.raises(ValueError, match="garbage.json"):
        Tokenizer.from_file(garbage)


def test_eos_missing_names_candidates(tmp_path):
    bare = tokenizers.Tokenizer(models.WordLevel({"a": 0, "[UNK]": 1}, unk_token="[UNK]"))
    bare.save(str(tmp_path / "tokenizer.json"))
    tok = Tokenizer.from_file(tmp_path / "tokenizer.json")
    with pytest.raises(KeyError, match="<\\|endoftext\\|>.*<eos>"):
        tok.eos_id


def test_json_text_round_trip():
    from latent.data.tokenizer import Tokenizer

    tok = Tokenizer.fit_word_level(["Tom is a lempus.\n### Tom is a lempus."])
    again = Tokenizer.from_json(tok.to_json())
    text = "Tom is a lempus.\n### Tom is a lempus."
    assert again.encode(text) == tok.encode(text) and again.decode(again.encode(text)) == text
