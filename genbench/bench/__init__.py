"""The speed benchmark, ``genbench bench``: training and sampling of every model
(:mod:`~genbench.bench.models`), Inception and the scoring path
(:mod:`~genbench.bench.scoring`), and its terminal tables (:mod:`~genbench.bench.tables`)."""

from genbench.bench.models import bench_model, benchmark, matmul_gflops, phase_times
from genbench.bench.scoring import bench_inception, bench_scoring, inception_gflop_per_image
from genbench.bench.tables import print_bench

__all__ = [
    "bench_inception",
    "bench_model",
    "bench_scoring",
    "benchmark",
    "inception_gflop_per_image",
    "matmul_gflops",
    "phase_times",
    "print_bench",
]
