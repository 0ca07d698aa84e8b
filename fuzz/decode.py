"""Fuzz the decoder for as long as you like: python -m fuzz.decode --minutes 10

Run from the checkout's root. Runs the properties of tests/pipeline/test_fuzz.py
(arbitrary bytes, mutated real images in every format) with fresh random seeds until the
time is up; any input that makes decode raise something other than BadImage, or hang, is
printed by Hypothesis and stops the run.
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("TAGGER_FUZZ_EXAMPLES", "2000")  # before the test module reads it

from tests.pipeline import test_fuzz


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=5.0)
    deadline = time.monotonic() + 60 * parser.parse_args().minutes
    rounds = 0
    while time.monotonic() < deadline:
        test_fuzz.test_arbitrary_bytes()
        test_fuzz.test_mutated_real_images()
        rounds += 1
        print(f"round {rounds}: {2 * test_fuzz.EXAMPLES} inputs, no failure", flush=True)


if __name__ == "__main__":
    main()
