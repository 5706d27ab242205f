"""Autotuning: a stage times a few candidate kernels per layer shape on the CPU it runs on, once, and keeps the fastest.

Which register tile, which tile order, which Winograd size is fastest depends on the CPU: its caches, its memory, how
many cores share them. ATLAS, FFTW and TVM do not guess it: at install time (or the first run) they time the
candidates on the machine and keep the winner. A stage that tunes itself gives this module:

- `candidates`: {shape: [candidate, ...]}, each candidate a JSON value (a list of numbers), the stage's untuned
  choice first; `network(choices)` plans the stage's forward pass with one candidate per shape, on stand-in
  weights, and returns its calls [(kernel name, arguments)], each kernel named after its shape;
  `compile_trials()` compiles every kernel planned so far (in one process per core, through common.codegen) and
  returns the module that holds them;
- `tuned()` plans and compiles one forward pass per round (round r: every shape's r-th candidate), as many rounds
  as fit in TUNING_SECONDS beyond the stage's own kernels (`tune`), then runs the passes in turns (so that a slow
  moment of a shared machine slows all of them alike), times each kernel call, takes the median per shape and
  candidate and keeps the fastest. Timed alone, a layer is misjudged: measured so on an Intel Xeon, the other tile
  order and the direct conv instead of Winograd won several layers, and both were slower in the pass
  (stages/stage12_tuned/README.md). One line per shape on stderr shows the result;
- the choices are kept in the kernel cache (common.codegen.KERNELS_DIR, emptied by `make clean-cache`) in
  <stage>_tuning_<digest>.json, the digest of the stage's model.py, of its layer shapes (v1 and v1.5 weights have
  different ones) and of common.codegen.machine_key() (the target CPU, numba's, llvmlite's and Python's versions):
  another CPU, another version or the other variant is another file, tuned again. A file that cannot be read, or
  that holds a choice the stage no longer offers, means tuning again, with a one-line note; where the folder cannot
  be written, the choices are kept in memory, with a note;
- `prepared_for`: the prepared weights (common/prepared.py) of a stage whose weight layout follows its choices,
  prepared again when the choices they were packed for are not the current ones.

    python -m common.tuning STAGE       tune STAGE again (`make stageN tune`)
"""

import json
import shutil
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numba
import numpy as np

from common import codegen, prepared
from common.errors import UserError, run_reporting_errors, say
from common.timing import MS_PER_S

PASSES = 9  # timed forward passes of every round's plan, taken in turns; the median is kept (odd: a pass's time)
# What the tuning may add to a first run, candidates' compiles included, beyond compiling the stage's own kernels.
TUNING_SECONDS = 30
TIMING_SECONDS = 5  # of them, kept for timing the rounds' forward passes once they are compiled
CHOICES_KEY = "tuned for"  # the prepared pool's entry recording the choices its weights were packed for

Calls = list[tuple[str, tuple]]


def choice_path(generator: Path, shapes=()) -> Path:
    """The choice file of the stage whose model.py is `generator`, for a network of these layer shapes, in the kernel
    cache. The shapes are part of its name: v1 and v1.5 weights put the stride elsewhere, so their shapes differ,
    and each keeps a file of its own instead of tuning again every time the other was run last."""
    key = codegen.digest("tuning " + " ".join(sorted(shapes)), generator)  # with the generator's source, the machine
    return codegen.KERNELS_DIR / f"{generator.parent.name}_tuning_{key}.json"


def read_choices(path: Path, candidates: dict[str, list]) -> dict[str, list]:
    """The choices in path, checked against the candidates. Raises OSError if missing, ValueError if damaged."""
    data = json.loads(path.read_text())
    choices = data["choices"] if isinstance(data, dict) else None
    if not isinstance(choices, dict) or set(choices) != set(candidates):
        raise ValueError("it does not hold a choice for every layer shape")
    stale = [shape for shape, choice in choices.items() if choice not in candidates[shape]]
    if stale:
        raise ValueError(f"{stale[0]}: {choices[stale[0]]} is not one of its candidates")
    return choices


def credits(calls: Calls, shapes) -> list[set[str]]:
    """For each call, the shapes its time counts for: the shape named in its kernel's name, and the shape of the
    call before it if that one differs (this call reads its output, from where that shape's tile order left it)."""
    owners = [max((shape for shape in shapes if shape in name), key=len, default=None) for name, _ in calls]
    return [{owner, before} - {None} if before != owner else {owner} - {None}
            for owner, before in zip(owners, [None, *owners[:-1]], strict=True)]


def shape_ms(steps: list[tuple[Callable, tuple, set[str]]]) -> dict[str, float]:
    """One run of a forward pass's steps (kernel, arguments, credited shapes): milliseconds by shape."""
    ms = {}
    for kernel, arguments, shapes in steps:
        start = time.perf_counter()
        kernel(*arguments)
        elapsed = (time.perf_counter() - start) * MS_PER_S
        for shape in shapes:
            ms[shape] = ms.get(shape, 0.0) + elapsed
    return ms


def tune(candidates: dict[str, list], network: Callable[[dict], Calls], compile_trials: Callable,
         label: Callable[[list], str]) -> tuple[dict[str, list], dict, float]:
    """Time the candidates of every shape, as many as fit in TUNING_SECONDS; (choices, medians by shape, seconds
    the tuning added to compiling the stage's own kernels).

    A layer's speed depends on its neighbours (where the layer before left its output, which caches hold what), so
    the candidates are timed inside the forward pass: round r plans the whole pass with every shape's r-th
    candidate (its first where it has fewer) and times each kernel call in it. Compiling is most of the cost (a
    second or two per kernel): round 0, the stage's untuned choices, compiles what a first run compiles anyway;
    each later round its new kernels (in one process per core), if the time they are expected to take (at the
    seconds per kernel so far) still fits. The later candidates of a shape are the less likely winners."""
    rounds, compiled, seconds_per_kernel, kernels, untried, own = [], set(), 0.0, None, 0, 0.0
    start = time.perf_counter()
    for rank in range(max(map(len, candidates.values()))):
        choices = {shape: options[rank if rank < len(options) else 0] for shape, options in candidates.items()}
        calls = network(choices)
        new = {name for name, _ in calls} - compiled
        expected = time.perf_counter() - start - own + len(new) * seconds_per_kernel
        if rank and expected > TUNING_SECONDS - TIMING_SECONDS:
            untried += sum(rank < len(options) for options in candidates.values())
            continue
        if new:
            compiling = time.perf_counter()
            kernels = compile_trials()
            compiled |= new
            seconds_per_kernel = max(seconds_per_kernel, (time.perf_counter() - compiling) / len(new))
        if not rank:
            own = time.perf_counter() - start  # round 0 plans and compiles the stage's own kernels
        rounds.append((rank, calls))
    if untried:
        say(f"tuning: {untried} candidates left untried, to stay within {TUNING_SECONDS} s")
    steps = [[(getattr(kernels, name), arguments, shapes) for (name, arguments), shapes
              in zip(calls, credits(calls, candidates), strict=True)] for _, calls in rounds]
    for forward in steps:
        shape_ms(forward)  # untimed: brings each round's code and data in once
    times = [[] for _ in rounds]
    for _ in range(PASSES):
        for ms, forward in zip(times, steps, strict=True):
            ms.append(shape_ms(forward))
    choices, medians = {}, {}
    for number, (shape, options) in enumerate(candidates.items(), 1):
        tried = {rank: statistics.median(run[shape] for run in ms) for (rank, _), ms in zip(rounds, times, strict=True)
                 if rank < len(options)}
        best = min(tried, key=tried.get)
        choices[shape], medians[shape] = options[best], {json.dumps(options[r]): ms for r, ms in tried.items()}
        say(f"tuning {number}/{len(candidates)} {shape}: {label(options[best])}, {tried[best]:.3f} ms "
            f"({label(options[0])}: {tried[0]:.3f} ms; {len(tried)} tried)")
    return choices, medians, time.perf_counter() - start - own


def tuned(generator: Path, candidates: dict[str, list], network: Callable[[dict], Calls], compile_trials: Callable,
          label: Callable[[list], str]) -> tuple[dict[str, list], str]:
    """The stage's choice for every shape, from its choice file or tuned now, and a line saying which. Unoptimised
    code (NUMBA_OPT=0, as when its IR is compiled for another CPU) is not timed: it is not the code that runs."""
    if not numba.config.OPT:
        return {shape: options[0] for shape, options in candidates.items()}, "untuned (NUMBA_OPT=0)"
    path = choice_path(generator, candidates)
    try:
        return read_choices(path, candidates), "loaded tuning"
    except OSError:
        pass  # never tuned on this CPU with these versions
    except (ValueError, KeyError, TypeError) as e:  # what json and the checks raise for a damaged file
        say(f"note: the tuning in {path} could not be read ({e}); tuning again")
    choices, medians, seconds = tune(candidates, network, compile_trials, label)
    if codegen.writable(path.parent):
        codegen.atomic_write(path, json.dumps({"choices": choices, "median_ms": medians}, indent=1))
    else:
        say(f"note: the kernel cache {path.parent} cannot be written; the tuning is kept in memory for this run "
            f"only (set RESNET_CACHE_DIR to a writable folder to keep it)")
    return choices, f"tuned {len(candidates)} shapes in {seconds:.1f} s"


def prepared_for(choices: dict[str, list], build: Callable[[], dict], manifest: dict, weights_dir: Path,
                 generator: Path) -> dict:
    """common.prepared.prepared_pool for weights packed as `choices` say, recorded in the pool under CHOICES_KEY:
    prepared again if the cached pool was packed for other choices (the stage was tuned again since)."""
    record = np.frombuffer(json.dumps(choices, sort_keys=True).encode(), np.uint8)

    def build_recorded():
        return build() | {CHOICES_KEY: record}

    def current(pool):
        return np.array_equal(pool.get(CHOICES_KEY, ()), record)

    pool = prepared.prepared_pool(build_recorded, manifest, weights_dir, generator)
    if not current(pool):
        shutil.rmtree(prepared.PREPARED_DIR / prepared.entry_name(manifest, weights_dir, generator), ignore_errors=True)
        pool = prepared.prepared_pool(build_recorded, manifest, weights_dir, generator)
    return pool if current(pool) else build_recorded()  # an old entry that could not be deleted is not used


def retune(spec: str) -> int:
    """Delete a stage's choice file and build the stage, which tunes it again."""
    from common.stages import find_stage, record, stage_module

    stage = find_stage(spec)
    if not record(stage).tunes:
        raise UserError(f"{stage} does not tune itself (its record, stages/{stage}/__init__.py, says so)")
    module = stage_module(stage)
    for path in codegen.KERNELS_DIR.glob(choice_path(Path(module.__file__)).name.rsplit("_", 1)[0] + "_*.json"):
        path.unlink(missing_ok=True)  # every variant's: the one built next is tuned again
    say(f"{stage}: {module.Model().choice}")
    return 0


if __name__ == "__main__":
    sys.exit(run_reporting_errors(lambda: retune(sys.argv[1])))
