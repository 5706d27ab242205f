'''Stage 7, fused: batch norm folded into the conv weights, and the conv's output loop finishes the job.

Up to stage 6 every conv was followed by passes over its whole output in memory: batch norm, then ReLU,
and after a bottleneck's last conv the residual add and another ReLU: each of the 53 convs writes an
activation that one to three more kernels read and write again, 118 passes in all (53 batch norms, 49
ReLUs, 16 adds). Batch norm at inference is an affine map per output channel, so it folds into the
conv once, at load time:
    bn(conv(x)) = scale * (conv(x) - mean) + beta,  scale = gamma / sqrt(var + eps)
                = conv with weights (weight * scale), + a bias (beta - mean * scale).
What is left after the conv, the bias, the residual add and the ReLU, is done in the conv kernel on
each sum before it is stored (constants in the generated kernel say which), so every activation is
written once and read once. The network has 53 conv kernels to run and no other per-pixel passes but
the max pool.

Everything else is stage 6's: threads, generated source (common/model.py), buffers, the max pool, the average pool
and the fc (common/kernels.py).
'''

from functools import partial
from pathlib import Path

import numpy as np

from common.architecture import Bottleneck, Conv, ResNet50, resnet50
from common.kernels import NUM_BUFFERS, head, max_pool
from common.model import Compiled, Parts
from common.planner import Plan, Planner, rotate
from common.weights import load_tensor

# What every generated kernel module starts with, after the docstring common.codegen.write_modules gives it.
PRELUDE = '''import numpy as np
from numba import njit, prange

HWC = "float32[:, :, ::1]"
OHWI = "float32[:, :, :, ::1]"
VECTOR = "float32[::1]"
MATRIX = "float32[:, ::1]"
'''

CONV = '''

@njit(f"void({{HWC}}, {{OHWI}}, {{VECTOR}}, {{HWC}}, {{HWC}})", fastmath=True, cache=True, parallel=True)
def {name}(x, weight, bias, residual, out):
    for co in prange({out_channels}):
        for ho in range({out_size}):
            for wo in range({out_size}):
                acc = bias[co]
                for kh in range({kernel}):
                    hi = ho * {stride} - {padding} + kh
                    if hi < 0 or hi >= {in_size}:
                        continue
                    for kw in range({kernel}):
                        wi = wo * {stride} - {padding} + kw
                        if wi < 0 or wi >= {in_size}:
                            continue
                        for ci in range({in_channels}):
                            acc += x[hi, wi, ci] * weight[co, kh, kw, ci]
                if {add_residual}:
                    acc += residual[ho, wo, co]
                if {relu}:
                    acc = max(acc, np.float32(0.0))
                out[ho, wo, co] = acc
'''


def fold(conv: Conv, tensors, eps):
    """OIHW conv weight and its batch norm -> (weight with the batch norm's scale in it, bias (out,)),
    computed in float64 and rounded once, so folding adds no error of its own. The weight is laid out
    as the conv kernel reads it: OHWI."""
    weight = tensors(f"{conv.name}.weight").astype(np.float64)
    gamma, beta, mean, var = (tensors(f"{conv.bn}.{part}").astype(np.float64)
                              for part in ("weight", "bias", "running_mean", "running_var"))
    scale = gamma / np.sqrt(var + eps)
    folded = weight * scale[:, None, None, None]  # OIHW
    bias = (beta - mean * scale).astype(np.float32)
    return np.ascontiguousarray(folded.transpose(0, 2, 3, 1), np.float32), bias  # OIHW -> OHWI


def load_pool(manifest, weights_dir):
    """Every conv as (folded weight, bias) by conv name; fc's weight and bias as exported."""
    def tensors(name):
        return load_tensor(name, manifest, weights_dir)

    pool = {conv.name: fold(conv, tensors, manifest["bn_eps"]) for conv in resnet50(manifest["variant"]).convs}
    pool["fc"] = (tensors("fc.weight"), tensors("fc.bias"))
    return pool


def plan(arch: ResNet50, pool: dict) -> Plan:
    """Stage 6's plan with the batch norms folded and every conv fused with what followed it."""
    p = Planner()
    largest = max(c.out_size**2 * c.out_channels for c in arch.convs)
    buffers = [np.empty(largest, np.float32) for _ in range(NUM_BUFFERS)]  # flat, viewed as HWC
    image = np.empty((arch.stem.in_size, arch.stem.in_size, arch.stem.in_channels), np.float32)  # HWC

    def conv_step(x, conv: Conv, out, residual, relu: bool):
        """One conv with its batch norm folded in, then + residual (if not None), then ReLU (if relu).
        Without a residual, `out` stands in for the argument the kernel does not read."""
        weight, bias = pool[conv.name]
        add_residual = residual is not None
        epilogue = ("_add" if add_residual else "") + ("_relu" if relu else "")
        name = (f"conv_{conv.in_size}x{conv.in_channels}_{conv.out_size}x{conv.out_channels}"
                f"_k{conv.kernel}s{conv.stride}{epilogue}")
        p.emit(CONV, name, (x, weight, bias, residual if add_residual else out, out), conv,
               in_channels=conv.in_channels, out_size=conv.out_size, in_size=conv.in_size,
               out_channels=conv.out_channels, kernel=conv.kernel, stride=conv.stride, padding=conv.padding,
               add_residual=add_residual, relu=relu)
        return out

    def bottleneck(x, block: Bottleneck, free):
        """Plan one block reading x; `free` are the three buffers x is not in. Returns the output view."""
        b1, b2, b3 = free
        p.comment(block.name)
        c1, c2, c3, down = block.conv1, block.conv2, block.conv3, block.downsample
        out = conv_step(x, c1, p.view(b1, c1.out_size, c1.out_channels), None, relu=True)
        out = conv_step(out, c2, p.view(b2, c2.out_size, c2.out_channels), None, relu=True)
        # conv3 adds the shortcut as it stores its sums, so the shortcut comes first, into b1 (conv2 has read it).
        shortcut = conv_step(x, down, p.view(b1, down.out_size, down.out_channels), None, relu=False) if down else x
        return conv_step(out, c3, p.view(b3, c3.out_size, c3.out_channels), shortcut, relu=True)

    x = conv_step(image, arch.stem, p.view(buffers[0], arch.stem.out_size, arch.stem.out_channels), None, relu=True)
    x = rotate(arch, max_pool(p, arch, x, buffers[1]), buffers, bottleneck)
    return p.plan(image, head(p, arch, x, pool["fc"]))


PARTS = Parts(Path(__file__), PRELUDE, load_pool, plan)
Model = partial(Compiled, PARTS)
