"""AMX's tile registers emulated in numpy: runs the statements of a generated AMX conv kernel (stage 15's AMX_CONV)
on a CPU without AMX, and checks the sums of its tile of output against the conv computed directly.

TileUnit does the tile instructions the kernel calls: ldtilecfg's shapes from tile_config's 64 bytes (tile_shapes),
tileloadd and tilestored on an array's bytes, tilezero and tdpbf16ps, logging every load and product.
tile_statements compiles the kernel's work on one tile as plain Python; run_tile runs it for one tile of output
pixels and checks it (TileRun: what it computed). Stage 15's picture draws what it computes
(course/pictures/stage15.py); tests/test_amx_emulator.py checks the generated kernels with it on any CPU.
from_bits, the widening of bfloat16 bits its tdpbf16ps does, is stage 14's picture's too: it lives here, as this
module imports nothing of course/pictures, which imports it.
"""

import ast
from dataclasses import dataclass

import numpy as np

from common.architecture import Conv
from common.planner import Step


def from_bits(bits) -> np.ndarray:
    """bfloat16 bits -> the float32s they are, as from_bf16 widens them: 16 zero bits put under them."""
    return (np.asarray(bits, np.uint32) << 16).view(np.float32)


def tile_shapes(module, config) -> tuple[int, np.ndarray, np.ndarray]:
    """tile_config's 64 bytes decoded as ldtilecfg reads them: (palette, bytes per row of each of the 16 tiles'
    slots, rows of each)."""
    config = np.asarray(config, np.uint8)
    slots = (module.ROWS_AT - module.COLUMN_BYTES_AT) // 2
    return (int(config[0]), config[module.COLUMN_BYTES_AT: module.ROWS_AT].view(np.uint16).copy(),
            config[module.ROWS_AT: module.ROWS_AT + slots].copy())


class TileUnit:
    """AMX's tile registers emulated in numpy (no tile instruction runs): the shapes ldtilecfg reads from
    tile_config's bytes, tileloadd and tilestored on an array's bytes, tilezero, and tdpbf16ps: in each sum row m and
    column n, the products of input row m's bfloat16 pairs and weight column n's, pair kk with weight row kk, added
    up (here in float64, rounded to float32 once an instruction). Every load and dot is logged with the kernel's
    loop variables (kh, kw, k) at the time."""

    def __init__(self, module, config, variables: dict):
        _, self.row_bytes, self.rows = tile_shapes(module, config)
        self.module, self.variables = module, variables
        self.tiles = {}
        self.loads, self.dots = [], []

    def shape(self, tile) -> tuple[int, int]:
        return int(self.rows[tile]), int(self.row_bytes[tile])

    def step(self) -> tuple:
        return tuple(self.variables.get(name) for name in ("kh", "kw", "k"))

    def zero(self, tile):
        self.tiles[tile] = np.zeros(self.shape(tile), np.uint8)

    def span(self, base, index, stride, tile) -> tuple[np.ndarray, list[int]]:
        """base's bytes and the byte offsets of the tile's rows from base[index] on, stride bytes apart."""
        data = base.reshape(-1).view(np.uint8)
        rows, row_bytes = self.shape(tile)
        starts = [index * base.itemsize + r * stride for r in range(rows)]
        if starts[0] < 0 or starts[-1] + row_bytes > data.size:
            raise AssertionError(f"tile {tile}: rows at bytes {starts[0]}-{starts[-1] + row_bytes} of an array of "
                                 f"{data.size}")
        return data, starts

    def load(self, tile, base, index, stride):
        data, starts = self.span(base, index, stride, tile)
        row_bytes = self.shape(tile)[1]
        self.tiles[tile] = np.stack([data[s: s + row_bytes] for s in starts])
        self.loads.append((tile, base, starts, stride, self.step()))

    def store(self, tile, base, index, stride):
        data, starts = self.span(base, index, stride, tile)
        for s, row in zip(starts, self.tiles[tile], strict=True):
            data[s: s + row.size] = row

    def dot(self, sums, inputs, weights):
        m, n_bytes = self.shape(sums)
        a, b = self.tiles[inputs], self.tiles[weights]
        k = a.shape[1] // 4  # pairs in an input row, one a weight row
        if a.shape[0] != m or b.shape != (k, n_bytes):
            raise AssertionError(f"tdpbf16ps {sums}, {inputs}, {weights}: shapes {(m, n_bytes)}, {a.shape}, {b.shape}"
                                 " do not fit")
        x = from_bits(np.ascontiguousarray(a).view(np.uint16)).reshape(m, k, 2).astype(np.float64)
        w = from_bits(np.ascontiguousarray(b).view(np.uint16)).reshape(k, n_bytes // 4, 2).astype(np.float64)
        before = np.ascontiguousarray(self.tiles[sums]).view(np.float32).copy()
        after = (before + np.einsum("mkh,knh->mn", x, w)).astype(np.float32)
        self.tiles[sums] = after.view(np.uint8)
        self.dots.append((sums, inputs, weights, self.step(), before, after, x, w))


def tile_statements(source: str):
    """A generated AMX conv kernel's work on one tile of output, compiled as plain Python: the body of its `for
    tile` loop, from the tile's position to the last store_tile (the output loop after it is stage 14's)."""
    tree = ast.parse(source)
    loop = next(node for node in ast.walk(tree) if isinstance(node, ast.For) and isinstance(node.target, ast.Name)
                and node.target.id == "tile")
    stores = [i for i, s in enumerate(loop.body) if isinstance(s, ast.Expr) and isinstance(s.value, ast.Call)
              and getattr(s.value.func, "id", None) == "store_tile"]
    return compile(ast.Module(loop.body[: stores[-1] + 1], type_ignores=[]), "<tile loop>", "exec")


@dataclass
class TileRun:
    """One tile of a conv's output, computed by the statements of its generated kernel with TileUnit's tiles."""

    conv: Conv
    constants: dict  # what the stage's plan rendered the kernel with
    x: np.ndarray  # its input, as the kernel gets it: HWC bfloat16 bits with the conv's border
    weight: np.ndarray  # fold's weight pairs (int32)
    reference: np.ndarray  # OIHW float64: the bfloat16 weights fold rounds, the conv's own (the stem: 3 channels)
    config: np.ndarray  # tile_config's 64 bytes, as the plan passes them
    ho: int
    wo0: int
    group: int
    sums: np.ndarray  # [rows][block] float32, as the output loop reads them
    direct: np.ndarray  # [rows][block]: the same sums of the conv computed directly, in float64
    unit: TileUnit


def run_tile(module, step: Step, source: str, x, weight, reference, ho: int, wo0: int) -> TileRun:
    """The tile of output pixels (ho, wo0...) of group 0 through the kernel's own statements (tile_statements),
    checked against the conv computed directly from `reference` and x. step: the conv's call in the stage's plan,
    its conv, the constants its kernel was rendered with and its arguments, of which it takes the tile
    configuration; source: the kernel's generated source."""
    c, conv = step.constants, step.conv
    rows, block = c["rows"], c["block"]
    position = ho * c["column_tiles"] + wo0 // rows
    number = position * c["groups"] if c["pixels_first"] else position  # group 0
    config = step.arrays[5]
    variables = {"tile": number, "x": x, "weight": weight, "sums": np.zeros(rows * block, np.float32)}
    unit = TileUnit(module, config, variables)
    variables.update(zero_tile=unit.zero, load_tile=unit.load, tile_dot=unit.dot, store_tile=unit.store)
    exec(tile_statements(source), variables)
    if (variables["ho"], variables["wo0"], variables["group"]) != (ho, wo0, 0):
        raise AssertionError("the kernel's tile position is not the one asked for")
    k, s = conv.kernel, conv.stride
    window = np.stack([from_bits(x[ho * s: ho * s + k, (wo0 + r) * s: (wo0 + r) * s + k, : conv.in_channels])
                       for r in range(rows)]).astype(np.float64)
    direct = np.einsum("rhwc,ochw->ro", window, reference[:block])
    sums = variables["sums"].reshape(rows, block)
    if not np.allclose(sums, direct, rtol=1e-5, atol=1e-5):
        raise AssertionError(f"{conv.name}: the emulated tiles' sums are not the conv's")
    return TileRun(conv, c, x, weight, reference, config, ho, wo0, 0, sums, direct, unit)
