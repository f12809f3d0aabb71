"""``python -m bench``: run every benchmark and print its ratios."""

from __future__ import annotations

import asyncio

from bench.health_concurrency import main as health_concurrency


def main() -> None:
    asyncio.run(health_concurrency())


if __name__ == "__main__":
    main()
