"""The READMEs against the repository and one bench run: every marked figure filled as `python -m bench.readme`
fills it, no empty table cell, every relative link and image present, every stage's picture shown.

Nothing here compiles or runs a stage: it reads text, bench/results/latest.json and latest.md.
"""

import re
from pathlib import Path

import pytest

from bench import readme
from bench.report import fmt
from common.errors import UserError
from common.paths import REPO
from common.stages import STAGES

SKIPPED_DIRS = ("node_modules", "out")  # besides hidden folders (.venv, caches): not part of a clone's docs
ALL_READMES = sorted(path for path in REPO.rglob("README*.md")
                     if not any(part.startswith(".") or part in SKIPPED_DIRS
                                for part in path.relative_to(REPO).parent.parts))
FENCE = re.compile(r"^```.*?^```", re.S | re.M)
CODE_SPAN = re.compile(r"`[^`\n]*`")
LINK = re.compile(r"!?\[[^\]\n]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
REFERENCE = re.compile(r"^\s*\[[^\]\n]+\]:\s*(\S+)", re.M)  # [name]: target, for [text][name]
HTML_SOURCE = re.compile(r"<(?:img|a)\s[^>]*(?:src|href)=\"([^\"]+)\"")
WEB = re.compile(r"^[a-z][a-z0-9+.-]*:")  # https:, mailto:
HEADING = re.compile(r"^#{1,6}\s+(.*?)\s*#*$", re.M)
TABLE_LINE = re.compile(r"^\|.*\|$", re.M)
CELL_SPLIT = re.compile(r"(?<!\\)\|")
RULE_CELL = re.compile(r"^:?-+:?$")
PICTURE = "picture.png"
STAGE_LATENCY = re.compile(r"^\| \[(stage\d+_\w+)\]\([^)]*\) \|[^|]*\| ([\d.]+) ms", re.M)
PEER_LATENCY = re.compile(r"^\| \*([\w-]+)\* \(peer\) \|[^|]*\| ([\d.]+) ms", re.M)


def name(path: Path) -> str:
    return str(path.relative_to(REPO))


def prose(text: str) -> str:
    """The text without fenced code blocks and code spans, where brackets are code, not links."""
    return CODE_SPAN.sub("", FENCE.sub("", text))


def anchors(path: Path) -> set[str]:
    """GitHub's anchors of a Markdown file's headings: lower case, punctuation dropped, spaces to hyphens."""
    return {re.sub(r"[^\w\- ]", "", heading.replace("`", "").lower()).replace(" ", "-")
            for heading in HEADING.findall(FENCE.sub("", path.read_text()))}


@pytest.fixture(scope="module")
def run():
    return readme.load(readme.RESULTS_DIR / readme.LATEST_JSON)


def test_readmes_found():
    """The search for READMEs finds the top one and every stage's (a stage folder without one fails here)."""
    assert REPO / "README.md" in ALL_READMES
    missing = set(STAGES) - {path.parent.name for path in ALL_READMES}
    assert not missing, f"stage folders without a README.md: {', '.join(sorted(missing))}"


@pytest.mark.parametrize("path", readme.readmes(), ids=name)
def test_markers_filled_from_the_run(path, run):
    """Every marked place holds text, the text `python -m bench.readme` would write there now."""
    text = path.read_text()
    for match in readme.MARKER.finditer(text):
        kind, arg, body = match.group(2), match.group(3), match.group(5)
        assert body.strip(), f"{name(path)}: bench:{kind} {arg or ''} is empty; run `python -m bench.readme`"
    assert readme.filled(path, run) == text, f"{name(path)}: run `python -m bench.readme`"


@pytest.mark.parametrize("path", ALL_READMES, ids=name)
def test_no_empty_table_cells(path):
    for line in TABLE_LINE.findall(FENCE.sub("", path.read_text())):
        cells = [cell.strip() for cell in CELL_SPLIT.split(line[1:-1])]
        assert all(cells), f"{name(path)}: a table row with an empty cell: {line}"


@pytest.mark.parametrize("path", ALL_READMES, ids=name)
def test_relative_links_exist(path):
    text = prose(path.read_text())
    for target in LINK.findall(text) + REFERENCE.findall(text) + HTML_SOURCE.findall(text):
        if WEB.match(target):
            continue
        file, _, anchor = target.partition("#")
        linked = (path.parent / file).resolve() if file else path
        assert linked.exists(), f"{name(path)}: the link {target} points to nothing"
        if anchor and linked.suffix == ".md":
            assert anchor in anchors(linked), f"{name(path)}: {target}: no such heading in {linked.name}"


@pytest.mark.parametrize("stage", STAGES)
def test_stage_readme_shows_its_picture(stage):
    folder = REPO / "stages" / stage
    assert (folder / "README.md").is_file(), f"stages/{stage} has no README.md"
    assert f"]({PICTURE})" in (folder / "README.md").read_text(), f"stages/{stage}/README.md does not show {PICTURE}"
    assert (folder / PICTURE).is_file(), f"stages/{stage}/{PICTURE} is missing"


def test_stage_table_latencies_are_the_runs_medians(run):
    medians = {r["name"]: fmt(r["median_ms"], "ms") for r in run.summary["rows"]}
    text = (REPO / "README.md").read_text()
    table = dict(STAGE_LATENCY.findall(text) + PEER_LATENCY.findall(text))
    assert set(table) == set(medians), "the top README's table of stages has other rows than the bench run"
    assert table == medians


def test_inline_markers(run):
    rows = {r["name"]: r for r in run.summary["rows"]}
    stages = [r["name"] for r in run.summary["rows"] if r["kind"] == "stage"]
    first, last = stages[0], stages[-1]
    text = (f"<!-- bench:speedup {last}/{first} -->?<!-- /bench --> and "
            f"<!-- bench:peak {last} --><!-- /bench -->")
    expected = (f"<!-- bench:speedup {last}/{first} -->{fmt(rows[first]['median_ms'] / rows[last]['median_ms'], 'x')}"
                f"<!-- /bench --> and <!-- bench:peak {last} -->{fmt(rows[last]['peak_share'], 'percent')}"
                f"<!-- /bench -->")
    assert readme.fill(text, run, REPO / "README.md") == expected


@pytest.mark.parametrize("text", [
    "<!-- bench:speedup stage8_tiled/stage7_fused -->6.4×\nmore text<!-- /bench -->",  # not closed on its line
    "<!-- bench:peak no_such_row -->84%<!-- /bench -->",
    "<!-- bench:timeover stage8_tiled -->1×<!-- /bench -->",  # one row where two are needed
    "<!-- bench:machine -->AMD<!-- /bench -->",  # a block marker must end its line
])
def test_bad_markers_are_errors(text, run):
    with pytest.raises(UserError):
        readme.fill(text, run, REPO / "README.md")
