"""How many cores other programs keep busy, measured while a stage builds, so that its default thread count can
leave those cores out.

A parallel loop (prange) splits its work evenly over the threads and ends when the last thread ends. When
another program keeps a core busy, the operating system shares that core between it and one of our threads,
which then runs at about half speed, and every loop waits for it: measured on the AMD EPYC (2 cores, one kept
busy), stage 11 took 64.3 ms at 2 threads and 28.7 ms at 1. So the stages' command line, unless told
`--threads N`, uses one thread per core that the other programs leave free.

`OtherPrograms` measures that over a stretch of time the stage spends anyway, its build (loading or compiling
kernels, mapping weights: 0.3 s and more), so that it costs nothing: the time every core was busy (Linux's
/proc/stat, in clock ticks) minus the CPU time this process and the children it waited for used (os.times()).
A core that other programs kept half busy counts as half. Where /proc/stat cannot be read (not Linux), no core
counts as busy. A program that starts after the build is not seen.
"""

import os
import time
from pathlib import Path

PROC_STAT = Path("/proc/stat")
# /proc/stat's columns after the core's name: user nice system idle iowait irq softirq steal guest guest_nice.
IDLE_COLUMNS = (3, 4)  # idle and iowait: time nobody ran on the core
WORK_COLUMNS = (0, 1, 2, 5, 6)  # user, nice, system, irq, softirq (guest time is already inside user)
BUSY_SHARE = 0.5  # a core that other programs keep busy at least this share of the time is left to them


def busy_ticks(cores: set[int]) -> tuple[int, int] | None:
    """(ticks any program worked, ticks in all) summed over `cores`, from /proc/stat; None where it is missing."""
    try:
        lines = PROC_STAT.read_text().splitlines()
    except OSError:
        return None
    work = total = 0
    for line in lines:
        name, *columns = line.split()
        if name.startswith("cpu") and name[3:].isdigit() and int(name[3:]) in cores:
            ticks = [int(c) for c in columns]
            work += sum(ticks[i] for i in WORK_COLUMNS)
            total += sum(ticks[i] for i in WORK_COLUMNS + IDLE_COLUMNS)
    return work, total


def own_cpu_seconds() -> float:
    """CPU time of this process's threads and of the child processes it has waited for (the kernel compilers)."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


class OtherPrograms:
    """with OtherPrograms() as others: ... ; others.busy_cores is how many cores, on average over the block, other
    programs kept busy (0.0 if it cannot be told)."""

    def __init__(self):
        self.cores = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else set(range(os.cpu_count() or 1))
        self.busy_cores = 0.0

    def __enter__(self):
        self.start = busy_ticks(self.cores), own_cpu_seconds(), time.perf_counter()
        return self

    def __exit__(self, *exc):
        (ticks, own, start), end = self.start, busy_ticks(self.cores)
        wall = time.perf_counter() - start
        if ticks is None or end is None or end[1] == ticks[1]:
            return
        seconds_per_tick = wall * len(self.cores) / (end[1] - ticks[1])  # the cores' ticks add up to the wall time
        others = (end[0] - ticks[0]) * seconds_per_tick - (own_cpu_seconds() - own)
        self.busy_cores = max(0.0, others / wall)

    def free_cores(self) -> int:
        """Cores the other programs leave to this one: at least 1."""
        return max(1, len(self.cores) - int(self.busy_cores + 1 - BUSY_SHARE))
