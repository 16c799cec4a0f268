"""Optimizer kernels written in kernel languages, gated by the suite like any implementation."""
