"""Canny edges, the five steps of Canny (1986), with OpenCV's choices so that the result can be checked
against cv2.Canny pixel by pixel:

1. smoothing with a Gaussian (cv2.Canny itself does not smooth: sigma=0 skips this step and gives
   exactly what cv2.Canny computes);
2. Sobel gradients dx, dy (3x3, the border pixel repeated: OpenCV's BORDER_REPLICATE), magnitude |dx| + |dy|
   (OpenCV's default L1 norm);
3. non-maximum suppression: a pixel stays only if its magnitude is a maximum across the edge, i.e. along
   the gradient direction rounded to 0, 45, 90 or 135 degrees;
4. double threshold: survivors above `high` are strong edges, those above `low` weak ones;
5. hysteresis: a weak pixel is an edge only if a chain of weak pixels links it to a strong one
   (8-connected). This step follows chains of any length, so it is a loop, compiled with numba.

Edges are written white (255) on black (0), as OpenCV writes them.
"""

import math

import numpy as np
from numba import njit

from basics.blur import gaussian_blur
from basics.color import UINT8_MAX, as_gray

EDGE, NOT_EDGE = UINT8_MAX, 0
LOW, HIGH = 50, 150  # the thresholds on |dx| + |dy|, cv2.Canny(gray, 50, 150) in the original tutorial
# The 5x5 Gaussian with sigma 1.4 is the textbook choice (and Wikipedia's example) for Canny's first step.
SMOOTH_KSIZE, SMOOTH_SIGMA = 5, 1.4
# The gradient direction is rounded to a multiple of 45 degrees by comparing |dy| with |dx| tan(22.5 degrees)
# and |dx| tan(67.5 degrees) = |dx| (tan(22.5 degrees) + 2), in integers scaled by 2^15 as OpenCV does,
# so that the rounding matches OpenCV's exactly at the sector boundaries.
FIXED_POINT_SHIFT = 15
TAN_22_5 = round(math.tan(math.radians(22.5)) * (1 << FIXED_POINT_SHIFT))


def sobel(gray: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """HW uint8 -> (dx, dy), HW int64 each: the 3x3 Sobel derivatives, border pixels repeated. Sobel's kernel
    is a central difference (x[+1] - x[-1]) along the derivative times a [1, 2, 1] smoothing across it."""
    p = np.pad(gray.astype(np.int64), 1, mode="edge")  # (H+2, W+2)
    across_x = p[:-2] + 2 * p[1:-1] + p[2:]  # smoothed down the columns: (H, W+2)
    dx = across_x[:, 2:] - across_x[:, :-2]
    across_y = p[:, :-2] + 2 * p[:, 1:-1] + p[:, 2:]  # smoothed along the rows: (H+2, W)
    dy = across_y[2:] - across_y[:-2]
    return dx, dy


def non_maximum_suppression(dx: np.ndarray, dy: np.ndarray, magnitude: np.ndarray) -> np.ndarray:
    """HW bool: where the magnitude |dx| + |dy| is a local maximum along the gradient direction.
    Outside the image the magnitude counts as 0. Ties: a pixel must beat its neighbour on one side and
    at least equal the other (so a plateau two pixels wide keeps one), OpenCV's rule; diagonally, beat both."""
    m = np.pad(magnitude, 1)  # (H+2, W+2), zeros around

    def neighbour(row_step: int, col_step: int) -> np.ndarray:
        height, width = magnitude.shape
        return m[1 + row_step:1 + row_step + height, 1 + col_step:1 + col_step + width]

    ax, ay = np.abs(dx), np.abs(dy) << FIXED_POINT_SHIFT
    horizontal = ay < ax * TAN_22_5  # the gradient points left/right: compare with the left and right pixels
    vertical = ay > ax * TAN_22_5 + (ax << (FIXED_POINT_SHIFT + 1))
    diagonal = ~horizontal & ~vertical
    same_sign = (dx < 0) == (dy < 0)  # gradient towards bottom-right or top-left (rows grow downwards)

    keep_horizontal = (magnitude > neighbour(0, -1)) & (magnitude >= neighbour(0, 1))
    keep_vertical = (magnitude > neighbour(-1, 0)) & (magnitude >= neighbour(1, 0))
    keep_falling = (magnitude > neighbour(-1, -1)) & (magnitude > neighbour(1, 1))
    keep_rising = (magnitude > neighbour(-1, 1)) & (magnitude > neighbour(1, -1))
    keep_diagonal = np.where(same_sign, keep_falling, keep_rising)
    return (horizontal & keep_horizontal) | (vertical & keep_vertical) | (diagonal & keep_diagonal)


@njit(cache=True)
def hysteresis(strong: np.ndarray, weak: np.ndarray) -> np.ndarray:
    """HW bool, HW bool -> HW uint8 edges: every strong pixel, and every weak pixel 8-connected to one
    through weak pixels (strong pixels are weak too). A depth-first flood fill from the strong pixels with an
    explicit stack of pixels whose neighbours are still to be visited; each pixel is pushed at most once."""
    height, width = strong.shape
    edges = np.zeros((height, width), dtype=np.uint8)
    stack = np.empty(np.count_nonzero(weak), dtype=np.int64)  # flat pixel indices, row * width + column
    top = 0
    for r in range(height):
        for c in range(width):
            if strong[r, c]:
                edges[r, c] = EDGE
                stack[top] = r * width + c
                top += 1
    while top > 0:
        top -= 1
        r, c = divmod(stack[top], width)
        for nr in range(max(r - 1, 0), min(r + 2, height)):
            for nc in range(max(c - 1, 0), min(c + 2, width)):
                if weak[nr, nc] and edges[nr, nc] == NOT_EDGE:
                    edges[nr, nc] = EDGE
                    stack[top] = nr * width + nc
                    top += 1
    return edges


def canny_from_smoothed(gray: np.ndarray, low: float, high: float) -> np.ndarray:
    """Steps 2-5 on HW uint8 grey -> HW uint8 edges: exactly what cv2.Canny(gray, low, high) computes.
    A magnitude counts as weak above floor(low) and as strong above floor(high), OpenCV's integer rule."""
    low, high = sorted((low, high))
    dx, dy = sobel(gray)
    magnitude = np.abs(dx) + np.abs(dy)
    survivors = non_maximum_suppression(dx, dy, magnitude)
    weak = survivors & (magnitude > np.floor(low))
    strong = survivors & (magnitude > np.floor(high))
    return hysteresis(strong, weak)


def canny(image: np.ndarray, low: float = LOW, high: float = HIGH, ksize: int = SMOOTH_KSIZE,
          sigma: float = SMOOTH_SIGMA) -> np.ndarray:
    """HW grey or HWC RGB uint8 -> HW uint8 edges (255) on black (0). sigma=0: no smoothing."""
    gray = as_gray(image)
    if sigma > 0:
        gray = gaussian_blur(gray, ksize, sigma)
    return canny_from_smoothed(gray, low, high)
