"""The tiny dataset committed under tests/golden/<format>/ by every built-in format.

Built from fixed arithmetic patterns, never from a random generator or a library
whose output could change, so the same samples can be rebuilt forever.
"""
from __future__ import annotations

import numpy as np
from storebench.formats import Sample


def golden_samples() -> list[Sample]:
    y, x = np.mgrid[0:12, 0:16]
    grad = (x * 13 + y * 7).astype(np.uint8)
    rgb = np.stack([grad, grad[::-1], (x * y).astype(np.uint8)], axis=-1)
    return [
        Sample("golden/rgb 0", rgb, label=1, boxes=[[1, 2, 8.5, 10]], box_labels=[3],
               meta={"rad_id": "R1", "score": 0.25, "checked": True, "note": None}),
        Sample("golden/grey ü", grad, label=0),
        Sample("golden/grey (H,W,1)", grad[:5, :7, None].copy(), label=2),
        Sample("golden/xray16", (x * 4000 + y * 97).astype(np.uint16), label=-1,
               boxes=[[0, 0, 16, 12], [3, 3, 4, 5]], box_labels=[0, 13], meta={"view": "PA"}),
        Sample("golden/rgba", np.concatenate([rgb, grad[..., None]], axis=-1), label=7),
        Sample("golden/grey+alpha", np.stack([grad, 255 - grad], axis=-1), label=5),
        Sample("golden/uint16 rgb", (rgb.astype(np.uint16) * 257), label=4),
    ]


def golden_for(fmt) -> list[Sample]:
    """The golden samples this format can store."""
    return [s for s in golden_samples() if s.mode in fmt.modes]
