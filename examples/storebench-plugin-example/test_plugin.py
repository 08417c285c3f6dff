"""pngdir passes storebench's whole conformance suite: this subclass is all it takes."""
from pathlib import Path

from storebench_plugin_example import PNGDir

from storebench.formats.testing import FormatTests


class TestPNGDir(FormatTests):
    format_cls = PNGDir
    golden = Path(__file__).parent / "golden"  # written once by storebench.formats.testing.write_golden
