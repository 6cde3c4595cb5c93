"""Run files: written atomically, with the permissions the user's umask gives any new file."""

import os
import stat

import pytest

from echo_jax.files import write_atomic


@pytest.fixture
def umask():
    """Sets the process umask for one test and restores it after."""
    previous = os.umask(0o022)
    yield os.umask
    os.umask(previous)


@pytest.mark.parametrize(("mask", "expected"), [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
@pytest.mark.parametrize("content", ["text\n", b"bytes"])
def test_write_atomic_respects_the_umask(tmp_path, umask, mask, expected, content):
    umask(mask)
    path = tmp_path / "results.json"
    write_atomic(str(path), content)
    assert stat.S_IMODE(os.stat(path).st_mode) == expected
    assert path.read_bytes() == (content.encode() if isinstance(content, str) else content)


def test_write_atomic_replaces_a_file_and_leaves_no_temporary(tmp_path, umask):
    umask(0o022)
    path = tmp_path / "config.json"
    path.write_text("old")
    os.chmod(path, 0o600)  # a file from an older echo-jax, which wrote mode 0600
    write_atomic(str(path), "new")
    assert path.read_text() == "new"
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o644
    assert os.listdir(tmp_path) == ["config.json"]


def test_write_atomic_removes_its_temporary_on_failure(tmp_path):
    with pytest.raises(TypeError):
        write_atomic(str(tmp_path / "x.json"), 3)  # neither str nor bytes: the write fails
    assert os.listdir(tmp_path) == []
