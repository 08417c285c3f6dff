"""Write tests/golden/<format>/ for built-in formats: `python tests/make_golden.py [NAME ...]`.

Run it only when a format is added or its on-disk version is bumped on purpose;
the golden datasets prove that today's readers still read yesterday's files
(``TestFormats.test_golden_dataset_reads_back`` in tests/test_conformance.py).
"""
from __future__ import annotations

import sys
from pathlib import Path

from storebench import formats
from storebench.formats._registry import BUILTIN
from storebench.formats.testing import write_golden

GOLDEN = Path(__file__).parent / "golden"


def main(names: list[str]) -> None:
    for name in names or [n for n in BUILTIN if n in formats.available()]:
        report = write_golden(formats.get(name), GOLDEN / name)
        print(f"{name}: {report.count} samples, {report.bytes_on_disk} bytes, {report.n_files} files")


if __name__ == "__main__":
    main(sys.argv[1:])
