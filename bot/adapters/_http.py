"""What the HTTP adapters (Prometheus, Alertmanager, /health) share."""

from __future__ import annotations

import errno

import aiohttp

__all__ = ["describe_connect_failure"]


def describe_connect_failure(exc: aiohttp.ClientConnectorError) -> str:
    """Say what went wrong in the words an on-call engineer would search for."""
    if isinstance(exc, aiohttp.ClientConnectorDNSError):
        return f"cannot resolve host {exc.host!r}"
    if exc.os_error.errno == errno.ECONNREFUSED:
        return "connection refused"
    return f"cannot connect ({exc.os_error.strerror or exc.os_error})"
