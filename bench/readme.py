"""Copy the figures of one `make bench` run into the READMEs, so that every figure there comes from that run.

    python -m bench.readme [LATEST_JSON]        (default: bench/results/latest.json)

Fills the marked places, each an HTML comment that stays in the file, followed by the text it owns up to
the closing `<!-- /bench -->`:
- `<!-- bench:machine -->`: the machine, software and measured FMA peak of the run;
- `<!-- bench:measured STAGE -->`: that stage's latency against the stage before it and the peers, its
  share of the FMA peak, its time to first answer and, where it was run, its AVX2 build;
- `<!-- bench:table -->`: the run's whole table (bench/results/latest.md);
- `<!-- bench:stages -->`: the last column (latency) of the README's table of stages.
Text outside the markers is left alone; a marker naming a stage the run does not have is an error.
"""

import argparse
import json
import re
import sys
from pathlib import Path

from bench.report import LATEST_JSON, LATEST_MD, RESULTS_DIR, fmt
from common.errors import UserError
from common.paths import REPO

MARKER = re.compile(r"(<!-- bench:(\w+)(?: (\S+))? -->\n)(.*?)(<!-- /bench -->)", re.S)
STAGE_ROW = re.compile(r"^(\| \[(stage\d+_\w+)\]\([^)]*\) \| .*? \| )[^|]*( \|)$", re.M)
PEER_ROW = re.compile(r"^(\| \*(\w+)\* \(peer\) \| .*? \| )[^|]*( \|)$", re.M)
TORCH, OPENVINO = "pytorch", "openvino"
READMES = ("README.md", "stages/*/README.md", "bench/README.md")


def machine_text(summary: dict) -> str:
    m = summary["machine"]
    day = summary["datetime"][:10]
    return (f"`make bench` on {day}: {m['cpu']} (family {m['family']}, model {m['model']}), {m['cores']} cores of a "
            f"KVM guest, {m['threads']} threads, Python {m['python']}, numba {m['numba']}, numpy {m['numpy']}, "
            f"torch {m['torch']}, onnxruntime {m['onnxruntime']}, openvino {m['openvino']}. Measured FMA peak "
            f"in that run (`python -m bench.peak`, {m['vector_bits']}-bit vectors, {m['threads']} threads): "
            f"**{m['peak_gflops']:.0f} GFLOP/s**.\n")


def ratio_text(ours: float, theirs: float) -> str:
    return f"{fmt(theirs / ours, 'x')} faster" if ours <= theirs else f"{fmt(ours / theirs, 'x')} slower"


def measured_text(summary: dict, stage: str) -> str:
    rows = {r["name"]: r for r in summary["rows"]}
    if stage not in rows:
        raise UserError(f"the bench run of {summary['datetime']} has no row {stage}; run `make bench` first")
    r = rows[stage]
    m = summary["machine"]
    stages = [row for row in summary["rows"] if row["kind"] == "stage"]
    index = [row["name"] for row in stages].index(stage)
    text = (f"`make bench` on {summary['datetime'][:10]} ({m['cpu']}, family {m['family']}, {m['threads']} threads), "
            f"median of {r['rounds']} rounds on {summary['image']}: **{fmt(r['median_ms'], 'ms')} ms**")
    if index:
        before = stages[index - 1]
        text += (f", against {fmt(before['median_ms'], 'ms')} ms for {before['name']} in the same run: "
                 f"{ratio_text(r['median_ms'], before['median_ms'])}")
    text += f"; {fmt(r['gflops'], 'gflops')} GFLOP/s, {fmt(r['peak_share'], 'percent')} of the measured FMA peak"
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
                 f"{fmt(r['avx2_vs_native'], 'x')} the native build's time, "
                 f"{fmt(r['avx2_peak_share'], 'percent')} of the AVX2 build's own FMA peak")
    return text + ".\n"


def stage_latencies(text: str, summary: dict) -> str:
    rows = {r["name"]: r for r in summary["rows"]}
    stages = [r["name"] for r in summary["rows"] if r["kind"] == "stage"]

    def latency(match: re.Match) -> str:
        name = match.group(2)
        if name not in rows:
            raise UserError(f"the README's table names {name}, which the bench run does not have")
        cell = f"{fmt(rows[name]['median_ms'], 'ms')} ms"
        index = stages.index(name) if name in stages else 0
        if rows[name]["kind"] == "stage" and index:
            before = rows[stages[index - 1]]["median_ms"]
            cell += f", {fmt(before / rows[name]['median_ms'], 'x')} the previous stage's speed"
        return f"{match.group(1)}{cell}{match.group(3)}"

    return PEER_ROW.sub(latency, STAGE_ROW.sub(latency, text))


def fill(text: str, summary: dict, table: str) -> str:
    def replace(match: re.Match) -> str:
        kind, arg = match.group(2), match.group(3)
        if kind == "machine":
            body = machine_text(summary)
        elif kind == "measured":
            body = measured_text(summary, arg)
        elif kind == "table":
            body = table
        elif kind == "stages":
            body = stage_latencies(match.group(4), summary)
        else:
            raise UserError(f"unknown README marker bench:{kind}")
        return f"{match.group(1)}{body}{match.group(5)}"

    return MARKER.sub(replace, text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.readme", description=__doc__.split("\n\n")[0])
    parser.add_argument("latest", nargs="?", type=Path, default=RESULTS_DIR / LATEST_JSON)
    args = parser.parse_args(argv)
    try:
        summary = json.loads(args.latest.read_text())
        table = (args.latest.parent / LATEST_MD).read_text()
        for pattern in READMES:
            for path in sorted(REPO.glob(pattern)):
                text = path.read_text()
                filled = fill(text, summary, table)
                if filled != text:
                    path.write_text(filled)
                    print(f"updated {path.relative_to(REPO)}")
    except (OSError, ValueError, UserError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
