"""The seed notebooks' claims, as data, and their verdicts computed from result JSON.

storebench grew from five notebooks, each of which measured one claim once.
:data:`CLAIMS` states each as data: where it comes from, what it says, the
notebook's own figure, the :data:`SCENARIOS` (``pytest bench`` arguments)
that produce the rows it needs, the two sides it compares (benchmark rows
chosen by their ``extra_info``: operation, format id, fetch strategy, workers
...) and what it asserts about them.  :func:`evaluate` turns result files
into a :class:`ClaimResult` per claim:

* a **ratio** per setting of the swept parameters (preset, n, cache state,
  workers): side A's images/s over side B's, from the median round times,
  with a percentile bootstrap 95% interval from the raw rounds
  (``--benchmark-save-data``; :func:`storebench.compare` uses the same
  resampling); or, for counted quantities (files, bytes on disk, bytes read
  per patch), the exact ratio;
* a **verdict** per setting: ``holds`` (the interval lies on the claimed side
  of 1, or inside the claimed band), ``does not hold`` (on the other side),
  ``inconclusive`` (it straddles); and per claim the common verdict, or
  ``depends on workers`` (or n, cache, preset) when settings disagree, each
  listed;
* ``not measured``, with the reason, when a side has no rows, its rows lack
  raw rounds, or no setting has both sides: never a verdict.

A correctness claim (002b) reads the outcome a test recorded in its row.
:func:`write_claims` writes ``claims.md`` and ``claims.csv``; ``storebench
claims RESULTS.json...`` runs it, and ``storebench run --claims`` (``make
claims``) runs exactly the scenarios the claims need first.
"""
from __future__ import annotations

import csv
import io
import math
import zlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from storebench import formats

from .compare import CONFIDENCE, MIN_ROUNDS, N_BOOT, _medians
from .results import Bench, Run

__all__ = ["CLAIMS", "FAILS", "HOLDS", "INCONCLUSIVE", "KINDS", "NOT_MEASURED", "SCENARIOS", "Claim",
           "ClaimResult", "Outcome", "Rows", "Scenario", "claim_scenarios", "evaluate", "get_claims",
           "render_markdown", "to_csv", "write_claims"]

HOLDS, FAILS, INCONCLUSIVE, NOT_MEASURED = "holds", "does not hold", "inconclusive", "not measured"
#: What a claim can assert about ``ratio = A / B``.
KINDS = {
    "faster": "A's images/s above B's (ratio > 1)",
    "similar": "A and B within the claim's margin of each other (1/margin < ratio < margin)",
    "fastest": "the best row of A above the best row of every other approach (ratio > 1)",
    "grows": "A's advantage over B larger at the largest n than at the smallest (ratio of ratios > 1)",
    "more": "A's counted quantity above B's (files, bytes on disk)",
    "at-most": "A's measured quantity at most the claim's limit (ratio = the quantity)",
    "correct": "a recorded correctness experiment: the unsafe way fails, the safe way never does",
}
SWEPT = ("preset", "n", "cache", "workers")


@dataclass(frozen=True)
class AtLeast:
    """An extra_info condition: a number of at least ``value`` (``Rows(where={"n": AtLeast(100)})``)."""

    value: float

    def __call__(self, x: Any) -> bool:
        return isinstance(x, (int, float)) and not isinstance(x, bool) and x >= self.value

    def __str__(self):
        return f">= {self.value:g}"


@dataclass(frozen=True)
class Rows:
    """One side of a comparison: rows of operation ``op`` whose format is ``fmt`` (an id, any
    option order; None: any) and whose extra_info has the values of ``where`` (a value, a tuple of
    allowed values, or a predicate such as :class:`AtLeast`)."""

    label: str
    op: str
    fmt: str | None = None
    where: Mapping[str, Any] = field(default_factory=dict)

    def matches(self, b: Bench) -> bool:
        if b.op != self.op or not b.is_storebench or b.is_bound:
            return False
        if self.fmt is not None and b.label != _canonical(self.fmt):
            return False
        for key, want in self.where.items():
            got = b.get(key)
            if callable(want):
                if not want(got):
                    return False
            elif isinstance(want, tuple):
                if got not in want:
                    return False
            elif got != want:
                return False
        return True

    def describe(self) -> str:
        cond = [f"{k}={_show(v)}" for k, v in self.where.items()]
        return ", ".join([f"op={self.op}"] + ([f"format {self.fmt}"] if self.fmt else []) + cond)


@dataclass(frozen=True)
class Scenario:
    """``pytest bench`` arguments producing the rows some claims need, at a default scale that
    finishes in minutes here, and (``notebook``) the options that change at the notebook's scale."""

    name: str
    args: tuple[str, ...]
    notebook: Mapping[str, str] = field(default_factory=dict)

    def pytest_args(self, scale: str = "default") -> list[str]:
        """The arguments; ``scale="notebook"`` replaces the options ``notebook`` names."""
        if scale not in ("default", "notebook"):
            raise ValueError(f"scale: expected default or notebook, got {scale!r}")
        args = list(self.args)
        if scale == "notebook":
            for opt, value in self.notebook.items():
                if opt in args:
                    args[args.index(opt) + 1] = value
                else:
                    args += [opt, value]
        return args


@dataclass(frozen=True)
class Claim:
    """A notebook's claim: what it says, its figure, and how our rows judge it.

    ``ratio`` is A over B: images/s for ``metric="time"`` (from raw round
    times), else the extra_info field ``metric`` of each side (B is not used
    by ``at-most``, whose ratio is A's value).  ``over`` are the parameters a
    setting is matched on; ``margin`` is the band of ``similar``, ``limit``
    the bound of ``at-most``.
    """

    id: str
    source: str
    statement: str
    notebook: str  # the notebook's own figure, as it gave it
    notebook_ratio: float | None  # the same as a ratio on our axis, where it gave one
    scenario: str
    kind: str
    a: Rows
    b: Rows | None = None
    metric: str = "time"
    over: tuple[str, ...] = SWEPT
    margin: float = 1.25
    limit: float | None = None
    setup: str = ""  # how our setting differs from the notebook's

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"claim {self.id}: kind {self.kind!r} is not one of {', '.join(KINDS)}")
        if self.scenario not in SCENARIOS:
            raise ValueError(f"claim {self.id}: unknown scenario {self.scenario!r}")
        if self.kind not in ("at-most", "correct") and self.b is None:
            raise ValueError(f"claim {self.id}: a {self.kind} claim compares two sides (b is missing)")

    @property
    def command(self) -> str:
        return f"storebench run --claims {self.id}"


@dataclass(frozen=True)
class Outcome:
    """A claim at one setting: our ratio, its interval, and the verdict there."""

    setting: dict[str, Any]
    ratio: float | None
    lo: float | None
    hi: float | None
    verdict: str
    why: str = ""  # the reason for not measured; what was seen for correctness claims
    rows: tuple[str, ...] = ()  # the benchmarks' fullnames

    @property
    def setting_text(self) -> str:
        return ", ".join(f"{k} {_show(v)}" for k, v in self.setting.items() if v is not None) or "-"


@dataclass(frozen=True)
class ClaimResult:
    claim: Claim
    outcomes: tuple[Outcome, ...]
    verdict: str  # holds, does not hold, inconclusive, depends on X, not measured
    depends_on: tuple[str, ...] = ()
    why: str = ""  # not measured: why

    @property
    def measured(self) -> tuple[Outcome, ...]:
        return tuple(o for o in self.outcomes if o.verdict != NOT_MEASURED)

    @property
    def ours(self) -> str:
        """Our ratio (interval) per measured setting, as text; settings named by what differs."""
        measured = self.measured
        varying = [k for k in self.claim.over if len({repr(o.setting.get(k)) for o in measured}) > 1]
        parts = []
        for o in measured:
            text = o.why if o.ratio is None else _ratio_text(o)
            where = ", ".join(f"{k} {_show(o.setting.get(k))}" for k in varying)
            parts.append(f"{text} ({where})" if where else text)
        return "; ".join(parts) if parts else "-"


# --------------------------------------------------------------------------- the claims

_VINBIG = "xray[side=600-750,bits=8]"
_APTOS = "fundus[side=256]"
_STACK_IMAGE = "hdf5[gzip,level=2,layout=stack,chunks=image]"
_STACK_AUTO = "hdf5[gzip,level=2,layout=stack,chunks=auto]"
_STACK_NONE = "hdf5[layout=stack,chunks=none]"
_LMDB_PICKLE = "lmdb[pickle]"

SCENARIOS: Mapping[str, Scenario] = {s.name: s for s in (
    Scenario("vinbig-fetch", ("bench/test_workloads.py::test_fetch", "--formats", "shelve,png", "--preset", _VINBIG,
                              "--sizes", "512", "--workers", "0,2,4", "--fetch-workload", "detect-aug",
                              "-k", "not lookup"),
             {"--sizes": "4394"}),
    Scenario("vinbig-dicom", ("bench/test_workloads.py::test_preprocess", "--formats", "dicom,png,shelve",
                              "--preset", "xray", "--sizes", "32", "--workers", "0",
                              "-k", "dicom-display and (dicom-xray and per-epoch or not dicom-xray and once)"),
             {"--sizes": "512"}),
    Scenario("aptos-preprocess", ("bench/test_workloads.py::test_preprocess", "--formats", "png", "--preset",
                                  "fundus", "--sizes", "256", "--workers", "0", "-k", "ben-preprocess"),
             {"--sizes": "3662", "--workers": "4"}),
    Scenario("aptos-hdf5", ("bench/test_io.py::test_random", "bench/test_io.py::test_write",
                            "bench/test_workloads.py::test_fetch", "--formats", f"{_STACK_IMAGE},{_STACK_AUTO},png",
                            "--preset", _APTOS, "--sizes", "512", "--workers", "0,2",
                            "-k", "not (png and (random or fetch)) and not (auto and fetch)"),
             {"--sizes": "3662", "--workers": "0,4"}),
    # An epoch of chunks='auto' costs minutes per round at n=512 here (each item inflates a whole
    # row of chunks, and the bound's loop does the same): the loader rows run at a smaller n.
    Scenario("aptos-loader", ("bench/test_loader.py", "--formats", f"{_STACK_IMAGE},{_STACK_AUTO}",
                              "--preset", _APTOS, "--sizes", "128", "--workers", "0,2", "--persistent", "on"),
             {"--sizes": "3662", "--workers": "0,4"}),
    Scenario("surf-zip", ("bench/test_loader.py", "bench/test_correctness.py", "--formats", "zip[encoding=raw],jpeg",
                          "--preset", "imagenet", "--sizes", "1000", "--workers", "1,8", "--persistent", "on"),
             {"--sizes": "10000"}),
    Scenario("realpython", ("bench/test_io.py::test_write", "bench/test_io.py::test_scan", "--formats",
                            f"{_LMDB_PICKLE},png,{_STACK_NONE}", "--preset", "cifar", "--sizes", "1,10,100,1000",
                            "--rounds", "5"),
             {"--sizes": "1,10,100,1000,10000,100000"}),
    # The vendors' claims (the modern-formats issue): shuffled single reads of Lance against default
    # and tuned Parquet, and the libraries' own streaming loaders over the same data.
    Scenario("vendor-random", ("bench/test_io.py::test_random", "--formats", "lance,parquet,parquet[1]",
                               "--preset", "cifar", "--sizes", "1000,10000", "--cache", "warm,cold"),
             {"--preset": "cifar,imagenet"}),
    Scenario("vendor-streaming", ("bench/test_native_loader.py", "--formats", "litdata,tar", "--preset", "cifar",
                                  "--sizes", "1000", "--workers", "0,2"),
             {"--preset": "cifar,imagenet", "--sizes": "10000"}),
    Scenario("notes-mmap", ("bench/test_patch.py", "--formats", "npy[advise=normal,layout=files],npy[layout=files]",
                            "--preset", "ct", "--sizes", "8", "--cache", "cold", "--patch", "224,64"),
             {"--sizes": "64"}),
)}

_VB = "VinBigData shelve notebook"
_AP = "APTOS HDF5 notebook"
_SU = "SURF packed-data-formats tutorial"
_RP = "Real Python \"three ways\" article"
_NO = "\"Data Loading Beyond the Memory Limit\" notes"
_OVER_NO_WORKERS = ("preset", "n", "cache")
_LA = "Lance (README and paper)"
_LD = "LitData README"

CLAIMS: tuple[Claim, ...] = (
    Claim("000a", _VB, "Reading a whole batch from one open shelve is a massive speedup over a DataLoader that "
          "opens the shelve for every item.", "\"massive speedup\"", None, "vinbig-fetch", "faster",
          Rows("shelve, one read_batch per batch", "fetch", "shelve", {"fetch": "batch"}),
          Rows("shelve reopened per item", "fetch", "shelve", {"fetch": "reopen"}),
          setup="8-bit radiographs, short side 600-750, detect-aug on every sample as the notebook timed it"),
    Claim("000b-1", _VB, "Batched shelve reading beats reading PNG files with 0 workers.", "faster", None,
          "vinbig-fetch", "faster",
          Rows("shelve, batched, 0 workers", "fetch", "shelve", {"fetch": "batch", "workers": 0}),
          Rows("PNG files, one per item, 0 workers", "fetch", "png", {"fetch": "item", "workers": 0})),
    Claim("000b-2", _VB, "Against PNG files with 2 or 4 workers there is not much in it.", "\"not much in it\"",
          1.0, "vinbig-fetch", "similar",
          Rows("shelve, batched", "fetch", "shelve", {"fetch": "batch", "workers": (2, 4)}),
          Rows("PNG files, one per item", "fetch", "png", {"fetch": "item", "workers": (2, 4)}),
          margin=1.25, setup="\"not much in it\" read as within 25% either way"),
    Claim("000b-3", _VB, "A parallel batched shelve loader (2 and 4 workers) is the fastest approach tried.",
          "fastest", None, "vinbig-fetch", "fastest",
          Rows("shelve, batched, 2 or 4 workers", "fetch", "shelve", {"fetch": "batch", "workers": (2, 4)}),
          Rows("every other fetch row", "fetch"), over=_OVER_NO_WORKERS),
    Claim("000c-png", _VB, "Reading the DICOM files on the fly (VOI LUT, MONOCHROME1, resize to 600) is way slower "
          "than reading PNGs.", "\"way slower\"", None, "vinbig-dicom", "faster",
          Rows("PNG written once after dicom-display", "preprocess", "png",
               {"preprocess": "dicom-display", "strategy": "once"}),
          Rows("DICOM, dicom-display on every read", "preprocess", "dicom",
               {"preprocess": "dicom-display", "strategy": "per-epoch"}),
          setup="full-size 12-bit radiographs (1500-3000 px); detect-aug after the display transform"),
    Claim("000c-shelve", _VB, "... and way slower than reading shelve.", "\"way slower\"", None, "vinbig-dicom",
          "faster",
          Rows("shelve written once after dicom-display", "preprocess", "shelve",
               {"preprocess": "dicom-display", "strategy": "once"}),
          Rows("DICOM, dicom-display on every read", "preprocess", "dicom",
               {"preprocess": "dicom-display", "strategy": "per-epoch"})),
    Claim("001a", _AP, "Preprocessing once instead of every epoch: 600 s to 35 s per epoch.", "17x (600 s -> 35 s)",
          17.0, "aptos-preprocess", "faster",
          Rows("Ben Graham preprocessing once, then classify-aug", "preprocess", "png",
               {"preprocess": "ben-preprocess", "strategy": "once"}),
          Rows("preprocessing on every read", "preprocess", "png",
               {"preprocess": "ben-preprocess", "strategy": "per-epoch"}),
          setup="epoch time only; extra_info total_s adds the one-time preprocessing"),
    Claim("001b", _AP, "One (N, S, S, 3) HDF5 dataset, gzip 2, one chunk per image: an epoch in 35 s; with h5py's "
          "chunks='auto' 25 min.", "43x (25 min -> 35 s)", 43.0, "aptos-hdf5", "faster",
          Rows("stack, one chunk per image", "random", _STACK_IMAGE),
          Rows("stack, chunks='auto'", "random", _STACK_AUTO),
          setup="shuffled single reads of 256x256 fundus photos (the notebook's Dataset reads one index)"),
    Claim("001b-loader", _AP, "... the same through a DataLoader epoch.", "43x", 43.0, "aptos-loader",
          "faster", Rows("stack, one chunk per image", "loader", _STACK_IMAGE),
          Rows("stack, chunks='auto'", "loader", _STACK_AUTO)),
    Claim("001c", _AP, "Opening the HDF5 file once per worker instead of in every __getitem__ considerably "
          "improves access speed.", "\"considerably\"", None, "aptos-hdf5", "faster",
          Rows("opened once per process", "fetch", _STACK_IMAGE, {"fetch": "item"}),
          Rows("opened in every __getitem__", "fetch", _STACK_IMAGE, {"fetch": "reopen"}),
          setup="the lookup rows add the notebook's np.where name lookup to the once-per-process reader"),
    Claim("001d", _AP, "One PNG per preprocessed image hit the notebook's file-count limit; one HDF5 file did not.",
          "files: n vs 1", None, "aptos-hdf5", "more",
          Rows("PNG files", "write", "png"), Rows("one HDF5 file", "write", _STACK_IMAGE), metric="n_files"),
    Claim("002a", _SU, "A zip of raw (unencoded) arrays beats a folder of JPEGs, with 1 worker and with 8.",
          "faster", None, "surf-zip", "faster",
          Rows("zip of raw arrays", "loader", "zip[encoding=raw]", {"workers": (1, 8)}),
          Rows("folder of JPEGs", "loader", "jpeg", {"workers": (1, 8)}),
          setup="ImageNet-like photos of short side 160-512 (the tutorial resized to 256)"),
    Claim("002b", _SU, "One ZipFile handle shared by forked workers fails (BadZipFile / bad magic); a handle per "
          "worker works.", "fails / works", None, "surf-zip", "correct",
          Rows("shared handle vs handle per worker", "correctness", where={"claim": "002b"})),
    Claim("003a", _RP, "Writing one image, LMDB has a slight lead over PNG files.", "slight lead", None,
          "realpython", "faster",
          Rows("LMDB of pickled objects", "write", _LMDB_PICKLE, {"n": 1}), Rows("PNG files", "write", "png", {"n": 1}),
          setup="every write fsyncs its files (the article's did not)"),
    Claim("003a-hdf5", _RP, "Writing one image, LMDB has a slight lead over HDF5.", "slight lead", None,
          "realpython", "faster",
          Rows("LMDB of pickled objects", "write", _LMDB_PICKLE, {"n": 1}),
          Rows("HDF5, one contiguous dataset", "write", _STACK_NONE, {"n": 1})),
    Claim("003a-disk", _RP, "LMDB uses more disk than PNG files.", "more disk", None, "realpython", "more",
          Rows("LMDB of pickled objects", "write", _LMDB_PICKLE), Rows("PNG files", "write", "png"),
          metric="bytes_on_disk", setup="bytes_on_disk counts allocated blocks, not LMDB's sparse map size"),
    Claim("003b", _RP, "Writing many images, PNG files are far slower than LMDB.", "far slower", None,
          "realpython", "faster",
          Rows("LMDB of pickled objects", "write", _LMDB_PICKLE, {"n": AtLeast(100)}),
          Rows("PNG files", "write", "png", {"n": AtLeast(100)})),
    Claim("003b-hdf5", _RP, "Writing many images, PNG files are far slower than HDF5.", "far slower", None,
          "realpython", "faster",
          Rows("HDF5, one contiguous dataset", "write", _STACK_NONE, {"n": AtLeast(100)}),
          Rows("PNG files", "write", "png", {"n": AtLeast(100)})),
    Claim("003b-grows", _RP, "... and the gap grows with n.", "grows", None, "realpython", "grows",
          Rows("LMDB of pickled objects", "write", _LMDB_PICKLE), Rows("PNG files", "write", "png"),
          over=_OVER_NO_WORKERS),
    Claim("003c", _RP, "Reading many images, LMDB is far faster than PNG files (a 40-second vs 4-second read).",
          "10x (40 s -> 4 s)", 10.0, "realpython", "faster",
          Rows("LMDB of pickled objects", "scan", _LMDB_PICKLE, {"n": AtLeast(100)}),
          Rows("PNG files", "scan", "png", {"n": AtLeast(100)})),
    Claim("003c-hdf5", _RP, "Reading many images, HDF5 is far faster than PNG files.", "10x", 10.0, "realpython",
          "faster",
          Rows("HDF5, one contiguous dataset", "scan", _STACK_NONE, {"n": AtLeast(100)}),
          Rows("PNG files", "scan", "png", {"n": AtLeast(100)})),
    Claim("004", _NO, "np.load(mmap_mode='r') reads only the patch it needs.", "only the patch (1x)", 1.0,
          "notes-mmap", "at-most",
          Rows("np.load(mmap_mode='r') of per-case .npy, cold", "patch", "npy[advise=normal,layout=files]",
               {"cache": "cold"}),
          metric="amplification", limit=2.0,
          setup="64^3 patches of int16 CT volumes; ratio = bytes read from storage per patch / patch bytes; "
                "'only the patch' read as at most 2x"),
    Claim("lance-parquet", _LA, "Lance: 100x faster random access than Parquet.", "100x", 100.0,
          "vendor-random", "faster", Rows("Lance", "random", "lance"), Rows("Parquet, default", "random", "parquet"),
          setup="Parquet as pyarrow writes it by default here: row groups of 1000 rows, no dictionary on the pixels"),
    Claim("lance-parquet-tuned", _LA, "Lance's random access also beats Parquet tuned for it (small row groups).",
          "faster", None, "vendor-random", "faster", Rows("Lance", "random", "lance"),
          Rows("Parquet, one row per row group", "random", "parquet[1]")),
    Claim("parquet-tuned", _LA, "Tuned Parquet has over 60x better random access than default Parquet "
          "(Lance's paper concedes it).", "60x", 60.0, "vendor-random", "faster",
          Rows("Parquet, one row per row group", "random", "parquet[1]"),
          Rows("Parquet, default", "random", "parquet")),
    Claim("litdata-webdataset", _LD, "LitData streams 2x faster than other streaming solutions (its ImageNet "
          "table, against WebDataset and MosaicML).", "2x", 2.0, "vendor-streaming", "faster",
          Rows("LitData StreamingDataLoader", "native-loader", "litdata"),
          Rows("WebDataset", "native-loader", "tar"),
          setup="a shuffled epoch from local disk, our tar shards read by webdataset; MosaicML's MDS is "
                "unavailable here (formats.unavailable()['mds'])"),
)


def get_claims(ids: Iterable[str] | None = None) -> list[Claim]:
    """The claims with these ids or id prefixes (``003a`` is 003a, 003a-hdf5 and 003a-disk; ``002`` is
    002a and 002b); every claim for None."""
    if ids is None:
        return list(CLAIMS)
    out: list[Claim] = []
    for want in ids:
        got = [c for c in CLAIMS if c.id.startswith(want)]
        if not got:
            raise KeyError(f"unknown claim {want!r}; claims: {', '.join(c.id for c in CLAIMS)}")
        out += [c for c in got if c not in out]
    return out


def claim_scenarios(claims: Iterable[Claim]) -> list[Scenario]:
    """The scenarios ``claims`` need, each once, in :data:`SCENARIOS` order."""
    names = {c.scenario for c in claims}
    return [s for s in SCENARIOS.values() if s.name in names]


# --------------------------------------------------------------------------- evaluation


def _canonical(fmt_id: str) -> str:
    try:
        return formats.from_id(fmt_id).id
    except (KeyError, ImportError, ValueError):
        return fmt_id


def _show(v: Any) -> str:
    if isinstance(v, tuple):
        return " or ".join(map(str, v))
    return str(v)


def _fmt_ratio(x: float) -> str:
    return f"{x:.3g}" if abs(x) < 1000 else f"{x:,.0f}"


def _ratio_text(o: Outcome) -> str:
    if o.ratio is None:
        return "-"
    if o.lo is None or o.hi is None or o.lo == o.hi == o.ratio:
        return f"{_fmt_ratio(o.ratio)}x"
    return f"{_fmt_ratio(o.ratio)}x [{_fmt_ratio(o.lo)}, {_fmt_ratio(o.hi)}]"


def _setting(b: Bench, over: Sequence[str]) -> tuple:
    return tuple(b.get(k) for k in over)


def _select(rows: Rows, benches: Sequence[Bench], over: Sequence[str]) -> dict[tuple, list[Bench]]:
    out: dict[tuple, list[Bench]] = {}
    for b in benches:
        if rows.matches(b):
            out.setdefault(_setting(b, over), []).append(b)
    return out


def _times(b: Bench) -> tuple[np.ndarray | None, str]:
    """Round times per item (seconds per image), or None and why not."""
    data = b.data
    if data is None:
        return None, (f"{b.fullname} was saved without raw round times (run with --benchmark-save-data, "
                      "as storebench run does)")
    if len(data) < MIN_ROUNDS:
        return None, f"{b.fullname} has {len(data)} round: an interval needs {MIN_ROUNDS} or more"
    items = b.items or 1
    return data / items, ""


def _fastest(benches: Sequence[Bench]) -> Bench:
    """The row with the highest median rate; ties by name, so the choice is stable."""
    return min(benches, key=lambda b: (b.median / (b.items or 1), b.fullname))


class _Boot:
    """Bootstrap medians of per-item round times, seeded per claim and setting (stable output)."""

    def __init__(self, claim: Claim, setting: tuple, n_boot: int, seed: int):
        key = zlib.crc32(repr((claim.id, setting)).encode())
        self.rng = np.random.default_rng([seed, key])
        self.n_boot = n_boot

    def medians(self, times: np.ndarray) -> np.ndarray:
        return _medians(times, self.rng, self.n_boot)


def _interval(samples: np.ndarray, confidence: float) -> tuple[float, float]:
    alpha = (1 - confidence) / 2
    lo, hi = np.quantile(samples, [alpha, 1 - alpha])
    return float(lo), float(hi)


def _judge(claim: Claim, ratio: float, lo: float, hi: float) -> str:
    if claim.kind == "similar":
        m = claim.margin
        if lo >= 1 / m and hi <= m:
            return HOLDS
        if lo > m or hi < 1 / m:
            return FAILS
        return INCONCLUSIVE
    if claim.kind == "at-most":
        assert claim.limit is not None
        if hi <= claim.limit:
            return HOLDS
        return FAILS if lo > claim.limit else INCONCLUSIVE
    if lo > 1:
        return HOLDS
    return FAILS if hi < 1 else INCONCLUSIVE


def _time_ratio(claim: Claim, a: Bench, b: Bench, boot: _Boot, confidence: float) -> Outcome | str:
    """Rate(A) / rate(B) with its interval, or why it cannot be had."""
    ta, why_a = _times(a)
    tb, why_b = _times(b)
    if ta is None or tb is None:
        return why_a or why_b
    ratio = float(np.median(tb) / np.median(ta))
    lo, hi = _interval(boot.medians(tb) / boot.medians(ta), confidence)
    return Outcome({}, ratio, lo, hi, _judge(claim, ratio, lo, hi), rows=(a.fullname, b.fullname))


def _value(b: Bench, metric: str) -> float | None:
    v = b.get(metric)
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) else None


def _counted(claim: Claim, a: Bench, b: Bench | None) -> Outcome | str:
    va = _value(a, claim.metric)
    if va is None:
        return f"{a.fullname} records no {claim.metric}"
    if b is None:  # at-most: the quantity itself
        return Outcome({}, va, va, va, _judge(claim, va, va, va), rows=(a.fullname,))
    vb = _value(b, claim.metric)
    if vb is None:
        return f"{b.fullname} records no {claim.metric}"
    if vb <= 0:
        return f"{b.fullname} records {claim.metric} {vb:g}: no ratio"
    r = va / vb
    return Outcome({}, r, r, r, _judge(claim, r, r, r), f"{claim.metric} {va:,.0f} vs {vb:,.0f}",
                   rows=(a.fullname, b.fullname))


def _correct(claim: Claim, a: Bench) -> Outcome:
    get = a.get
    unsafe = (get("shared_errors") or 0) + (get("shared_wrong") or 0)
    safe = (get("per_worker_errors") or 0) + (get("per_worker_wrong") or 0)
    reads = get("reads")
    kinds = ", ".join(get("error_types") or []) or "none"
    why = (f"shared handle: {unsafe} of {reads} reads failed or returned wrong bytes ({kinds}); "
           f"a handle per worker: {safe} of {reads}")
    if not isinstance(reads, int) or reads <= 0:
        return Outcome({}, None, None, None, NOT_MEASURED, f"{a.fullname} records no reads", (a.fullname,))
    verdict = HOLDS if unsafe > 0 and safe == 0 else FAILS
    return Outcome({}, None, None, None, verdict, why, (a.fullname,))


def _outcome_at(claim: Claim, a_rows: list[Bench], b_rows: list[Bench] | None, setting: tuple,
                boot: _Boot, confidence: float) -> Outcome:
    where = dict(zip(claim.over, setting))
    if claim.kind == "correct":
        o = _correct(claim, a_rows[-1])
    elif claim.metric != "time":
        o_or_why = _counted(claim, a_rows[-1], b_rows[-1] if b_rows else None)
        o = o_or_why if isinstance(o_or_why, Outcome) else Outcome({}, None, None, None, NOT_MEASURED, o_or_why)
    else:
        assert b_rows is not None
        a, b = (_fastest(a_rows), _fastest(b_rows)) if claim.kind == "fastest" else (a_rows[-1], b_rows[-1])
        o_or_why = _time_ratio(claim, a, b, boot, confidence)
        o = o_or_why if isinstance(o_or_why, Outcome) else Outcome({}, None, None, None, NOT_MEASURED, o_or_why)
        if isinstance(o_or_why, Outcome) and claim.kind == "fastest":
            o = Outcome({}, o.ratio, o.lo, o.hi, o.verdict, f"best other: {b.fullname}", o.rows)
    return Outcome(where, o.ratio, o.lo, o.hi, o.verdict, o.why, o.rows)


def _grows(claim: Claim, a: dict[tuple, list[Bench]], b: dict[tuple, list[Bench]], n_boot: int, seed: int,
           confidence: float) -> list[Outcome]:
    """(A/B at the largest n) / (A/B at the smallest n), per setting of the other parameters."""
    groups: dict[tuple, list[int]] = {}
    for setting in set(a) & set(b):
        d = dict(zip(claim.over, setting))
        rest = tuple((k, v) for k, v in d.items() if k != "n")
        if isinstance(d.get("n"), int):
            groups.setdefault(rest, []).append(d["n"])
    out = []
    for rest, sizes in sorted(groups.items(), key=lambda kv: repr(kv[0])):
        where = dict(rest)
        if len(sizes) < 2:
            out.append(Outcome(where, None, None, None, NOT_MEASURED, "needs both sides at two sizes or more"))
            continue
        small, large = min(sizes), max(sizes)

        def key(n, rest=rest):
            d = dict(rest, n=n)
            return tuple(d.get(k) for k in claim.over)
        rows = [a[key(large)][-1], b[key(large)][-1], a[key(small)][-1], b[key(small)][-1]]
        times = [_times(r) for r in rows]
        missing = next((why for t, why in times if t is None), None)
        if missing:
            out.append(Outcome(where, None, None, None, NOT_MEASURED, missing))
            continue
        boot = _Boot(claim, rest, n_boot, seed)
        ta_l, tb_l, ta_s, tb_s = (t for t, _ in times)
        assert ta_l is not None and tb_l is not None and ta_s is not None and tb_s is not None
        ratio = float((np.median(tb_l) / np.median(ta_l)) / (np.median(tb_s) / np.median(ta_s)))
        ml, mbl, ms, mbs = (boot.medians(t) for t in (ta_l, tb_l, ta_s, tb_s))
        lo, hi = _interval((mbl / ml) / (mbs / ms), confidence)
        where["n"] = f"{small} -> {large}"
        out.append(Outcome(where, ratio, lo, hi, _judge(claim, ratio, lo, hi),
                           f"A/B {np.median(tb_s) / np.median(ta_s):.3g}x at n={small}, "
                           f"{np.median(tb_l) / np.median(ta_l):.3g}x at n={large}",
                           tuple(r.fullname for r in rows)))
    return out


def _overall(claim: Claim, outcomes: list[Outcome], missing: str) -> ClaimResult:
    measured = [o for o in outcomes if o.verdict != NOT_MEASURED]
    if not measured:
        why = "; ".join(dict.fromkeys([o.why for o in outcomes if o.why] + ([missing] if missing else [])))
        return ClaimResult(claim, tuple(outcomes), NOT_MEASURED, why=why or "no rows")
    verdicts = {o.verdict for o in measured}
    if len(verdicts) == 1:
        return ClaimResult(claim, tuple(outcomes), verdicts.pop())
    varying = tuple(k for k in claim.over if len({repr(o.setting.get(k)) for o in measured}) > 1)
    return ClaimResult(claim, tuple(outcomes), "depends on " + (", ".join(varying) or "the setting"),
                       depends_on=varying)


def evaluate_claim(claim: Claim, benches: Sequence[Bench], *, n_boot: int = N_BOOT, seed: int = 0,
                   confidence: float = CONFIDENCE) -> ClaimResult:
    """One claim's outcomes and verdict from ``benches`` (rows of any number of result files)."""
    over = claim.over
    a = _select(claim.a, benches, over)
    hint = f"(run: {claim.command})"
    if not a:
        return _overall(claim, [], f"no rows of {claim.a.describe()} in the results {hint}")
    b: dict[tuple, list[Bench]] | None = None
    if claim.b is not None:
        b = _select(claim.b, benches, over)
        if claim.kind == "fastest":  # every other approach: the B rows that are not A's
            a_names = {r.fullname for rs in a.values() for r in rs}
            b = {k: [r for r in rs if r.fullname not in a_names] for k, rs in b.items()}
            b = {k: rs for k, rs in b.items() if rs}
        if not b:
            return _overall(claim, [], f"no rows of {claim.b.describe()} in the results {hint}")
    if claim.kind == "grows":
        assert b is not None
        return _overall(claim, _grows(claim, a, b, n_boot, seed, confidence), "")
    settings = sorted(a if b is None else set(a) & set(b), key=repr)
    if not settings:
        assert claim.b is not None
        return _overall(claim, [], f"no setting ({', '.join(over)}) has rows of both {claim.a.describe()} and "
                                   f"{claim.b.describe()} {hint}")
    outcomes = [_outcome_at(claim, a[s], None if b is None else b[s], s, _Boot(claim, s, n_boot, seed), confidence)
                for s in settings]
    return _overall(claim, outcomes, "")


def evaluate(runs: Sequence[Run], claims: Sequence[Claim] | None = None, *, n_boot: int = N_BOOT,
             seed: int = 0, confidence: float = CONFIDENCE) -> list[ClaimResult]:
    """Every claim (or ``claims``) judged from the rows of ``runs``; a later file's row of the same
    benchmark replaces an earlier one's."""
    latest: dict[str, Bench] = {}
    for run in runs:
        for bench in run.benches:
            latest[bench.fullname] = bench
    benches = list(latest.values())
    return [evaluate_claim(c, benches, n_boot=n_boot, seed=seed, confidence=confidence)
            for c in (CLAIMS if claims is None else claims)]


# --------------------------------------------------------------------------- output


def _md(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def render_markdown(results: Sequence[ClaimResult], runs: Sequence[Run] = (), *, figure: str | None = None) -> str:
    """``claims.md``: one row per claim, then each claim's settings and the rows used."""
    lines = ["# The notebooks' claims, as measured here", ""]
    for run in runs:
        mi = run.machine_info
        cpu = (mi.get("cpu") or {}).get("brand_raw") if isinstance(mi.get("cpu"), dict) else None
        lines.append(f"- `{run.path.name}`: {run.datetime or 'undated'}, {mi.get('node') or 'unknown machine'}"
                     f"{', ' + cpu if cpu else ''}, Python {mi.get('python_version') or '?'}")
    if runs:
        lines.append("")
    lines += ["Ratio: A over B (images/s, or the counted quantity), median with a bootstrap 95% interval "
              "from the raw rounds. Verdict: **holds** if the interval is on the claimed side of 1 (inside the "
              "band of a 'similar' claim, under the limit of an 'at most' one), **does not hold** if on the "
              "other, **inconclusive** if it straddles; **depends on X** where settings disagree.", ""]
    if figure:
        lines += [f"![claims]({figure})", ""]
    lines += ["| claim | source | statement | notebook | ours | verdict | command |",
              "|---|---|---|---|---|---|---|"]
    for r in results:
        c = r.claim
        verdict = r.verdict if r.verdict != NOT_MEASURED else f"not measured: {r.why}"
        lines.append(f"| {c.id} | {_md(c.source)} | {_md(c.statement)} | {_md(c.notebook)} | {_md(r.ours)} | "
                     f"**{_md(verdict)}** | `{c.command}` |")
    lines.append("")
    for r in results:
        c = r.claim
        lines += [f"## {c.id}: {c.statement}", "",
                  f"- Source: {c.source}; the notebook's figure: {c.notebook}.",
                  f"- A: {c.a.label} ({c.a.describe()})"]
        if c.b is not None:
            lines.append(f"- B: {c.b.label} ({c.b.describe()})")
        lines.append(f"- Asserts: {KINDS[c.kind]}" + (f"; margin {c.margin:g}" if c.kind == "similar" else "")
                     + (f"; limit {c.limit:g}" if c.limit is not None else "")
                     + ("" if c.metric == "time" else f"; quantity: {c.metric}"))
        if c.setup:
            lines.append(f"- Our setting: {c.setup}.")
        lines.append(f"- Verdict: **{r.verdict}**" + (f" ({r.why})" if r.why else ""))
        for o in r.outcomes:
            extra = f"; {o.why}" if o.why else ""
            lines.append(f"  - {o.setting_text}: {_ratio_text(o)} -> {o.verdict}{extra}")
        lines.append("")
    return "\n".join(lines)


CSV_FIELDS = ("claim", "source", "setting", "ratio", "lo", "hi", "verdict", "claim_verdict", "notebook",
              "notebook_ratio", "why", "rows")


def to_csv(results: Sequence[ClaimResult]) -> str:
    """``claims.csv``: one line per claim and setting (one line for a claim with no rows)."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(CSV_FIELDS)
    for r in results:
        c = r.claim
        for o in r.outcomes or (Outcome({}, None, None, None, NOT_MEASURED, r.why),):
            nums = ("" if x is None else f"{x:.6g}" for x in (o.ratio, o.lo, o.hi))
            w.writerow([c.id, c.source, o.setting_text, *nums, o.verdict, r.verdict, c.notebook,
                        "" if c.notebook_ratio is None else f"{c.notebook_ratio:g}", o.why, " ".join(o.rows)])
    return buf.getvalue()


def write_claims(results: Sequence[ClaimResult], out: str | Path, runs: Sequence[Run] = (), *,
                 figure: Callable[[Sequence[ClaimResult], Path], list[Path]] | None = None) -> list[Path]:
    """Write ``claims.md``, ``claims.csv`` (and, with ``figure``, the claims figure) into ``out``."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    written = figure(results, out) if figure else []
    fig = next((p.name for p in written if p.suffix == ".png"), None) or next((p.name for p in written), None)
    (out / "claims.md").write_text(render_markdown(results, runs, figure=fig), encoding="utf-8")
    (out / "claims.csv").write_text(to_csv(results), encoding="utf-8")
    return [out / "claims.md", out / "claims.csv", *written]
