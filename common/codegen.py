"""Generated kernels kept on disk with their machine code, so that a stage starts in about a second.

Stages 5 on write their forward pass as Python source and import it; numba compiles each kernel
(cache=True) and keeps the machine code in a `__pycache__` folder next to the source file, where the
next run loads it instead of compiling again. numba's own cache index keys a kernel on its bytecode,
its argument types and the target CPU, but not on the settings numba compiled it with (numba.config:
optimisation level, loop and SLP vectorizers) nor on the source of the @intrinsic functions it calls,
and a damaged cache file makes it raise. So here:
- every kernel is a module of its own, whose file name carries a digest of everything that changes its
  machine code: its source, the generator's own source (`generator_source`: the stage's model.py and the
  shared modules whose intrinsics and packing the stages import, SHARED_GENERATORS), numba's and llvmlite's
  versions, Python's, the target (CPU name and features, after NUMBA_CPU_NAME / NUMBA_CPU_FEATURES), numba's
  compile settings and its thread count. Another value of
  any of them is another file, with cache entries of its own; the same kernel in two forward passes (the
  v1 and v1.5 variants share most layer shapes) is one file, compiled once. The forward pass is one more
  module, which imports the kernels and calls them in order;
- kernels not in the cache yet are compiled by one process per core, each with its share (numba compiles
  one function at a time), and then loaded; a lock on the folder makes a second process wait for the first
  and load what it compiled, instead of compiling the same kernels beside it;
- a cache that cannot be read is deleted and the kernels compiled again; where the cache folder cannot
  be written, the kernels are compiled into a temporary folder, dropped at exit. Each says so in one line;
- files are written under a unique temporary name and renamed, so a concurrent run never reads half a
  file (numba writes its cache files the same way).

The cache lives in the user's cache folder (common.paths.CACHE_DIR, `RESNET_CACHE_DIR` moves it), and
`make clean-cache` empties it.
"""

import atexit
import contextlib
import fcntl
import hashlib
import importlib.util
import io
import os
import pickle
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import llvmlite
import numba

from common.errors import say
from common.paths import CACHE_DIR, REPO
from common.target import numba_target

KERNELS_DIR = CACHE_DIR / "kernels"
DIGEST_CHARS = 16
# numba.config settings that change the machine code of a kernel compiled with them (a kernel may read the thread
# count as a constant).
COMPILE_SETTINGS = ("OPT", "LOOP_VECTORIZE", "SLP_VECTORIZE", "ENABLE_AVX", "BOUNDSCHECK", "DEBUGINFO_DEFAULT",
                    "LLVM_REFPRUNE_PASS", "NUMBA_NUM_THREADS")
# The shared modules a stage's kernels and packed weights depend on, besides the stage's model.py: the intrinsics the
# kernels call, and what packs the weights of the stages that import their packing.
SHARED_GENERATORS = tuple(Path(__file__).parent / name for name in ("intrinsics.py", "tiles.py",
                                                                      "winograd.py", "tuned.py", "bf16.py",
                                                                      "rewrites.py"))
NUMBA_CACHE_SUFFIXES = (".nbi", ".nbc")
DO_NOT_EDIT = "Do not edit: kept in the kernel cache (common/codegen.py), named after its content."
# Processes that compile a stage's kernels at once: one per core this process may run on.
COMPILE_PROCESSES = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def machine_key() -> str:
    """Everything besides the source that changes what numba makes of it, as one line of text."""
    settings = {name: str(getattr(numba.config, name)) for name in COMPILE_SETTINGS}
    versions = (numba.__version__, llvmlite.__version__, platform.python_version())
    return repr((versions, numba_target(), sorted(settings.items())))


def generator_source(generator: Path) -> str:
    """The text of what generates a stage's kernels and packs its weights: its model.py and SHARED_GENERATORS."""
    return "\0".join(path.read_text() for path in (generator, *SHARED_GENERATORS))


def digest(source: str, generator: Path) -> str:
    parts = (source, generator_source(generator), machine_key())
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()[:DIGEST_CHARS]


def atomic_write(path: Path, text: str) -> None:
    """Write text to path under a unique temporary name, then rename: readers see all of it or none."""
    with tempfile.NamedTemporaryFile("w", dir=path.parent, prefix=path.name, suffix=".tmp", delete=False) as f:
        f.write(text)
    os.replace(f.name, path)


def writable(folder: Path) -> bool:
    """Can files be created in folder (made if missing)? Tried for real: permissions alone do not tell
    (root ignores them, an immutable folder refuses even root)."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            return True
    except OSError:
        return False


def temporary_folder() -> Path:
    folder = Path(tempfile.mkdtemp(prefix="resnet50-kernels-"))
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    return folder


def write_modules(name: str, title: str, prelude: str, kernels: dict[str, str], lines: list[str],
                  generator: Path) -> Path:
    """Write the generated forward pass into the kernel cache and return its path. Each kernel is a module of its
    own, <stage>_<kernel>_<digest>.py: a docstring, `prelude` (the imports and type names its source uses) and its
    source; the forward pass, name_<digest>.py, imports them and calls them in the order of `lines`. A kernel's file
    depends on its own source only, so the variants of the weights share the kernels of the layers they share. In a
    temporary folder if the cache is not writable."""
    folder = KERNELS_DIR
    if not writable(folder):
        folder = temporary_folder()
        say(f"note: the kernel cache {KERNELS_DIR} cannot be written; compiling the kernels without it "
            f"(set RESNET_CACHE_DIR to a writable folder to keep them)")
    origin = generator.relative_to(REPO) if generator.is_relative_to(REPO) else generator
    imports = []
    for kernel, source in kernels.items():
        text = f'"""{kernel}: one kernel of the ResNet-50 forward pass, generated by {origin}.\n{DO_NOT_EDIT}"""\n'
        text += prelude + source
        module = write_if_changed(folder, f"{generator.parent.name}_{kernel}", text, generator)
        imports.append(f"from {module.stem} import {kernel}")
    steps = sum(1 for line in lines if not line.lstrip().startswith("#"))
    forward = (f'"""{title}, generated by {origin}: {len(kernels)} kernels, {steps} steps.\n{DO_NOT_EDIT}\n'
               f'Each kernel is a module of its own beside this one."""\n\n' + "\n".join(imports) +
               '\n\n\ndef forward(a):\n    """a: every weight and buffer view, in step order."""\n'
               + "\n".join(lines) + "\n")
    return write_if_changed(folder, name, forward, generator)


def write_if_changed(folder: Path, name: str, source: str, generator: Path) -> Path:
    """folder/name_<digest>.py holding `source`, written if it is missing or does not hold exactly `source`."""
    path = folder / f"{name}_{digest(source, generator)}.py"
    try:
        unchanged = path.read_text() == source
    except (OSError, UnicodeDecodeError):
        unchanged = False
    if not unchanged:  # rewritten only when needed: numba's cache is only valid for the file's mtime and size
        atomic_write(path, source)
    return path


def numba_cache_files(path: Path) -> list[Path]:
    """numba's cache files for the functions of the module at path: __pycache__/<module>.<function>-...."""
    cache = path.parent / "__pycache__"
    return [f for f in cache.glob(f"{path.stem}.*") if f.suffix in NUMBA_CACHE_SUFFIXES]


def indexed_modules(folder: Path) -> set[str]:
    """The modules in folder that numba has a cache index for, from one listing of its __pycache__ (which holds
    the files of every kernel ever compiled there: a glob per kernel would read it once per kernel)."""
    try:
        names = os.listdir(folder / "__pycache__")
    except OSError:
        return set()
    return {name.partition(".")[0] for name in names if name.endswith(".nbi")}


def unreadable(files: list[Path]) -> list[Path]:
    """The cache files that numba could not read back: an index is a pickled version stamp followed by a
    pickle; a data file one pickle."""
    bad = []
    for f in files:
        try:
            data = f.read_bytes()
            if f.suffix == ".nbi":
                stream = io.BytesIO(data)
                pickle.load(stream)
                data = stream.read()
            pickle.loads(data)
        except Exception:  # whatever unpickling damaged bytes raises
            bad.append(f)
    return bad


def import_path(path: Path):
    """Import the module at path under its file's name (so that the forward module's imports of the kernel modules
    find them); numba compiles or loads the kernels that have a signature in their source as it is imported."""
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[path.stem] = module
    spec.loader.exec_module(module)
    return module


DISK_CACHE = True  # False inside without_disk_cache()


@contextlib.contextmanager
def without_disk_cache():
    """While active, numba's disk cache is an empty temporary folder: every kernel is compiled, in this process,
    and numba keeps its IR and machine code (it keeps neither for a kernel it loads from its disk cache)."""
    global DISK_CACHE
    saved = numba.config.CACHE_DIR, DISK_CACHE
    with tempfile.TemporaryDirectory(prefix="resnet50-numba-") as folder:
        numba.config.CACHE_DIR, DISK_CACHE = folder, False
        try:
            yield
        finally:
            numba.config.CACHE_DIR, DISK_CACHE = saved


def kernel_modules(path: Path) -> dict[Path, str]:
    """{kernel module's path: kernel name} for the kernels the forward module at path imports."""
    found = {}
    for line in path.read_text().splitlines():
        if line.startswith("from "):
            module, _, kernel = line.removeprefix("from ").partition(" import ")
            found[path.parent / f"{module}.py"] = kernel
    return found


def compile_kernel(path: Path, kernel: str, signature: tuple | None, settings: Callable | None):
    """The kernel `kernel` of the module at path, compiled or loaded from numba's disk cache: at import if its
    source has a signature, else for `signature`, inside `settings()` (compile settings it needs, if any)."""
    module = import_path(path)
    dispatcher = getattr(module, kernel)
    if signature is not None:
        with settings() if settings is not None else contextlib.nullcontext():
            dispatcher.compile(signature)
    return dispatcher


def load_kernel(path: Path, kernel: str, signature: tuple | None, settings: Callable | None):
    """compile_kernel; cache files that cannot be read are deleted and the kernel compiled again (without the
    disk cache if they cannot be deleted); any other error is raised as it is."""
    try:
        return compile_kernel(path, kernel, signature, settings)
    except Exception as e:  # numba raises whatever unpickling a damaged cache file raises
        bad = unreadable(numba_cache_files(path))
        if not bad:
            raise  # not the cache's fault: a real error, shown as it is
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        say(f"note: {len(bad)} file(s) of compiled kernels in {path.parent / '__pycache__'} could not be read "
            f"({reason}); compiling those kernels again")
        try:
            for f in bad:
                f.unlink()
        except OSError:
            say("note: they cannot be deleted; compiling the kernels without the cache")
            with without_disk_cache():
                return compile_kernel(path, kernel, signature, settings)
        return compile_kernel(path, kernel, signature, settings)


def compile_processes(kernels: int) -> int:
    """Processes compile_in_processes starts for that many kernels: one per core, none for a single kernel or core,
    nor without the disk cache (the processes hand their machine code over through it)."""
    processes = min(kernels, COMPILE_PROCESSES)
    return processes if processes > 1 and DISK_CACHE else 0


def compile_in_processes(tasks: list[tuple]) -> int:
    """Compile the kernels of `tasks` (path, kernel, signature, settings) into numba's disk cache, in one process
    per core, each with its share: numba compiles one function at a time, so a lone process uses one core.
    Returns the number of processes used (0: too few kernels or cores to pay for starting them, about 0.5 s
    each). A kernel a process could not compile is left to the caller, which compiles it again and reports why."""
    processes = compile_processes(len(tasks))
    if not processes:
        return 0
    shares = [[] for _ in range(processes)]
    loads = [0] * processes
    # The longest source first, each to the least loaded process (source length stands in for compile time).
    for task in sorted(tasks, key=lambda task: -task[0].stat().st_size):
        least = loads.index(min(loads))
        shares[least].append(task)
        loads[least] += task[0].stat().st_size
    settings = {name: getattr(numba.config, name) for name in COMPILE_SETTINGS}  # the caller's, set at run time too
    children = [subprocess.Popen([sys.executable, "-m", "common.codegen"], cwd=REPO, stdin=subprocess.PIPE,
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) for _ in shares]
    for child, share in zip(children, shares, strict=True):
        with child.stdin:
            child.stdin.write(pickle.dumps((settings, share)))
    for child in children:
        child.wait()
    return processes


@contextlib.contextmanager
def compile_lock(folder: Path):
    """Held while kernels are compiled into folder: a second process (two commands at once, the test suite's
    workers) waits, then loads what the first compiled, instead of compiling the same kernels beside it. The
    operating system releases the lock of a process that dies. Without a lock file (a read-only folder), none."""
    try:
        lock = open(folder / ".compile.lock", "a")
    except OSError:
        yield
        return
    with lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            say(f"waiting for another process compiling kernels into {folder}")
            fcntl.flock(lock, fcntl.LOCK_EX)
        yield  # closing the file releases the lock


def load_module(path: Path, signatures: dict[str, tuple] | None = None, settings: Callable | None = None):
    """The generated forward module at path with every kernel compiled: (module, how, seconds), where how says
    whether the kernels were loaded from the disk cache or compiled. Kernels without a signature in their source
    are compiled for the one `signatures` gives them, inside `settings()`. Kernels numba has no cache entry for
    are compiled first, in parallel (compile_in_processes); then each is loaded (load_kernel)."""
    start = time.perf_counter()
    signatures = signatures or {}
    kernels = kernel_modules(path)

    def uncompiled() -> list[tuple]:
        indexed = indexed_modules(path.parent)
        return [(module, kernel, signatures.get(kernel), settings if kernel in signatures else None)
                for module, kernel in kernels.items() if module.stem not in indexed]

    compiled_elsewhere = 0
    if len(uncompiled()) > 1:
        with compile_lock(path.parent):
            tasks = uncompiled()  # what another process compiled while this one waited is loaded, not compiled
            if len(tasks) > 1:
                processes = compile_processes(len(tasks))
                at_once = f"{processes} at a time" if processes else "one by one"
                say(f"compiling {len(tasks)} kernels of {path.stem.rsplit('_', 1)[0]} "
                    f"({at_once}; kept in {path.parent} for the next run)")
                compiled_elsewhere = compile_in_processes(tasks)
    dispatchers = [load_kernel(module, kernel, signatures.get(kernel), settings if kernel in signatures else None)
                   for module, kernel in kernels.items()]
    module = import_path(path)
    loaded = not compiled_elsewhere and all(sum(f.stats.cache_hits.values()) and not sum(f.stats.cache_misses.values())
                                            for f in dispatchers)
    return module, "load compiled kernels" if loaded else "compile", time.perf_counter() - start


def compile_share() -> None:
    """A process of compile_in_processes: its share of the kernels, with the caller's compile settings."""
    settings, share = pickle.loads(sys.stdin.buffer.read())
    for name, value in settings.items():
        setattr(numba.config, name, value)
    for path, kernel, signature, context in share:
        with contextlib.suppress(Exception):
            compile_kernel(path, kernel, signature, context)


if __name__ == "__main__":
    compile_share()
