"""Copy the figures of one `make bench` run into the READMEs, so that every figure there comes from that run.

    python -m bench.readme [LATEST_JSON]        (default: bench/results/latest.json)

Fills the marked places, each an HTML comment that stays in the file, followed by the text it owns up to
the closing `<!-- /bench -->`. Block markers end their line, and own whole lines up to the closing one:
- `<!-- bench:machine -->`: the machine, software and measured FMA peak of the run;
- `<!-- bench:measured STAGE -->`: that stage's latency against the stage before it and the peers, its
  share of the FMA peak, its time to first answer and, where it was run, its AVX2 build;
- `<!-- bench:table -->`: the run's whole table (bench/results/latest.md), its links made relative to the
  README it lands in;
- `<!-- bench:stages -->`: the last column (latency) of the README's table of stages;
- `<!-- bench:accuracytable -->`: the accuracy table of the reduced-precision rows (bench/results/accuracy.md, written
  by `python -m bench.accuracy`, which `make bench` runs).

Inline markers own a figure inside a sentence, on one line, e.g.
`Stage 8 is <!-- bench:speedup stage8_tiled/stage7_fused -->6.43×<!-- /bench --> faster than stage 7`.
ROW is a row of the run: a stage folder's name or a peer (pytorch, onnxruntime, openvino).
- `<!-- bench:speedup FAST/SLOW -->`: how many times faster row FAST is than row SLOW, SLOW's median over
  FAST's, as the table writes ratios (`6.43×`);
- `<!-- bench:timeover ROW/OTHER -->`: ROW's median over OTHER's, i.e. ROW's time in OTHER's (`0.54×`);
- `<!-- bench:peak ROW -->`: ROW's share of the measured FMA peak (`84%`); the Winograd stages are credited
  with the direct convolution's multiply-adds, as in the table;
- `<!-- bench:interleaved STAGE/PEER -->`: from the run's interleaved comparisons (bench/interleaved.py, the
  fairer one: the rows take turns, so the machine's drift falls on both), the median of STAGE's block time over
  PEER's (`0.93`);
- `<!-- bench:ms ROW -->`: ROW's median latency with its unit (`17.65 ms`);
- `<!-- bench:value ROW/FIELD -->`: any figure of the row in latest.json that the table has a column for,
  formatted as there (`stage11_winograd4/avx2_median_ms` -> `37.72`, `.../avx2_peak_share` -> `80%`);
- `<!-- bench:precisionpeak PRECISION -->`: the peak of a reduced precision's dot product measured in the run
  (int8: vpdpbusd's, `1461 GOP/s`; bf16: vdpbf16ps's, `240 GFLOP/s`; amx-bf16: AMX's tdpbf16ps's);
- `<!-- bench:fmapeak -->`, `<!-- bench:fmapeak avx2 -->`: the FMA peak measured in the run, or in its AVX2
  build's run (`522 GFLOP/s`);
- `<!-- bench:ladder STAGE/CLASS -->`, `<!-- bench:ladderms STAGE/CLASS -->`: from the traced run of
  `python -m course.ladder` (bench/results/ladder.json, beside latest.json), the share of STAGE's pass that
  went to a class of op (stem, 1x1, 3x3, pool, fc, other, outside: course/ladder.py's CLASSES), or its ms;
  `<!-- bench:ladderms STAGE -->`: that pass's wall time;
- `<!-- bench:kernel STAGE -->`: from `python -m bench.kernels` (bench/results/kernels.json, which `make bench`
  writes), the median over the layer shapes of STAGE's 1x1 conv kernel alone, as a share of the peak of the
  instruction its record names (`96%`);
- `<!-- bench:accuracy ROW/FIELD -->`: a figure of a reduced-precision row in bench/results/accuracy.json
  (bench/accuracy.py: top1_agreement, top5_overlap_mean, top5_overlap_min, top1_prob_change_max,
  logits_rel_error_median, logits_rel_error_max, inputs), formatted as in its table.
Text outside the markers is left alone, and so is a marker quoted in a code span, right after a backtick;
a marker naming a row or field the run does not have is an error.
`filled(path, sources)` returns a README's text as this command would write it (tests/test_docs.py).
"""

import argparse
import json
import os
import re
import statistics
import sys
from pathlib import Path
from typing import NamedTuple

from bench.paths import ACCURACY_JSON, ACCURACY_MD, KERNELS_JSON, LADDER_JSON, LATEST_JSON, LATEST_MD, RESULTS_DIR
from bench.report import AVX2_COLUMNS, COLUMNS, fmt
from common.errors import UserError
from common.paths import REPO
from stages import stage_number

# accuracy.json's figures -> how its table writes them
ACCURACY_FORMATS = {"top1_agreement": "{:.1%}", "top5_overlap_mean": "{:.2f}", "top5_overlap_min": "{}",
                    "top1_prob_change_max": "{:.3f}", "logits_rel_error_median": "{:.3f}",
                    "logits_rel_error_max": "{:.3f}", "inputs": "{}"}

# An opening comment, then the owned text up to the closing one: block markers end their line (group 4 is
# the newline), inline markers are followed by their figure on the same line. One right after a backtick is
# quoted in a code span (bench/README.md lists them), not a marker.
# A reduced precision's measured peak: its field in latest.json's machine, and its unit.
PRECISION_PEAKS = {"int8": ("int8_peak_gops", "GOP/s"), "bf16": ("bf16_peak_gflops", "GFLOP/s"),
                   "amx-bf16": ("amx_bf16_peak_gflops", "GFLOP/s")}
MARKER = re.compile(r"((?<!`)<!-- bench:(\w+)(?: (\S+))? -->(\n?))(.*?)(<!-- /bench -->)", re.S)
BLOCK_KINDS = ("machine", "measured", "table", "stages", "accuracytable")
# A table row of the top README's stages or peers; group 3 is its last cell's text (the latency), maybe empty.
STAGE_ROW = re.compile(r"^(\| \[(stage\d+_\w+)\]\([^)\n]*\) \|[^|\n]*\|)([^|\n]*)(\|)$", re.M)
PEER_ROW = re.compile(r"^(\| \*([\w-]+)\* \(peer\) \|[^|\n]*\|)([^|\n]*)(\|)$", re.M)
# A Markdown link or image whose target is a path (not a web address, an anchor or an absolute path).
RELATIVE_LINK = re.compile(r"(\]\()(?![a-z][a-z0-9+.-]*:|#|/)([^)\s]+)(\))")
TORCH, OPENVINO = "pytorch", "openvino"
AVX2 = "avx2"
READMES = ("README.md", "stages/*/README.md", "bench/README.md")
FORMATS = {key: kind for key, _, kind in COLUMNS + AVX2_COLUMNS}  # latest.json's row fields -> fmt kinds


class Sources(NamedTuple):
    """What the markers are filled from: a bench run's latest.json and latest.md, the ladder's traced run, the
    accuracy run and the kernels timed alone (None where ladder.json, accuracy.json or kernels.json is missing:
    then a marker of theirs is an error)."""

    summary: dict
    table: str
    ladder: dict | None
    accuracy: tuple[dict, str] | None = None  # accuracy.json's figures, accuracy.md's table
    kernels: dict | None = None  # kernels.json


def machine_text(summary: dict) -> str:
    m = summary["machine"]
    day = summary["datetime"][:10]
    return (f"`make bench` on {day}: {m['cpu']} (family {m['family']}, model {m['model']}), {m['cores']} cores of a "
            f"KVM guest, {m['threads']} threads, Python {m['python']}, numba {m['numba']}, numpy {m['numpy']}, "
            f"torch {m['torch']}, onnxruntime {m['onnxruntime']}, openvino {m['openvino']}. Measured FMA peak "
            f"in that run (`python -m bench.peak`, {m['vector_bits']}-bit vectors, {m['threads']} threads): "
            f"**{m['peak_gflops']:.0f} GFLOP/s**"
            + (f"; int8 (vpdpbusd) peak **{m['int8_peak_gops']:.0f} GOP/s**" if m.get("int8_peak_gops") else "")
            + (f"; bfloat16 (vdpbf16ps) peak **{m['bf16_peak_gflops']:.0f} GFLOP/s**" if m.get("bf16_peak_gflops")
               else "")
            + (f"; AMX bfloat16 (tdpbf16ps) peak **{m['amx_bf16_peak_gflops']:.0f} GFLOP/s**"
               if m.get("amx_bf16_peak_gflops") else "")
            + ".\n")


def ratio_text(ours: float, theirs: float) -> str:
    faster, slower = fmt(theirs / ours, "x"), fmt(ours / theirs, "x")
    if faster == slower:  # 1.00× either way
        return "level with it"
    return f"{faster} faster" if ours <= theirs else f"{slower} slower"


def measured_text(summary: dict, stage: str) -> str:
    rows = {r["name"]: r for r in summary["rows"]}
    if stage not in rows:
        raise UserError(f"the bench run of {summary['datetime']} has no row {stage}; run `make bench` first")
    r = rows[stage]
    m = summary["machine"]
    text = (f"`make bench` on {summary['datetime'][:10]} ({m['cpu']}, family {m['family']}, {m['threads']} threads), "
            f"median of {r['rounds']} rounds on {summary['image']}: **{fmt(r['median_ms'], 'ms')} ms**")
    before = rows.get(r.get("predecessor"))  # the stage it adds its idea to, if the run has it
    if before is not None:
        text += (f", against {fmt(before['median_ms'], 'ms')} ms for {before['name']} in the same run: "
                 f"{ratio_text(r['median_ms'], before['median_ms'])}")
    peak = "FMA peak" if r.get("precision", "float32") == "float32" else f"{r['precision']} peak"
    text += f"; {fmt(r['gflops'], 'gflops')} GFLOP/s, {fmt(r['peak_share'], 'percent')} of the measured {peak}"
    peers = [f"{fmt(r['median_ms'] / rows[p]['median_ms'], 'x')} {name}'s latency "
             f"({fmt(rows[p]['median_ms'], 'ms')} ms)" for p, name in ((TORCH, "PyTorch eager"), (OPENVINO, "OpenVINO"))
             if p in rows]
    if peers:
        text += f"; {' and '.join(peers)} in that run"
    if r.get("first_answer_cold_s") is not None:
        text += (f". First answer of a fresh process: {r['first_answer_cold_s']:.1f} s with an empty kernel cache, "
                 f"{r['first_answer_warm_s']:.2f} s with it filled")
    if r.get("avx2_median_ms") is not None:
        text += (f". Compiled for an AVX2 CPU (`make bench ARGS=--avx2`): {fmt(r['avx2_median_ms'], 'ms')} ms, "
                 f"{fmt(r['avx2_vs_native'], 'x')} the native build's time")
        if r.get("avx2_peak_share") is not None:  # none for a reduced precision: AVX2 lacks its instruction
            text += f", {fmt(r['avx2_peak_share'], 'percent')} of the AVX2 build's own FMA peak"
    return text + ".\n"


def stage_latencies(text: str, summary: dict) -> str:
    rows = {r["name"]: r for r in summary["rows"]}

    def latency(match: re.Match) -> str:
        name = match.group(2)
        if name not in rows:
            raise UserError(f"the README's table names {name}, which the bench run does not have")
        cell = f"{fmt(rows[name]['median_ms'], 'ms')} ms"
        before = rows.get(rows[name].get("predecessor"))  # the stage it adds its idea to
        if before is not None:
            cell += (f", {fmt(before['median_ms'] / rows[name]['median_ms'], 'x')} stage "
                     f"{stage_number(before['name'])}'s speed")
        return f"{match.group(1)} {cell} {match.group(4)}"

    return PEER_ROW.sub(latency, STAGE_ROW.sub(latency, text))


def relocated(table: str, readme: Path) -> str:
    """latest.md's text with its relative links and images pointing from the README's folder instead."""

    def move(match: re.Match) -> str:
        target = Path(os.path.relpath(RESULTS_DIR / match.group(2), readme.parent)).as_posix()
        return f"{match.group(1)}{target}{match.group(3)}"

    return RELATIVE_LINK.sub(move, table)


def row_of(summary: dict, name: str) -> dict:
    row = next((r for r in summary["rows"] if r["name"] == name), None)
    if row is None:
        raise UserError(f"the bench run of {summary['datetime']} has no row {name}; run `make bench` first")
    return row


def pair(summary: dict, kind: str, arg: str | None) -> tuple[dict, dict]:
    """The two rows of a `bench:KIND A/B` marker."""
    names = (arg or "").split("/")
    if len(names) != 2:
        raise UserError(f"bench:{kind} takes two rows, ROW/OTHER, not {arg!r}")
    return row_of(summary, names[0]), row_of(summary, names[1])


def ladder_figure(ladder: dict | None, kind: str, arg: str | None) -> str:
    """A figure of the ladder's traced run: a class's share of a stage's pass, or its ms."""
    stage, _, name = (arg or "").partition("/")
    if ladder is None or stage not in ladder["stages"]:
        raise UserError(f"bench:{kind} {arg}: bench/results/{LADDER_JSON} has no stage {stage!r}; "
                        f"run `python -m course.ladder`")
    traced = ladder["stages"][stage]
    if kind == "ladderms" and not name:
        return f"{fmt(traced['wall_ms'], 'ms')} ms"
    if name not in traced["ms"]:
        raise UserError(f"bench:{kind} {arg}: no class {name!r}; the classes are {', '.join(traced['ms'])}")
    if kind == "ladderms":
        return f"{fmt(traced['ms'][name], 'ms')} ms"
    return fmt(traced["ms"][name] / sum(traced["ms"].values()), "percent")


def accuracy_figure(accuracy: tuple[dict, str] | None, arg: str | None) -> str:
    row, _, field = (arg or "").partition("/")
    if accuracy is None or row not in accuracy[0]["rows"]:
        raise UserError(f"bench:accuracy {arg}: bench/results/{ACCURACY_JSON} has no row {row!r}; "
                        f"run `python -m bench.accuracy`")
    figures = {**accuracy[0]["rows"][row], "inputs": accuracy[0]["inputs"]}
    if field not in ACCURACY_FORMATS:
        raise UserError(f"bench:accuracy {arg}: {field!r} is not one of {', '.join(ACCURACY_FORMATS)}")
    return ACCURACY_FORMATS[field].format(figures[field])


def interleaved_figure(summary: dict, arg: str | None) -> str:
    """The median block ratio of a stage against a peer in the run's interleaved comparisons."""
    stage, _, peer = (arg or "").partition("/")
    results = [summary["interleaved"], *summary["interleaved_reduced"]]
    for result in results:
        if result and result["first"] == stage and peer in result["ratios"]:
            return f"{result['ratios'][peer]['median']:.2f}"
    compared = ", ".join(f"{r['first']}/{p}" for r in results if r for p in r["ratios"])
    raise UserError(f"bench:interleaved {arg}: the bench run of {summary['datetime']} compared no such pair; "
                    f"it compared {compared or 'none'}")


def kernel_figure(kernels: dict | None, stage: str | None) -> str:
    """The median over the layer shapes of a stage's 1x1 conv kernel alone, as a share of its instruction's peak."""
    if kernels is None or stage not in kernels["gflops"]:
        raise UserError(f"bench:kernel {stage}: bench/results/{KERNELS_JSON} has no stage {stage!r}; "
                        f"run `python -m bench.kernels`")
    peak = kernels["peaks_gflops"].get(kernels["peak_of"][stage])
    if peak is None:
        raise UserError(f"bench:kernel {stage}: the run of {KERNELS_JSON} measured no {kernels['peak_of'][stage]} "
                        f"peak (its CPU lacks that instruction)")
    return fmt(statistics.median(kernels["gflops"][stage].values()) / peak, "percent")


def figure(sources: Sources, kind: str, arg: str | None) -> str:
    """The figure an inline marker owns."""
    summary = sources.summary
    if kind == "accuracy":
        return accuracy_figure(sources.accuracy, arg)
    if kind in ("ladder", "ladderms"):
        return ladder_figure(sources.ladder, kind, arg)
    if kind == "kernel":
        return kernel_figure(sources.kernels, arg)
    if kind == "interleaved":
        return interleaved_figure(summary, arg)
    if kind == "speedup":
        fast, slow = pair(summary, kind, arg)
        return fmt(slow["median_ms"] / fast["median_ms"], "x")
    if kind == "timeover":
        row, other = pair(summary, kind, arg)
        return fmt(row["median_ms"] / other["median_ms"], "x")
    if kind == "peak":
        return fmt(row_of(summary, arg)["peak_share"], "percent")
    if kind == "ms":
        return f"{fmt(row_of(summary, arg)['median_ms'], 'ms')} ms"
    if kind == "value":
        name, _, field = (arg or "").partition("/")
        if field not in FORMATS:
            raise UserError(f"bench:value {arg}: {field!r} is not a field of the table ({', '.join(FORMATS)})")
        return fmt(row_of(summary, name).get(field), FORMATS[field])
    if kind == "fmapeak":
        machine = summary["avx2_machine"] if arg == AVX2 else summary["machine"]
        if arg not in (None, AVX2) or machine is None or machine.get("peak_gflops") is None:
            raise UserError(f"bench:fmapeak {arg or ''}: the bench run of {summary['datetime']} has no such peak "
                            f"(the argument is empty or {AVX2}; an AVX2 peak needs `make bench ARGS=--avx2`)")
        return f"{machine['peak_gflops']:.0f} GFLOP/s"
    if kind == "precisionpeak":
        field, unit = PRECISION_PEAKS.get(arg, (None, None))
        if field is None or summary["machine"].get(field) is None:
            raise UserError(f"bench:precisionpeak {arg or ''}: the bench run of {summary['datetime']} has no such peak "
                            f"(the argument is one of {', '.join(PRECISION_PEAKS)}, measured where the CPU has it)")
        return f"{summary['machine'][field]:.0f} {unit}"
    raise UserError(f"unknown README marker bench:{kind}")


def fill(text: str, sources: Sources, readme: Path) -> str:
    """The text with every marked place filled; readme is where the text lives (for links)."""

    def replace(match: re.Match) -> str:
        opening, kind, arg, newline, old, closing = match.groups()
        if (kind in BLOCK_KINDS) != bool(newline):
            raise UserError(f"{readme.name}: bench:{kind} " + ("must end its line" if kind in BLOCK_KINDS
                            else "is an inline marker: its figure follows on the same line"))
        if kind == "machine":
            body = machine_text(sources.summary)
        elif kind == "measured":
            body = measured_text(sources.summary, arg)
        elif kind == "table":
            body = relocated(sources.table, readme)
        elif kind == "stages":
            body = stage_latencies(old, sources.summary)
        elif kind == "accuracytable":
            if sources.accuracy is None:
                raise UserError(f"{readme.name}: bench:accuracytable needs bench/results/{ACCURACY_JSON}; "
                                f"run `python -m bench.accuracy`")
            body = sources.accuracy[1]
        else:
            if "\n" in old:
                raise UserError(f"{readme.name}: the inline marker bench:{kind} {arg or ''} is not closed on its "
                                f"line by <!-- /bench -->")
            body = figure(sources, kind, arg)
        return f"{opening}{body}{closing}"

    return MARKER.sub(replace, text)


def readmes() -> list[Path]:
    """The READMEs that hold marked places."""
    return [path for pattern in READMES for path in sorted(REPO.glob(pattern))]


def load(latest: Path) -> Sources:
    """A run's latest.json and latest.md, and the ladder.json, accuracy.json and kernels.json beside them if they
    are there."""
    ladder, accuracy, kernels = (latest.parent / name for name in (LADDER_JSON, ACCURACY_JSON, KERNELS_JSON))
    return Sources(json.loads(latest.read_text()), (latest.parent / LATEST_MD).read_text(),
                   json.loads(ladder.read_text()) if ladder.is_file() else None,
                   (json.loads(accuracy.read_text()), (latest.parent / ACCURACY_MD).read_text())
                   if accuracy.is_file() else None,
                   json.loads(kernels.read_text()) if kernels.is_file() else None)


def filled(path: Path, sources: Sources) -> str:
    """A README's text as `python -m bench.readme` would write it."""
    return fill(path.read_text(), sources, path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.readme", description=__doc__.split("\n\n")[0])
    parser.add_argument("latest", nargs="?", type=Path, default=RESULTS_DIR / LATEST_JSON)
    args = parser.parse_args(argv)
    try:
        sources = load(args.latest)
        for path in readmes():
            text = path.read_text()
            new = fill(text, sources, path)
            if new != text:
                path.write_text(new)
                print(f"updated {path.relative_to(REPO)}")
    except (OSError, ValueError, UserError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
