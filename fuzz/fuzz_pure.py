"""Fuzz the pure core with atheris, by hand (not in CI; CI runs the same targets under Hypothesis).

    .venv/bin/pip install atheris
    .venv/bin/python -m fuzz.fuzz_pure -max_total_time=120 -print_final_stats=1 [corpus_dir]
    .venv/bin/python -m fuzz.fuzz_pure -target=host -runs=100000    # one target only

Any libFuzzer flag works; a crash is saved as `crash-<sha1>` and replays with
`.venv/bin/python -m fuzz.fuzz_pure crash-<sha1>`.
"""

from __future__ import annotations

import sys
from collections.abc import Callable

import atheris

with atheris.instrument_imports():
    from fuzz.targets import TARGETS, run_one


def main(argv: list[str]) -> None:
    """Run every target (the first byte of an input picks one), or the one named by -target=NAME."""
    chosen = [arg for arg in argv if arg.startswith("-target=")]
    target: Callable[[bytes], None] = run_one
    if chosen:
        target = TARGETS[chosen[-1].removeprefix("-target=")]
    atheris.Setup([arg for arg in argv if arg not in chosen], target)
    atheris.Fuzz()


if __name__ == "__main__":
    main(sys.argv)
