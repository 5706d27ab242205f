"""The data: images as NCHW float32 in 0..1 with integer labels, split into training and test sets.

scikit-learn's 8x8 digits (1797 images, grey levels 0..16) ship inside scikit-learn, so this works offline;
a fixed, stratified fifth of them is the test set. MNIST (28x28, 60000 + 10000) comes through torchvision
only if it can be downloaded; otherwise the caller falls back to the 8x8 digits.
"""

from dataclasses import dataclass

import numpy as np

from common.paths import CACHE_DIR

DATASETS = ("digits", "mnist")
SKLEARN_DIGITS_MAX = 16  # the 8x8 digits count 0..16 grey levels
MNIST_MAX = 255
TEST_FRACTION = 0.2
SPLIT_SEED = 0
MNIST_DIR = CACHE_DIR / "mnist"


@dataclass(frozen=True)
class Dataset:
    key: str  # one of DATASETS
    name: str  # for people
    train_images: np.ndarray  # (N, 1, H, W) float32 in 0..1, NCHW as torch wants it
    train_labels: np.ndarray  # (N,) int64, 0..9
    test_images: np.ndarray
    test_labels: np.ndarray

    @property
    def image_size(self) -> int:
        return self.train_images.shape[-1]


class DownloadError(Exception):
    """The dataset could not be fetched (no internet, mirror down): not a user mistake, a reason to fall back."""


def sklearn_digits() -> Dataset:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    images = (digits.images / SKLEARN_DIGITS_MAX).astype(np.float32)[:, None]  # (1797, 1, 8, 8)
    labels = digits.target.astype(np.int64)
    train_x, test_x, train_y, test_y = train_test_split(
        images, labels, test_size=TEST_FRACTION, stratify=labels, random_state=SPLIT_SEED)
    return Dataset("digits", "scikit-learn 8x8 digits", train_x, train_y, test_x, test_y)


def mnist() -> Dataset:
    import torchvision

    try:
        train = torchvision.datasets.MNIST(MNIST_DIR, train=True, download=True)
        test = torchvision.datasets.MNIST(MNIST_DIR, train=False, download=True)
    except (RuntimeError, OSError) as e:
        lines = [line.strip() for line in str(e).splitlines() if line.strip()]
        raise DownloadError(lines[-1] if lines else type(e).__name__) from None

    def as_arrays(split) -> tuple[np.ndarray, np.ndarray]:
        images = (split.data.numpy() / MNIST_MAX).astype(np.float32)[:, None]  # (N, 1, 28, 28)
        return images, split.targets.numpy().astype(np.int64)

    return Dataset("mnist", "MNIST", *as_arrays(train), *as_arrays(test))


def load(name: str) -> tuple[Dataset, str | None]:
    """(the dataset, a one-line note if MNIST was asked for but the 8x8 digits are used instead)."""
    if name == "mnist":
        try:
            return mnist(), None
        except DownloadError as e:
            return sklearn_digits(), f"MNIST could not be downloaded ({e}); using scikit-learn's 8x8 digits instead"
    return sklearn_digits(), None
