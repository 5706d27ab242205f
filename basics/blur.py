"""Mean (box) blur and Gaussian blur: each output pixel is a weighted average of its ksize x ksize window.

Both kernels are separable (the 2-D kernel is the outer product of a 1-D kernel with itself), so the
image is filtered along its rows and then along its columns: 2k multiply-adds per pixel instead of k*k.
Pixels beyond the border are mirrored without repeating the edge pixel (...cba|abcd...|dcb...), OpenCV's
default BORDER_REFLECT_101 (numpy calls it "reflect"). The window of an even-sized box has one more
pixel before the centre than after it, as OpenCV's default anchor (ksize // 2) places it.
"""

import numpy as np

from basics.color import UINT8_MAX, to_uint8

SALT, PEPPER = UINT8_MAX, 0
SALT_SHARE = 0.5  # of the noisy pixels, this share turns white and the rest black


def filter_rows(image: np.ndarray, kernel: np.ndarray, anchor: int) -> np.ndarray:
    """Correlate every row (axis 1) of HW or HWC `image` with the 1-D `kernel`; float64, same shape.
    out[:, x] = sum_i kernel[i] * image[:, x + i - anchor], mirrored at the borders."""
    width = image.shape[1]
    pad = [(0, 0)] * image.ndim
    pad[1] = (anchor, len(kernel) - 1 - anchor)
    padded = np.pad(image.astype(np.float64), pad, mode="reflect")
    out = np.zeros(image.shape, dtype=np.float64)
    for i, weight in enumerate(kernel):
        out += weight * padded[:, i:i + width]
    return out


def separable_filter(image: np.ndarray, kernel: np.ndarray, anchor: int) -> np.ndarray:
    """Rows, then columns (the columns of `image` are the rows of its transpose); float64, unrounded."""
    rows = filter_rows(image, kernel, anchor)
    return filter_rows(rows.swapaxes(0, 1), kernel, anchor).swapaxes(0, 1)


def mean_blur(image: np.ndarray, ksize: int) -> np.ndarray:
    """HW or HWC uint8 -> the same shape, uint8: the average of each ksize x ksize window (like cv2.blur).
    The window sums are exact integers; dividing once at the end rounds each pixel only once."""
    if ksize < 1:
        raise ValueError(f"mean blur: ksize must be at least 1, not {ksize}")
    window_sums = separable_filter(image, np.ones(ksize), anchor=ksize // 2)
    return to_uint8(window_sums / (ksize * ksize))


def gaussian_kernel(ksize: int, sigma: float) -> np.ndarray:
    """The 1-D Gaussian kernel, (ksize,) float64 summing to 1: exp(-x^2 / (2 sigma^2)), x centred on 0.
    The 2-D kernel is np.outer(k, k)."""
    if ksize < 1 or ksize % 2 == 0:
        raise ValueError(f"Gaussian blur: ksize must be odd and positive, not {ksize}")
    if sigma <= 0:
        raise ValueError(f"Gaussian blur: sigma must be positive, not {sigma}")
    x = np.arange(ksize) - (ksize - 1) / 2
    weights = np.exp(-(x**2) / (2 * sigma**2))
    return weights / weights.sum()


def gaussian_blur(image: np.ndarray, ksize: int, sigma: float) -> np.ndarray:
    """HW or HWC uint8 -> the same shape, uint8 (like cv2.GaussianBlur(image, (ksize, ksize), sigma))."""
    return to_uint8(separable_filter(image, gaussian_kernel(ksize, sigma), anchor=ksize // 2))


def salt_and_pepper(image: np.ndarray, fraction: float, seed: int = 0) -> np.ndarray:
    """A copy with `fraction` of the pixels set to white (salt) or black (pepper), half each: the noise a
    mean blur smears out (and a median filter would remove)."""
    rng = np.random.default_rng(seed)
    noisy = image.copy()
    hit = rng.random(image.shape[:2]) < fraction
    salt = rng.random(image.shape[:2]) < SALT_SHARE
    noisy[hit & salt] = SALT
    noisy[hit & ~salt] = PEPPER
    return noisy
