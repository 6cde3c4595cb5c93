"""Run files: written atomically, with the permissions the user's umask gives any new file; folders replaced so
that a kill leaves the old one or the new one."""

import os
import stat
import subprocess
import sys

import pytest

from echo_jax import files
from echo_jax.files import replace_directory, settle_replaced, write_atomic


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


def folder(path, content):
    path.mkdir(parents=True)
    (path / "results.json").write_text(content)
    return path


def test_replace_directory_puts_the_new_folder_in_place_of_the_old(tmp_path):
    replace_directory(str(folder(tmp_path / ".tmp-a", "new")), str(folder(tmp_path / "run", "old")))
    assert os.listdir(tmp_path) == ["run"] and (tmp_path / "run" / "results.json").read_text() == "new"
    replace_directory(str(folder(tmp_path / ".tmp-b", "first")), str(tmp_path / "other"))  # nothing to replace
    assert sorted(os.listdir(tmp_path)) == ["other", "run"]


_KILLED_BETWEEN_RENAMES = """
import os, sys
from echo_jax import files
renames = []
def rename(src, dst):
    renames.append(src)
    if len(renames) == 2:  # the new folder's rename: the process dies, no handler runs
        os._exit(9)
    os.replace(src, dst)
files.os.rename = rename
files.replace_directory(sys.argv[1], sys.argv[2])
"""


def test_a_replacement_killed_between_its_renames_leaves_the_old_folder_aside_and_settle_puts_it_back(tmp_path):
    new, target = folder(tmp_path / ".tmp-a", "new"), folder(tmp_path / "group" / "run", "old")
    killed = subprocess.run([sys.executable, "-c", _KILLED_BETWEEN_RENAMES, str(new), str(target)], check=False)
    assert killed.returncode == 9
    assert os.listdir(tmp_path / "group") == ["run.replaced"]
    settle_replaced(str(tmp_path / "group"))
    assert os.listdir(tmp_path / "group") == ["run"] and (target / "results.json").read_text() == "old"


def test_a_failed_rename_puts_the_old_folder_back_at_once(tmp_path, monkeypatch):
    new, target = folder(tmp_path / ".tmp-a", "new"), folder(tmp_path / "run", "old")
    real = os.rename

    def rename(src, dst):
        if src == str(new):
            raise OSError(28, "No space left on device")
        real(src, dst)

    monkeypatch.setattr(files.os, "rename", rename)
    with pytest.raises(OSError, match="No space"):
        replace_directory(str(new), str(target))
    monkeypatch.undo()
    assert sorted(os.listdir(tmp_path)) == [".tmp-a", "run"] and (target / "results.json").read_text() == "old"


def test_settle_replaced_deletes_a_folder_left_aside_beside_its_successor_at_any_depth(tmp_path):
    # Killed after the new folder was in place, before the old one was deleted: the new one stands.
    folder(tmp_path / "a" / "b" / "run", "new")
    folder(tmp_path / "a" / "b" / "run.replaced", "old")
    folder(tmp_path / "a" / "lost.replaced", "only")
    settle_replaced(str(tmp_path / "a"))  # not recursive: only a's own folders
    assert sorted(os.listdir(tmp_path / "a")) == ["b", "lost"]
    assert sorted(os.listdir(tmp_path / "a" / "b")) == ["run", "run.replaced"]
    settle_replaced(str(tmp_path), recursive=True)
    assert (
        os.listdir(tmp_path / "a" / "b") == ["run"]
        and (tmp_path / "a" / "b" / "run" / "results.json").read_text() == "new"
    )
