"""The image's HEALTHCHECK: exit 0 when the bot's ``GET /healthz`` answers 200.

The slim base has no curl, so the check is Python's urllib. It reads the
same ``BOT_HOST``/``BOT_PORT`` as ``sms-bot serve``, so overriding them (e.g.
``BOT_HOST=127.0.0.1`` with host networking) keeps the check right; an
address bound to every interface is probed on loopback.
"""

from __future__ import annotations

import os
import sys
import urllib.error
import urllib.request

__all__ = ["healthz_url", "main"]

_ANY_ADDRESS = {"", "0.0.0.0", "::"}  # noqa: S104 (names the wildcard, binds nothing)


def healthz_url(env: dict[str, str] | os._Environ[str]) -> str:
    """The URL of ``/healthz`` that ``sms-bot serve`` listens on under ``env``."""
    host = env.get("BOT_HOST", "127.0.0.1").strip()
    if host in _ANY_ADDRESS:
        host = "127.0.0.1"
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    port = env.get("BOT_PORT", "8090").strip() or "8090"
    return f"http://{host}:{port}/healthz"


def main() -> int:
    url = healthz_url(os.environ)
    try:
        with urllib.request.urlopen(url, timeout=4) as resp:  # noqa: S310 (http URL built above)
            status = int(resp.status)
    except (urllib.error.URLError, OSError) as exc:
        print(f"healthcheck: {url}: {exc}", file=sys.stderr)
        return 1
    return 0 if status == 200 else 1


if __name__ == "__main__":
    sys.exit(main())
