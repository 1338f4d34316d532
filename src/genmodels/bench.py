"""``genmodels bench``: every peer comparison of the library, measured in one run.

Each benchmark script in the source checkout's ``benchmarks/`` directory that compares
genmodels with a public implementation exposes one entry, ``rows(quick, tiny=False)``,
returning a list of rows made by :func:`row`. This module finds the scripts, checks that
their peers are installed (they are the ``bench`` extra, never a dependency of the library),
runs them, prints one table with every ratio beside its target, writes the rows to a JSON
file and rewrites the table in ``docs/benchmarks.md`` between the marker comments
``<!-- bench:begin -->`` and ``<!-- bench:end -->``.

A row compares one number of ours with the same number of a peer, measured in the same
process: a time (``measure="ratio"``: ours / peer, lower is better), a difference of a
quality number (``measure="difference"``: ours - peer, e.g. test NLL in nats) or an
agreement (``measure="relative difference"``: |ours - peer| / |peer|). ``limit`` is the target
the issues set (the row passes when the compared value is at most ``limit``), ``None`` where
no target was set (the row is reported, not judged).

Peers are imported only inside a benchmark's ``rows``, never when this module or the CLI is
imported.
"""

from __future__ import annotations

import datetime as _dt
import importlib.util
import json
import math
import os
import platform
import sys
import time
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "BENCHMARKS",
    "Benchmark",
    "MissingPeerError",
    "markdown_table",
    "main",
    "rewrite_doc",
    "row",
    "run",
]

BEGIN, END = "<!-- bench:begin -->", "<!-- bench:end -->"
MEASURES = ("ratio", "difference", "relative difference")
ROW_KEYS = (
    "bench", "name", "unit", "ours", "peer", "peer_name", "measure", "value", "ratio",
    "target", "limit", "pass", "note",
)  # fmt: skip


class MissingPeerError(ImportError):
    """A benchmark's peer library is not installed (the ``bench`` extra)."""


@dataclass(frozen=True)
class Benchmark:
    """One benchmark: the script in ``benchmarks/`` and the peers it imports."""

    name: str
    script: str
    peers: tuple[str, ...]
    what: str


BENCHMARKS: dict[str, Benchmark] = {
    b.name: b
    for b in (
        Benchmark(
            "ode", "ode_speed.py", ("torchdiffeq",), "odeint / odeint_adjoint vs torchdiffeq"
        ),
        Benchmark("sde", "sde_speed.py", ("torchsde",), "sdeint / BrownianMotion vs torchsde"),
        Benchmark(
            "series",
            "series.py",
            ("torchcde", "torchdiffeq"),
            "spline coefficients and Neural CDE step vs torchcde; latent ODE step vs torchdiffeq",
        ),
        Benchmark("flows", "flows_vs_zuko.py", ("zuko",), "coupling flows and FFJORD vs zuko"),
        Benchmark("ddpm", "ddpm_toys.py", ("diffusers",), "DDPM / DDIM sampling vs diffusers"),
        Benchmark(
            "gp", "processes.py", ("gpytorch", "sklearn"), "exact GP vs GPyTorch and scikit-learn"
        ),
    )
}


def row(
    bench: str,
    name: str,
    ours: float,
    peer: float,
    peer_name: str,
    *,
    unit: str = "s",
    limit: float | None = 1.0,
    measure: str = "ratio",
    note: str = "",
) -> dict:
    """One comparison row. ``value`` is ours / peer (``measure="ratio"``), ours - peer
    (``"difference"``) or |ours - peer| / |peer| (``"relative difference"``); the row passes
    when ``value <= limit`` (``pass`` is None without a limit)."""
    if measure not in MEASURES:
        raise ValueError(f"measure must be one of {MEASURES}, got {measure!r}")
    ours, peer = float(ours), float(peer)
    ratio = ours / peer if peer > 0 and ours >= 0 else None
    if measure == "ratio":
        value = ratio
        target = None if limit is None else f"≤ {limit:g}x"
    elif measure == "difference":
        value = ours - peer
        target = None if limit is None else f"≤ {limit:+g} {unit}"
    else:
        value = abs(ours - peer) / abs(peer) if peer != 0 else abs(ours - peer)
        target = None if limit is None else f"≤ {limit:g}"
    ok = None if limit is None or value is None or math.isnan(value) else bool(value <= limit)
    return {
        "bench": bench,
        "name": name,
        "unit": unit,
        "ours": ours,
        "peer": peer,
        "peer_name": peer_name,
        "measure": measure,
        "value": value,
        "ratio": ratio,
        "target": target,
        "limit": limit,
        "pass": ok,
        "note": note,
    }


def peer_version(module: str) -> str:
    """``"name version"`` of an installed peer (imports it: call inside ``rows`` only)."""
    mod = importlib.import_module(module)
    return f"{module} {getattr(mod, '__version__', '?')}"


def benchmarks_dir() -> Path:
    """The source checkout's ``benchmarks/`` (``genmodels bench`` runs its scripts)."""
    here = Path(__file__).resolve().parents[2] / "benchmarks"
    if not (here / "ode_speed.py").exists():
        raise FileNotFoundError(
            f"genmodels bench runs the scripts of the source checkout's benchmarks/ directory, "
            f"not found at {here}; run it from a clone installed with pip install -e '.[bench]'"
        )
    return here


def check_peers(names: list[str]) -> None:
    """Raise one :class:`MissingPeerError` naming every missing peer and the extra to install."""
    missing = sorted(
        {p for n in names for p in BENCHMARKS[n].peers if importlib.util.find_spec(p) is None}
    )
    if missing:
        who = ", ".join(n for n in names if set(BENCHMARKS[n].peers) & set(missing))
        raise MissingPeerError(
            f"benchmark(s) {who} need {', '.join(missing)}, not installed: the peers are the "
            "'bench' extra (pip install -e '.[bench]')"
        )


def load(name: str):
    """Import ``benchmarks/<script>`` of benchmark ``name`` as a module (imports its peers)."""
    b = BENCHMARKS[name]
    path = benchmarks_dir() / b.script
    spec = importlib.util.spec_from_file_location(f"_genmodels_bench_{name}", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    if not hasattr(mod, "rows"):
        raise TypeError(f"{path} has no rows(quick, tiny=False) entry")
    return mod


def parse_only(only: list[str] | None) -> list[str]:
    if not only:
        return list(BENCHMARKS)
    names = [n.strip() for o in only for n in o.split(",") if n.strip()]
    bad = [n for n in names if n not in BENCHMARKS]
    if bad or not names:
        known = ", ".join(BENCHMARKS)
        raise ValueError(f"--only {','.join(bad) or '(empty)'}: unknown benchmark; known: {known}")
    return list(dict.fromkeys(names))


def _num(v) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "—"
    a = abs(v)
    if a == 0:
        return "0"
    if a >= 100:
        return f"{v:.0f}"
    if a >= 1:
        return f"{v:.3g}" if a < 10 else f"{v:.1f}"
    if a >= 1e-3:
        return f"{v:.3g}"
    return f"{v:.1e}"


def _value(r: dict) -> str:
    if r["value"] is None:
        return "—"
    if r["measure"] == "ratio":
        return f"{r['value']:.2f}x"
    if r["measure"] == "difference":
        return f"{r['value']:+.3f}"
    return f"{r['value']:.1e}"


def _verdict(r: dict) -> str:
    return {True: "pass", False: "**FAIL**", None: "—"}[r["pass"]]


def markdown_table(rows: list[dict]) -> list[str]:
    """The rows as a Markdown table (one line each, after the header)."""
    out = [
        "| bench | row | ours | peer | unit | ours vs peer | target | |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        name = (r["name"] + (f" ({r['note']})" if r["note"] else "")).replace("|", "\\|")
        out.append(
            f"| {r['bench']} | {name} | {_num(r['ours'])} | {r['peer_name']} {_num(r['peer'])} "
            f"| {r['unit']} | {_value(r)} | {r['target'] or '—'} | {_verdict(r)} |"
        )
    return out


def text_table(rows: list[dict]) -> str:
    """A plain table for the terminal: every row's compared value beside its target."""
    head = ("bench", "row", "ours", "peer", "vs peer", "target", "")
    lines = [
        (
            r["bench"],
            r["name"],
            f"{_num(r['ours'])} {r['unit']}",
            f"{r['peer_name']} {_num(r['peer'])}",
            _value(r),
            r["target"] or "—",
            {True: "pass", False: "FAIL", None: ""}[r["pass"]],
        )
        for r in rows
    ]
    width = [max(len(str(x[i])) for x in [head, *lines]) for i in range(len(head))]
    fmt = lambda x: "  ".join(str(c).ljust(w) for c, w in zip(x, width)).rstrip()
    return "\n".join([fmt(head), fmt(["-" * w for w in width]), *map(fmt, lines)])


def _mode(result: dict) -> str:
    if result["tiny"]:
        return "tiny (test-sized, numbers meaningless)"
    return "quick" if result["quick"] else "full"


def rewrite_doc(path: Path, result: dict) -> None:
    """Replace the table between the markers in ``path`` with ``result``'s rows; rows of the
    benchmarks this run did not include stay as they were (with their own run line)."""
    text = path.read_text()
    if text.count(BEGIN) != 1 or text.count(END) != 1 or text.index(BEGIN) > text.index(END):
        raise ValueError(f"{path}: expected one {BEGIN} ... {END} block")
    head, rest = text.split(BEGIN)
    old, tail = rest.split(END)
    ran = set(result["benchmarks"])
    keep_rows = [
        ln
        for ln in old.splitlines()
        if ln.startswith("| ") and not ln.startswith("| bench |")
        and ln.split("|")[1].strip() not in ran
    ]  # fmt: skip
    keep_runs = [
        ln for ln in old.splitlines() if ln.startswith("- `") and ln[3:].split("`")[0] not in ran
    ]
    runs = [
        f"- `{name}`: {_mode(result)} run of {result['started']}, "
        f"{b['wall_s']:.1f} s wall / {b['cpu_s']:.1f} s process CPU; "
        f"{', '.join(b['peer_versions'])}; torch {result['torch']}, {result['threads']} thread(s)"
        for name, b in result["benchmarks"].items()
    ]
    table = markdown_table(result["rows"])
    order = list(BENCHMARKS)
    body_rows = sorted(
        keep_rows + table[2:],
        key=lambda ln: (
            order.index(ln.split("|")[1].strip())
            if ln.split("|")[1].strip() in order
            else len(order)
        ),
    )
    run_lines = sorted(
        keep_runs + runs,
        key=lambda ln: order.index(ln[3:].split("`")[0]) if ln[3:].split("`")[0] in order else 99,
    )
    block = "\n".join(
        ["", *table[:2], *body_rows, "", "Written by `genmodels bench`; each benchmark's run:", ""]
        + run_lines
        + [""]
    )
    path.write_text(head + BEGIN + block + "\n" + END + tail)


def _command() -> str:
    argv = list(sys.argv)
    if argv and (argv[0].endswith("genmodels") or argv[0].endswith("__main__.py")):
        return " ".join(["genmodels", *argv[1:]])
    return " ".join(["python", *argv])


def run(
    names: list[str],
    *,
    quick: bool = False,
    tiny: bool = False,
    threads: int = 1,
    progress=print,
) -> dict:
    """Run the named benchmarks; returns the JSON-ready result (rows and timings)."""
    import torch

    check_peers(names)
    benchmarks_dir()
    torch.set_num_threads(threads)
    started = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    w0, c0 = time.perf_counter(), time.process_time()
    rows, per = [], {}
    for name in names:
        progress(f"[bench] {name}: {BENCHMARKS[name].what} ...")
        w, c = time.perf_counter(), time.process_time()
        got = load(name).rows(quick, tiny=tiny)
        for r in got:
            missing = [k for k in ROW_KEYS if k not in r]
            if missing or r["bench"] != name:
                raise ValueError(f"benchmark {name}: malformed row {r.get('name')!r} ({missing})")
        per[name] = {
            "wall_s": time.perf_counter() - w,
            "cpu_s": time.process_time() - c,
            "rows": len(got),
            "peer_versions": sorted({peer_version(p) for p in BENCHMARKS[name].peers}),
        }
        progress(f"[bench] {name}: {len(got)} rows in {per[name]['wall_s']:.0f} s wall")
        rows += got
    return {
        "schema": 1,
        "command": _command(),
        "quick": quick,
        "tiny": tiny,
        "threads": threads,
        "started": started,
        "wall_s": time.perf_counter() - w0,
        "cpu_s": time.process_time() - c0,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, "
        f"load average {', '.join(f'{x:.1f}' for x in os.getloadavg())}",
        "benchmarks": per,
        "rows": rows,
    }


def default_doc() -> Path | None:
    p = Path(__file__).resolve().parents[2] / "docs" / "benchmarks.md"
    return p if p.exists() else None


def add_arguments(p) -> None:
    """The options of ``genmodels bench`` and ``python benchmarks/run.py``."""
    p.add_argument("--quick", action="store_true", help="short runs (at most 10 minutes in all)")
    p.add_argument(
        "--only",
        action="append",
        metavar="NAME",
        help=f"run only these benchmarks (comma-separated or repeated): {', '.join(BENCHMARKS)}",
    )
    p.add_argument("--out", default="bench.json", help="JSON file of the rows (default bench.json)")
    p.add_argument(
        "--doc",
        default=None,
        help="Markdown file whose bench table is rewritten (default: docs/benchmarks.md of the "
        "checkout)",
    )
    p.add_argument("--no-doc", action="store_true", help="do not rewrite any Markdown file")
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    p.add_argument(
        "--tiny", action="store_true", help="smallest sizes, for tests: the numbers mean nothing"
    )


def main(args) -> int:
    """Run ``genmodels bench`` with parsed ``args``; returns the exit code."""
    names = parse_only(args.only)
    if args.threads < 1:
        raise ValueError(f"--threads must be >= 1, got {args.threads}")
    out = Path(args.out)
    if out.suffix != ".json":
        raise ValueError(f"--out {out}: expected a .json file name")
    doc = None if args.no_doc else (Path(args.doc) if args.doc else default_doc())
    if doc is not None and not doc.is_file():
        raise ValueError(f"--doc {doc}: file not found")
    if doc is not None and BEGIN not in doc.read_text():
        raise ValueError(f"--doc {doc}: no {BEGIN} marker to write the table between")
    result = run(names, quick=args.quick, tiny=args.tiny, threads=args.threads)
    print()
    print(text_table(result["rows"]))
    failed = sum(r["pass"] is False for r in result["rows"])
    print(
        f"\n{len(result['rows'])} rows, {failed} below target; {result['wall_s']:.1f} s wall, "
        f"{result['cpu_s']:.1f} s process CPU"
    )
    out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {out}")
    if doc is not None:
        rewrite_doc(doc, result)
        print(f"rewrote the table in {doc}")
    return 0
