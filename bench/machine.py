"""``python -m bench.machine [--smoke]``: the same as ``hybridgen bench machine``."""

import sys

from hybridgen.bench import main

if __name__ == "__main__":
    raise SystemExit(main(["machine", *sys.argv[1:]]))
