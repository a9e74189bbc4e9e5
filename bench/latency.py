"""``python -m bench.latency [--smoke]``: the same as ``hybridgen bench latency``."""

import sys

from hybridgen.bench import main

if __name__ == "__main__":
    raise SystemExit(main(["latency", *sys.argv[1:]]))
