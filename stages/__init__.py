"""The stages: stage1_origin, stage2_simd, ... each the previous one plus one idea.

Each stage's package declares what it is in one record, `STAGE = Stage(__name__, ...)`: common.stages lists the
stages and reads their records for the command line, the tests, the benchmark and the pictures.
"""

from dataclasses import dataclass

FLOAT32 = "float32"
PRECISIONS = ("int8", "bf16")  # the reduced precisions a stage may compute in
# The peak a stage's speed is measured against (bench.peak measures each): the instruction its sums are made by.
PEAKS = ("fma", "vpdpbusd", "vdpbf16ps", "tdpbf16ps")
PRECISION_PEAK = {FLOAT32: "fma", "int8": "vpdpbusd", "bf16": "vdpbf16ps"}  # the vector instruction of each


@dataclass(frozen=True)
class Stage:
    """What a stage is. `package` is its package's __name__ ("stages.stage12_tuned")."""

    package: str
    precision: str = FLOAT32  # float32, or one of PRECISIONS
    threads: bool = False  # runs parallel loops, so its command line takes --threads (stage 6 on)
    generates: bool = False  # generates its kernels as source, kept in the kernel cache (stage 5 on)
    tiles: bool = False  # chooses a register tile for the CPU it is compiled for (stage 8 on)
    tunes: bool = False  # times candidate tiles at its first run on a CPU and keeps the fastest (stage 12 on)
    rewrites: bool = False  # computes a rewritten network, in which some layers' outputs exist only in part
    peak: str = ""  # one of PEAKS; by default its precision's vector instruction
    predecessor: int = 0  # the stage it adds its idea to, where that is not the one numbered before it

    def __post_init__(self):
        if self.precision not in (FLOAT32, *PRECISIONS):
            raise ValueError(f"{self.package}: precision {self.precision!r} is not one of {FLOAT32}, {PRECISIONS}")
        if not self.peak:
            object.__setattr__(self, "peak", PRECISION_PEAK[self.precision])
        if self.peak not in PEAKS:
            raise ValueError(f"{self.package}: peak {self.peak!r} is not one of {PEAKS}")
        if not self.predecessor:
            object.__setattr__(self, "predecessor", self.number - 1)

    @property
    def name(self) -> str:
        """Its folder's name: stage12_tuned."""
        return self.package.rpartition(".")[2]

    @property
    def number(self) -> int:
        return stage_number(self.name)


def stage_number(stage: str) -> int:
    return int(stage.removeprefix("stage").split("_")[0])
