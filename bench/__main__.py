"""``python -m bench [NAME...] [--smoke]``: the same as ``hybridgen bench``."""

from hybridgen.bench import main

raise SystemExit(main())
