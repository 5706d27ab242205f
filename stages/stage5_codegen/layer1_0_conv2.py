"""layer1.0.conv2's kernels, conv_56x64_56x64_k3s1, batch_norm_56x64, relu_56x64, as stages/stage5_codegen/model.py
generates them: rendered by common/examples.py from the stage's plan, kept equal to what it writes by
tests/test_examples.py. The kernel cache holds the same source, one module per kernel, named after its digest."""
import math

import numpy as np
from numba import njit

HWC = "float32[:, :, ::1]"
OHWI = "float32[:, :, :, ::1]"
VECTOR = "float32[::1]"
MATRIX = "float32[:, ::1]"


@njit(f"void({HWC}, {OHWI}, {HWC})", fastmath=True, cache=True)
def conv_56x64_56x64_k3s1(x, weight, out):
    for co in range(64):
        for ho in range(56):
            for wo in range(56):
                acc = np.float32(0.0)
                for kh in range(3):
                    hi = ho * 1 - 1 + kh
                    if hi < 0 or hi >= 56:
                        continue
                    for kw in range(3):
                        wi = wo * 1 - 1 + kw
                        if wi < 0 or wi >= 56:
                            continue
                        for ci in range(64):
                            acc += x[hi, wi, ci] * weight[co, kh, kw, ci]
                out[ho, wo, co] = acc


@njit(f"void({HWC}, {VECTOR}, {VECTOR}, {VECTOR}, {VECTOR}, {HWC})", fastmath=True, cache=True)
def batch_norm_56x64(x, gamma, beta, mean, var, out):
    for h in range(56):
        for w in range(56):
            for c in range(64):
                out[h, w, c] = gamma[c] * (x[h, w, c] - mean[c]) / math.sqrt(var[c] + np.float32(0.001)) + beta[c]


@njit(f"void({HWC}, {HWC})", fastmath=True, cache=True)
def relu_56x64(x, out):
    for h in range(56):
        for w in range(56):
            for c in range(64):
                out[h, w, c] = max(x[h, w, c], np.float32(0.0))
