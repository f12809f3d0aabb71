"""``python -m bench``: run every benchmark and print its ratios."""

from __future__ import annotations

import asyncio

from bench.health_concurrency import main as health_concurrency
from bench.ingest import main as ingest
from bench.startup import main as startup


def main() -> None:
    asyncio.run(health_concurrency())
    startup()
    ingest()


if __name__ == "__main__":
    main()
