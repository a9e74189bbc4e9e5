"""``python -m hybridgen``: the same as the ``hybridgen`` command."""

from .cli import main

raise SystemExit(main())
