"""`python -m bench`: run every scenario (BENCH_QUICK=1 for the small version)."""

from __future__ import annotations

if __name__ == "__main__":  # spawned load processes import this module too
    from bench.run import main

    raise SystemExit(main())
