"""The product's settings plus the baseline view of the benchmarks (nothing else changes)."""

from project.settings import *  # noqa: F401,F403

ROOT_URLCONF = "bench.urls"
