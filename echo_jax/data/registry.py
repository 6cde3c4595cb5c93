"""Where every dataset file lives on the internet, and what its bytes hash to.

Keys are paths relative to the data folder; the folder layout is the same whether the files were
downloaded here or copied in by hand (see `echo_jax.data.fetch`).

MNIST and Fashion-MNIST are distributed as the same idx content under different gzip bytes, so
their content (the decompressed idx) is also checked, which is what a re-gzipped copy must match.
"""

from __future__ import annotations

import dataclasses
from typing import Final


@dataclasses.dataclass(frozen=True)
class RemoteFile:
    """One downloadable file.

    Attributes:
      url: canonical public location.
      sha256: hex digest of the file as served there; None where no trustworthy digest is known: the
        file is then never downloaded (`echo_jax.data.fetch.fetch` refuses), only read when put in the
        data folder by hand, and checked on content only, by its reader.
      content_sha256: hex digest of the decompressed content, for gzip files whose compressed bytes
        differ between distributors.
    """

    url: str
    sha256: str | None
    content_sha256: str | None = None


_MNIST_URL: Final = "https://storage.googleapis.com/cvdf-datasets/mnist/"
_FASHION_URL: Final = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"
_BINARIZED_URL: Final = "http://www.cs.toronto.edu/~larocheh/public/datasets/binarized_mnist/"
_OMNIGLOT_URL: Final = "https://github.com/brendenlake/omniglot/raw/master/python/"
_DSPRITES_STEM: Final = "dsprites_ndarray_co1sh3sc6or40x32y32_64x64"

REGISTRY: Final[dict[str, RemoteFile]] = {
    "mnist/train-images-idx3-ubyte.gz": RemoteFile(
        _MNIST_URL + "train-images-idx3-ubyte.gz",
        "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
        "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
    ),
    "mnist/train-labels-idx1-ubyte.gz": RemoteFile(
        _MNIST_URL + "train-labels-idx1-ubyte.gz",
        "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
        "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
    ),
    "mnist/t10k-images-idx3-ubyte.gz": RemoteFile(
        _MNIST_URL + "t10k-images-idx3-ubyte.gz",
        "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
        "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
    ),
    "mnist/t10k-labels-idx1-ubyte.gz": RemoteFile(
        _MNIST_URL + "t10k-labels-idx1-ubyte.gz",
        "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
        "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
    ),
    "fashion_mnist/train-images-idx3-ubyte.gz": RemoteFile(
        _FASHION_URL + "train-images-idx3-ubyte.gz",
        "3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84",
        "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
    ),
    "fashion_mnist/train-labels-idx1-ubyte.gz": RemoteFile(
        _FASHION_URL + "train-labels-idx1-ubyte.gz",
        "a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845",
        "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
    ),
    "fashion_mnist/t10k-images-idx3-ubyte.gz": RemoteFile(
        _FASHION_URL + "t10k-images-idx3-ubyte.gz",
        "346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073",
        "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
    ),
    "fashion_mnist/t10k-labels-idx1-ubyte.gz": RemoteFile(
        _FASHION_URL + "t10k-labels-idx1-ubyte.gz",
        "67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5",
        "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
    ),
    "binarized_mnist/binarized_mnist_train.amat": RemoteFile(
        _BINARIZED_URL + "binarized_mnist_train.amat",
        "ad693b29f94c14277b095f5238ddefbbdaaae0939789dd2f4f0205278cee3e4d",
    ),
    "binarized_mnist/binarized_mnist_valid.amat": RemoteFile(
        _BINARIZED_URL + "binarized_mnist_valid.amat",
        "1de3d397c40fe8eeb33dafd4099a1f665ec01e96d9be234aaeeac8a34930e2e2",
    ),
    "binarized_mnist/binarized_mnist_test.amat": RemoteFile(
        _BINARIZED_URL + "binarized_mnist_test.amat",
        "e6687bfea3f820c174f33b7865140b2a2dd2930ef786f35d45795fc193b5ab2c",
    ),
    "omniglot/images_background.zip": RemoteFile(
        _OMNIGLOT_URL + "images_background.zip",
        "ad41ab679c8b5d90b271ef46be6987cc81211774a695c29dcc5367b2b26ee640",
    ),
    "omniglot/images_evaluation.zip": RemoteFile(
        _OMNIGLOT_URL + "images_evaluation.zip",
        "1f61a8f3366785b057fc117d9228e78a16e3d976c8953b2a10fcc74cf0609cee",
    ),
    "omniglot/images_background_small1.zip": RemoteFile(
        _OMNIGLOT_URL + "images_background_small1.zip",
        "f38eb80f801274ac2b4dff5b24289016bfaba4a7d5bb50deebf27104ad6cb8a4",
    ),
    # No sha256 of chardata.mat is published upstream, and none could be computed here (no copy, no
    # network): it is provided by hand until someone pins the sha256 of a copy checked against the IWAE repo.
    "omniglot/chardata.mat": RemoteFile(
        "https://github.com/yburda/iwae/raw/master/datasets/OMNIGLOT/chardata.mat", None
    ),
    f"dsprites/{_DSPRITES_STEM}.hdf5": RemoteFile(
        f"https://github.com/deepmind/dsprites-dataset/blob/master/{_DSPRITES_STEM}.hdf5?raw=true",
        "729fa22e884c9c500e1f17415d580746b4c5894fbbb780a1319bbcfa39a745bb",
    ),
    # Read when present, never downloaded (source="download" takes the hdf5); upstream published no sha256.
    f"dsprites/{_DSPRITES_STEM}.npz": RemoteFile(
        f"https://github.com/deepmind/dsprites-dataset/raw/master/{_DSPRITES_STEM}.npz", None
    ),
}

# Repacks of the canonical data that are read when present but never downloaded.
BINARIZED_MNIST_NPZ: Final = "binarized_mnist/binarized_mnist.npz"
OMNIGLOT_NPZ: Final = {"background": "omniglot/images_background.npz", "evaluation": "omniglot/images_evaluation.npz"}
DSPRITES_FILES: Final = (f"dsprites/{_DSPRITES_STEM}.npz", f"dsprites/{_DSPRITES_STEM}.hdf5")
# The Omniglot repacks are checked on content (zip compression varies between repacks): sha256 of
# np.packbits(images) of the canonical drawings, bit-identical to the upstream zips' PNGs.
OMNIGLOT_NPZ_CONTENT_SHA256: Final = {
    "background": "50ac3e2043f457516ed8e84151b2d85718f4bbccc0a17ad355cd3b6f0c4ed5f3",
    "evaluation": "03b046317776af65e56eb1a168e35feb5e254765b51ce5fd1383ec242a5767f3",
}

# The embedded sample (package data, not downloaded): sha256 of echo_jax/data/mnist_sample.npz.
MNIST_SAMPLE_FILE: Final = "mnist_sample.npz"
MNIST_SAMPLE_SHA256: Final = "0c60e9cc58268284d33ca19d4492713726841c11d5a9ac1d199ef4e978640657"
