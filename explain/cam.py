"""Class activation maps (Zhou et al., "Learning Deep Features for Discriminative Localization", CVPR 2016).

ResNet-50 ends in global average pooling and one fully connected layer. With A the last feature map (layer4's
output, HWC 7x7x2048) and w, b the fc layer's weight (classes, 2048) and bias, class c's logit is

    logit_c = sum_k w[c, k] * mean_xy A_k(x, y) + b_c = mean_xy CAM_c(x, y) + b_c,
    CAM_c(x, y) = sum_k w[c, k] * A_k(x, y).

Both steps are linear, so they can be swapped: CAM_c says how much each of the 7x7 positions adds to the logit.
It is exact for this architecture (no gradients, no approximation) and costs one matrix-vector product.
"""

import numpy as np
from PIL import Image


def class_activation_map(features: np.ndarray, fc_weight: np.ndarray, class_id: int) -> np.ndarray:
    """features: layer4's output, HWC (7, 7, 2048); fc_weight: (classes, 2048) -> CAM_c, HW (7, 7) float32.
    The fc bias is left out: it is the same at every position. Summed in float64, rounded once."""
    return np.einsum("hwk,k->hw", features.astype(np.float64), fc_weight[class_id].astype(np.float64)).astype(
        np.float32)


def normalized(cam: np.ndarray) -> np.ndarray:
    """The map scaled to 0..1 (its minimum to 0, its maximum to 1), as the paper shows it: the picture says
    where the evidence is, relative to the rest of the photo. A flat map becomes all zeros."""
    low, high = float(cam.min()), float(cam.max())
    return np.zeros_like(cam) if high == low else (cam - low) / (high - low)


def upsampled(cam: np.ndarray, size: int) -> np.ndarray:
    """HW -> (size, size) float32, bilinear: each of the 7x7 values is placed at the centre of its 32x32 cell
    of the 224x224 crop (layer4 steps 32 pixels; what each value sees is much wider), blended in between."""
    return np.asarray(Image.fromarray(cam.astype(np.float32), "F").resize((size, size), Image.Resampling.BILINEAR))
