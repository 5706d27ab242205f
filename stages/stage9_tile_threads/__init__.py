"""Stage 9, tile threads: a conv's output tiles shared out over the threads, in an order that keeps data in cache."""

from stages import Stage

STAGE = Stage(__name__, threads=True, generates=True, tiles=True)
