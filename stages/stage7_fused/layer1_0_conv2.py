"""layer1.0.conv2's kernels, conv_56x64_56x64_k3s1_relu, as stages/stage7_fused/model.py generates them: rendered by
common/examples.py from the stage's plan, kept equal to what it writes by tests/test_examples.py. The kernel cache
holds the same source, one module per kernel, named after its digest."""
import numpy as np
from numba import njit, prange

HWC = "float32[:, :, ::1]"
OHWI = "float32[:, :, :, ::1]"
VECTOR = "float32[::1]"
MATRIX = "float32[:, ::1]"


@njit(f"void({HWC}, {OHWI}, {VECTOR}, {HWC}, {HWC})", fastmath=True, cache=True, parallel=True)
def conv_56x64_56x64_k3s1_relu(x, weight, bias, residual, out):
    for co in prange(64):
        for ho in range(56):
            for wo in range(56):
                acc = bias[co]
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
                if False:
                    acc += residual[ho, wo, co]
                if True:
                    acc = max(acc, np.float32(0.0))
                out[ho, wo, co] = acc
