"""Entry points kept for ``python -m bench.NAME``; the benchmarks live in :mod:`hybridgen.bench`."""
