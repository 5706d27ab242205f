"""Stage 15's picture, AMX: the tile registers and tile_config's bytes, one tdpbf16ps and the stem's row taps,
planned and packed as on a CPU with AMX, so that the picture is the same on every machine. No tile instruction
runs: the statements of the generated AMX kernel run with numpy's tiles (tests/amx_emulator.py), with the weights
`make weights` exports by default (v1): layer1.0.conv2's on a stand-in input, the stem's on a photo of pics/.
"""

import numpy as np
from matplotlib.patches import Rectangle

from common import bf16
from common.architecture import Conv, resnet50
from common.errors import UserError
from common.image import load_image
from common.paths import PICS_DIR, WEIGHTS_DIR
from common.stages import stage_module
from common.target import vector_registers
from common.tiles import first_of_each_shape, register_tiles
from common.weights import load_manifest, load_tensor
from course.pictures.shared import (
    ACC_COLOUR,
    BF16_PHOTO,
    BF16_PIXEL,
    CODE_FONT,
    COURSE_VARIANT,
    GAP,
    MARGIN,
    PALE,
    SMALL,
    SPAN,
    W_COLOUR,
    WEIGHT_DISPLAY,
    X86,
    X_COLOUR,
    Sheet,
    bracket,
    example_conv,
    paragraph,
    planned,
    previous,
    require,
)
from tests.amx_emulator import TileRun, from_bits, run_tile, tile_shapes

# The CPU its tiles are drawn for, named to LLVM: Intel's first with AMX (2023), planned and packed as on it
AMX_TARGET = ("AMX", "sapphirerapids")
AMX_SEED = 15  # of the stand-in input of the conv whose tdpbf16ps the picture draws
AMX_EXAMPLE_TILE = (28, 28)  # that conv's tile of output pixels drawn: (ho, wo0), group 0
AMX_STEP = (1, 1, 1)  # its step drawn: (kh, kw, k), the centre tap's second chunk of 32 input channels


def amx_target(module):
    """(name, LLVM CPU name, bits, registers, lanes, tiles) of AMX_TARGET, as the stage would size them there."""
    name, cpu = AMX_TARGET
    bits, registers = vector_registers(X86, cpu, "")
    lanes = bits // module.FLOAT32_BITS
    return name, cpu, bits, registers, lanes, register_tiles(registers, lanes)


def amx_choices(module, tiles, rank: int) -> dict:
    """Each conv shape's candidate of that rank (0: the first) on a CPU with AMX and these tiles, whether or not this
    CPU has AMX, so that the picture is the same on every machine."""
    first = first_of_each_shape(resnet50(COURSE_VARIANT).convs)
    return {shape: module.candidates(conv, tiles, amx=True)[rank] for shape, conv in first.items()}


def amx_weights(module, conv: Conv, choice) -> tuple[np.ndarray, np.ndarray]:
    """(fold's weight pairs for the choice, as on a CPU with AMX if it is an AMX choice; the bfloat16 weights they
    hold, OIHW float64), from the course's weights, the batch norm folded in as fold folds it."""
    manifest = load_manifest(WEIGHTS_DIR)
    if manifest["variant"] != COURSE_VARIANT:
        raise UserError(f"{WEIGHTS_DIR}: {manifest['variant']} weights; stage 15's picture draws the course's "
                        f"{COURSE_VARIANT} weights: run `make weights` (SOURCE=npm) to export them")

    def tensors(name):
        return load_tensor(name, manifest, WEIGHTS_DIR)

    packed, _ = module.fold(conv, tensors, manifest["bn_eps"], choice)
    gamma, var = tensors(f"{conv.bn}.weight"), tensors(f"{conv.bn}.running_var")
    scale = gamma.astype(np.float64) / np.sqrt(var.astype(np.float64) + manifest["bn_eps"])
    weight = tensors(f"{conv.name}.weight").astype(np.float64) * scale[:, None, None, None]
    return module.cache_aligned(packed), from_bits(module.bf16_bits(weight)).astype(np.float64)


def tile_grid(sheet: Sheet, x, y, w, rh, rows: int, columns: int, face, minor: int = 0):
    """A tile as a box of rows x columns, top left (x, y); `minor` > 1 draws every minor-th column line darker."""
    sheet.box(x, y, w, rows * rh, face=face, edge="0.15")
    for i in range(1, columns):
        dark = minor > 1 and i % minor == 0
        sheet.ax.plot([x + i * w / columns] * 2, [y, y - rows * rh], color="0.35" if dark else "0.6",
                      linewidth=0.5 if dark else 0.25)
    for r in range(1, rows):
        sheet.ax.plot([x, x + w], [y - r * rh] * 2, color="0.6", linewidth=0.25)


def tile_roles(module, rows: int) -> dict:
    """Tile number -> (face, what it holds, its shape in values), as AMX_CONV uses tiles 0-7."""
    n, k = module.AMX_N, module.AMX_K
    roles = {t: (ACC_COLOUR, f"sums: co {t * n}-{t * n + n - 1}", f"{rows} x {n} float32")
             for t in range(module.SUM_TILES)}
    roles[module.INPUT_TILE] = (X_COLOUR, f"input: {rows} pixels", f"{rows} x {k} bfloat16")
    for t in module.WEIGHT_TILES:
        roles[t] = (W_COLOUR, f"weights: {module.TILE_ROWS} pairs", f"x {n} co: {2 * module.TILE_ROWS} x {n} bf16")
    return roles


def amx_tiles(sheet: Sheet, module, run: TileRun, target):
    """AMX's 8 tile registers as AMX_CONV uses them, their shapes from tile_config's bytes, the bytes decoded."""
    name, cpu, _, _, _, _ = target
    conv, c = run.conv, run.constants
    rows = c["rows"]
    palette, row_bytes, tile_rows = tile_shapes(module, run.config)
    if palette != module.PALETTE or (module.TILES_IN_USE, len(module.WEIGHT_TILES)) != (8, 3):
        raise AssertionError("the stage's tiles are no longer palette 1's 8: redraw its tile registers")
    roles = tile_roles(module, rows)
    float32_bytes, bf16_bytes = module.FLOAT32_BITS // 8, module.PAIR  # a bfloat16: 2 bytes
    expected = {t: (rows, module.AMX_N * float32_bytes) for t in range(module.SUM_TILES)}
    expected[module.INPUT_TILE] = (rows, module.AMX_K * bf16_bytes)
    expected.update({t: (module.TILE_ROWS, module.AMX_N * float32_bytes) for t in module.WEIGHT_TILES})
    for t, shape in expected.items():  # the shapes drawn are the config's
        if (int(tile_rows[t]), int(row_bytes[t])) != shape:
            raise AssertionError(f"tile {t}: tile_config's shape is not {shape}")
    paragraph(sheet, f"AMX, drawn as on {cpu} (Intel's first CPU with it): 8 tile registers of at most "
              f"TILE_ROWS = {module.TILE_ROWS} rows of TILE_ROW_BYTES = {module.TILE_ROW_BYTES} bytes, 1 KB each, "
              f"beside the vector registers. AMX_CONV uses them as drawn, here for {conv.name} ({conv.kernel}x"
              f"{conv.kernel}, {conv.in_channels} -> {conv.out_channels} channels) with a tile of "
              f"{module.label(run_choice(module, c))} (drawn: its candidate of most rows; the tuning's choice "
              "differs from CPU to CPU): 4 sum tiles of "
              f"{rows} output pixels x AMX_N = {module.AMX_N} output channels, AMX_BLOCK = {module.AMX_BLOCK} in "
              f"all; one input tile of {rows} pixels x AMX_K = {module.AMX_K} input channels; 3 weight tiles, taking "
              "turns. Each tile's rows and bytes per row are what ldtilecfg (load_tile_config, once per thread's "
              f"part) reads from tile_config({rows})'s 64 bytes, below:", gap=3.4)
    tw, gap, rh = 10.0, 2.0, 0.55
    top = sheet.y
    for t in range(module.TILES_IN_USE):
        face, what, shape = roles[t]
        x = MARGIN + 1 + t * (tw + gap)
        r, b = int(tile_rows[t]), int(row_bytes[t])
        columns = b // 4 if t < module.SUM_TILES else b // 2
        tile_grid(sheet, x, top, tw, rh, r, columns, face, minor=2 if t >= module.INPUT_TILE else 0)
        sheet.text(x + tw / 2, top + 0.3, f"tile {t}", size=SMALL - 0.5, ha="center", va="bottom", weight="bold")
        sheet.text(x + tw / 2, top - module.TILE_ROWS * rh - 0.5, f"{what}\n{shape}\n{r} rows x {b} bytes",
                   size=SMALL - 2, ha="center", va="top", linespacing=1.15)
    sheet.y = top - module.TILE_ROWS * rh - 5.6
    # tile_config's 64 bytes, 16 a row
    cw, ch, label_w = 3.2, 1.9, 9.0
    x0 = MARGIN + label_w
    top = sheet.y
    config = np.asarray(run.config, np.uint8)
    faces = ["white"] * module.TILE_CONFIG_BYTES
    faces[0] = "#dadaeb"
    for t in range(module.TILES_IN_USE):
        face = roles[t][0]
        faces[module.COLUMN_BYTES_AT + 2 * t] = faces[module.COLUMN_BYTES_AT + 2 * t + 1] = face
        faces[module.ROWS_AT + t] = face
    slots = (module.ROWS_AT - module.COLUMN_BYTES_AT) // 2
    weights = ", ".join(str(t) for t in module.WEIGHT_TILES)
    decoded = (f"byte 0: the palette, {palette} (PALETTE); bytes 1-15: 0",
               f"bytes {module.COLUMN_BYTES_AT}-{module.COLUMN_BYTES_AT + 15}: bytes per row of tiles 0-7, uint16: "
               f"{', '.join(sorted({str(v) for v in row_bytes[:8]}))} each",
               f"bytes {module.COLUMN_BYTES_AT + 16}-{module.ROWS_AT - 1}: of tiles 8-{slots - 1}: none (0)",
               f"bytes {module.ROWS_AT}-{module.TILE_CONFIG_BYTES - 1}: rows of tiles 0-{slots - 1}, uint8: "
               f"{tile_rows[0]} (0-4), {tile_rows[module.WEIGHT_TILES[0]]} ({weights})")
    for i in range(module.TILE_CONFIG_BYTES // 16):
        y = top - i * ch
        sheet.text(x0 - 0.8, y - ch / 2, f"bytes {16 * i}-{16 * i + 15}", size=SMALL - 1.5, ha="right")
        sheet.cells(x0, y, 16, cw, ch, faces[16 * i: 16 * i + 16], [str(v) for v in config[16 * i: 16 * i + 16]],
                    size=SMALL - 2, edge="0.6")
        if 16 * i >= module.COLUMN_BYTES_AT and 16 * i < module.ROWS_AT:  # uint16s: 2 bytes each, low byte first
            for j in range(0, 16, 2):
                sheet.box(x0 + j * cw, y, 2 * cw, ch, face="none", edge="0.15")
        sheet.text(x0 + 16 * cw + 1.2, y - ch / 2, decoded[i], size=SMALL - 1.5)
    sheet.y = top - 4 * ch - 1.4
    paragraph(sheet, f"tile_config({rows}): sum and input tiles {rows} rows (the choice's output pixels), weight tiles "
              f"TILE_ROWS = {module.TILE_ROWS} (pairs of input channels), every row {module.TILE_ROW_BYTES} bytes; "
              f"the {slots - module.TILES_IN_USE} slots past tile {module.TILES_IN_USE - 1} stay 0. A tile's shape "
              "is fixed until the next ldtilecfg, so the plan keeps one config per rows and the kernel loads it once "
              "per part of its prange, not per tile of output.", size=SMALL, gap=GAP)


def run_choice(module, constants: dict):
    return module.Choice(constants["rows"], constants["block"])


def tdpbf16ps(sheet: Sheet, module, run: TileRun, target, step: tuple, vdp_lanes: int):
    """One tdpbf16ps of the example conv's tile: the input tile's rows (addresses into the HWC activation), the
    weight tile's rows and columns (addresses into fold's packing), the sum tile; checked against the packing."""
    conv, c = run.conv, run.constants
    rows, n, k_values, pair = c["rows"], module.AMX_N, module.AMX_K, module.PAIR
    unit = run.unit
    dot = next(d for d in unit.dots if d[3] == step and d[0] == 0)
    sums_tile, input_tile, weight_tile, _, before, after, a, b = dot
    (_, _, in_starts, in_stride, _), = [ld for ld in unit.loads if ld[0] == input_tile and ld[4] == step]
    _, _, w_starts, w_stride, _ = next(ld for ld in unit.loads if ld[0] == weight_tile and ld[4] == step)
    kh, kw, k = step
    x = run.x
    pixels = [np.unravel_index(s // x.itemsize, x.shape) for s in in_starts]
    groups = conv.out_channels // c["block"]
    packed_shape = (groups, conv.kernel, conv.kernel, module.pairs(conv.in_channels), c["block"])
    weight_rows = [np.unravel_index(s // run.weight.itemsize, packed_shape) for s in w_starts]
    for r, (h, w, ci) in enumerate(pixels):  # what the drawing says the rows are
        if (h, w, ci) != (run.ho * conv.stride + kh, (run.wo0 + r) * conv.stride + kw, k * k_values):
            raise AssertionError(f"input tile row {r} is pixel {(h, w)}, channel {ci}")
        if not np.array_equal(a[r].reshape(-1), from_bits(x[h, w, ci: ci + k_values])):
            raise AssertionError(f"input tile row {r} is not the pixel's {k_values} bfloat16s")
    for kk, index in enumerate(weight_rows):
        if tuple(int(i) for i in index) != (0, kh, kw, k * k_values // pair + kk, 0):
            raise AssertionError(f"weight tile row {kk} starts at {index}")
    channels = k * k_values + np.arange(k_values)
    if not np.array_equal(b.transpose(1, 0, 2).reshape(n, k_values), run.reference[:n, channels, kh, kw]):
        raise AssertionError("the weight tile's columns are not the output channels' bfloat16 weights")
    product = np.einsum("rc,oc->ro", a.reshape(rows, k_values), run.reference[:n, channels, kh, kw])
    if not np.allclose(after - before, product, rtol=1e-5, atol=1e-5):
        raise AssertionError("the emulated tdpbf16ps is not the product of its tiles")
    if any(s % module.TILE_ROW_BYTES for s in in_starts) or x.ctypes.data % module.TILE_ROW_BYTES:
        raise AssertionError("the drawn input tile's rows are not on cache lines")
    in_index, w_index = in_starts[0] // x.itemsize, w_starts[0] // run.weight.itemsize
    steps = conv.kernel * c["kernel_w"] * c["chunks"]
    paragraph(sheet, f"One tdpbf16ps, tile_dot({sums_tile}, {input_tile}, {weight_tile}): sum tile {sums_tile} += "
              f"input tile {input_tile} x weight tile {weight_tile}. Drawn: {conv.name}'s tile of output pixels "
              f"({run.ho}, {run.wo0}-{run.wo0 + rows - 1}), group 0, at step kh = {kh}, kw = {kw}, k = {k} of its "
              f"{steps} "
              f"({conv.kernel} x {c['kernel_w']} taps x chunks = {c['chunks']} of {k_values} input channels); the "
              f"addresses as the generated kernel computes them, run here with numpy doing the tile instructions "
              f"(TileUnit), on the folded weights of {conv.name} (v1) and a stand-in input (seed {AMX_SEED}):",
              gap=3.6)
    label_w, cw, rh, bh, gap = 19.0, 0.78, 1.15, 0.85, 2.2
    xa = MARGIN + label_w
    xc = xa + k_values * cw + gap
    right = xc + 2 * n * cw + 1.2
    top = sheet.y
    # the weight tile, above the sums: its row kk holds input channels 2kk, 2kk + 1 of k's chunk, column j output
    # channel j
    for j in (0, n - 1):
        sheet.text(xc + (2 * j + 1) * cw, top + 0.2, f"co {j}", size=SMALL - 2, ha="center", va="bottom")
    tile_grid(sheet, xc, top, n * 2 * cw, bh, module.TILE_ROWS, 2 * n, W_COLOUR, minor=2)
    first, last = channels[0], channels[-1]
    sheet.text(xc - 0.6, top - bh / 2, f"pair 0: ci {first}, {first + 1}", size=SMALL - 2, ha="right")
    sheet.text(xc - 0.6, top - (module.TILE_ROWS - 0.5) * bh, f"pair {module.TILE_ROWS - 1}: ci {last - 1}, {last}",
               size=SMALL - 2, ha="right")
    sheet.text(xc + n * cw, top - module.TILE_ROWS * bh / 2, f"weight tile {weight_tile}", size=SMALL - 1,
               ha="center", weight="bold", bbox={"facecolor": "white", "edgecolor": "none", "pad": 1})
    g, wkh, wkw, wp, wb = (int(i) for i in weight_rows[0])
    paragraph(sheet, f"weight tile {weight_tile} = load_tile({weight_tile}, weight, at = {w_index:,}, "
              f"{w_stride}): fold's int32 pairs [group][kh][kw][ci/2][block] from [{g}][{wkh}][{wkw}][{wp}][{wb}] "
              f"on, {module.TILE_ROWS} rows weight_stride = {w_stride} bytes apart (a step of ci/2: block "
              f"{c['block']} x 4 bytes), {module.TILE_ROW_BYTES} bytes each: output channels 0-{n - 1}, 2 "
              f"bfloat16s each. Tiles 6, 7 and 5 again: at + {n}, + {2 * n}, + {3 * n}: co {n}-{4 * n - 1}.",
              x=right, width=SPAN - MARGIN - right, size=SMALL - 1.5, gap=0)
    sheet.y = top
    paragraph(sheet, f"input tile {input_tile} = load_tile({input_tile}, x, ((ho x {conv.stride} + kh) x "
              f"{c['x_width']} + wo0 x {conv.stride} + kw) x {c['x_channels']} + k x {k_values} = {in_index:,}, "
              f"{in_stride}), in bfloat16s: the HWC activation as it is, {x.shape[0]}x{x.shape[1]}x{x.shape[2]} "
              f"with its border of {conv.padding}; {rows} rows input_stride = {in_stride} bytes apart (stride "
              f"{conv.stride} x {x.shape[2]} channels x 2 bytes: the next pixel), each on a cache line. Row r: "
              f"output pixel ({run.ho}, {run.wo0} + r)'s input at tap ({kh}, {kw}), its channels {first}-{last}.",
              x=MARGIN, width=xc - 10 - MARGIN, size=SMALL - 1.5, gap=0)
    y = top - module.TILE_ROWS * bh - 1.8
    # the input tile, left of the sums: row r is output pixel r's input pixel, k's 32 channels
    tile_grid(sheet, xa, y, k_values * cw, rh, rows, k_values, X_COLOUR, minor=2)
    tile_grid(sheet, xc, y, n * 2 * cw, rh, rows, n, ACC_COLOUR)
    for r, (h, w, _) in enumerate(pixels):
        sheet.text(xa - 0.6, y - (r + 0.5) * rh, f"{in_starts[r]:,}: x[{h}, {w}]", size=SMALL - 2.5, ha="right")
    sheet.text(xa - 0.6, y + 0.3, "row r at x + bytes:", size=SMALL - 2, ha="right", va="bottom")
    bracket(sheet, xa, xa + k_values * cw, y - rows * rh - 0.3, f"ci {first}-{last}: {k_values} bfloat16s, "
            f"{module.TILE_ROW_BYTES} bytes", size=SMALL - 1.5)
    bracket(sheet, xc, xc + 2 * n * cw, y - rows * rh - 0.3, f"co 0-{n - 1}: {n} float32s, "
            f"{module.TILE_ROW_BYTES} bytes", size=SMALL - 1.5)
    sheet.text(xa + k_values * cw / 2, y + 0.3, f"input tile {input_tile}", size=SMALL - 1, ha="center",
               va="bottom", weight="bold")
    sheet.text(xc + n * cw, y + 0.3, f"sum tile {sums_tile}: pixel ({run.ho}, {run.wo0} + r) x co",
               size=SMALL - 1, ha="center", va="bottom", weight="bold")
    for rect in ((xa, y - rh, k_values * cw, rh), (xc, top - module.TILE_ROWS * bh, 2 * cw, module.TILE_ROWS * bh),
                 (xc, y - rh, 2 * cw, rh)):
        sheet.ax.add_patch(Rectangle(rect[:2], *rect[2:], facecolor="none", edgecolor="#d62728", linewidth=1.5))
    element = a[0].reshape(-1) @ b[:, 0].reshape(-1)
    sheet.y = y
    paragraph(sheet, f"Framed: sum [0][0] += the {k_values} products of input row 0 and weight column 0, pair kk of "
              f"the row with the pair in weight row kk, added up: {before[0, 0]:.6f} + {element:.6f} = "
              f"{after[0, 0]:.6f}. Every sum of the tile gets its {k_values} at once: {rows} x {n} of them.",
              x=right, width=SPAN - MARGIN - right - 2, size=SMALL - 1.5, gap=0)
    sheet.y = y - rows * rh - 3.6
    macs = rows * n * k_values
    full = module.TILE_ROWS * n * k_values
    paragraph(sheet, f"Per tdpbf16ps: {rows} rows x {n} columns x {k_values} = {macs:,} multiply-adds ({full:,} with "
              f"{module.TILE_ROWS} rows, the most); a vdpbf16ps (stage 14): {vdp_lanes} lanes x PAIR {pair} = "
              f"{vdp_lanes * pair}, {macs // (vdp_lanes * pair)}x fewer. Each step loads the input tile once for "
              f"the 4 tile_dots: {4 * macs:,} multiply-adds from 1 + 4 tile loads. After all {steps} steps the "
              f"{rows} x {c['block']} sums, stored (store_tile) to the stack array the output loop reads, are "
              f"those of the conv computed directly (largest difference {np.abs(run.sums - run.direct).max():.1e}).",
              size=SMALL, gap=GAP)


def row_taps_drawing(sheet: Sheet, module, run: TileRun, kh: int, channel_order: str):
    """The stem's row taps: an input tile row as 8 pixels x 4 channels of the photo's buffer, a kernel row as 32
    values of the weight tile; the tile's sums on the photo."""
    conv, c = run.conv, run.constants
    rows, k_values, pair = c["rows"], module.AMX_K, module.PAIR
    channels = module.pairs(conv.in_channels) * pair
    taps = k_values // channels
    if not module.row_taps(conv) or (c["kernel_w"], c["chunks"]) != (1, 1):
        raise AssertionError("the stem is no longer a conv of row taps")
    unit = run.unit
    (_, _, starts, stride, _), = [ld for ld in unit.loads if ld[0] == module.INPUT_TILE and ld[4] == (kh, 0, 0)]
    x = run.x
    hi, w0, _ = (int(i) for i in np.unravel_index(starts[0] // x.itemsize, x.shape))
    reach = (conv.out_size - 1) * conv.stride + taps
    real = conv.kernel**2 * conv.in_channels
    paragraph(sheet, f"The stem ({conv.kernel}x{conv.kernel}, {conv.in_channels} -> {conv.out_channels} channels, "
              f"stride {conv.stride}) reads the photo's buffer: {x.shape[0]}x{x.shape[1]}x{channels} bfloat16s, "
              f"border {conv.padding}, a 4th channel of zeros. A tile row of one pixel would hold {channels} values of "
              f"{k_values}, so its rows are row taps (row_taps): {taps} neighbouring pixels x {channels} channels, 64 "
              f"bytes as they lie in the buffer, the {conv.kernel} taps of a kernel row and an 8th of zero weights; "
              f"the stem becomes a {conv.kernel} x 1 conv of {k_values}-value rows (kernel_w = 1, chunks = 1). Drawn: "
              f"kh = {kh} of the tile of output pixels ({run.ho}, {run.wo0}-{run.wo0 + rows - 1}) on pics/"
              f"{BF16_PHOTO}: load_tile({module.INPUT_TILE}, x, {starts[0] // x.itemsize:,}, {stride}), row r at "
              f"buffer row {hi}, pixels {w0} + {conv.stride}r on, input_stride = {stride} bytes (stride "
              f"{conv.stride} x {channels} channels x 2 bytes) apart:", gap=3.0)
    shown_rows = 4
    pixels = (shown_rows - 1) * conv.stride + taps
    cell, h, label_w = 1.45, 1.7, 15.0
    x0 = MARGIN + label_w
    pw = channels * cell
    faces = ("#6baed6", "#9ecae1", "#c6dbef", PALE)
    names = [*channel_order[: conv.in_channels], "0"]
    top = sheet.y
    for p in range(pixels):
        sheet.text(x0 + (p + 0.5) * pw, top + 0.2, f"w {w0 + p}", size=SMALL - 2, ha="center", va="bottom")
        sheet.cells(x0 + p * pw, top, channels, cell, h, list(faces), names, size=SMALL - 2.5, edge="0.6")
        sheet.box(x0 + p * pw, top, pw, h, face="none", edge="0.15")
    sheet.text(x0 + pixels * pw + 0.6, top - h / 2, "...", size=SMALL)
    sheet.text(x0 - 0.8, top - h / 2, f"x, row {hi}:", size=SMALL - 1.5, ha="right")
    y = top - h - 0.9
    for r in range(shown_rows):
        xr = x0 + r * conv.stride * pw
        sheet.cells(xr, y, taps * channels, cell, h, [faces[i % channels] for i in range(k_values)],
                    [names[i % channels] for i in range(k_values)], size=SMALL - 2.5, edge="0.6")
        for p in range(taps):
            sheet.box(xr + p * pw, y, pw, h, face="none", edge="0.15")
        sheet.ax.add_patch(Rectangle((xr + (taps - 1) * pw, y - h), pw, h, facecolor="none", edgecolor="#d62728",
                                     linewidth=1.2, linestyle=(0, (2, 1.5))))
        sheet.text(x0 - 0.8, y - h / 2, f"tile row {r}: x + {starts[r]:,}", size=SMALL - 2, ha="right")
        y -= h + 0.35
    sheet.text(x0 - 0.8, y - 0.6, f"... row {rows - 1}: x + {starts[-1]:,}", size=SMALL - 2, ha="right")
    sheet.text(x0, y - 0.6, f"(x + the row's first byte) each tile row: {taps} pixels, kw 0-{taps - 1}, x "
               f"{channels} channels ({', '.join(names)}), {module.TILE_ROW_BYTES} bytes; kw {taps - 1} (dashed) "
               "meets zero weights",
               size=SMALL - 2)
    sheet.y = y - 2.0
    # the weight tile's column for co 0: the kernel's row kh as 32 values, as fold packs it
    halves = run.weight.view(np.uint16).reshape(1, conv.kernel, 1, k_values // pair, c["block"], pair)
    kernel_rows = from_bits(halves[0, :, 0, :, 0, :].reshape(conv.kernel, k_values)).astype(np.float64)
    expected = np.zeros((conv.kernel, taps, channels))
    expected[:, : conv.kernel, : conv.in_channels] = run.reference[0].transpose(1, 2, 0)  # [kh][kw][ci]
    if not np.array_equal(kernel_rows, expected.reshape(conv.kernel, k_values)):
        raise AssertionError("fold's row taps are not the stem's kernel rows")
    paragraph(sheet, f"The weights, as fold packs them for row taps ([out][kw][ci][kh] -> {k_values} x "
              f"{conv.kernel} x 1): output channel 0's {conv.kernel}x{conv.kernel}x{conv.in_channels} kernel as "
              f"{conv.kernel} rows of {k_values} values, row kh = the weight tile's column co 0 at step kh (its 16 "
              f"pairs), x {WEIGHT_DISPLAY}, zero cells grey:", size=SMALL, gap=2.4)
    label_w = 7.0
    x0 = MARGIN + label_w
    cw = (SPAN - MARGIN - x0) / k_values
    top = sheet.y
    for p in range(taps):
        sheet.text(x0 + (p + 0.5) * channels * cw, top + 0.2, f"kw {p}", size=SMALL - 2, ha="center", va="bottom")
    bh = 1.6
    for r in range(conv.kernel):
        yr = top - r * bh
        values = kernel_rows[r]
        sheet.cells(x0, yr, k_values, cw, bh, [W_COLOUR if v else PALE for v in values],
                    [f"{v * WEIGHT_DISPLAY:.2g}" if v else "0" for v in values], size=SMALL - 3, edge="0.6")
        for p in range(taps):
            sheet.box(x0 + p * channels * cw, yr, channels * cw, bh, face="none", edge="0.15")
        sheet.text(x0 - 0.8, yr - bh / 2, f"kh {r}", size=SMALL - 2, ha="right",
                   weight="bold" if r == kh else "normal")
    sheet.ax.add_patch(Rectangle((x0, top - (kh + 1) * bh), k_values * cw, bh, facecolor="none",
                                 edgecolor="#d62728", linewidth=1.5))
    sheet.y = top - conv.kernel * bh - 1.6
    misaligned = sum(s % module.TILE_ROW_BYTES != 0 for ld in unit.loads if ld[0] == module.INPUT_TILE
                     for s in ld[2])
    loads = sum(len(ld[2]) for ld in unit.loads if ld[0] == module.INPUT_TILE)
    sums = run.sums[:, 0]
    paragraph(sheet, f"A tile of the stem: {conv.kernel} steps (kh), each an input tile and 4 weight tiles, 4 "
              f"tdpbf16ps: {real} of its {conv.kernel * k_values} multiply-adds per output are real weights "
              f"({conv.kernel}x{conv.kernel}x{conv.in_channels}), where one pixel a row would use {conv.in_channels} "
              f"of {k_values}. The last output pixel's 8th tap is pixel ({conv.out_size} - 1) x {conv.stride} + "
              f"{taps - 1} = {reach - 1}, still in the buffer's {x.shape[1]} (row_taps' condition). The rows, "
              f"{stride} bytes apart, are not all on a cache line: {misaligned} of the tile's {loads} input rows "
              f"start inside one, so that their 64 bytes span two. Its sums of co 0 (row r: pixel ({run.ho}, "
              f"{run.wo0} + r)), from the kernel's statements with numpy's tiles, as the stem's "
              f"{conv.kernel}x{conv.kernel}x{conv.in_channels} conv computed directly (largest difference over "
              f"{rows} x {c['block']}: {np.abs(run.sums - run.direct).max():.1e}):", size=SMALL, gap=1.0)
    top = sheet.y
    w = (SPAN - 2 * MARGIN) / rows
    sheet.cells(MARGIN, top, rows, w, 2.0, ACC_COLOUR, [f"{v:.4f}" for v in sums], size=SMALL - 1.5)
    sheet.y = top - 2.0 - GAP


def stage15(stage, sheet: Sheet):
    module = stage_module(stage)
    arch = resnet50(COURSE_VARIANT)
    target = amx_target(module)
    name, cpu, _, _, lanes, tiles = target
    choices = amx_choices(module, tiles, -1)
    if not all(module.on_tiles(choices[module.shape_name(conv)]) for conv in arch.convs):
        raise AssertionError("a conv of the network is not on AMX: redraw the picture")
    plan = planned(stage, choices)
    convs = [step for step in plan.steps if step.conv is not None]
    sources = plan.kernels
    if any("tile_dot(" not in sources[step.kernel] for step in convs):
        raise AssertionError("a conv of the plan is not generated from AMX_CONV")
    require(module.AMX_CONV, "for part in prange(THREADS):", "load_tile_config(config)", "zero_tile(0)",
            "zero_tile(3)", "for k in range({chunks}):",
            "load_tile(4, x, ((ho * {stride} + kh) * {x_width} + wo0 * {stride} + kw) * {x_channels}",
            "+ k * {amx_k}, {input_stride})", "load_tile(5, weight, at, {weight_stride})", "tile_dot(0, 4, 5)",
            "load_tile(6, weight, at + {amx_n}, {weight_stride})", "tile_dot(1, 4, 6)", "tile_dot(2, 4, 7)",
            "load_tile(5, weight, at + 3 * {amx_n}, {weight_stride})", "tile_dot(3, 4, 5)",
            "store_tile(0, sums, 0, {sums_stride})", "store_tile(3, sums, 3 * {amx_n}, {sums_stride})",
            "release_tiles()")
    require(module.OUTPUT_LOOP, "acc[r, c] += bias[group * {block} + c]",
            "acc[r, c] += from_bf16(residual[ho, wo0 + r, group * {block} + c])", "max(acc[r, c], np.float32(0.0))",
            "= to_bf16(acc[r, c])")
    require(bf16.FULLY_CONNECTED, "dot_pairs(")  # stage 14's fc, which stage 15 plans
    example = example_conv(arch)
    (example_step,) = [step for step in convs if step.conv == example]
    (stem_step,) = [step for step in convs if step.conv == arch.stem]
    # the example conv on a stand-in input, the stem on the photo, both with the course's folded weights
    rng = np.random.default_rng(AMX_SEED)
    x = module.cache_aligned(np.zeros_like(example_step.arrays[0]))
    p = example.padding
    x[p: x.shape[0] - p, p: x.shape[1] - p] = module.bf16_bits(rng.exponential(1.0, (example.in_size,) * 2
                                                                               + (example.in_channels,)))
    example_run = run_tile(module, example_step, sources[example_step.kernel], x,
                           *amx_weights(module, example, choices[module.shape_name(example)]), *AMX_EXAMPLE_TILE)
    manifest = load_manifest(WEIGHTS_DIR)
    stem = arch.stem
    photo = module.cache_aligned(np.zeros_like(stem_step.arrays[0]))
    p = stem.padding
    photo[p: p + stem.in_size, p: p + stem.in_size, : stem.in_channels] = module.bf16_bits(
        load_image(PICS_DIR / BF16_PHOTO, manifest["preprocessing"]))
    stem_run = run_tile(module, stem_step, sources[stem_step.kernel], photo,
                        *amx_weights(module, stem, choices[module.shape_name(stem)]), *BF16_PIXEL)
    n = module.AMX_N
    candidates = " or ".join(module.label(c) for c in sorted(set(choices.values())))
    sheet.code([
        (f"rows, block = choices[shape_name(conv)]    # tuned: {candidates} on AMX, {module.SUM_TILES} sum tiles of "
         f"{n} channels", True),
        (f"weight, bias = fold(conv, ...)             # stage 14's [group][kh][kw][ci/2][block][2], block "
         f"{module.AMX_BLOCK}; the stem: row taps", True),
        ("for part in prange(threads): load_tile_config(config)   # tile_config(rows): the tiles' shapes, once a "
         "part", True),
        (f"    for tile in the part's range: zero_tile(0) ... zero_tile(3)    # the sums: rows x {n} float32 "
         "each", True),
        (f"        for kh, kw, k in range(ci/{module.AMX_K}): load_tile(4, x, index(ho*s + kh, wo0*s + kw, "
         f"{module.AMX_K}k), input_stride)", True),
        (f"            load_tile(5, weight, at, weight_stride); tile_dot(0, 4, 5); ... tile 6, 7, 5 at at + "
         f"{n}, {2 * n}, {3 * n}", True),
        (f"        store_tile(t, sums, {n}t, sums_stride) for t in 0-3   # the stack array [rows][block]", True),
        ("    acc = sums + bias[c]; acc += from_bf16(residual); acc = max(acc, 0); out = to_bf16(acc)  "
         "# stage 14's", False),
        ("fc: stage 14's dot_pairs (vdpbf16ps); a CPU without AMX: every conv stage 14's kernel (candidates)", True),
    ], f"a conv ({previous(stage)})", size=CODE_FONT - 0.5)
    amx_tiles(sheet, module, example_run, target)
    tdpbf16ps(sheet, module, example_run, target, AMX_STEP, lanes)
    row_taps_drawing(sheet, module, stem_run, stem.kernel // 2, manifest["preprocessing"]["channel_order"])
