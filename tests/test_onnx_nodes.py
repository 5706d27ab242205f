"""The stage-1 ops against the ONNX backend node tests: a test suite nobody here wrote.

Debian's libonnx-testdata ships them (`make onnx-testdata` installs it): each case is a folder holding a
one-node model.onnx (the op and its attributes) and test_data_set_*/ with input_*.pb and the expected
output_*.pb. Cases are found by the op in model.onnx, not by folder name, for the ops ResNet-50 uses:
Conv, MaxPool, AveragePool, GlobalAveragePool, BatchNormalization, Gemm, Relu, Add. Inputs are NCHW;
each image of the batch is turned into our HWC, run through our op, and turned back.

Our ops do less than ONNX allows: 2-D, float32, square kernels, one stride and one padding for both
axes, no dilation, groups, ceil_mode or auto_pad, inference-mode batch norm, Gemm only as a fully
connected layer (alpha = beta = 1, one bias vector), Add without broadcasting. Every case outside that
is reported as a skip with its reason (pytest -ra prints them); with libonnx-testdata 1.12 they are:

- Conv: conv_with_autopad_same (auto_pad SAME_LOWER), conv_with_strides_and_asymmetric_padding
  (padding 1 on the height, 0 on the width);
- MaxPool: 1d_default and 3d_default (not 2-D), 2d_ceil (ceil_mode), 2d_dilations, 2d_same_lower,
  2d_same_upper, 2d_precomputed_same_upper (auto_pad), 2d_uint8 (not float32);
- AveragePool: all 13 cases: their windows are smaller than the input or padded (or not 2-D, or
  auto_pad, ceil_mode), and our only average pool is the global one;
- BatchNormalization: the two *_training_mode cases (they normalize with the batch's own statistics);
- Gemm: all_attributes, alpha, beta (alpha or beta not 1), default_matrix_bias (one bias per row);
- Add: add_bcast (broadcasting), add_uint8 (not float32).

maxpool_with_argmax_* also ask for the Indices output, which our op does not compute: their pooled
output is compared, their indices are not. Graphs with more than one node (e.g. layer_normalization's
*_expanded, which use Add as a building block) test other ops and are not collected.
"""

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper

from stages.stage1_origin.model import (
    add,
    batch_norm,
    conv2d,
    fully_connected,
    global_avg_pool,
    max_pool,
    relu,
)

NODE_TESTS = Path("/usr/share/libonnx-testdata/data/node")
OUR_OPS = ("Conv", "MaxPool", "AveragePool", "GlobalAveragePool", "BatchNormalization", "Gemm", "Relu", "Add")
# The ops that must have at least one case we run; AveragePool maps to our op only when global, which
# none of the suite's cases is.
OPS_WITH_RUNNABLE_CASES = ("Conv", "MaxPool", "GlobalAveragePool", "BatchNormalization", "Gemm", "Relu", "Add")
# Stricter than ONNX's own runner (rtol 1e-3, atol 1e-7): our float32 results differ from the expected
# ones by a few ulps at most.
RTOL, ATOL = 1e-5, 1e-6
BN_DEFAULT_EPS = 1e-5  # ONNX BatchNormalization's default epsilon


@dataclass(frozen=True)
class NodeCase:
    name: str  # folder name, e.g. "test_maxpool_2d_pads"
    folder: Path
    node: onnx.NodeProto
    attrs: dict

    @property
    def op(self) -> str:
        return self.node.op_type

    def data_sets(self) -> list[tuple[list[np.ndarray], list[np.ndarray]]]:
        """[(inputs, expected outputs)], in the node's input and output order."""
        folders = sorted(self.folder.glob("test_data_set_*"))
        return [(read_tensors(d, "input"), read_tensors(d, "output")) for d in folders]


def read_tensors(data_set: Path, kind: str) -> list[np.ndarray]:
    paths = sorted(data_set.glob(f"{kind}_*.pb"), key=lambda p: int(p.stem.split("_")[1]))
    return [numpy_helper.to_array(onnx.load_tensor(str(p))) for p in paths]


def find_cases() -> list[NodeCase]:
    cases = []
    for folder in sorted(NODE_TESTS.glob("test_*")) if NODE_TESTS.is_dir() else []:
        graph = onnx.load(str(folder / "model.onnx")).graph
        if len(graph.node) == 1 and graph.node[0].op_type in OUR_OPS:
            node = graph.node[0]
            attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
            cases.append(NodeCase(folder.name, folder, node, attrs))
    return cases


def spatial_reason(case: NodeCase, x: np.ndarray, kernel: list[int]) -> str | None:
    """Why a Conv/MaxPool/AveragePool window cannot run on our 2-D square-kernel ops, or None."""
    a = case.attrs
    if x.ndim != 4:
        return f"{x.ndim - 2}-D input; our ops are 2-D"
    if a.get("auto_pad", b"NOTSET") != b"NOTSET":
        return f"auto_pad {a['auto_pad'].decode()}; our ops take an explicit padding"
    if a.get("ceil_mode", 0):
        return "ceil_mode; our output sizes round down"
    if any(d != 1 for d in a.get("dilations", [])):
        return f"dilations {a['dilations']}; our ops have none"
    if a.get("group", 1) != 1:
        return f"group {a['group']}; our conv has no groups"
    if kernel[0] != kernel[1]:
        return f"kernel {kernel} is not square"
    strides = a.get("strides", [1, 1])
    if strides[0] != strides[1]:
        return f"strides {strides} differ between the axes"
    pads = a.get("pads", [0, 0, 0, 0])  # height begin, width begin, height end, width end
    if len(set(pads)) != 1:
        return f"pads {pads}: our ops take one padding for every side"
    return None


def skip_reason(case: NodeCase) -> str | None:
    """Why our op cannot run this case, or None when it can."""
    inputs, _ = case.data_sets()[0]
    not_float = [str(t.dtype) for t in inputs if t.dtype != np.float32]
    if not_float:
        return f"{not_float[0]} input; our ops are float32"
    x, a = inputs[0], case.attrs
    if case.op in ("Conv", "MaxPool"):
        if case.op == "Conv" and len(inputs) == 3:
            return "Conv with a bias input; ours has none (ResNet-50 puts a batch norm after each conv)"
        kernel = list(inputs[1].shape[2:]) if case.op == "Conv" else a["kernel_shape"]  # Conv: OIHW weight's HW
        return spatial_reason(case, x, kernel)
    if case.op == "AveragePool":
        reason = spatial_reason(case, x, a["kernel_shape"])
        if reason is None and (list(a["kernel_shape"]) != list(x.shape[2:]) or any(a.get("pads", []))):
            reason = (f"a {a['kernel_shape']} window with pads {a.get('pads', [0, 0, 0, 0])} on a {list(x.shape[2:])} "
                      "input; our only average pool is global (window = input, no padding)")
        return reason
    if case.op == "GlobalAveragePool":
        return None if x.ndim == 4 else f"{x.ndim - 2}-D input; our ops are 2-D"
    if case.op == "BatchNormalization":
        if a.get("training_mode", 0):
            return "training_mode normalizes with the batch's own statistics; ours is inference only"
        return None if x.ndim == 4 else f"{x.ndim - 2}-D input; our ops are 2-D"
    if case.op == "Gemm":
        if a.get("alpha", 1.0) != 1.0 or a.get("beta", 1.0) != 1.0:
            return f"alpha {a.get('alpha', 1.0)}, beta {a.get('beta', 1.0)}: a fully connected layer has 1 and 1"
        if len(inputs) == 3 and inputs[2].ndim == 2 and inputs[2].shape[0] != 1:
            return f"bias of shape {inputs[2].shape}, one per row; a fully connected layer adds one vector"
        return None
    # Relu and Add: elementwise, so any 3-D array passes for an HWC one.
    if any(t.shape != x.shape for t in inputs[1:]):
        return f"broadcasts {[t.shape for t in inputs]}; our add takes equal shapes"
    return None if x.ndim == 3 else f"{x.ndim}-D input; our elementwise ops take 3-D arrays"


def per_image(op, x_nchw: np.ndarray, *args) -> np.ndarray:
    """Run an HWC op on every image of an NCHW batch; the result is NCHW again."""
    outs = [op(np.ascontiguousarray(image.transpose(1, 2, 0)), *args) for image in x_nchw]  # each image HWC
    return np.stack([out.transpose(2, 0, 1) for out in outs])  # NCHW


def run_ours(case: NodeCase, inputs: list[np.ndarray]) -> np.ndarray:
    """Our op on the case's inputs, in ONNX's layout: the node's first output."""
    a, x = case.attrs, inputs[0]
    if case.op == "Conv":
        weight = inputs[1]  # OIHW, as ours
        stride, padding = a.get("strides", [1, 1])[0], a.get("pads", [0])[0]
        return per_image(conv2d, x, weight, stride, padding)
    if case.op == "MaxPool":
        kernel, stride, padding = a["kernel_shape"][0], a.get("strides", [1, 1])[0], a.get("pads", [0])[0]
        return per_image(max_pool, x, kernel, stride, padding)
    if case.op in ("GlobalAveragePool", "AveragePool"):
        return per_image(lambda image: global_avg_pool(image)[None, None, :], x)  # (C,) as HWC (1, 1, C)
    if case.op == "BatchNormalization":
        scale, bias, mean, var = inputs[1:5]
        return per_image(batch_norm, x, scale, bias, mean, var, np.float32(a.get("epsilon", BN_DEFAULT_EPS)))
    if case.op == "Gemm":
        rows = x.T if a.get("transA", 0) else x  # (M, K): one input vector per row
        weight = inputs[1] if a.get("transB", 0) else inputs[1].T  # (N, K), as our (out, in)
        out_features = weight.shape[0]
        # A bias of shape (), (1,), (N,) or (1, N) is one vector broadcast to every row; no bias adds zeros.
        if len(inputs) == 3:
            bias = np.ascontiguousarray(np.broadcast_to(inputs[2], (1, out_features))[0])
        else:
            bias = np.zeros(out_features, np.float32)
        weight = np.ascontiguousarray(weight)
        return np.stack([fully_connected(np.ascontiguousarray(row), weight, bias) for row in rows])
    if case.op == "Relu":
        return relu(x)
    return add(x, inputs[1])


CASES = find_cases()


def case_param(case: NodeCase):
    reason = skip_reason(case)
    return pytest.param(case, id=case.name, marks=[pytest.mark.skip(reason=f"{case.name}: {reason}")] if reason else [])


def test_onnx_testdata_is_installed():
    assert NODE_TESTS.is_dir(), (f"{NODE_TESTS} is missing: run `make onnx-testdata` to install Debian's "
                                 "libonnx-testdata (the ONNX backend node tests)")


def test_every_op_has_a_case_we_run():
    """Guards against a selection that skips everything: each op must be checked by at least one case."""
    runnable = {case.op for case in CASES if skip_reason(case) is None}
    missing = [op for op in OPS_WITH_RUNNABLE_CASES if op not in runnable]
    assert not missing, f"no runnable ONNX node test for {missing} in {NODE_TESTS}"


@pytest.mark.parametrize("case", [case_param(c) for c in CASES])
def test_onnx_node(case: NodeCase):
    for inputs, outputs in case.data_sets():
        ours = run_ours(case, inputs)
        expected = outputs[0]
        assert ours.shape == expected.shape and ours.dtype == np.float32
        np.testing.assert_allclose(ours, expected, rtol=RTOL, atol=ATOL, err_msg=case.name)
