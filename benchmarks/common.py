"""Timing helpers for the benchmarks: interleaved repeats, medians, ratios against a baseline."""

import statistics
import time

import torch


def time_steps(step, batches, repeats: int = 7, steps: int = 20, warmup: int = 5) -> list:
    """Median seconds per call of ``step(batch)`` in each of ``repeats`` blocks."""
    for i in range(warmup):
        step(batches[i % len(batches)])
    blocks = []
    for r in range(repeats):
        t0 = time.perf_counter()
        for i in range(steps):
            step(batches[(r * steps + i) % len(batches)])
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        blocks.append((time.perf_counter() - t0) / steps)
    return blocks


def compare(contenders: dict, batches, baseline: str, rounds: int = 3, steps: int = 20) -> dict:
    """Time every contender in interleaved rounds (machines here are noisy); returns the
    median seconds per step of each and prints them with their ratio to ``baseline``."""
    times = {name: [] for name in contenders}
    for _ in range(rounds):
        for name, step in contenders.items():
            times[name] += time_steps(step, batches, steps=steps)
    medians = {name: statistics.median(ts) for name, ts in times.items()}
    for name, t in medians.items():
        print(f"{name:<44} {1e3 * t:8.2f} ms/step   {t / medians[baseline]:5.2f}x {baseline}")
    return medians
