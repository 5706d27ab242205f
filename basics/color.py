"""Colour conversions with the ITU-R BT.601 weights that OpenCV's cvtColor uses for 8-bit images.

Grey (luma) is a weighted sum: the eye is most sensitive to green and least to blue.
YUV keeps that luma as Y and adds two colour differences, U ~ B - Y and V ~ R - Y, scaled and shifted
by 128 so that they fit in 0..255 (grey pixels get U = V = 128). Results are rounded to the nearest
integer and clipped to 0..255, as OpenCV's saturate_cast does.
"""

import numpy as np

RED_WEIGHT, GREEN_WEIGHT, BLUE_WEIGHT = 0.299, 0.587, 0.114
U_SCALE, V_SCALE = 0.492, 0.877  # U = 0.492 (B - Y) + 128, V = 0.877 (R - Y) + 128
U_TO_BLUE, U_TO_GREEN, V_TO_GREEN, V_TO_RED = 2.032, -0.395, -0.581, 1.140
CHROMA_OFFSET = 128  # the value of U and V for a grey pixel
UINT8_MAX = 255


def to_uint8(values: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(values), 0, UINT8_MAX).astype(np.uint8)


def gray(rgb: np.ndarray) -> np.ndarray:
    """HWC uint8 RGB -> HW uint8 grey (like cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY))."""
    x = rgb.astype(np.float64)
    return to_uint8(RED_WEIGHT * x[..., 0] + GREEN_WEIGHT * x[..., 1] + BLUE_WEIGHT * x[..., 2])


def rgb_to_yuv(rgb: np.ndarray) -> np.ndarray:
    """HWC uint8 RGB -> HWC uint8 YUV (like cv2.COLOR_RGB2YUV)."""
    x = rgb.astype(np.float64)
    y = gray(rgb).astype(np.float64)  # the stored, rounded Y: U and V are differences from what is kept
    u = U_SCALE * (x[..., 2] - y) + CHROMA_OFFSET
    v = V_SCALE * (x[..., 0] - y) + CHROMA_OFFSET
    return to_uint8(np.stack([y, u, v], axis=-1))  # HWC, channels Y, U, V


def yuv_to_rgb(yuv: np.ndarray) -> np.ndarray:
    """HWC uint8 YUV -> HWC uint8 RGB (like cv2.COLOR_YUV2RGB)."""
    y = yuv[..., 0].astype(np.float64)
    u = yuv[..., 1].astype(np.float64) - CHROMA_OFFSET
    v = yuv[..., 2].astype(np.float64) - CHROMA_OFFSET
    r = y + V_TO_RED * v
    g = y + U_TO_GREEN * u + V_TO_GREEN * v
    b = y + U_TO_BLUE * u
    return to_uint8(np.stack([r, g, b], axis=-1))  # HWC, channels R, G, B


def as_gray(image: np.ndarray) -> np.ndarray:
    """HW grey as given; HWC RGB converted. The ops that need one channel (Canny, Otsu) start here."""
    return image if image.ndim == 2 else gray(image)
