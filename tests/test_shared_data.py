"""The real-data locator: a missing file fails a CI run (naming the path) and skips elsewhere."""

from __future__ import annotations

import pytest

from tests.shared_data import shared_data_file


def test_missing_shared_data_fails_under_ci_and_names_the_path(tmp_path):
    root = tmp_path / "shared" / "data"  # absent
    with pytest.raises(BaseException) as failure:  # any outcome, so that a skip fails this test too
        shared_data_file("prosqa_valid.json", root=root, environ={"CI": "true"})
    assert failure.type is pytest.fail.Exception
    assert str(root / "prosqa_valid.json") in str(failure.value) and "absent" in str(failure.value)


@pytest.mark.parametrize("environ", [{}, {"CI": ""}, {"CI": "false"}, {"CI": "0"}])
def test_missing_shared_data_skips_outside_ci(tmp_path, environ):
    with pytest.raises(BaseException) as skip:
        shared_data_file("prosqa_valid.json", root=tmp_path, environ=environ)
    assert skip.type is pytest.skip.Exception
    assert str(tmp_path / "prosqa_valid.json") in str(skip.value)


def test_present_file_is_returned_under_ci_and_locally(tmp_path):
    (tmp_path / "gsm_valid.json").write_text("[]")
    for environ in ({"CI": "true"}, {}):
        assert shared_data_file("gsm_valid.json", root=tmp_path, environ=environ) == tmp_path / "gsm_valid.json"
