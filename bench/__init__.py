"""Benchmarks: `make bench` (latency of every stage and of the peers) and `make stageN profile` (per layer)."""
