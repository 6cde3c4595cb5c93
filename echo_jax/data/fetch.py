"""Finding dataset files on disk, and downloading missing ones with checksum verification.

The data folder is, in order: the `data_dir` argument, the ``ECHO_JAX_DATA_DIR`` environment
variable, or a per-user cache (``pooch.os_cache("echo_jax")``). Inside it every file sits at its
registry path (``mnist/train-images-idx3-ubyte.gz``, ...), so a folder filled by hand or copied from
another machine is used as is, with no network.

Downloads go through pooch, which streams into a temporary file beside the target and moves it
into place only after its sha256 matched: a corrupted or truncated transfer never leaves a file
that a later run would trust. A file with no pinned sha256 is never downloaded: it is put in the
data folder by hand.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import stat
import zlib
from pathlib import Path
from typing import Final

import pooch
import requests

from echo_jax.data.readers import DataFileUnreadableError, reading
from echo_jax.data.registry import REGISTRY
from echo_jax.errors import UserError

DATA_DIR_ENV: Final = "ECHO_JAX_DATA_DIR"
_DOWNLOAD_TIMEOUT_S: Final = 60


class DataUnavailableError(UserError, FileNotFoundError):
    """A dataset file is missing and could not be downloaded."""


class ChecksumMismatchError(UserError, ValueError):
    """A file's bytes or content do not hash to the registered sha256."""


def resolve_data_dir(data_dir: str | os.PathLike | None = None) -> Path:
    """The data folder: `data_dir`, else $ECHO_JAX_DATA_DIR, else the per-user cache.

    Args:
      data_dir: an explicit folder, or None.

    Returns:
      The folder as a Path (it may not exist yet).
    """
    if data_dir is not None:
        return Path(data_dir).expanduser()
    from_env = os.environ.get(DATA_DIR_ENV)
    if from_env:
        return Path(from_env).expanduser()
    return Path(pooch.os_cache("echo_jax"))


def is_present(path: Path) -> bool:
    """Whether a dataset file is at `path`; False when nothing is there (a download or another source then
    provides it).

    Raises:
      DataFileUnreadableError: a directory (or another non-file) is at `path`, or a folder above it may not
        be searched: falling back to a download (or another source) would hide the mistake.
    """
    try:
        mode = path.stat().st_mode
    except (FileNotFoundError, NotADirectoryError):
        return False
    except PermissionError:
        raise DataFileUnreadableError(
            f"permission denied looking up {path}; make the folders above it searchable (chmod a+rx) and run again"
        ) from None
    if stat.S_ISDIR(mode):
        raise DataFileUnreadableError(
            f"{path} is a directory, but that is where the dataset file {path.name} should be; move the "
            "directory away and run again, or put the file there in its place"
        )
    if not stat.S_ISREG(mode):
        raise DataFileUnreadableError(
            f"{path} is not a regular file, but that is where the dataset file {path.name} should be; move it "
            "away and run again, or put the file there in its place"
        )
    return True


def sha256_of_file(path: Path) -> str:
    """Hex sha256 of a file's bytes, read in chunks."""
    digest = hashlib.sha256()
    with reading(path), open(path, "rb") as stream:
        for chunk in iter(lambda: stream.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def check_sha256(actual: str, expected: str, what: str, remedy: str) -> None:
    """Raise ChecksumMismatchError unless the two digests agree.

    Args:
      actual: the digest computed.
      expected: the registered digest.
      what: what was hashed, for the message.
      remedy: what the user should do about it.
    """
    if actual != expected:
        raise ChecksumMismatchError(f"{what} has sha256 {actual}, expected {expected}. {remedy}")


def read_verified(relative_path: str, data_dir: str | os.PathLike | None = None) -> bytes:
    """Fetch a registry file and return its (decompressed, for .gz) content, verified.

    Files with a registered content digest (MNIST, Fashion-MNIST) are checked on their decompressed
    bytes, so a copy recompressed by another distributor is accepted; others on their raw bytes.

    Args:
      relative_path: the registry key.
      data_dir: the data folder (see `resolve_data_dir`).

    Returns:
      The file's content.
    """
    path = fetch(relative_path, data_dir)
    entry = REGISTRY[relative_path]
    with reading(path):
        raw = path.read_bytes()
    try:
        content = gzip.decompress(raw) if path.suffix == ".gz" else raw
    except (OSError, EOFError, zlib.error) as e:
        raise ChecksumMismatchError(
            f"{path} is truncated or corrupted ({type(e).__name__}: {e}); delete it and run again to download "
            f"{entry.url}, or put a good copy there"
        ) from None
    if entry.content_sha256 is not None:
        check_sha256(
            hashlib.sha256(content).hexdigest(),
            entry.content_sha256,
            f"The decompressed content of {path}",
            "The file is corrupted or not the canonical dataset: delete it and run again to download it.",
        )
    return content


def fetch(relative_path: str, data_dir: str | os.PathLike | None = None) -> Path:
    """Path of a registry file in the data folder, downloading it first if it is missing.

    A file already present is used as is when the registry has a content digest for it (its reader
    checks the content); otherwise its bytes are checked against the registered sha256.

    Args:
      relative_path: a key of `echo_jax.data.registry.REGISTRY`, e.g. "mnist/t10k-labels-idx1-ubyte.gz".
      data_dir: the data folder (see `resolve_data_dir`).

    Returns:
      The local path of the file.

    Raises:
      ValueError: if the path is not in the registry.
      DataUnavailableError: if the file is missing and the download failed (no network, HTTP
        error, interrupted transfer), or the registry pins no sha256 to check a download against;
        the message names the file, its URL and the folder.
      ChecksumMismatchError: if the downloaded or present bytes do not match the registered sha256.
      DataFileUnreadableError: a directory is at the file's path, or the file may not be read.
    """
    if relative_path not in REGISTRY:
        raise ValueError(f"Unknown data file {relative_path!r}; known files: {sorted(REGISTRY)}.")
    entry = REGISTRY[relative_path]
    folder = resolve_data_dir(data_dir)
    path = folder / relative_path
    if is_present(path):
        if entry.content_sha256 is None and entry.sha256 is not None:
            check_sha256(
                sha256_of_file(path),
                entry.sha256,
                f"The file {path}",
                f"It is corrupted or not the canonical file: delete it, or replace it with {entry.url}.",
            )
        return path
    if entry.sha256 is None:
        # Nothing would check what the server sends (a changed, truncated or substituted file would be
        # trusted from then on), so a file without a pinned sha256 is only ever provided by hand.
        raise DataUnavailableError(
            f"Data file {relative_path!r} is not in {folder}, and its sha256 is unknown (none is pinned in "
            f"echo_jax/data/registry.py), so it is not downloaded unchecked: download {entry.url} yourself and put "
            f"it at {path}, or point ${DATA_DIR_ENV} (or data_dir=) at a folder that has it."
        )
    created = [d for d in (path.parent, *path.parent.parents) if not d.exists()]  # deepest first
    try:
        pooch.retrieve(
            entry.url,
            known_hash=f"sha256:{entry.sha256}",
            fname=path.name,
            path=path.parent,
            downloader=pooch.HTTPDownloader(progressbar=False, timeout=_DOWNLOAD_TIMEOUT_S),
        )
    except (requests.exceptions.RequestException, OSError) as error:
        _remove_empty(created)
        if isinstance(error, OSError) and not isinstance(error, requests.exceptions.RequestException):
            raise DataUnavailableError(
                f"Data file {relative_path!r} is not in {folder} and cannot be saved there ({error}); put it at "
                f"{path} by hand, or point ${DATA_DIR_ENV} (or data_dir=) at a writable folder or one that has it."
            ) from error
        raise DataUnavailableError(
            f"Data file {relative_path!r} is not in {folder} and could not be downloaded from "
            f"{entry.url} ({type(error).__name__}: {error}). Download it on a machine with internet and "
            f"put it at {path}, or point ${DATA_DIR_ENV} (or data_dir=) at a folder that has it."
        ) from error
    except ValueError as error:
        _remove_empty(created)
        raise ChecksumMismatchError(
            f"The download of {entry.url} does not match its registered sha256 {entry.sha256}; nothing "
            f"was saved to {path}. ({error})"
        ) from error
    return path


def _remove_empty(created: list[Path]) -> None:
    """Removes the folders a failed download created (deepest first), so a failed lookup leaves no trace."""
    for directory in created:
        if directory.is_dir() and not any(directory.iterdir()):
            directory.rmdir()
