"""`make stageN profile ARGS=--vs openvino`: the same forward pass in OpenVINO, node by node, beside ours.

What it measures. OpenVINO runs as bench.peers sets it up (the ONNX export of the same weights, float32, or
bfloat16 for `--vs openvino-bf16`, the same thread count, the latency hint) on the same image, with its
profiling on (PERF_COUNT). After each inference `get_profiling_info()` gives every node of OpenVINO's compiled
graph its wall time (real_time) and the kernel that ran it (exec_type: e.g. brgconv_avx512_1x1_f32 is oneDNN's
"batch-reduce GEMM" convolution for a 1x1 kernel in AVX-512, float32; jit_avx512_f32 is code generated at run
time for AVX-512).
Each node's time is the mean over as many inferences as our profile ran, after one untimed inference.

How nodes are mapped to our layers. OpenVINO fuses several ONNX nodes into one (a conv with its bias, relu and
residual add); its compiled graph lists, for each of its nodes, the ONNX nodes it was made from (rt_info
"originalLayersNames"). In the ONNX graph, a Conv or Gemm is the layer whose weight it reads
("layer2.0.conv1.weight" is layer2.0.conv1: the export keeps torchvision's names, which are
common.architecture's), the MaxPool and the ReduceMean are the max and the average pool, in forward order;
Relu, Add and Reshape join the layer that produced the first of their inputs that a layer produced (an Add's
first input is the block's main path), as batch norm, relu and add do in common.trace. A node made only of
nodes that map to no layer (the layout conversions OpenVINO inserts, "Reorder", and the 1x1 max pools it adds
where it moves a stride) is listed apart with its time, never given to a layer by guess; so is any layer of
ours that no node computes. Where one side computes in one kernel what the other splits into several (our
average pool and fc in one kernel, say), their rows are merged, so that both times of a row cover the same
layers.

One difference the table marks with *: a 1x1 conv with stride 2 reads only every other pixel of every other
row, so OpenVINO (its StridesOptimization pass) moves that stride of a downsampling block's first 1x1 conv
(ResNet-50 v1) up through the relu and residual add before it, into the previous block's 3x3 conv; that conv
and the 1x1 conv after it then compute a quarter of their outputs, and a 1x1 max pool with stride 2 thins the
block's shortcut to match (the max pools of no layer of ours). Those rows compare different amounts of work;
the table shows OpenVINO's output shape.
"""

import statistics
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bench.peers import (
    BF16,
    FLOAT32,
    OPENVINO_BF16_CONFIG,
    OPENVINO_CONFIG,
    OPENVINO_CONV_PRECISIONS,
    check_precision,
    onnx_model,
    to_nchw_batch,
)
from common.timing import MS_PER_S, timed
from common.trace import AVGPOOL, Layer

# What `--vs` compares with: the peer's settings, with its profiling counters on, and the precision it computes in
PROFILING = {"PERF_COUNT": "YES"}
LIBRARIES = {"openvino": ({**OPENVINO_CONFIG, **PROFILING}, FLOAT32),
             "openvino-bf16": ({**OPENVINO_BF16_CONFIG, **PROFILING}, BF16)}
WEIGHTED_OPS = ("Conv", "Gemm", "MatMul")  # their second input is the weight, named after the layer
WEIGHT_SUFFIX = ".weight"
POOL_OPS = {"MaxPool": "maxpool", "ReduceMean": AVGPOOL, "GlobalAveragePool": AVGPOOL}
ORIGINALS = "originalLayersNames"  # rt_info of a compiled node: the ONNX nodes it was made from, comma-separated
CONV = "conv"
LOSSES_SHOWN = 5  # rows in "where we lose most"
MEGA = 1e6


@dataclass
class Node:
    """One executed node of OpenVINO's compiled graph."""

    name: str
    kernel: str  # exec_type
    layers: tuple[str, ...]  # our layers it computes, in forward order; () if none
    shape: tuple[int, ...]  # its output, NCHW
    seconds: float  # mean real_time


@dataclass
class Row:
    """Layers that both sides' times cover: one layer, or the layers one side fused."""

    layers: tuple[str, ...]
    ours_s: float
    nodes: list[Node]  # OpenVINO's nodes that compute them; [] if none

    @property
    def theirs_s(self) -> float | None:
        return sum(node.seconds for node in self.nodes) if self.nodes else None

    @property
    def kernels(self) -> str:
        return "+".join(dict.fromkeys(node.kernel for node in self.nodes))


def onnx_layers(path: Path, expected: list[Layer]) -> dict[str, tuple[str, bool]]:
    """ONNX node names and output names -> (our layer, whether the node only joins it), for the nodes that map."""
    import onnx

    graph = onnx.load(path, load_external_data=False).graph
    names = {layer.name for layer in expected}
    pools = {kind: [layer.name for layer in expected if layer.kind == kind] for kind in set(POOL_OPS.values())}
    seen = dict.fromkeys(pools, 0)
    produced: dict[str, str] = {}  # tensor name -> the layer that wrote it
    mapping: dict[str, tuple[str, bool]] = {}
    for node in graph.node:  # in topological order: producers first
        joins = False
        if node.op_type in WEIGHTED_OPS:
            weight = node.input[1]
            layer = weight.removesuffix(WEIGHT_SUFFIX) if weight.endswith(WEIGHT_SUFFIX) else None
            layer = layer if layer in names else None
        elif node.op_type in POOL_OPS:
            kind = POOL_OPS[node.op_type]
            layer = pools[kind][seen[kind]] if seen[kind] < len(pools[kind]) else None
            seen[kind] += 1
        else:
            layer, joins = next((produced[t] for t in node.input if t in produced), None), True
        if layer is None:
            continue
        for key in (node.name, *node.output):
            mapping[key] = (layer, joins)
        produced.update(dict.fromkeys(node.output, layer))
    return mapping


def layers_of(originals: list[str], mapping: dict[str, tuple[str, bool]], position: dict[str, int]) -> tuple:
    """Our layers a compiled node computes: those of its convs, pools and fc, else the one its joins join."""
    mapped = [mapping[name] for name in originals if name in mapping]
    own = [layer for layer, joins in mapped if not joins] or [layer for layer, _ in mapped]
    return tuple(sorted(set(own), key=position.__getitem__))


def profile(weights_dir: Path, image: np.ndarray, threads: int, runs: int, expected: list[Layer],
            library: str) -> dict:
    """OpenVINO's executed nodes with their mean times over `runs` inferences, and its mean wall time; library
    is one of LIBRARIES."""
    import openvino

    path = onnx_model(weights_dir)
    config, precision = LIBRARIES[library]
    compiled = openvino.Core().compile_model(path, "CPU", {**config, "INFERENCE_NUM_THREADS": threads})
    if precision in OPENVINO_CONV_PRECISIONS:  # a CPU without bfloat16 instructions would run float32 silently
        check_precision(compiled, precision)
    request = compiled.create_infer_request()
    batch = to_nchw_batch(image)
    request.infer({0: batch})  # warm-up, as ours
    executed = openvino.ProfilingInfo.Status.EXECUTED
    times: dict[str, list[float]] = {}
    kernels: dict[str, str] = {}
    walls = []
    for run in range(runs):
        print(f"\r{library}: profiled inference {run + 1}/{runs}", end="", file=sys.stderr, flush=True)
        _, wall = timed(request.infer, {0: batch})
        walls.append(wall)
        for info in request.get_profiling_info():
            if info.status == executed:
                times.setdefault(info.node_name, []).append(info.real_time.total_seconds())
                kernels[info.node_name] = info.exec_type
    print(file=sys.stderr)
    compiled_nodes = {op.get_friendly_name(): op for op in compiled.get_runtime_model().get_ordered_ops()}
    mapping = onnx_layers(path, expected)
    position = {layer.name: i for i, layer in enumerate(expected)}
    nodes = []
    for name, seconds in times.items():
        op = compiled_nodes.get(name)
        originals = op.get_rt_info()[ORIGINALS].astype(str).split(",") if op is not None else [name]
        shape = tuple(op.get_output_partial_shape(0).to_shape()) if op is not None else ()
        nodes.append(Node(name, kernels[name], layers_of(originals, mapping, position), shape,
                          statistics.fmean(seconds)))
    version = openvino.__version__.split("-")[0]  # "2026.4.1-22982-e213a14..." -> the release
    return {"nodes": nodes, "forward_s": statistics.fmean(walls), "runs": runs, "version": version,
            "precision": precision}


def compare(ours: dict[tuple, float], nodes: list[Node], expected: list[Layer]) -> tuple[list[Row], list[Node]]:
    """Rows in forward order, each covering the same layers on both sides, and the nodes that map to no layer.
    `ours` is bench.profile's seconds per row (a tuple of layer names)."""
    group = {layer.name: layer.name for layer in expected}  # union-find: layers that must share a row

    def root(name: str) -> str:
        while group[name] != name:
            name = group[name]
        return name

    for row in [*ours, *(node.layers for node in nodes)]:
        for name in row[1:]:
            group[root(name)] = root(row[0])
    rows: dict[str, Row] = {}
    for layer in expected:
        if root(layer.name) not in rows:
            rows[root(layer.name)] = Row((), 0.0, [])
        rows[root(layer.name)].layers += (layer.name,)
    for row, seconds in ours.items():
        rows[root(row[0])].ours_s += seconds
    for node in nodes:
        if node.layers:
            rows[root(node.layers[0])].nodes.append(node)
    return list(rows.values()), [node for node in nodes if not node.layers]


def moved_stride(row: Row, by_name: dict[str, Layer]) -> tuple[int, int, int] | None:
    """OpenVINO's output (HWC) of a one-conv row, if it is not ours (see the module docstring); else None."""
    if len(row.layers) != 1 or by_name[row.layers[0]].kind != CONV or len(row.nodes) != 1:
        return None
    _, channels, height, width = row.nodes[0].shape
    theirs = (height, width, channels)
    return theirs if theirs != by_name[row.layers[0]].out_shape else None


def table(result: dict, theirs: dict) -> str:
    """The comparison: per row our ms, OpenVINO's ms, their ratio and OpenVINO's kernel; then the totals,
    the nodes and layers that could not be mapped, and the rows we lose most on."""
    expected = result["layers"]
    by_name = {layer.name: layer for layer in expected}
    rows, unmapped = compare(result["seconds"], theirs["nodes"], expected)
    header = (f"{'layer':<24} {'MMACs':>8} {'ours ms':>9} {'OpenVINO ms':>12} {'ours/OV':>8}  "
              f"OpenVINO kernel (exec type)")
    rule = "-" * len(header)
    lines = [f"beside OpenVINO {theirs['version']} ({theirs['precision']}, profiling on), mean of {theirs['runs']} "
             f"inference(s); ours/OV above 1: OpenVINO is faster", header, rule]

    def line(name: str, macs: int, ours_s: float | None, theirs_s: float | None, kernel: str) -> None:
        mmacs = f"{macs / MEGA:8.1f}" if macs else f"{'-':>8}"
        ours_ms = f"{ours_s * MS_PER_S:9.2f}" if ours_s is not None else f"{'-':>9}"
        theirs_ms = f"{theirs_s * MS_PER_S:12.2f}" if theirs_s is not None else f"{'-':>12}"
        ratio = f"{ours_s / theirs_s:8.2f}" if ours_s and theirs_s else f"{'-':>8}"
        lines.append(f"{name:<24} {mmacs} {ours_ms} {theirs_ms} {ratio}  {kernel}".rstrip())

    notes = []
    for row in rows:
        moved = moved_stride(row, by_name)
        name = "+".join(row.layers) + ("*" if moved else "")
        line(name, sum(by_name[n].macs for n in row.layers), row.ours_s, row.theirs_s, row.kernels)
        if moved:
            notes.append(f"{'+'.join(row.layers)} {'x'.join(map(str, moved))}")
    mapped = [row for row in rows if row.nodes]
    lines.append(rule)
    line("layers both sides run", sum(by_name[n].macs for row in mapped for n in row.layers),
         sum(row.ours_s for row in mapped), sum(row.theirs_s for row in mapped), "")
    for node in unmapped:
        line("  node of no layer of ours", 0, None, node.seconds, f"{node.kernel}: {node.name}")
    line("all kernels / nodes", 0, sum(result["seconds"].values()), sum(node.seconds for node in theirs["nodes"]), "")
    line("forward (wall)", 0, result["forward_s"], theirs["forward_s"], "")
    missing = [name for row in rows if not row.nodes for name in row.layers]
    lines.append(f"our layers no OpenVINO node computes: {', '.join(missing) or 'none'}")
    if notes:
        lines.append(f"* OpenVINO moved the next block's stride here and computes a smaller output (HWC): "
                     f"{'; '.join(notes)}")
    losses = sorted((row for row in mapped if row.ours_s > row.theirs_s), key=lambda r: r.theirs_s - r.ours_s)
    worst = [f"{'+'.join(row.layers)} {(row.ours_s - row.theirs_s) * MS_PER_S:.2f} "
             f"({row.ours_s / row.theirs_s:.1f}x, {row.kernels})" for row in losses[:LOSSES_SHOWN]]
    lines.append(f"where we lose most (ours - OpenVINO ms): {'; '.join(worst) or 'none'}")
    return "\n".join(lines)
