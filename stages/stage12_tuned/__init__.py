"""Stage 12, tuned: each layer shape gets the register tile that ran fastest on this CPU, timed at the first run."""

from stages import Stage

STAGE = Stage(__name__, threads=True, generates=True, tiles=True, tunes=True)
