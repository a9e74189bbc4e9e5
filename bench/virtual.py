"""``python -m bench.virtual [--smoke]``: the same as ``hybridgen bench virtual``."""

import sys

from hybridgen.bench import main

if __name__ == "__main__":
    raise SystemExit(main(["virtual", *sys.argv[1:]]))
