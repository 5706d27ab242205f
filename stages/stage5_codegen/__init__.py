"""Stage 5, codegen: generated, shape-specialized source for the whole network, compiled just in time."""

from stages import Stage

STAGE = Stage(__name__, generates=True)
