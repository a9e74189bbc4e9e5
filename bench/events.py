"""``python -m bench.events [--smoke]``: the same as ``hybridgen bench events``."""

import sys

from hybridgen.bench import main

if __name__ == "__main__":
    raise SystemExit(main(["events", *sys.argv[1:]]))
