"""Print the README's fault matrix: ``python tests/faults.py [FORMAT ...]``.

The fault injection itself ships as :mod:`storebench.formats.testing.faults`,
so that :class:`~storebench.formats.testing.FormatTests` can run the damaged-file
probe on any format; this script only keeps the README's command working.
"""
from __future__ import annotations

import os
import sys

from storebench.formats.testing.faults import main

if __name__ == "__main__":
    main(sys.argv[1:])
    sys.stdout.flush()  # os._exit skips the interpreter's flush of a piped stdout
    sys.stderr.flush()
    os._exit(0)
