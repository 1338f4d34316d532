"""Run ``genmodels`` and SIGKILL it at a chosen point (used by tests/test_reliability.py;
not collected by pytest).

    python cli_killer.py step:N -- train ddpm ...     # inside training step N (0-based)
    python cli_killer.py write:NAME -- train ddpm ... # during the atomic write of a file whose
                                                      # name starts with NAME: the temporary
                                                      # file is written, the rename not done
    python cli_killer.py none -- train ddpm ...       # no kill
"""

import os
import signal
import sys
from pathlib import Path


def _kill():
    os.kill(os.getpid(), signal.SIGKILL)


def main():
    spec = sys.argv[1]
    args = sys.argv[sys.argv.index("--") + 1 :]
    kind, _, arg = spec.partition(":")
    if kind == "step":
        from genmodels.train import loop

        at, lr_at = int(arg), loop._lr_at

        def patched(step, cfg):  # called once per step, between backward and the update
            if step == at:
                _kill()
            return lr_at(step, cfg)

        loop._lr_at = patched
    elif kind == "write":
        replace = os.replace

        def patched_replace(src, dst, *a, **k):
            if Path(dst).name.startswith(arg):
                _kill()
            return replace(src, dst, *a, **k)

        os.replace = patched_replace
    from genmodels.cli import main as cli_main

    sys.exit(cli_main(args))


if __name__ == "__main__":
    main()
