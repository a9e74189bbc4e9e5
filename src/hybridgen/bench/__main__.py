"""``python -m hybridgen.bench [NAME...] [--smoke]``: the same as ``hybridgen bench``."""

from . import main

raise SystemExit(main())
