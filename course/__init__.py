"""Generators of the course's pictures and tables."""
