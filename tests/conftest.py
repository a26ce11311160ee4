"""Fixtures shared by the test files; plain helpers are in helpers.py."""

import pytest

from helpers import made_up_text


@pytest.fixture
def text_file(tmp_path):
    path = tmp_path / "tiny.txt"
    path.write_text(made_up_text())
    return str(path)
