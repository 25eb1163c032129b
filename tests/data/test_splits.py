"""Generated splits are built once and cached, keyed by task, count, seed and generator source."""

import pytest

from latent.data import splits
from latent.data.tasks import get_task


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv(splits.CACHE_ENV, str(tmp_path / "cache"))
    return tmp_path / "cache"


def _counting(task):
    calls = []
    real = task.generate

    def generate(n, seed):
        calls.append((n, seed))
        return real(n, seed=seed)

    task.generate = generate
    return calls


def test_a_generated_split_is_generated_once_then_read_back_equal(cache):
    task = get_task("prosqa_tiny")
    calls = _counting(task)
    first = splits.generate_cached("prosqa_tiny", task, 40, 3)
    again = splits.generate_cached("prosqa_tiny", task, 40, 3)
    assert calls == [(40, 3)] and again == first == get_task("prosqa_tiny").generate(40, seed=3)
    assert len(list((cache / "splits").glob("*.pkl"))) == 1
    splits.generate_cached("prosqa_tiny", task, 40, 4)  # another seed is another entry
    splits.generate_cached("prosqa_tiny", task, 41, 3)  # and another count
    assert calls == [(40, 3), (40, 4), (41, 3)]


def test_editing_a_generator_makes_its_old_entries_unreachable(cache, monkeypatch):
    before = splits.split_cache_path("prosqa_tiny", 40, 3)
    monkeypatch.setattr(splits, "_generators_fingerprint", lambda: "edited")
    assert splits.split_cache_path("prosqa_tiny", 40, 3) != before


def test_an_unreadable_entry_is_regenerated_and_an_empty_setting_turns_the_cache_off(cache, monkeypatch):
    task = get_task("prosqa_tiny")
    path = splits.split_cache_path("prosqa_tiny", 12, 0)
    path.parent.mkdir(parents=True)
    path.write_bytes(b"not a pickle")
    calls = _counting(task)
    assert splits.generate_cached("prosqa_tiny", task, 12, 0) == get_task("prosqa_tiny").generate(12, seed=0)
    assert calls == [(12, 0)]
    monkeypatch.setenv(splits.CACHE_ENV, "")
    assert splits.split_cache_path("prosqa_tiny", 12, 0) is None
    splits.generate_cached("prosqa_tiny", task, 12, 0)
    assert calls == [(12, 0), (12, 0)]
