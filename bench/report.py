"""pytest-benchmark's JSON -> the comparison table (stdout and latest.md), latest.json and a chart.

    python -m bench.report [RAW_JSON] [--out DIR] [--avx2 AVX2_RAW_JSON]

`python -m bench` calls it after the run; run it by hand to redraw the report of an earlier run, e.g.
one saved under bench/results/history/. bench/README.md explains every column.
"""

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from bench.interleaved import markdown
from bench.paths import (
    FLOPS_PER_MAC,
    GIGA,
    INTERLEAVED_GLOB,
    INTERLEAVED_JSON,
    LATEST_JSON,
    LATEST_MD,
    LATEST_PNG,
    PERCENT,
    RAW_JSON,
    RESULTS_DIR,
)
from bench.peers import FLOAT32, PEERS
from common.errors import UserError
from common.stages import stage_number
from common.timing import MS_PER_S
from stages import PRECISION_PEAK

SPREAD_PERCENTILE = 90
FIRST_STAGE_PREFIX = "stage1_"
TORCH_PEER = "pytorch"
# model.timings keys -> the table column that shows them; a key missing here stops the benchmark.
SETUP_COLUMNS = {"load weights": "load_weights_s", "codegen": "codegen_compile_s", "compile": "codegen_compile_s",
                 "load compiled kernels": "codegen_compile_s", "tune": "tune_s"}
COLUMNS = (  # (field in latest.json, Markdown header, format)
    ("precision", "precision", "text"),
    ("median_ms", "median ms", "ms"), ("min_ms", "min ms", "ms"), ("p90_ms", "p90 ms", "ms"),
    ("fps", "fps", "fps"), ("speedup_vs_stage1", "speedup vs stage 1", "x"),
    ("speedup_vs_previous", "vs previous stage", "x"), ("time_vs_pytorch", "time / PyTorch", "x"),
    ("gflops", "GFLOP/s", "gflops"), ("peak_share", "% of peak", "percent"),
    ("load_weights_s", "load weights s", "s"), ("codegen_compile_s", "codegen+compile s", "s"),
    ("tune_s", "tune s", "s"),
    ("first_answer_cold_s", "first answer cold s", "s"),
    ("first_answer_warm_s", "first answer warm s", "s"), ("rounds", "rounds", "int"),
)
# Where the tiled stages were also run compiled for an AVX2 CPU (`python -m bench --avx2`), beside their own rows.
AVX2_COLUMNS = (("avx2_median_ms", "AVX2 build median ms", "ms"), ("avx2_vs_native", "AVX2 / native", "x"),
                ("avx2_peak_share", "AVX2 build % of AVX2 peak", "percent"))
# The end-to-end rows (bench/test_end_to_end.py), in their own table below the latency table.
END_TO_END = "end_to_end"
END_TO_END_COLUMNS = (
    ("photos_per_s", "photos/s", "fps"), ("forward_fps", "forward-only photos/s", "fps"),
    ("vs_forward", "end to end / forward-only", "x"), ("ms_per_photo", "ms per photo", "ms"),
    ("rounds", "photos timed", "int"),
)
STAGE_COLOUR, PEER_COLOUR, PEAK_COLOUR = "#3b75af", "#ef8636", "#2ca02c"
LABEL_GAP = 1.08  # a label starts this factor right of its whisker (the axis is logarithmic)
AXIS_MARGIN = 1.6  # room left of the fastest whisker; its cube right of the slowest, for the label
ROW_INCHES = 0.55  # chart height per bar
FRAME_INCHES = 2.2  # chart height for the title, the axis label and the legend
LEGEND_INCHES = 0.35  # kept free at the chart's bottom edge for the legend's one line


def load_raw(path: Path) -> dict:
    try:
        raw = json.loads(Path(path).read_text())
    except (OSError, ValueError) as e:
        raise UserError(f"{path}: not a readable pytest-benchmark JSON file ({e}); run `make bench` first") from None
    if not raw.get("benchmarks"):
        raise UserError(f"{path}: no benchmark rows in it; run `make bench` first")
    return raw


def row_order(row: dict) -> tuple:
    """Stages by number (stage9_... before stage10_...), then the peers in PEERS order."""
    return (1, PEERS.index(row["name"])) if row["kind"] == "peer" else (0, stage_number(row["name"]))


def _ratio(numerator: float | None, denominator: float | None) -> float | None:
    return None if numerator is None or denominator is None else numerator / denominator


def latency_benchmarks(raw: dict) -> list[dict]:
    return [bench for bench in raw["benchmarks"] if bench["extra_info"]["kind"] != END_TO_END]


def build_rows(raw: dict, avx2: dict | None = None) -> list[dict]:
    """One dict per benchmarked row with every figure of the table, plus what the table leaves out; with the
    raw JSON of an AVX2 build's run, its figures for the same stages."""
    # A row's share of the peak of the instruction it says it computes with (a stage's record, a peer's class):
    # float32 rows of the FMA peak, int8 rows of the vpdpbusd peak, bfloat16 rows of the vdpbf16ps peak, AMX bfloat16
    # rows of the tdpbf16ps peak. Where that peak was not measured (the AMX stage on a CPU without AMX, which runs
    # the vector kernels instead), of its precision's; a row on an instruction bench.peak does not measure, none.
    info = raw.get("machine_info", {})
    peaks = {"fma": info.get("peak_gflops"), "vpdpbusd": info.get("int8_peak_gops"),
             "vdpbf16ps": info.get("bf16_peak_gflops"), "tdpbf16ps": info.get("amx_bf16_peak_gflops")}
    rows = []
    for bench in latency_benchmarks(raw):
        stats, extra = bench["stats"], bench["extra_info"]
        median_s = stats["median"]
        setup = {column: None for column in SETUP_COLUMNS.values()}
        for key, seconds in extra["setup_s"].items():
            column = SETUP_COLUMNS[key]
            setup[column] = (setup[column] or 0.0) + seconds
        rows.append({
            "name": bench["param"], "kind": extra["kind"], "precision": extra["precision"],
            "predecessor": extra.get("predecessor"),  # the stage it adds its idea to (a stage's record; a peer: none)
            "rounds": stats["rounds"],
            "median_ms": median_s * MS_PER_S, "min_ms": stats["min"] * MS_PER_S,
            "p90_ms": float(np.percentile(stats["data"], SPREAD_PERCENTILE)) * MS_PER_S,
            "mean_ms": stats["mean"] * MS_PER_S, "stddev_ms": stats["stddev"] * MS_PER_S,
            "fps": 1.0 / median_s, "gflops": FLOPS_PER_MAC * extra["macs"] / median_s / GIGA,
            **setup, "setup_s": extra["setup_s"], "build_s": extra["build_s"],
            "first_forward_s": extra["first_forward_s"], "top1": extra["top1"], "threads": extra["threads"],
            **{f"first_answer_{k}_s": (extra.get("first_answer_s") or {}).get(k) for k in ("cold", "warm")},
        })
        measured = peaks.get(extra["peak"]) or peaks[PRECISION_PEAK[rows[-1]["precision"]]] \
            if extra["peak"] in peaks else None
        rows[-1]["peak_share"] = _ratio(rows[-1]["gflops"], measured)
    rows.sort(key=row_order)
    by_name = {r["name"]: r["median_ms"] for r in rows}
    stage1 = next((r["median_ms"] for r in rows if r["name"].startswith(FIRST_STAGE_PREFIX)), None)
    for r in rows:
        r["speedup_vs_stage1"] = _ratio(stage1, r["median_ms"])
        r["speedup_vs_previous"] = _ratio(by_name.get(r["predecessor"]), r["median_ms"])
        r["time_vs_pytorch"] = _ratio(r["median_ms"], by_name.get(TORCH_PEER))
    if avx2 is not None:
        avx2_rows = {r["name"]: r for r in build_rows(avx2)}
        for r in rows:
            other = avx2_rows.get(r["name"], {})
            r["avx2_median_ms"], r["avx2_peak_share"] = other.get("median_ms"), other.get("peak_share")
            r["avx2_vs_native"] = _ratio(r["avx2_median_ms"], r["median_ms"])
    return rows


def build_end_to_end(raw: dict, rows: list[dict]) -> list[dict]:
    """One dict per end-to-end run, with the forward-only rate of the same stage from the same run (None if its
    latency row is missing). The rate is the timed photos over the time they took: 1 / the mean wait."""
    forward_fps = {r["name"]: r["fps"] for r in rows}
    runs = []
    for bench in raw["benchmarks"]:
        stats, extra = bench["stats"], bench["extra_info"]
        if extra["kind"] != END_TO_END:
            continue
        photos_per_s = 1.0 / stats["mean"]
        runs.append({
            "name": f"{extra['stage']} end to end, {extra['loader']}", **extra, "rounds": stats["rounds"],
            "photos_per_s": photos_per_s, "ms_per_photo": stats["mean"] * MS_PER_S,
            "forward_fps": forward_fps.get(extra["stage"]),
            "vs_forward": _ratio(photos_per_s, forward_fps.get(extra["stage"])),
        })
    return runs


def machine(raw: dict) -> dict:
    info = raw["machine_info"]
    return {
        "cpu": info["cpu"].get("brand_raw", info.get("processor", "unknown")), "cores": info["cores"],
        "family": info["cpu"].get("family"), "model": info["cpu"].get("model"),
        "peak_gflops": info.get("peak_gflops"), "int8_peak_gops": info.get("int8_peak_gops"),
        "bf16_peak_gflops": info.get("bf16_peak_gflops"), "amx_bf16_peak_gflops": info.get("amx_bf16_peak_gflops"),
        "vector_bits": info.get("vector_bits"),
        "threads": info["threads"], "system": f"{info['system']} {info['release']}", **info["versions"],
    }


def fmt(value, kind: str) -> str:
    if value is None:
        return "—"
    if kind == "x":
        return f"{value:.2f}×" if value < 10 else f"{value:.1f}×"
    if kind == "int" or kind == "text":
        return str(value)
    if kind == "fps" or kind == "gflops":
        return f"{value:.2f}" if value < 10 else f"{value:.1f}"
    if kind == "percent":
        return f"{value * PERCENT:.0f}%"
    if kind == "ms":
        return f"{value:.2f}" if value < 100 else f"{value:.0f}"
    return f"{value:.2f}"


def table_columns(rows: list[dict]) -> tuple:
    """COLUMNS, and AVX2_COLUMNS where an AVX2 build was run."""
    return COLUMNS + (AVX2_COLUMNS if any(r.get("avx2_median_ms") for r in rows) else ())


def markdown_table(rows: list[dict], columns: tuple | None = None) -> str:
    columns = columns or table_columns(rows)
    header = "| row | " + " | ".join(title for _, title, _ in columns) + " |"
    # Words to the left, figures to the right.
    rule = "|---|" + "".join("---|" if kind == "text" else "---:|" for _, _, kind in columns)
    lines = [header, rule]
    for r in rows:
        lines.append(f"| {r['name']} | " + " | ".join(fmt(r.get(key), kind) for key, _, kind in columns) + " |")
    return "\n".join(lines)


def end_to_end_section(runs: list[dict]) -> str:
    """The end-to-end table and a line saying what it measured; empty without end-to-end runs."""
    if not runs:
        return ""
    first = runs[0]
    folders = " ".join(["FOLDER"] * first["passes"])
    command = f"python -m stages.{first['stage']} {folders} --json --loader L --threads {first['threads']}"
    return (f"End to end: a FOLDER of {first['photos']} JPEGs of {first['megapixels']} megapixels made from pics/ "
            f"(bench/album.py), classified {first['passes']} times over by `{command}`, {first['decoders']} photos "
            f"decoded at a time; photos/s over the last {first['rounds']} photos, after the model's build and "
            "warm-up, beside the stage's forward-only rate in the table above (bench/test_end_to_end.py):\n\n"
            + markdown_table(runs, END_TO_END_COLUMNS) + "\n")


def precisions_text(rows: list[dict]) -> str:
    """float32, or, where some row computes in another precision, words that point to the column."""
    if {r["precision"] for r in rows} == {FLOAT32}:
        return FLOAT32
    return "each row in the precision its column names"


def describe(summary: dict) -> str:
    m = summary["machine"]
    return (f"ResNet-50, one {summary['image']} image, batch 1, {precisions_text(summary['rows'])}, "
            f"{m['threads']} thread(s) per row; "
            f"{m['cpu']} ({m['cores']} cores), Python {m['python']}, numpy {m['numpy']}, numba {m['numba']}, "
            f"torch {m['torch']}, onnxruntime {m['onnxruntime']}, openvino {m['openvino']}"
            + (f", nncf {m['nncf']}" if m.get("nncf") else "") + f"; {summary['datetime']}"
            + (f"; measured FMA peak {m['peak_gflops']:.0f} GFLOP/s ({m['vector_bits']}-bit vectors, "
               "python -m bench.peak)" if m.get("peak_gflops") else "")
            + (f", int8 (vpdpbusd) peak {m['int8_peak_gops']:.0f} GOP/s: an int8 row's % of peak is of that one"
               if m.get("int8_peak_gops") else "")
            + (f", bfloat16 (vdpbf16ps) peak {m['bf16_peak_gflops']:.0f} GFLOP/s: a bf16 row's % of peak is of that "
               "one" if m.get("bf16_peak_gflops") else "")
            + (f", AMX bfloat16 (tdpbf16ps) peak {m['amx_bf16_peak_gflops']:.0f} GFLOP/s: an AMX row's % of peak is "
               "of that one" if m.get("amx_bf16_peak_gflops") else ""))


def write_chart(rows: list[dict], path: Path, title: str, peak_ms: float | None) -> None:
    """Horizontal bars of the median latency on a log scale (stage 1 and the peers differ 100-fold), each named
    with its precision, whiskers from min to p90, the value written next to each bar; a line where the machine's
    FMA peak would put the network's multiply-adds (peak_ms)."""
    import matplotlib

    matplotlib.use("Agg")  # files only, no display needed
    import matplotlib.pyplot as plt

    names = [f"{r['name']} ({r['precision']})" for r in rows]
    medians = np.array([r["median_ms"] for r in rows])
    whiskers = np.array([[r["median_ms"] - r["min_ms"] for r in rows], [r["p90_ms"] - r["median_ms"] for r in rows]])
    colours = [PEER_COLOUR if r["kind"] == "peer" else STAGE_COLOUR for r in rows]
    height = ROW_INCHES * len(rows) + FRAME_INCHES
    fig, ax = plt.subplots(figsize=(10, height))
    positions = np.arange(len(rows))
    ax.barh(positions, medians, color=colours, xerr=whiskers, capsize=3)
    speedups = False  # whether any bar has one (not without stage 1 in the run)
    for y, r in zip(positions, rows, strict=True):
        faster = r["speedup_vs_stage1"] and not r["name"].startswith(FIRST_STAGE_PREFIX)
        speedups = speedups or bool(faster)
        speedup = f"  ({fmt(r['speedup_vs_stage1'], 'x')})" if faster else ""
        ax.text(r["p90_ms"] * LABEL_GAP, y, f"{fmt(r['median_ms'], 'ms')} ms{speedup}", va="center", fontsize=9)
    ax.set_yticks(positions, names)
    ax.invert_yaxis()  # stage 1 on top, in table order
    ax.set_xscale("log")
    low = min([r["min_ms"] for r in rows] + ([peak_ms] if peak_ms else []))
    ax.set_xlim(low / AXIS_MARGIN, max(r["p90_ms"] for r in rows) * AXIS_MARGIN**3)
    kinds = {r["kind"] for r in rows}
    legend = [(STAGE_COLOUR, "our stages", "stage"), (PEER_COLOUR, "peers (libraries)", "peer")]
    handles = [plt.Rectangle((0, 0), 1, 1, color=colour) for colour, _, kind in legend if kind in kinds]
    labels = [label for _, label, kind in legend if kind in kinds]
    if peak_ms:
        handles.append(ax.axvline(peak_ms, color=PEAK_COLOUR, linestyle="--"))
        labels.append(f"the FMA peak measured at these vectors' width: {peak_ms:.1f} ms "
                      "for the direct convolutions' multiply-adds")
    ax.set_xlabel("median latency per image, ms (log scale; whiskers: min to p90"
                  + ("; in brackets: speedup over stage 1)" if speedups else ")"))
    ax.set_title(title, fontsize=10)
    # On the figure's bottom edge, below the axis label: a place given in axes units would move with the number of rows.
    fig.legend(handles=handles, labels=labels, loc="lower center", ncol=len(labels), fontsize=8, frameon=False)
    ax.grid(axis="x", which="both", alpha=0.3)
    fig.tight_layout(rect=(0, LEGEND_INCHES / height, 1, 1))
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write(raw_path: Path, out_dir: Path, avx2_path: Path | None = None) -> dict:
    """Writes latest.json, latest.md and latest.png into out_dir; returns the summary (latest.json's content)."""
    raw = load_raw(raw_path)
    avx2 = load_raw(avx2_path) if avx2_path else None
    rows = build_rows(raw, avx2)
    if not rows:
        raise UserError(f"{raw_path}: no latency rows in it, only end-to-end runs; run `make bench` again")
    extra = latency_benchmarks(raw)[0]["extra_info"]
    summary = {
        "datetime": raw["datetime"], "machine": machine(raw), "image": extra["image"],
        "variant": extra["variant"], "macs": extra["macs"], "pytest_benchmark": raw["version"],
        "commit": raw.get("commit_info", {}).get("id"), "rows": rows, "end_to_end": build_end_to_end(raw, rows),
        "avx2_machine": machine(avx2) if avx2 else None,
    }
    interleaved = out_dir / INTERLEAVED_JSON
    summary["interleaved"] = json.loads(interleaved.read_text()) if interleaved.is_file() else None
    # The reduced-precision stages against the peers of their precision: interleaved-int8.json, ...
    summary["interleaved_reduced"] = [json.loads(path.read_text()) for path in sorted(out_dir.glob(INTERLEAVED_GLOB))
                                      if path.name != INTERLEAVED_JSON]
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / LATEST_JSON).write_text(json.dumps(summary, indent=1) + "\n")
    table = markdown_table(rows)
    end_to_end = end_to_end_section(summary["end_to_end"])
    (out_dir / LATEST_MD).write_text(f"{describe(summary)}\n\n{table}\n\n![latency per row]({LATEST_PNG})\n"
                                     + (f"\n{end_to_end}" if end_to_end else "")
                                     + (f"\n{markdown(summary['interleaved'])}" if summary["interleaved"] else "")
                                     + "".join(f"\n{markdown(result)}" for result in summary["interleaved_reduced"]))
    peak = summary["machine"]["peak_gflops"]
    peak_ms = FLOPS_PER_MAC * summary["macs"] / (peak * GIGA) * MS_PER_S if peak else None
    m = summary["machine"]
    vectors = f", {m['vector_bits']}-bit vectors" if m.get("vector_bits") else ""
    title = f"ResNet-50 latency, {m['threads']} thread(s), {m['cpu']}{vectors}"
    write_chart(rows, out_dir / LATEST_PNG, title, peak_ms)
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.report", description=__doc__.split("\n\n")[0])
    parser.add_argument("raw", nargs="?", type=Path, default=RESULTS_DIR / RAW_JSON,
                        help="pytest-benchmark JSON (default: %(default)s)")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR, help="output folder (default: %(default)s)")
    parser.add_argument("--avx2", type=Path, help="pytest-benchmark JSON of the same stages compiled for AVX2")
    args = parser.parse_args(argv)
    try:
        summary = write(args.raw, args.out, args.avx2)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"\n{describe(summary)}\n\n{markdown_table(summary['rows'])}\n")
    if summary["end_to_end"]:
        print(f"{end_to_end_section(summary['end_to_end'])}")
    print(f"wrote {', '.join(str(args.out / n) for n in (LATEST_JSON, LATEST_MD, LATEST_PNG))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
