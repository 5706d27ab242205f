"""The plan of a generated forward pass (stage 5 on), apart from compiling and running it.

A stage that generates its kernels plans its forward pass in a plain function of the architecture, its weights (or
stand-ins of their shapes) and, for a stage that tunes, its choices: `plan(arch, pool[, choices]) -> Plan`. The Plan
holds what the pass is: the kernels, one rendered source per distinct layer shape; the steps, each a call of one
kernel on its arrays (weights and buffers), in order, with the conv it computes and the constants its template was
rendered with; which kernels compile with the tile vectorizer; where the photo goes in and the logits come out.
Everything else consumes it: common/model.py writes, compiles and runs it, the tuner plans a pass per round of
candidates and times its calls, the pictures draw its steps, the tests count its arrays, and `example` renders one
of its kernels as the file each generated stage commits beside its model.py.

A Planner builds a Plan step by step: `emit` renders a kernel's template the first time its name is seen and adds
a call, `view` and `bordered` give the buffers the calls pass, `comment` marks where a block starts. Templates are
str.format text filled once by `render`, which fails on a field no key fills and on a key no field takes, so that a
stale constant cannot slip through; `indented` is the one place that indents a rendered piece of source.
"""

import string
import textwrap
from dataclasses import dataclass, field
from pathlib import Path

import numba
import numpy as np

from common import codegen
from common.architecture import Bottleneck, Conv, ResNet50, tensor_shapes
from common.intrinsics import tile_vectorizer

INDENT = "    "  # one level of Python indentation


def render(template: str, **keys) -> str:
    """template with its {fields} filled from keys. A field that no key fills, or a key that no field takes, is an
    error (str.format ignores the second): a template and its caller agree on every constant."""
    fields = {name.split(".")[0].split("[")[0] for _, name, _, _ in string.Formatter().parse(template) if name}
    missing, unused = fields - set(keys), set(keys) - fields
    if missing or unused:
        raise KeyError(f"the template of {keys.get('name', 'a kernel')}: no value for {sorted(missing)}, no field for "
                       f"{sorted(unused)}")
    return template.format(**keys)


def indented(source: str, depth: int) -> str:
    """source with `depth` more levels of indentation on every line that has text."""
    return textwrap.indent(source, INDENT * depth)


@dataclass
class Step:
    """One call of the forward pass."""

    kernel: str  # the kernel's name, which says its layer shape
    arrays: tuple  # what it is called with
    conv: Conv | None = None  # the conv it computes (or a part of), if any
    constants: dict = field(default_factory=dict)  # what its template was rendered with
    comment: str = ""  # a line before the call in the generated source: the block it starts


@dataclass
class Plan:
    """A stage's forward pass, planned."""

    kernels: dict[str, str]  # kernel name -> its source, one per distinct layer shape
    steps: list[Step]
    tiled: dict[str, tuple]  # the kernels compiled with the tile vectorizer -> their argument types
    image: np.ndarray  # the HWC float32 view forward() writes the photo into
    logits: np.ndarray  # the view forward() reads the answer from

    @property
    def arrays(self) -> tuple:
        """Every step's arrays, in order: a[i] in the generated source."""
        return tuple(array for step in self.steps for array in step.arrays)

    def calls(self) -> list[tuple[str, tuple]]:
        return [(step.kernel, step.arrays) for step in self.steps]

    def lines(self) -> list[str]:
        """The body of the generated forward(a): a call per step, a comment where a block starts."""
        lines, at = [], 0
        for step in self.steps:
            if step.comment:
                lines.append(f"{INDENT}# {step.comment}")
            lines.append(f"{INDENT}{step.kernel}({', '.join(f'a[{at + i}]' for i in range(len(step.arrays)))})")
            at += len(step.arrays)
        return lines

    def of(self, conv_name: str) -> list[Step]:
        """The steps that compute the conv of that name."""
        return [step for step in self.steps if step.conv is not None and step.conv.name == conv_name]


class Planner:
    """Builds a Plan: the kernels rendered so far, the steps, the bordered buffers by shape."""

    def __init__(self, zeros=lambda shape: np.zeros(shape, np.float32)):
        self.kernels, self.steps, self.tiled = {}, [], {}
        self.zeros = zeros  # makes a buffer of zeros of a shape: of the stage's activations' type
        self.bordered_buffers = {}  # HWC shape -> its buffer with a border of zeros, one per shape
        self.scratch_buffers = {}  # name -> a buffer a layer shape's steps pass between them
        self.pending_comment = ""

    def emit(self, template: str, name: str, arrays, conv: Conv | None = None, tiled: bool = False, **constants):
        """One step: a call of the kernel `name`, rendered from `template` with `constants` the first time the name
        is seen. A tiled kernel compiles with the tile vectorizer, for the types of these arrays."""
        self.kernels.setdefault(name, render(template, name=name, **constants))
        self.steps.append(Step(name, tuple(arrays), conv, constants, self.pending_comment))
        self.pending_comment = ""
        if tiled:
            self.tiled[name] = tuple(numba.typeof(array) for array in arrays)

    def comment(self, text: str):
        """A comment line before the next step's call: the block it starts."""
        self.pending_comment = text

    @staticmethod
    def view(buffer: np.ndarray, size: int, channels: int, dtype=None) -> np.ndarray:
        """An HWC view of the start of a flat buffer (as `dtype`, if given)."""
        flat = buffer if dtype is None else buffer.view(dtype)
        return flat[: size * size * channels].reshape(size, size, channels)

    def bordered(self, size: int, channels: int, border: int) -> np.ndarray:
        """The HWC buffer for size x size x channels with a border of zeros around it, one per shape: the kernels
        write only its inside, so the border stays 0 and serves as the padding of the conv reading it."""
        shape = (size + 2 * border, size + 2 * border, channels)
        if shape not in self.bordered_buffers:
            self.bordered_buffers[shape] = self.zeros(shape)
        return self.bordered_buffers[shape]

    def scratch(self, name: str, shape: tuple) -> np.ndarray:
        """A float32 buffer of that shape by name, made the first time it is asked for: the layers of one shape
        share it."""
        return self.scratch_buffers.setdefault(name, np.empty(shape, np.float32))

    def plan(self, image: np.ndarray, logits: np.ndarray) -> Plan:
        return Plan(self.kernels, self.steps, self.tiled, image, logits)


def rotate(arch: ResNet50, x: np.ndarray, buffers: list, bottleneck) -> np.ndarray:
    """Stage 4's buffers in turns: x, the first block's input, is in one of the buffers; `bottleneck(x, block, free)`
    plans a block on the three that x is not in and returns its output, in the third of them, which the next block
    reads. Returns the last block's output."""
    current = next(i for i, buffer in enumerate(buffers) if np.may_share_memory(x, buffer))
    for block in arch.blocks:
        others = [i for i in range(len(buffers)) if i != current]
        x = bottleneck(x, block, [buffers[i] for i in others])
        current = others[2]  # the block's output is in the third free buffer
    return x


def bottleneck(p: Planner, conv, x: np.ndarray, block: Bottleneck, free: list) -> np.ndarray:
    """Stage 8's plan of one block reading x, `conv(x, conv, out, residual, relu, out_border=0)` its conv step;
    `free` are the three buffers x is not in. conv1 writes inside a zero border of conv2's padding, conv3 adds the
    shortcut as it stores its sums, so the shortcut comes first. Returns the output view."""
    b1, b2, b3 = free
    p.comment(block.name)
    c1, c2, c3, down = block.conv1, block.conv2, block.conv3, block.downsample
    mid = p.bordered(c1.out_size, c1.out_channels, c2.padding)  # conv2 reads it with its padding
    conv(x, c1, mid, None, relu=True, out_border=c2.padding)
    out = conv(mid, c2, p.view(b2, c2.out_size, c2.out_channels), None, relu=True)
    shortcut = conv(x, down, p.view(b1, down.out_size, down.out_channels), None, relu=False) if down else x
    return conv(out, c3, p.view(b3, c3.out_size, c3.out_channels), shortcut, relu=True)


def write(plan: Plan, generator: Path, prelude: str, variant: str, purpose: str = "resnet50") -> Path:
    """The plan's forward module in the kernel cache (common.codegen.write_modules): each kernel a module of its own
    beside it, named with a digest of its source, of the generator (common.codegen.generator_source) and of the
    machine, so that numba's cached machine code is only reused for the same three."""
    name = f"{generator.parent.name}_{purpose}_{variant.replace('.', '_')}"
    return codegen.write_modules(name, f"ResNet-50 forward pass for {variant} weights", prelude, plan.kernels,
                                 plan.lines(), generator=generator)


def compiled(plan: Plan, path: Path):
    """(module, how, seconds): the forward module at path with every kernel compiled or loaded, the tiled ones with
    the tile vectorizer's settings."""
    return codegen.load_module(path, plan.tiled, tile_vectorizer)


class StandIns(dict):
    """A weight pool of stand-ins: arrays of the right number of values that hold nothing (zero strides, no memory),
    for a plan whose arrays are only looked at, never run. It answers every stage's names: torchvision's tensor
    names (stages 1-6), a conv's name as (weight, bias) (stage 7 on) and "fc"; `names` tells which name an array
    answers."""

    def __init__(self, arch: ResNet50):
        super().__init__()
        self.shapes = tensor_shapes(arch)
        self.out_channels = {c.name: c.out_channels for c in arch.convs}
        self.names = {}

    def tensor(self, name: str, shape=None) -> np.ndarray:
        array = np.broadcast_to(np.float32(0), shape or self.shapes[name])
        self.names[id(array)] = name
        return array

    def __missing__(self, name):
        if name in self.out_channels:
            value = (self.tensor(f"{name}.weight"), self.tensor(f"{name}.bias", (self.out_channels[name],)))
        elif name == "fc":
            value = (self.tensor("fc.weight"), self.tensor("fc.bias"))
        else:
            value = self.tensor(name)
        self[name] = value  # kept, so that the arrays' ids stay theirs
        return value
