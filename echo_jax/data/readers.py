"""Plain-numpy readers for the canonical dataset formats, each checking what it reads.

idx (MNIST, Fashion-MNIST), `.amat` (binarized MNIST), the binarized-MNIST npz repack, the Omniglot
zip of PNGs and its npz repack, the IWAE `chardata.mat`, and the dSprites npz/hdf5.
"""

from __future__ import annotations

import contextlib
import io
import re
import zipfile
import zlib
from pathlib import Path
from typing import Final

import numpy as np
from PIL import Image

from echo_jax.errors import UserError

_IDX_DTYPE_CODE_UINT8: Final = 0x08
_AMAT_LINE_BYTES: Final = 2 * 784
OMNIGLOT_SIZE: Final = 105
OMNIGLOT_DRAWERS: Final = 20


class DataFormatError(UserError, ValueError):
    """A file does not hold what its format promises."""


class DataFileUnreadableError(UserError, OSError):
    """A dataset file is there but cannot be read: no permission, or a directory where the file should be.
    The file itself may be good, so the fix is never to delete it."""


def permission_denied(path: Path | str) -> DataFileUnreadableError:
    """The error for a dataset file this process may not read."""
    return DataFileUnreadableError(
        f"permission denied reading {path}; make it readable (chmod a+r {path}, as its owner or with sudo) "
        "and run again: the file itself may be good"
    )


@contextlib.contextmanager
def reading(path: Path | str):
    """Turns a permission error of the reads inside into `DataFileUnreadableError` naming `path`, before any
    handler that would call an unreadable file truncated or corrupted."""
    try:
        yield
    except PermissionError:
        raise permission_denied(path) from None


@contextlib.contextmanager
def open_npz(path: Path, **kwargs):
    """`np.load` of an npz archive, with an error that names a truncated or corrupted file."""
    try:
        with reading(path):
            archive = np.load(path, **kwargs)
    except DataFileUnreadableError:
        raise
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
        raise DataFormatError(
            f"{path} is truncated or corrupted ({type(e).__name__}: {e}); delete it and run "
            "again (or copy a good one there)"
        ) from None
    with archive:
        try:
            yield archive
        except (OSError, EOFError, zipfile.BadZipFile, zlib.error) as e:
            raise DataFormatError(
                f"{path} is truncated or corrupted ({type(e).__name__}: {e}); delete it and run "
                "again (or copy a good one there)"
            ) from None


def parse_idx(content: bytes, what: str) -> np.ndarray:
    """Parse an idx file's (decompressed) bytes into a uint8 array.

    Args:
      content: the bytes: two zero bytes, dtype code 0x08, number of dimensions, big-endian int32
        sizes, then the data.
      what: a name for error messages.

    Returns:
      The array, shaped by the header.

    Raises:
      DataFormatError: if the header is not a uint8 idx header or the size disagrees with it.
    """
    if len(content) < 4 or content[:2] != b"\x00\x00" or content[2] != _IDX_DTYPE_CODE_UINT8:
        raise DataFormatError(f"{what} is not a uint8 idx file (header {content[:4]!r}).")
    ndim = content[3]
    shape = tuple(int(size) for size in np.frombuffer(content, ">i4", count=ndim, offset=4))
    offset = 4 + 4 * ndim
    if len(content) - offset != int(np.prod(shape)):
        raise DataFormatError(f"{what}: header promises shape {shape} but holds {len(content) - offset} bytes.")
    return np.frombuffer(content, np.uint8, offset=offset).reshape(shape)


def parse_amat(content: bytes, what: str) -> np.ndarray:
    """Parse a binarized-MNIST `.amat` file: one image a line, 784 '0'/'1' separated by spaces.

    Args:
      content: the file's bytes.
      what: a name for error messages.

    Returns:
      (N, 784) uint8 in {0, 1}.

    Raises:
      DataFormatError: if any line is not 784 binary values in that exact layout.
    """
    if len(content) % _AMAT_LINE_BYTES:
        raise DataFormatError(f"{what}: {len(content)} bytes is not a whole number of 1568-byte lines.")
    table = np.frombuffer(content, np.uint8).reshape(-1, _AMAT_LINE_BYTES)
    values = table[:, 0::2] - ord("0")
    separators = table[:, 1::2]
    if values.max(initial=0) > 1 or (separators[:, :-1] != ord(" ")).any() or (separators[:, -1] != ord("\n")).any():
        raise DataFormatError(f"{what} is not in the .amat layout of 784 space-separated 0/1 a line.")
    return values


def amat_bytes(images: np.ndarray) -> bytes:
    """The `.amat` text of binary images, (N, 784) in {0, 1}: the inverse of `parse_amat`."""
    table = np.empty((len(images), _AMAT_LINE_BYTES), np.uint8)
    table[:, 0::2] = images.astype(np.uint8) + ord("0")
    table[:, 1::2] = ord(" ")
    table[:, -1] = ord("\n")
    return table.tobytes()


def read_binarized_mnist_npz(path: Path) -> dict[str, np.ndarray]:
    """Read the npz repack of binarized MNIST: keys train/valid/test, (N, 784) uint8 in {0, 1}."""
    with open_npz(path) as archive:
        splits = {split: archive[split] for split in ("train", "valid", "test") if split in archive}
    if set(splits) != {"train", "valid", "test"}:
        raise DataFormatError(f"{path} must hold arrays 'train', 'valid' and 'test'.")
    for split, images in splits.items():
        if images.ndim != 2 or images.shape[1] != 784 or images.max(initial=0) > 1:
            raise DataFormatError(f"{path}[{split!r}] must be (N, 784) in {{0, 1}}, got {images.shape}.")
    return splits


def read_omniglot_npz(path: Path) -> np.ndarray:
    """Read an Omniglot npz repack: (characters, 20, 105, 105) bool, True = background."""
    with open_npz(path) as archive:
        if "images" not in archive:
            raise DataFormatError(f"{path} has no 'images' array.")
        images = archive["images"]
    expected_tail = (OMNIGLOT_DRAWERS, OMNIGLOT_SIZE, OMNIGLOT_SIZE)
    if images.dtype != bool or images.ndim != 4 or images.shape[1:] != expected_tail:
        raise DataFormatError(
            f"{path}: images must be bool (characters, {expected_tail}), got {images.dtype} {images.shape}."
        )
    return images


_OMNIGLOT_PNG: Final = re.compile(r"(\d{4})_(\d{2})\.png$")


def read_omniglot_zip(path: Path | io.BytesIO) -> tuple[np.ndarray, np.ndarray]:
    """Read an Omniglot zip of PNGs (alphabet/character/XXXX_YY.png).

    Args:
      path: the zip file.

    Returns:
      (images, character_ids): images (characters, 20, 105, 105) bool, True = background, with
      ``images[c, s]`` the PNG ``XXXX_YY.png`` for ``c`` the rank of XXXX among the zip's characters
      and ``s = YY - 1``; character_ids the XXXX of each row.

    Raises:
      DataFormatError: if an image is not 105x105 or a character lacks some of its 20 drawers.
    """
    with reading(path):
        archive = zipfile.ZipFile(path)
    with archive:
        entries = [(match, name) for name in archive.namelist() if (match := _OMNIGLOT_PNG.search(name))]
        character_ids = np.unique([int(match.group(1)) for match, _ in entries])
        row = {int(cid): index for index, cid in enumerate(character_ids)}
        images = np.zeros((len(character_ids), OMNIGLOT_DRAWERS, OMNIGLOT_SIZE, OMNIGLOT_SIZE), bool)
        seen = np.zeros(images.shape[:2], bool)
        for match, name in entries:
            character, drawer = row[int(match.group(1))], int(match.group(2)) - 1
            with Image.open(io.BytesIO(archive.read(name))) as png:
                pixels = np.asarray(png.convert("1"))
            if pixels.shape != (OMNIGLOT_SIZE, OMNIGLOT_SIZE) or not 0 <= drawer < OMNIGLOT_DRAWERS:
                raise DataFormatError(f"{path}:{name} is not a 105x105 image of drawer 1-20.")
            images[character, drawer] = pixels
            seen[character, drawer] = True
    if not seen.all():
        raise DataFormatError(f"{path}: {int((~seen).sum())} character/drawer images are missing.")
    return images, character_ids


def area_downsample_matrix(size_in: int, size_out: int) -> np.ndarray:
    """(size_out, size_in) weights averaging each output pixel over the input area it covers."""
    edges = np.arange(size_out + 1) * (size_in / size_out)
    left = np.maximum(edges[:-1, None], np.arange(size_in)[None, :])
    right = np.minimum(edges[1:, None], np.arange(1, size_in + 1)[None, :])
    return np.clip(right - left, 0.0, None) * (size_out / size_in)


def read_chardata(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Read the IWAE `chardata.mat` (28x28 Omniglot, stored column-major, one image a column).

    Args:
      path: the .mat file.

    Returns:
      (train, test): (N, 28, 28) float32 in [0, 1], upright.

    Raises:
      DataFormatError: if 'data' / 'testdata' are missing or not 784-row arrays in [0, 1].
    """
    from scipy.io import loadmat

    # Opened here: loadmat turns a PermissionError into a bare "Reader needs file name or open file-like object".
    with reading(path):
        stream = open(path, "rb")
    with stream:
        mat = loadmat(stream)
    splits = []
    for key in ("data", "testdata"):
        if key not in mat or mat[key].ndim != 2 or mat[key].shape[0] != 784:
            raise DataFormatError(f"{path} must hold '{key}' as a (784, N) array.")
        flat = mat[key].T.astype(np.float32)
        if flat.min() < 0.0 or flat.max() > 1.0:
            raise DataFormatError(f"{path}['{key}'] values must lie in [0, 1].")
        # Column-major storage: each 784-vector is the image read column by column.
        splits.append(np.ascontiguousarray(flat.reshape(-1, 28, 28).transpose(0, 2, 1)))
    return splits[0], splits[1]


def read_dsprites_file(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Read the upstream dSprites npz or hdf5 (`imgs`, `latents_classes` / `latents/classes`).

    Args:
      path: the .npz or .hdf5 file.

    Returns:
      (images, factor_classes): (N, 64, 64) uint8 in {0, 1}; (N, 5) int64 indices for shape,
      scale, orientation, posX, posY (the constant colour factor dropped).

    Raises:
      DataFormatError: if the arrays are missing, misshapen, or the images are not binary.
    """
    if path.suffix == ".npz":
        with open_npz(path, allow_pickle=False) as archive:
            if "imgs" not in archive or "latents_classes" not in archive:
                raise DataFormatError(f"{path} must hold 'imgs' and 'latents_classes'.")
            images, classes = archive["imgs"], archive["latents_classes"]
    else:
        import h5py

        with reading(path):
            archive = h5py.File(path, "r")
        with archive:
            if "imgs" not in archive or "latents/classes" not in archive:
                raise DataFormatError(f"{path} must hold 'imgs' and 'latents/classes'.")
            images, classes = archive["imgs"][()], archive["latents/classes"][()]
    if images.ndim != 3 or images.shape[1:] != (64, 64) or classes.shape != (len(images), 6):
        raise DataFormatError(
            f"{path}: expected imgs (N, 64, 64) and classes (N, 6), got {images.shape}, {classes.shape}."
        )
    if images.max(initial=0) > 1:
        raise DataFormatError(f"{path}: dSprites images must be binary 0/1.")
    if (classes[:, 0] != 0).any():
        raise DataFormatError(f"{path}: the colour factor (column 0) must be constant 0.")
    return images.astype(np.uint8, copy=False), classes[:, 1:].astype(np.int64)
