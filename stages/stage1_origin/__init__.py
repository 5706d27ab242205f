"""Stage 1, origin: ResNet-50 as plain nested loops, the math as written."""
