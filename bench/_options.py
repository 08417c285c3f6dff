"""The benchmark suite's command-line options, parsed once per session.

``pytest bench`` with no options is the quick default sweep; with benchmarks
disabled (``make test``) the same tests run once each as smoke tests on tiny
sizes unless ``--sizes`` says otherwise.
"""
from __future__ import annotations

import argparse
import multiprocessing
import re
from dataclasses import asdict, dataclass
from pathlib import Path

DEFAULT_DATA_DIR = ".storebench-data"
CACHE_STATES = ("warm", "cold")
SMOKE_SIZE = 10
SMOKE_BATCH = 4  # several batches of a tiny dataset, so every worker gets work
#: Patch shapes of the patch rows and the random-patch workload: 2-D images, volumes.
DEFAULT_PATCH = ((224, 224), (64, 64, 64))


@dataclass(frozen=True)
class BenchOptions:
    """Everything the command line decides about a benchmark session.

    ``formats`` is ``None`` for every registered format, else the names or
    ids asked for.  ``smoke`` is true when benchmarks are disabled: each test
    then runs once, on the smoke defaults.
    """

    sizes: tuple[int, ...] = (100, 1000)
    workers: tuple[int, ...] = (0, 2)
    formats: tuple[str, ...] | None = None
    presets: tuple[str, ...] = ("cifar",)
    cache: tuple[str, ...] = ("warm",)
    rounds: int = 3
    data_dir: Path = Path(DEFAULT_DATA_DIR)
    batch_size: int = 64
    mp_contexts: tuple[str, ...] = ("fork",)
    persistent: tuple[bool, ...] = (False, True)
    seed: int = 0
    folds: int = 5
    epochs: int = 3
    patch: tuple[tuple[int, ...], tuple[int, ...]] = DEFAULT_PATCH
    fetch_workload: str = "none"
    stores: tuple[str, ...] = ("local",)
    rtt_ms: float = 20.0
    bandwidth_mbps: float = 1000.0
    concurrency: int = 8
    smoke: bool = False

    def to_json(self) -> dict:
        d = asdict(self)
        d["data_dir"] = str(self.data_dir)
        d["patch"] = format_patch(self.patch)  # as --patch takes it
        return d

    def patch_for(self, spatial_rank: int) -> tuple[int, ...]:
        """The patch shape of an image with ``spatial_rank`` sides (2 or 3)."""
        return self.patch[1] if spatial_rank == 3 else self.patch[0]


def _items(text: str, what: str) -> list[str]:
    # Commas inside brackets belong to a format id: hdf5[gzip,level=4].
    out = [t.strip() for t in re.split(r",(?![^\[]*\])", text) if t.strip()]
    if not out:
        raise ValueError(f"{what}: expected a comma-separated list, got {text!r}")
    return list(dict.fromkeys(out))  # drop repeats, keep order


def parse_int(text: str, what: str, *, minimum: int = 0) -> int:
    """An int with an optional ``k`` or ``M`` suffix (``100k`` is 100000)."""
    m = re.fullmatch(r"\s*(\d+)\s*([kKmM]?)\s*", str(text))
    if not m:
        raise ValueError(f"{what}: {text!r} is not a whole number")
    v = int(m.group(1)) * {"": 1, "k": 1000, "m": 1000_000}[m.group(2).lower()]
    if v < minimum:
        raise ValueError(f"{what}: must be at least {minimum}, got {v}")
    return v


def parse_sizes(text: str) -> tuple[int, ...]:
    """``"10,1k,100k"`` -> ``(10, 1000, 100000)``; sizes are at least 1."""
    return tuple(dict.fromkeys(parse_int(t, "--sizes", minimum=1) for t in _items(text, "--sizes")))


def parse_workers(text: str) -> tuple[int, ...]:
    return tuple(dict.fromkeys(parse_int(t, "--workers") for t in _items(text, "--workers")))


def parse_choice(text: str, what: str, choices) -> tuple[str, ...]:
    got = _items(text, what)
    bad = [t for t in got if t not in choices]
    if bad:
        raise ValueError(f"{what}: unknown {', '.join(map(repr, bad))}; choose from {', '.join(choices)}")
    return tuple(got)


def parse_cache(text: str) -> tuple[str, ...]:
    """``warm``, ``cold`` or ``both``."""
    text = text.strip()
    return CACHE_STATES if text == "both" else parse_choice(text, "--cache", CACHE_STATES)


def parse_presets(text: str) -> tuple[str, ...]:
    """Bundled presets by name, with size options (``ct[side=512,slices=300]``, canonical form
    kept), or your own data as ``folder:PATH`` / ``cifar10:PATH``."""
    from storebench.fixtures import PRESETS, preset_id
    from storebench.fixtures.folder import USER_PRESETS, is_user_preset

    out, bad = [], []
    for t in _items(text, "--preset"):
        if is_user_preset(t):
            out.append(t)
            continue
        try:
            out.append(preset_id(t))
        except ValueError as err:
            if t.split("[", 1)[0] in PRESETS:
                raise ValueError(f"--preset: {err}") from None
            bad.append(t)
    if bad:
        raise ValueError(f"--preset: unknown {', '.join(map(repr, bad))}; choose from "
                         f"{', '.join(PRESETS)} (sizes as options: ct[side=512,slices=300]), "
                         f"{', '.join(k + ':PATH' for k in USER_PRESETS)}")
    return tuple(dict.fromkeys(out))


def parse_patch(text: str) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """``--patch``: ``(2-D patch shape, volume patch shape)``.

    ``224`` is 224x224 for images and 224^3 for volumes; ``224,64`` is
    224x224 for images and 64^3 for volumes; explicit shapes ``HxW`` and
    ``DxHxW`` set their kind (``512x256,32x128x128``, or ``32x128x128``
    alone, keeping the 2-D default).  The defaults are 224x224 and 64^3.
    """
    image: tuple[int, ...] | None = None
    volume: tuple[int, ...] | None = None
    bare: list[int] = []
    for item in _items(text, "--patch"):
        if "x" not in item.lower():
            bare.append(parse_int(item, "--patch", minimum=1))
            continue
        shape = tuple(parse_int(t, "--patch", minimum=1) for t in item.lower().split("x"))
        if len(shape) not in (2, 3):
            raise ValueError(f"--patch: {item!r} is neither HxW (images) nor DxHxW (volumes)")
        if (image if len(shape) == 2 else volume) is not None:
            raise ValueError(f"--patch: two {'2-D' if len(shape) == 2 else 'volume'} patch shapes in {text!r}")
        if len(shape) == 2:
            image = shape
        else:
            volume = shape
    if len(bare) > 2 or (len(bare) == 2 and (image or volume)):
        raise ValueError(f"--patch: expected a side, 2-D side,volume side, or HxW / DxHxW shapes, got {text!r}")
    if len(bare) == 2:
        image, volume = (bare[0],) * 2, (bare[1],) * 3
    elif bare:
        image = image or (bare[0],) * 2
        volume = volume or (bare[0],) * 3
    return image or DEFAULT_PATCH[0], volume or DEFAULT_PATCH[1]


def parse_workload(text: str, what: str) -> str:
    """A workload name of :data:`storebench.workloads.WORKLOADS` (or a ``+`` chain of them)."""
    from storebench.workloads import WORKLOADS

    text = text.strip()
    bad = [p for p in text.split("+") if p not in WORKLOADS]
    if bad:
        raise ValueError(f"{what}: unknown workload {', '.join(map(repr, bad))}; choose from {', '.join(WORKLOADS)}")
    return text


def format_patch(patch: tuple[tuple[int, ...], tuple[int, ...]]) -> str:
    """``((224, 224), (64, 64, 64))`` -> ``"224,64"``; other shapes as ``HxW,DxHxW``."""
    if all(len(set(s)) == 1 for s in patch):
        return f"{patch[0][0]},{patch[1][0]}"
    return ",".join("x".join(map(str, s)) for s in patch)


def _count(text: str) -> int:
    """argparse ``type`` of --folds and --epochs: a whole number >= 1."""
    try:
        return parse_int(text, "count", minimum=1)
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {text!r}") from err


def parse_persistent(text: str) -> tuple[bool, ...]:
    return tuple({"off": False, "on": True}[t] for t in parse_choice(text, "--persistent", ("off", "on")))


def default_mp_context() -> str:
    methods = multiprocessing.get_all_start_methods()
    return "fork" if "fork" in methods else methods[0]


def add_options(parser) -> None:
    """Register the options with pytest (called from the root conftest)."""
    g = parser.getgroup("storebench", "storebench benchmark sweep")
    g.addoption("--sizes", default=None, metavar="N,N,...",
                help="dataset sizes, e.g. 100,1k,100k (default 100,1000; "
                     f"{SMOKE_SIZE} when benchmarks are disabled)")
    g.addoption("--workers", default="0,2", metavar="W,W,...",
                help="DataLoader num_workers values (default 0,2)")
    g.addoption("--formats", default=None, metavar="NAME|ID,...",
                help="formats to benchmark, by name (every variant) or id, e.g. npy,lmdb,hdf5[lzf] "
                     "(default: every available format)")
    g.addoption("--preset", default="cifar", metavar="PRESET,...",
                help="fixtures preset(s) to benchmark (default cifar), sizes as options "
                     "(ct[side=512,slices=300], xray[side=2048-3000]), or your own images: "
                     "folder:PATH (class subfolders of png/jpg/dcm) or cifar10:PATH (the python batches)")
    g.addoption("--cache", default="warm", metavar="warm|cold|both",
                help="page-cache state(s) of read benchmarks, e.g. cold or cold,warm (default warm); "
                     "cold evicts the dataset's files before every round and checks that it did")
    g.addoption("--rounds", default="3", metavar="R", help="timed rounds per benchmark (default 3)")
    g.addoption("--data-dir", default=None, metavar="DIR",
                help=f"where generated datasets are cached (default {DEFAULT_DATA_DIR}/ in the rootdir)")
    g.addoption("--batch-size", default=None, metavar="B",
                help=f"read_batch and DataLoader batch size (default 64; {SMOKE_BATCH} when "
                     "benchmarks are disabled)")
    g.addoption("--mp-context", default=None, metavar="METHOD,...",
                help="DataLoader start methods to sweep, e.g. fork,spawn,forkserver (default fork "
                     "where the platform has it)")
    g.addoption("--persistent", default="off,on", metavar="off,on",
                help="persistent_workers settings for loaders with workers (default off,on)")
    g.addoption("--seed", default="0", metavar="S", help="dataset seed (default 0)")
    g.addoption("--folds", default=5, type=_count, metavar="K",
                help="cross-validation folds in the preprocess rows' total time (default 5)")
    g.addoption("--epochs", default=3, type=_count, metavar="E",
                help="epochs per fold in the preprocess rows' total time (default 3)")
    g.addoption("--patch", default="224,64", metavar="SIDE[,SIDE]",
                help="patch shape of the patch rows and the random-patch workload: 224 is 224x224 for "
                     "images and 224^3 for volumes, 224,64 is 224x224 and 64^3 (the default), HxW and "
                     "DxHxW give shapes; a patch is clipped to the image")
    g.addoption("--store", default="local", metavar="local|s3|local,s3",
                help="where the read rows read from: local files, and/or s3 (test_remote: each dataset "
                     "uploaded once to a local S3 endpoint, moto's, on 127.0.0.1; default local)")
    g.addoption("--rtt-ms", default="20", metavar="MS",
                help="the latency model's round-trip time per request for remote rows (default 20)")
    g.addoption("--bandwidth-mbps", default="1000", metavar="MBIT/S",
                help="the latency model's bandwidth for remote rows (default 1000: 1 Gbit/s)")
    g.addoption("--concurrency", default="8", metavar="C",
                help="the latency model's concurrent requests for remote rows (default 8)")
    g.addoption("--fetch-workload", default="none", metavar="WORKLOAD",
                help="the workload the fetch rows run on every sample (default none: the fetch alone); "
                     "e.g. detect-aug, as the VinBigData notebook timed its loaders")


STORES = ("local", "s3")


def parse_positive(text: str, what: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise ValueError(f"{what}: expected a number, got {text!r}") from None
    if not v > 0:
        raise ValueError(f"{what}: must be > 0, got {text!r}")
    return v


def benchmarks_disabled(config) -> bool:
    """Whether pytest-benchmark only runs each benchmark once (``--benchmark-disable``)."""
    try:
        return bool(config.getoption("benchmark_disable")) and not config.getoption("benchmark_enable")
    except ValueError:  # pytest-benchmark is not installed
        return True


def from_config(config) -> BenchOptions:
    """Parse the options of a pytest config; ``ValueError`` names the bad option."""
    opt = config.getoption
    smoke = benchmarks_disabled(config)
    sizes = opt("sizes")
    batch = opt("batch_size")
    data_dir = opt("data_dir")
    mp = opt("mp_context")
    formats = opt("formats")
    return BenchOptions(
        sizes=parse_sizes(sizes) if sizes is not None else ((SMOKE_SIZE,) if smoke else (100, 1000)),
        workers=parse_workers(opt("workers")),
        formats=tuple(_items(formats, "--formats")) if formats is not None else None,
        presets=parse_presets(opt("preset")),
        cache=parse_cache(opt("cache")),
        rounds=parse_int(opt("rounds"), "--rounds", minimum=1),
        data_dir=(Path(data_dir).resolve() if data_dir is not None
                  else Path(config.rootpath) / DEFAULT_DATA_DIR),
        batch_size=(parse_int(batch, "--batch-size", minimum=1) if batch is not None
                    else (SMOKE_BATCH if smoke else 64)),
        mp_contexts=(parse_choice(mp, "--mp-context", tuple(multiprocessing.get_all_start_methods()))
                     if mp is not None else (default_mp_context(),)),
        persistent=parse_persistent(opt("persistent")),
        seed=parse_int(opt("seed"), "--seed"),
        folds=opt("folds"),
        epochs=opt("epochs"),
        patch=parse_patch(opt("patch")),
        fetch_workload=parse_workload(opt("fetch_workload"), "--fetch-workload"),
        stores=parse_choice(opt("store"), "--store", STORES),
        rtt_ms=parse_positive(opt("rtt_ms"), "--rtt-ms"),
        bandwidth_mbps=parse_positive(opt("bandwidth_mbps"), "--bandwidth-mbps"),
        concurrency=parse_int(opt("concurrency"), "--concurrency", minimum=1),
        smoke=smoke,
    )


def workload_sizes(config, opts: BenchOptions) -> tuple[int, ...]:
    """The sizes of the workload, distributed and patch rows: ``--sizes`` if given, else the smallest default.

    A workload costs milliseconds per sample, so the default n=1000 would
    make these rows alone outlast the whole default sweep (10 minutes).
    """
    if config.getoption("sizes") is not None or opts.smoke:
        return opts.sizes
    return (min(opts.sizes),)
