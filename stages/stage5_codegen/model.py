'''Stage 5, codegen: Python source for the whole forward pass, generated from the architecture
description, with every shape, stride, padding and epsilon a literal constant.

Stage 4's kernels took their shapes as run-time values; the compiler could not know that a loop runs
exactly 64 times, or that a padding is 0. Here the kernels below are templates: for each distinct layer
shape the generator writes one kernel with those numbers filled in, and the forward pass becomes one
line per step, calling them in order. The source is written as readable files to a cache folder
outside the repository, a module per kernel and one for the forward pass that imports them
(`model.source_path`; `make stage5 source` prints it), imported, and compiled by numba as it is imported
(each kernel has an explicit signature); numba's on-disk cache (cache=True) lets a second run skip
compilation. A file is generated again when its source or this generator changes, since its name holds a
hash of both (common/codegen.py); the weights, transposed once, are kept beside it (common/prepared.py).

The buffers, the weight pool and the loops inside the kernels are stage 4's.
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
PRELUDE = '''import math

import numpy as np
from numba import njit

HWC = "float32[:, :, ::1]"
OHWI = "float32[:, :, :, ::1]"
VECTOR = "float32[::1]"
MATRIX = "float32[:, ::1]"
'''

CONV = '''

@njit(f"void({{HWC}}, {{OHWI}}, {{HWC}})", fastmath=True, cache=True)
def {name}(x, weight, out):
    for co in range({out_channels}):
        for ho in range({out_size}):
            for wo in range({out_size}):
                acc = np.float32(0.0)
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
                out[ho, wo, co] = acc
'''

BATCH_NORM = '''

@njit(f"void({{HWC}}, {{VECTOR}}, {{VECTOR}}, {{VECTOR}}, {{VECTOR}}, {{HWC}})", fastmath=True, cache=True)
def {name}(x, gamma, beta, mean, var, out):
    for h in range({size}):
        for w in range({size}):
            for c in range({channels}):
                out[h, w, c] = gamma[c] * (x[h, w, c] - mean[c]) / math.sqrt(var[c] + np.float32({eps!r})) + beta[c]
'''

RELU = '''

@njit(f"void({{HWC}}, {{HWC}})", fastmath=True, cache=True)
def {name}(x, out):
    for h in range({size}):
        for w in range({size}):
            for c in range({channels}):
                out[h, w, c] = max(x[h, w, c], np.float32(0.0))
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

ADD = '''

@njit(f"void({{HWC}}, {{HWC}}, {{HWC}})", fastmath=True, cache=True)
def {name}(a, b, out):
    for h in range({size}):
        for w in range({size}):
            for c in range({channels}):
                out[h, w, c] = a[h, w, c] + b[h, w, c]
'''


def load_pool(manifest, weights_dir):
    """Every tensor by name, in the layout the kernels want: conv weights OHWI, the rest as exported."""
    pool = {}
    for name in manifest["tensors"]:
        tensor = load_tensor(name, manifest, weights_dir)
        if tensor.ndim == 4:
            tensor = np.ascontiguousarray(tensor.transpose(0, 2, 3, 1))  # OIHW -> OHWI
        pool[name] = tensor
    return pool


class Model:
    """ResNet-50 built from common.architecture; weights pooled and buffers allocated when it is built,
    the forward pass generated as source, one specialized kernel per distinct layer shape."""

    def __init__(self, weights_dir=WEIGHTS_DIR):
        self.manifest = load_manifest(weights_dir)
        self.arch = resnet50(self.manifest["variant"])
        self.eps = np.float32(self.manifest["bn_eps"])
        start = time.perf_counter()
        # Computed once, then mapped from the cache (common/prepared.py).
        self.pool = prepared_pool(lambda: load_pool(self.manifest, weights_dir), self.manifest, weights_dir,
                                  Path(__file__))
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

    def conv_bn(self, x, conv: Conv, out_buffer, with_relu: bool):
        pool = self.pool
        out = self.view(out_buffer, conv.out_size, conv.out_channels)
        shape = dict(size=conv.out_size, channels=conv.out_channels)
        self.emit(CONV, f"conv_{conv.in_size}x{conv.in_channels}_{conv.out_size}x{conv.out_channels}"
                        f"_k{conv.kernel}s{conv.stride}", (x, pool[f"{conv.name}.weight"], out),
                  in_size=conv.in_size, in_channels=conv.in_channels, out_size=conv.out_size,
                  out_channels=conv.out_channels, kernel=conv.kernel, stride=conv.stride, padding=conv.padding)
        self.emit(BATCH_NORM, f"batch_norm_{conv.out_size}x{conv.out_channels}",
                  (out, pool[f"{conv.bn}.weight"], pool[f"{conv.bn}.bias"], pool[f"{conv.bn}.running_mean"],
                   pool[f"{conv.bn}.running_var"], out), eps=self.manifest["bn_eps"], **shape)
        if with_relu:
            self.emit(RELU, f"relu_{conv.out_size}x{conv.out_channels}", (out, out), **shape)
        return out

    def bottleneck(self, x, block: Bottleneck, free):
        """Plan one block reading x; `free` are the three buffers x is not in. Returns the output view."""
        b1, b2, b3 = free
        self.lines.append(f"    # {block.name}")
        out = self.conv_bn(x, block.conv1, b1, with_relu=True)
        out = self.conv_bn(out, block.conv2, b2, with_relu=True)
        out = self.conv_bn(out, block.conv3, b3, with_relu=False)
        shortcut = self.conv_bn(x, block.downsample, b1, with_relu=False) if block.downsample else x
        shape = dict(size=block.conv3.out_size, channels=block.conv3.out_channels)
        self.emit(ADD, "add_{size}x{channels}".format(**shape), (out, shortcut, out), **shape)
        self.emit(RELU, "relu_{size}x{channels}".format(**shape), (out, out), **shape)
        return out

    def plan(self):
        arch, buffers = self.arch, self.buffers
        x = self.conv_bn(self.input, arch.stem, buffers[0], with_relu=True)
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
                  (self.features, self.pool["fc.weight"], self.pool["fc.bias"], self.logits),
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
