"""``python -m bench.scale [--smoke]``: the same as ``hybridgen bench scale``."""

import sys

from hybridgen.bench import main

if __name__ == "__main__":
    raise SystemExit(main(["scale", *sys.argv[1:]]))
