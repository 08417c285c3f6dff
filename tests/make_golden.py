"""Write tests/golden/<format>/ for built-in formats: `python tests/make_golden.py [NAME ...]`.

Run it only when a format is added or its on-disk version is bumped on purpose;
the golden datasets prove that today's readers still read yesterday's files.
"""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from golden_samples import golden_for  # noqa: E402
from storebench.formats._registry import BUILTIN  # noqa: E402

from storebench import formats  # noqa: E402

GOLDEN = Path(__file__).parent / "golden"


def main(names: list[str]) -> None:
    for name in names or [n for n in BUILTIN if n in formats.available()]:
        fmt = formats.get(name)
        report = fmt.write(golden_for(fmt), GOLDEN / name, overwrite=True)
        print(f"{name}: {report.count} samples, {report.bytes_on_disk} bytes, {report.n_files} files")


if __name__ == "__main__":
    main(sys.argv[1:])
