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

Everything else, generated source, threads, buffers and pool, is stage 6's.
'''

import time
from pathlib import Path

import numpy as np

from common.architecture import Bottleneck, Conv, resnet50
from common.codegen import load_module, write_modules
from common.paths import WEIGHTS_DIR
from common.prepared import prepared_pool
from common.weights import load_manifest, load_tensor

NUM_BUFFERS = 4  # a bottleneck needs its input, two intermediates and its output (or shortcut) at once

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

MAX_POOL = '''

@njit(f"void({{HWC}}, {{HWC}})", fastmath=True, cache=True)
def {name}(x, out):
    out[:] = -np.inf
    for ho in range({out_size}):
        for wo in range({out_size}):
            for kh in range({kernel}):
                hi = ho * {stride} - {padding} + kh
                if hi < 0 or hi >= {in_size}:
                    continue
                for kw in range({kernel}):
                    wi = wo * {stride} - {padding} + kw
                    if wi < 0 or wi >= {in_size}:
                        continue
                    for c in range({channels}):
                        out[ho, wo, c] = max(out[ho, wo, c], x[hi, wi, c])
'''

GLOBAL_AVG_POOL = '''

@njit(f"void({{HWC}}, {{VECTOR}})", fastmath=True, cache=True)
def {name}(x, out):
    out[:] = 0.0
    for h in range({size}):
        for w in range({size}):
            for c in range({channels}):
                out[c] += x[h, w, c]
    for c in range({channels}):
        out[c] /= {positions}
'''

FULLY_CONNECTED = '''

@njit(f"void({{VECTOR}}, {{MATRIX}}, {{VECTOR}}, {{VECTOR}})", fastmath=True, cache=True)
def {name}(x, weight, bias, out):
    for o in range({out_features}):
        acc = np.float32(0.0)
        for i in range({in_features}):
            acc += weight[o, i] * x[i]
        out[o] = acc + bias[o]
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


def load_pool(manifest, weights_dir, arch):
    """Every conv as (folded weight, bias) by conv name; fc's weight and bias as exported."""
    def tensors(name):
        return load_tensor(name, manifest, weights_dir)

    pool = {conv.name: fold(conv, tensors, manifest["bn_eps"]) for conv in arch.convs}
    pool["fc"] = (tensors("fc.weight"), tensors("fc.bias"))
    return pool


class Model:
    """ResNet-50 built from common.architecture; weights pooled and buffers allocated when it is built,
    the forward pass generated as source, one specialized kernel per distinct layer shape."""

    def __init__(self, weights_dir=WEIGHTS_DIR):
        self.manifest = load_manifest(weights_dir)
        self.arch = resnet50(self.manifest["variant"])
        start = time.perf_counter()
        # Computed once, then mapped from the cache (common/prepared.py).
        self.pool = prepared_pool(lambda: load_pool(self.manifest, weights_dir, self.arch), self.manifest,
                                  weights_dir, Path(__file__))
        self.timings = {"load weights": time.perf_counter() - start}  # set-up costs in seconds
        arch = self.arch
        largest = max(c.out_size**2 * c.out_channels for c in arch.convs)
        self.buffers = [np.empty(largest, np.float32) for _ in range(NUM_BUFFERS)]  # flat, viewed as HWC
        self.input = np.empty((arch.stem.in_size, arch.stem.in_size, arch.stem.in_channels), np.float32)  # HWC
        self.features = np.empty(arch.fc.in_features, np.float32)
        self.logits = np.empty(arch.fc.out_features, np.float32)
        self.kernel_sources = {}  # kernel name -> its source, one per distinct layer shape
        self.lines = []  # the forward pass, one call per step
        self.arrays = []  # what the calls pass: a[i] in the generated source is self.arrays[i]
        start = time.perf_counter()
        self.plan()
        self.source_path = self.write_source()
        self.timings["codegen"] = time.perf_counter() - start
        self.kernels, how, seconds = load_module(self.source_path)  # compiled, or loaded from the disk cache
        self.timings[how] = seconds
        self.arrays = tuple(self.arrays)

    def view(self, buffer, size, channels):
        """An HWC view of the start of a flat buffer."""
        return buffer[: size * size * channels].reshape(size, size, channels)

    def emit(self, template, name, arrays, **constants):
        """One step: a call of the kernel `name`, generated from `template` with `constants` filled in."""
        self.kernel_sources.setdefault(name, template.format(name=name, **constants))
        indices = []
        for array in arrays:
            indices.append(len(self.arrays))
            self.arrays.append(array)
        self.lines.append(f"    {name}({', '.join(f'a[{i}]' for i in indices)})")

    def conv(self, x, conv: Conv, out, residual, relu: bool):
        """One conv with its batch norm folded in, then + residual (if not None), then ReLU (if relu).
        Without a residual, `out` stands in for the argument the kernel does not read."""
        weight, bias = self.pool[conv.name]
        add_residual = residual is not None
        epilogue = ("_add" if add_residual else "") + ("_relu" if relu else "")
        name = (f"conv_{conv.in_size}x{conv.in_channels}_{conv.out_size}x{conv.out_channels}"
                f"_k{conv.kernel}s{conv.stride}{epilogue}")
        arrays = (x, weight, bias, residual if add_residual else out, out)
        self.emit(CONV, name, arrays, in_channels=conv.in_channels, out_size=conv.out_size,
                  in_size=conv.in_size, out_channels=conv.out_channels, kernel=conv.kernel, stride=conv.stride,
                  padding=conv.padding, add_residual=add_residual, relu=relu)
        return out

    def bottleneck(self, x, block: Bottleneck, free):
        """Plan one block reading x; `free` are the three buffers x is not in. Returns the output view."""
        b1, b2, b3 = free
        self.lines.append(f"    # {block.name}")
        c1, c2, c3, down = block.conv1, block.conv2, block.conv3, block.downsample
        out = self.conv(x, c1, self.view(b1, c1.out_size, c1.out_channels), None, relu=True)
        out = self.conv(out, c2, self.view(b2, c2.out_size, c2.out_channels), None, relu=True)
        # conv3 adds the shortcut as it stores its sums, so the shortcut comes first, into b1 (conv2 has read it).
        shortcut = self.conv(x, down, self.view(b1, down.out_size, down.out_channels), None, relu=False) if down else x
        return self.conv(out, c3, self.view(b3, c3.out_size, c3.out_channels), shortcut, relu=True)

    def plan(self):
        arch, buffers = self.arch, self.buffers
        x = self.conv(self.input, arch.stem, self.view(buffers[0], arch.stem.out_size, arch.stem.out_channels),
                      None, relu=True)
        pool = arch.pool
        pooled = self.view(buffers[1], pool.out_size, pool.channels)
        self.emit(MAX_POOL, f"max_pool_{pool.in_size}x{pool.channels}", (x, pooled), in_size=pool.in_size,
                  out_size=pool.out_size, channels=pool.channels, kernel=pool.kernel, stride=pool.stride,
                  padding=pool.padding)
        x, current = pooled, 1
        for block in arch.blocks:
            others = [i for i in range(NUM_BUFFERS) if i != current]
            x = self.bottleneck(x, block, [buffers[i] for i in others])
            current = others[2]  # the block's output is in the third free buffer
        last = arch.blocks[-1].conv3
        self.emit(GLOBAL_AVG_POOL, f"global_avg_pool_{last.out_size}x{last.out_channels}", (x, self.features),
                  size=last.out_size, channels=last.out_channels, positions=last.out_size**2)
        fc = arch.fc
        self.emit(FULLY_CONNECTED, f"fully_connected_{fc.in_features}_{fc.out_features}",
                  (self.features, *self.pool["fc"], self.logits),
                  in_features=fc.in_features, out_features=fc.out_features)

    def write_source(self) -> Path:
        """The generated forward module's path in the kernel cache (common.codegen.write_modules). Its name and each
        kernel module's hold a digest of their source, of this generator and of the machine, so that numba's cached
        machine code is only reused for the same three."""
        variant = self.manifest["variant"]
        name = f"{Path(__file__).parent.name}_resnet50_{variant.replace('.', '_')}"
        return write_modules(name, f"ResNet-50 forward pass for {variant} weights", PRELUDE, self.kernel_sources,
                             self.lines, generator=Path(__file__))

    def forward(self, image):
        """image: HWC float32 (224, 224, 3) -> logits (1000,). The returned array is the model's own
        logits buffer: the next forward() overwrites it."""
        self.input[...] = image
        self.kernels.forward(self.arrays)
        return self.logits
