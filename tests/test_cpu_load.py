"""The default thread count leaves out the cores other programs keep busy (common/cpu_load.py): the arithmetic on
given tick counts, and a real busy core seen as one."""

import time

import pytest

from bench.busy import busy_core
from common import cpu_load

TICK_S = 0.01


@pytest.mark.parametrize("others_busy, free", [(0.0, 2), (0.4, 2), (0.6, 1), (1.0, 1), (2.0, 1)])
def test_busy_cores_are_the_others_ticks_less_this_process(monkeypatch, others_busy, free):
    """Two cores for one second: this process used 0.5 s of CPU, the others `others_busy` core-seconds."""
    clock = iter([10.0, 11.0])
    ticks = iter([(0, 0), (round((0.5 + others_busy) / TICK_S), round(2 / TICK_S))])
    own = iter([1.0, 1.5])
    monkeypatch.setattr(cpu_load.time, "perf_counter", lambda: next(clock))
    monkeypatch.setattr(cpu_load, "busy_ticks", lambda cores: next(ticks))
    monkeypatch.setattr(cpu_load, "own_cpu_seconds", lambda: next(own))
    others = cpu_load.OtherPrograms()
    others.cores = {0, 1}
    with others:
        pass
    assert others.busy_cores == pytest.approx(others_busy) and others.free_cores() == free


def test_without_proc_stat_no_core_is_busy(monkeypatch, tmp_path):
    monkeypatch.setattr(cpu_load, "PROC_STAT", tmp_path / "missing")
    with cpu_load.OtherPrograms() as others:
        time.sleep(TICK_S)
    assert others.busy_cores == 0.0 and others.free_cores() == len(others.cores)


@pytest.mark.skipif(not cpu_load.PROC_STAT.exists(), reason="Linux's /proc/stat")
def test_a_spinning_program_is_a_busy_core():
    """Other tests may run beside this one and add to what it sees, never take away from the spinning child."""
    with busy_core():
        time.sleep(TICK_S * 10)  # the child has started
        with cpu_load.OtherPrograms() as others:
            start = time.perf_counter()
            while time.perf_counter() - start < TICK_S * 30:  # this process keeps a core busy too
                pass
    assert others.busy_cores >= cpu_load.BUSY_SHARE
