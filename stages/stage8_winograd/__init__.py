"""Stage 8, Winograd: stage 7's register-tiled kernels, with Winograd F(2x2, 3x3) for the 3x3 convolutions."""
