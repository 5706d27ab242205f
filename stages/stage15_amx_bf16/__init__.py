"""Stage 15, AMX bfloat16: the convs' register tile becomes AMX tiles, 8,192 multiply-adds per instruction."""

from stages import Stage

STAGE = Stage(__name__, precision="bf16", threads=True, generates=True, tiles=True, tunes=True, peak="tdpbf16ps")
