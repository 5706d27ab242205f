"""Otsu's threshold (1979): the grey level that best splits the histogram into two classes.

For every candidate t, the pixels <= t form the background class and the others the foreground. Otsu picks
the t that maximizes the between-class variance w0 w1 (mu0 - mu1)^2, where w are the classes' shares of the
pixels and mu their mean grey levels; equivalently it minimizes the spread within each class. Everything
follows from the 256-bin histogram, with cumulative sums over the candidates. Pixels above t are written
white (255) and the rest black (0), as cv2.threshold(gray, 0, 255, THRESH_BINARY | THRESH_OTSU) does.
"""

import numpy as np

from basics.color import UINT8_MAX, as_gray

GREY_LEVELS = UINT8_MAX + 1
FOREGROUND, BACKGROUND = UINT8_MAX, 0


def histogram(gray: np.ndarray) -> np.ndarray:
    """HW uint8 -> (256,) int64: how many pixels have each grey level."""
    return np.bincount(gray.ravel(), minlength=GREY_LEVELS)


def between_class_variance(counts: np.ndarray) -> np.ndarray:
    """(256,) histogram -> (256,) float64: w0 w1 (mu0 - mu1)^2 for each threshold t (class 0 is <= t).
    Thresholds that leave one class empty get 0: there is nothing to separate."""
    p = counts / counts.sum()  # the probability of each grey level
    levels = np.arange(GREY_LEVELS)
    w0 = np.cumsum(p)  # share of pixels <= t
    mass0 = np.cumsum(levels * p)  # w0 * mu0
    total_mean = mass0[-1]
    w1 = 1.0 - w0
    valid = (w0 > 0) & (w1 > 0)
    variance = np.zeros(GREY_LEVELS)
    # w0 w1 (mu0 - mu1)^2 rewritten with mu0 = mass0 / w0 and mu1 = (total_mean - mass0) / w1
    numerator = (total_mean * w0 - mass0) ** 2
    variance[valid] = numerator[valid] / (w0[valid] * w1[valid])
    return variance


def otsu_threshold(gray: np.ndarray) -> int:
    """The threshold t of HW uint8 grey; the lowest t if several tie. 0 for a one-colour image."""
    return int(np.argmax(between_class_variance(histogram(gray))))


def otsu(image: np.ndarray) -> tuple[np.ndarray, int]:
    """HW grey or HWC RGB uint8 -> (HW uint8 mask, foreground 255 where grey > t, else 0; t)."""
    gray = as_gray(image)
    t = otsu_threshold(gray)
    return np.where(gray > t, FOREGROUND, BACKGROUND).astype(np.uint8), t
