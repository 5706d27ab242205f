"""Stage 15, AMX bfloat16: the convs' register tile becomes AMX tiles, 8,192 multiply-adds per instruction."""
