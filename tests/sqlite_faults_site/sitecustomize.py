"""Loaded by a child Python on whose path the tests put this directory: SQLite faults on demand."""

import sqlite_faults

sqlite_faults.install_from_env()
