"""Generated kernels kept on disk with their machine code, so that a stage starts in about a second.

Stages 5 on write their forward pass as Python source and import it; numba compiles each kernel
(cache=True) and keeps the machine code in a `__pycache__` folder next to the source file, where the
next run loads it instead of compiling again. numba's own cache index keys a kernel on its bytecode,
its argument types and the target CPU, but not on the settings numba compiled it with (numba.config:
optimisation level, loop and SLP vectorizers) nor on the source of the @intrinsic functions it calls,
and a damaged cache file makes it raise. So here:
- the source file's name carries a digest of everything that changes the machine code: the generated
  source, the generator's own source (the stage's model.py, which holds its intrinsics and the compile
  settings it switches), numba's and llvmlite's versions, Python's, the target (CPU name and features,
  after NUMBA_CPU_NAME / NUMBA_CPU_FEATURES) and numba's compile settings. Another value of any of them
  is another file, with cache entries of its own;
- a cache that cannot be read is deleted and the kernels compiled again; where the cache folder cannot
  be written, the kernels are compiled into a temporary folder, dropped at exit. Each says so in one line;
- files are written under a unique temporary name and renamed, so a concurrent run never reads half a
  file (numba writes its cache files the same way).

The cache lives in the user's cache folder (common.paths.CACHE_DIR, `RESNET_CACHE_DIR` moves it), and
`make clean-cache` empties it.
"""

import atexit
import contextlib
import hashlib
import importlib.util
import io
import os
import pickle
import platform
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import llvmlite
import numba
from numba.core.registry import CPUDispatcher, cpu_target

from common.errors import say
from common.paths import CACHE_DIR

KERNELS_DIR = CACHE_DIR / "kernels"
DIGEST_CHARS = 16
# numba.config settings that change the machine code of a kernel compiled with them.
COMPILE_SETTINGS = ("OPT", "LOOP_VECTORIZE", "SLP_VECTORIZE", "ENABLE_AVX", "BOUNDSCHECK", "DEBUGINFO_DEFAULT",
                    "LLVM_REFPRUNE_PASS")
NUMBA_CACHE_SUFFIXES = (".nbi", ".nbc")


def target() -> tuple[str, str, str]:
    """(triple, CPU name, CPU features) that numba compiles for, overrides included: its cache's own key."""
    return cpu_target.target_context.codegen().magic_tuple()


def machine_key() -> str:
    """Everything besides the source that changes what numba makes of it, as one line of text."""
    settings = {name: str(getattr(numba.config, name)) for name in COMPILE_SETTINGS}
    versions = (numba.__version__, llvmlite.__version__, platform.python_version())
    return repr((versions, target(), sorted(settings.items())))


def digest(source: str, generator: Path) -> str:
    parts = (source, generator.read_text(), machine_key())
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


def write_module(name: str, source: str, generator: Path) -> Path:
    """The path of the generated module `name`_<digest>.py holding `source`, in the kernel cache, written
    if it is missing or does not hold exactly `source`; in a temporary folder if the cache is not writable."""
    folder = KERNELS_DIR
    if not writable(folder):
        folder = temporary_folder()
        say(f"note: the kernel cache {KERNELS_DIR} cannot be written; compiling the kernels without it "
            f"(set RESNET_CACHE_DIR to a writable folder to keep them)")
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


def compiled_kernels(module) -> list[CPUDispatcher]:
    return [f for f in vars(module).values() if isinstance(f, CPUDispatcher) and f.signatures]


def import_path(path: Path, compile_more: Callable | None):
    """Import the module at path (numba compiles or loads its kernels with explicit signatures as it is
    imported); then compile_more(module), for kernels compiled on request. Returns the module."""
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[path.stem] = module
    spec.loader.exec_module(module)
    if compile_more is not None:
        compile_more(module)
    return module


@contextlib.contextmanager
def without_disk_cache():
    """While active, numba's disk cache is an empty temporary folder: every kernel is compiled, and numba
    keeps its IR and machine code (it keeps neither for a kernel it loads from its disk cache)."""
    saved = numba.config.CACHE_DIR
    with tempfile.TemporaryDirectory(prefix="resnet50-numba-") as folder:
        numba.config.CACHE_DIR = folder
        try:
            yield
        finally:
            numba.config.CACHE_DIR = saved


def load_module(path: Path, compile_more: Callable | None = None):
    """The generated module at path with every kernel compiled: (module, how, seconds), where how says
    whether the kernels were loaded from the disk cache or compiled. Cache files that cannot be read are
    deleted and their kernels compiled again (without the disk cache if they cannot be deleted); any other
    error is raised as it is."""
    start = time.perf_counter()
    try:
        module = import_path(path, compile_more)
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
                module = import_path(path, compile_more)
        else:
            module = import_path(path, compile_more)
    kernels = compiled_kernels(module)
    loaded = all(sum(f.stats.cache_hits.values()) and not sum(f.stats.cache_misses.values()) for f in kernels)
    return module, "load compiled kernels" if loaded else "compile", time.perf_counter() - start
