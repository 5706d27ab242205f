"""Watching any stage's forward pass from outside: which layer each kernel call computes, and what it wrote.

Every stage runs its forward pass as Python calling numba-compiled kernels (stage 4 on from a planned list,
stage 5 on from a generated module). While `kernel_calls` is active, every call from Python into any numba
dispatcher is reported right after it returns (the dispatcher class's __call__ is wrapped; calls between
compiled functions are not seen, they are part of their caller). `Placer` gives the calls to layers in
forward order, as common.architecture lists them: a kernel whose name contains "conv" starts the next
convolution layer, and two of its arrays must be that layer's input and output (HWC, possibly inside a zero
border or viewed with W and C merged); batch norm, relu and the residual add that follow belong to the
current layer (one that runs before the first layer, as the int8 stage's turning the photo into codes, to the
first); then max pool, global average pool and fc. A kernel it cannot place stops it with an error
instead of a guess.

Two users, and the stage folders are never changed for either: bench.profile times the calls per layer, and
`capture` keeps the output of the stem and of each layer group (what explain/ draws). Outside these two the
forward pass runs as it always does: the wrapper exists only inside `kernel_calls`.
"""

import math
import re
import time
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np

from common.architecture import STEM_PADDING, Bottleneck, Conv, Linear, MaxPool, ResNet50, resnet50
from common.errors import UserError

AVGPOOL = "avgpool"
JOINS = "joins"  # batch norm, relu, residual add: part of the layer in progress
# Kernel names -> the layers they compute, matched between underscores. A fused kernel names several
# layers (average_pool_fully_connected); a conv kernel that also does batch norm is a conv. A Winograd
# conv is three kernels: the input transform starts the layer, the products and the output transform join it.
WINOGRAD_START = "winograd_input"
KERNEL_PATTERNS = (
    (r"conv|" + WINOGRAD_START, "conv"), (r"max_?pool", "maxpool"), (r"(avg|average)_?pool", AVGPOOL),
    (r"fully_connected|fc", "fc"),
    (r"batch_norm|bn|relu|add|winograd_products|winograd_output|input_codes|input_bf16", JOINS),
)
# A stage may keep an activation inside a zero border (the next layer's padding), up to the widest one.
MAX_BORDER = STEM_PADDING
CHANNEL_QUAD = 4  # an int8 stage may pad an activation's channels to a multiple of 4 bytes
# The groups whose outputs `capture` keeps: the stem (conv1, bn, relu, max pool) and the four layer groups.
# The head (average pool, fc) is "head": its output is the logits.
STEM, HEAD = "stem", "head"
GROUPS = (STEM, "layer1", "layer2", "layer3", "layer4")


@dataclass
class Layer:
    name: str
    kind: str  # conv, maxpool, avgpool or fc
    block: str  # the bottleneck it belongs to ("" outside the blocks)
    group: str  # stem, layer1..layer4 or head
    in_shape: tuple[int, ...]  # HWC, or (features,)
    out_shape: tuple[int, ...]
    macs: int  # multiply-adds; 0 for the pools, which only compare and add
    shortcut: bool = False  # a block's projection shortcut: may run before, between or after the main path


def layers(arch: ResNet50) -> list[Layer]:
    """The network's layers in forward order, with their shapes and multiply-adds."""

    def conv(c: Conv, block: Bottleneck | None = None) -> Layer:
        shortcut = block is not None and c == block.downsample
        group = block.name.split(".")[0] if block else STEM  # "layer2.0" -> "layer2"
        return Layer(c.name, "conv", block.name if block else "", group, (c.in_size, c.in_size, c.in_channels),
                     (c.out_size, c.out_size, c.out_channels), c.macs, shortcut)

    def pool(p: MaxPool) -> Layer:
        return Layer(p.name, "maxpool", "", STEM, (p.in_size, p.in_size, p.channels),
                     (p.out_size, p.out_size, p.channels), 0)

    def fc(f: Linear) -> Layer:
        return Layer(f.name, "fc", "", HEAD, (f.in_features,), (f.out_features,), f.macs)

    last = arch.blocks[-1].conv3
    avgpool = Layer(AVGPOOL, AVGPOOL, "", HEAD, (last.out_size, last.out_size, last.out_channels),
                    (last.out_channels,), 0)
    return ([conv(arch.stem), pool(arch.pool)] + [conv(c, b) for b in arch.blocks for c in b.convs]
            + [avgpool, fc(arch.fc)])


def kinds_of(kernel: str) -> list[str]:
    """The layer kinds a kernel computes, in the order its name lists them; [JOINS] for batch norm etc."""
    found = []
    for pattern, kind in KERNEL_PATTERNS:
        match = re.search(rf"(^|_)({pattern})(_|$|\d)", kernel)
        if match:
            found.append((match.start(2), kind))
    kinds = [kind for _, kind in sorted(found)]
    if not kinds:
        raise UserError(f"common/trace.py does not know which layer kernel {kernel!r} belongs to; "
                        f"add its name to KERNEL_PATTERNS")
    layer_kinds = [kind for kind in kinds if kind != JOINS]
    return layer_kinds or [JOINS]


def border_of(actual: tuple[int, ...], expected: tuple[int, ...]) -> int | None:
    """The zero border (0..MAX_BORDER) with which an array of shape `actual` holds the HWC activation
    `expected`, as it is, viewed with its last axes merged (rows read as (H, W*C)), or with its channels padded
    to a multiple of CHANNEL_QUAD (the int8 stage's photo: 3 channels in 4 bytes); None if it does not."""
    height, width, channels = expected
    padded = -(-channels // CHANNEL_QUAD) * CHANNEL_QUAD
    return next((border for border in range(MAX_BORDER + 1)
                 if actual[0] == height + 2 * border
                 and math.prod(actual) in {(height + 2 * border) * (width + 2 * border) * c
                                           for c in (channels, padded)}),
                None)


def fits(actual: tuple[int, ...], expected: tuple[int, ...]) -> bool:
    """Is an array of shape `actual` the HWC activation `expected` (see border_of)?"""
    return border_of(actual, expected) is not None


def shapes_match(layer: Layer, kernel: str, arrays: list[np.ndarray]) -> bool:
    """One of a conv call's arrays is the layer's input and another one its output; a Winograd input
    transform has only the input (the output comes two kernels later)."""
    shapes = [a.shape for a in arrays]
    if kernel.startswith(WINOGRAD_START):
        return any(fits(s, layer.in_shape) for s in shapes)
    return any(fits(s_in, layer.in_shape) and fits(s_out, layer.out_shape)
               for i, s_in in enumerate(shapes) for j, s_out in enumerate(shapes) if i != j)


def take(kind: str, kernel: str, arrays: list[np.ndarray], remaining: list[Layer]) -> Layer:
    """The layer a kernel call computes: the next one in forward order, except in a block with a projection
    shortcut, which may run before, between or after the main path's convs: there, the next main-path conv
    or the shortcut, whichever has these shapes. If both have them (layer1.0's conv3 and shortcut), they
    also have the same multiply-adds, and the main path's conv is taken."""
    if not remaining:
        raise UserError(f"kernel {kernel!r} runs after the fc layer; common/trace.py cannot place it")
    candidates = [remaining[0]]
    if kind == "conv" and remaining[0].block:
        in_block = [layer for layer in remaining if layer.block == remaining[0].block]
        main_path = [layer for layer in in_block if not layer.shortcut]
        candidates = main_path[:1] + [layer for layer in in_block if layer.shortcut]
    found = next((layer for layer in candidates
                  if layer.kind == kind and (kind != "conv" or shapes_match(layer, kernel, arrays))), None)
    if found is None:
        shapes = ", ".join(str(a.shape) for a in arrays)
        raise UserError(f"kernel {kernel!r} (arrays {shapes}) does not fit the next layer {remaining[0].name} "
                        f"({remaining[0].kind}, {remaining[0].in_shape} -> {remaining[0].out_shape}); "
                        f"common/trace.py cannot place it")
    remaining.remove(found)
    return found


class Placer:
    """Places the kernel calls of one forward pass, one at a time, as they happen."""

    def __init__(self, expected: list[Layer]):
        self.remaining = list(expected)
        self.current: tuple[Layer, ...] | None = None  # the layers of the call in progress

    def place(self, kernel: str, arrays: list[np.ndarray]) -> tuple[Layer, ...]:
        """The layers a call computes: one, or the layers one fused kernel computes; the layer in
        progress for batch norm, relu and add."""
        kinds = kinds_of(kernel)
        if kinds == [JOINS]:
            if self.current is None:  # before the first layer: it prepares its input (the int8 photo's codes)
                return (self.remaining[0],)
            return self.current
        self.current = tuple(take(kind, kernel, arrays, self.remaining) for kind in kinds)
        return self.current

    def finish(self) -> None:
        """After the forward pass: every layer must have been seen."""
        if self.remaining:
            raise UserError(f"the forward pass never ran layer {self.remaining[0].name} ({len(self.remaining)} "
                            f"layers unseen); common/trace.py expects one kernel call to start each layer")


def attribute(calls: list[tuple[str, list[np.ndarray], float]], expected: list[Layer]) -> dict[tuple, float]:
    """Seconds per row of the profile, from the kernel calls of one forward pass (kernel name, arrays,
    seconds). A row is a tuple of layer names: one layer, or the layers one fused kernel computes."""
    placer = Placer(expected)
    seconds: dict[tuple, float] = {}
    for kernel, arrays, s in calls:
        row = tuple(layer.name for layer in placer.place(kernel, arrays))
        seconds[row] = seconds.get(row, 0.0) + s
    placer.finish()
    return seconds


@contextmanager
def kernel_calls(on_call: Callable[[tuple[str, list[np.ndarray], float]], None]):
    """While active, every Python call of a numba-compiled function is followed, before the next one starts,
    by on_call((kernel name, its array arguments and returned array, seconds))."""
    from numba.core.dispatcher import Dispatcher

    original = Dispatcher.__call__

    def timed_call(self, *args, **kwargs):
        start = time.perf_counter()
        result = original(self, *args, **kwargs)
        elapsed = time.perf_counter() - start
        on_call((self.py_func.__name__, [a for a in (*args, result) if isinstance(a, np.ndarray)], elapsed))
        return result

    Dispatcher.__call__ = timed_call
    try:
        yield
    finally:
        del Dispatcher.__call__  # back to the compiled base class's own __call__


def inside(array: np.ndarray, shape: tuple[int, int, int]) -> np.ndarray:
    """A copy of the HWC activation of `shape` that `array` holds, without its zero border."""
    height, width, channels = shape
    border = border_of(array.shape, shape)
    bordered = array.reshape(height + 2 * border, width + 2 * border, channels)
    return np.array(bordered[border:border + height, border:border + width])


def capture(model, image: np.ndarray, variant: str) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """One forward pass of any stage's model: (a copy of its logits, {group: the group's output, HWC float32}),
    for the GROUPS. A group's output is what the last kernel call placed in that group wrote: the last of the
    call's arrays with the group's output shape (every stage's kernels take their output last, or return it).
    It is copied as soon as that call returns, because later kernels reuse the buffers."""
    expected = layers(resnet50(variant))
    shapes = {layer.group: layer.out_shape for layer in expected}  # a group's last layer gives its output shape
    placer = Placer(expected)
    outputs: dict[str, np.ndarray] = {}

    def keep(call: tuple[str, list[np.ndarray], float]) -> None:
        kernel, arrays, _ = call
        for group in dict.fromkeys(layer.group for layer in placer.place(kernel, arrays)):
            if group not in GROUPS:
                continue
            written = next((a for a in reversed(arrays) if fits(a.shape, shapes[group])), None)
            if written is not None:
                outputs[group] = inside(written, shapes[group])

    with kernel_calls(keep):
        logits = np.array(model.forward(image))
    placer.finish()
    missing = [group for group in GROUPS if group not in outputs]
    if missing:
        raise UserError(f"no kernel call wrote the output of {', '.join(missing)} as an array (a kernel that "
                        f"fuses it with the next layer keeps it in registers); common/trace.py cannot capture it")
    return logits, outputs
