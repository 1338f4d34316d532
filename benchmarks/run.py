"""Every peer comparison in one run: the same as ``genmodels bench``.

    PYTHONPATH=src python benchmarks/run.py --quick                 # every benchmark, short
    PYTHONPATH=src python benchmarks/run.py --only ode,gp --out bench.json

Prints every row's ratio (or difference) to its peer beside the issues' target, writes the
rows to ``--out`` (JSON) and rewrites the table in docs/benchmarks.md between the
``<!-- bench:begin -->`` / ``<!-- bench:end -->`` markers. The runner is
``genmodels.bench``; each benchmark script's entry is ``rows(quick, tiny=False)``.
"""

from __future__ import annotations

import argparse
import sys

from genmodels.bench import MissingPeerError, add_arguments, main

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_arguments(parser)
    try:
        sys.exit(main(parser.parse_args()))
    except (MissingPeerError, ValueError, FileNotFoundError) as e:
        sys.exit(f"benchmarks/run.py: error: {e}")
