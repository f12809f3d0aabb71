"""``python -m bench``: run every benchmark and print its ratios."""

from __future__ import annotations

import asyncio

from bench.health_concurrency import main as health_concurrency
from bench.ingest import main as ingest
from bench.latency import main as latency
from bench.startup import main as startup
from bench.storm import main as storm


def main() -> None:
    asyncio.run(health_concurrency())
    startup()
    ingest()
    storm()
    latency()


if __name__ == "__main__":
    main()
