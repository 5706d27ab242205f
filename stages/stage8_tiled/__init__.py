"""Stage 8, tiled: a register-tiled conv kernel that keeps a tile of sums in vector registers."""
