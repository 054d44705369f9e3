"""Files shipped with the package for the benchmarks (class lists, the papers' tables) and dataset preparation."""
