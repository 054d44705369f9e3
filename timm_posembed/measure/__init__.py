"""Measurements: parameters and GMACs (``complexity``), throughput (``bench``, ``bench_config``), the demo, the
seed-to-seed spread rule (``seed_spread``), the machine a number was measured on (``environment``), and the studies
behind benchmarks/RESULTS.md (``clustering_cost``, ``supertoken_cost``, ``cope_resize``, ``profiles``). Import names
from those modules."""
