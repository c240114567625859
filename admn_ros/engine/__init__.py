"""Inference backends (eager, compile, tensorrt) and benchmarks."""
