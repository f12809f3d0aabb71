"""A fake SMS backend + node exporter for a real Prometheus to scrape.

The bot's performance check is PromQL over metrics that only a running SMS
would produce. This exporter produces them from a ``Profile`` of target values
(the rows of the runbook's Performance Baselines table), so an integration test
can assert "HEALTHY reads as ~340 ms p95" against a real Prometheus.

Two properties make the numbers exact rather than approximately right:

* every counter is ``rate * (now - started_at)``, so ``rate()`` over any window
  is the profile's rate whatever the scrape timing;
* the histogram's cumulative bucket fractions are built so that the linear
  interpolation ``histogram_quantile`` does inside a bucket lands exactly on
  the p95 and p99 targets.

``started_at`` lies ``warm_up_s`` in the past (an hour by default): the harness
backfills that history into Prometheus, so ``rate(...[5m])`` sees a full
window from the first second instead of under-reading until five minutes pass.
"""

from __future__ import annotations

import bisect
import socket
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from types import TracebackType

from aiohttp import web

__all__ = [
    "BUCKETS",
    "DEGRADED",
    "HANDLERS",
    "HEALTHY",
    "NEVER_FAILED",
    "SLOW_HANDLER",
    "ExporterServer",
    "MetricSample",
    "Profile",
    "cumulative_fractions",
    "format_openmetrics",
    "format_text",
    "samples_at",
]

# Upper bounds (seconds) of the latency histogram, as the SMS backend exports them.
BUCKETS: tuple[float, ...] = (0.05, 0.1, 0.25, 0.35, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0)

HANDLERS: tuple[str, ...] = ("/api/v1/students", "/api/v1/courses", "/health")
SLOW_HANDLER = "/api/v1/courses"
# Share of each handler among requests faster than _FAST_LIMIT_S, and among slower ones:
# the slow handler owns most of the tail, /health none of it.
_FAST_LIMIT_S = 0.25
_FAST_SHARES = (0.55, 0.30, 0.15)
_SLOW_SHARES = (0.25, 0.75, 0.0)
_CPU_COUNT = 4
_GIB = 1024**3


@dataclass(frozen=True)
class Profile:
    """Target values the scraped metrics must make the default queries return."""

    name: str
    rps: float
    error_fraction: float
    p95_s: float
    p99_s: float
    cpu_busy: float
    memory_used: float
    disk_used: float
    memory_total_bytes: float = 16 * _GIB
    disk_size_bytes: float = 100 * _GIB

    def __post_init__(self) -> None:
        cumulative_fractions(self)  # fail at import time on impossible targets


def cumulative_fractions(profile: Profile) -> tuple[float, ...]:
    """Fraction of all requests at or below each of ``BUCKETS``.

    Within the bucket ``(lo, hi]`` holding a target ``x`` for quantile ``q``, the
    fractions at ``lo`` and ``hi`` are chosen so that ``q`` sits at the same
    relative position as ``x``: that is exactly what ``histogram_quantile``
    inverts. Elsewhere the cumulative curve is linear between anchors. Targets
    in the same or adjacent buckets would need conflicting anchors, so they
    are rejected.
    """
    targets = [(0.95, profile.p95_s), (0.99, profile.p99_s)]
    anchors: dict[float, float] = {0.0: 0.0}
    previous_q, previous_hi = 0.0, -1.0
    for index, (q, x) in enumerate(targets):
        if not 0 < x <= BUCKETS[-1]:
            raise ValueError(f"{profile.name}: target {x} s is outside (0, {BUCKETS[-1]}]")
        k = bisect.bisect_left(BUCKETS, x)
        hi = BUCKETS[k]
        lo = BUCKETS[k - 1] if k else 0.0
        if lo <= previous_hi:
            raise ValueError(f"{profile.name}: p95 and p99 must not share or touch a bucket")
        t = (x - lo) / (hi - lo)
        next_q = targets[index + 1][0] if index + 1 < len(targets) else 1.0
        if lo == 0.0:
            d_lo = q
        else:
            room_below = (q - previous_q) / 3 / t
            room_above = (next_q - q) / 3 / (1 - t) if t < 1 else float("inf")
            d_lo = min(room_below, room_above) * t
        d_hi = d_lo * (1 - t) / t
        if q + d_hi > next_q:
            raise ValueError(f"{profile.name}: target {x} s leaves no room above quantile {q}")
        anchors[lo], anchors[hi] = q - d_lo, q + d_hi
        previous_q, previous_hi = q, hi
    anchors.setdefault(BUCKETS[-1], 1.0)
    xs = sorted(anchors)
    fractions = []
    for bound in BUCKETS:
        j = bisect.bisect_left(xs, bound)
        if xs[j] == bound:
            fractions.append(anchors[bound])
        else:
            x0, x1 = xs[j - 1], xs[j]
            y0, y1 = anchors[x0], anchors[x1]
            fractions.append(y0 + (y1 - y0) * (bound - x0) / (x1 - x0))
    return tuple(fractions)


HEALTHY = Profile(
    name="healthy",
    rps=30.22,
    error_fraction=0.0133,
    p95_s=0.34,
    p99_s=1.9,
    cpu_busy=0.15,
    memory_used=0.153,
    disk_used=0.0295,
)

# A backend that has served thousands of requests and never a 5xx: like a real
# client library, the exporter has no status="500" series at all (see samples_at).
NEVER_FAILED = Profile(
    name="never-failed",
    rps=30.22,
    error_fraction=0.0,
    p95_s=0.34,
    p99_s=1.9,
    cpu_busy=0.15,
    memory_used=0.153,
    disk_used=0.0295,
)

DEGRADED = Profile(
    name="degraded",
    rps=6.0,
    error_fraction=0.08,
    p95_s=1.25,
    p99_s=6.5,
    cpu_busy=0.97,
    memory_used=0.97,
    disk_used=0.93,
)


@dataclass(frozen=True)
class MetricSample:
    """One exposition line: metric name, labels (without job/instance) and value."""

    name: str
    labels: Mapping[str, str]
    value: float


def _handler_rates(profile: Profile) -> list[list[float]]:
    """Requests per second per handler per bucket (non-cumulative; last entry is > max bound)."""
    fractions = cumulative_fractions(profile)
    masses = [b - a for a, b in zip((0.0, *fractions), fractions, strict=False)]
    masses.append(1.0 - fractions[-1])
    bounds = (*BUCKETS, float("inf"))
    return [
        [
            profile.rps * mass * (fast if bound <= _FAST_LIMIT_S else slow)
            for mass, bound in zip(masses, bounds, strict=True)
        ]
        for fast, slow in zip(_FAST_SHARES, _SLOW_SHARES, strict=True)
    ]


def _le(bound: float) -> str:
    return "+Inf" if bound == float("inf") else repr(bound)


def samples_at(profile: Profile, *, uptime_s: float) -> list[MetricSample]:
    """Every metric of the fake SMS host after ``uptime_s`` seconds: counters grow linearly."""
    out: list[MetricSample] = []
    per_handler = _handler_rates(profile)
    bounds = (*BUCKETS, float("inf"))
    midpoints = [(a + b) / 2 for a, b in zip((0.0, *BUCKETS), BUCKETS, strict=False)]
    midpoints.append(BUCKETS[-1] * 1.5)
    for handler, rates in zip(HANDLERS, per_handler, strict=True):
        total = sum(rates)
        cumulative = 0.0
        for bound, rate in zip(bounds, rates, strict=True):
            cumulative += rate
            out.append(
                MetricSample(
                    "http_request_duration_seconds_bucket",
                    {"handler": handler, "le": _le(bound)},
                    cumulative * uptime_s,
                )
            )
        seconds = sum(r * m for r, m in zip(rates, midpoints, strict=True))
        out.append(
            MetricSample(
                "http_request_duration_seconds_sum", {"handler": handler}, seconds * uptime_s
            )
        )
        out.append(
            MetricSample(
                "http_request_duration_seconds_count", {"handler": handler}, total * uptime_s
            )
        )
        ok = total * (1 - profile.error_fraction)
        for status, rate in (
            ("200", ok * 0.99),
            ("404", ok * 0.01),
            ("500", total * profile.error_fraction),
        ):
            if rate == 0:
                # A labelled counter exists from its first count on: a status never
                # served has no series (not a series at 0), as in prometheus_client.
                continue
            out.append(
                MetricSample(
                    "http_requests_total",
                    {"handler": handler, "method": "GET", "status": status},
                    rate * uptime_s,
                )
            )
    for cpu in range(_CPU_COUNT):
        for mode, share in (
            ("idle", 1 - profile.cpu_busy),
            ("user", profile.cpu_busy * 0.7),
            ("system", profile.cpu_busy * 0.3),
        ):
            out.append(
                MetricSample(
                    "node_cpu_seconds_total", {"cpu": str(cpu), "mode": mode}, share * uptime_s
                )
            )
    total_mem = profile.memory_total_bytes
    out.append(MetricSample("node_memory_MemTotal_bytes", {}, total_mem))
    out.append(
        MetricSample("node_memory_MemAvailable_bytes", {}, total_mem * (1 - profile.memory_used))
    )
    # A second, half-full mount makes sure the queries really select mountpoint="/".
    for mountpoint, device, size, used in (
        ("/", "/dev/sda1", profile.disk_size_bytes, profile.disk_used),
        ("/boot", "/dev/sda2", 1 * _GIB, 0.5),
    ):
        labels = {"device": device, "fstype": "ext4", "mountpoint": mountpoint}
        out.append(MetricSample("node_filesystem_size_bytes", labels, size))
        out.append(MetricSample("node_filesystem_avail_bytes", labels, size * (1 - used)))
    return out


def _label_text(labels: Mapping[str, str]) -> str:
    if not labels:
        return ""
    escaped = (
        f'{key}="{value.replace(chr(92), chr(92) * 2).replace(chr(34), chr(92) + chr(34))}"'
        for key, value in labels.items()
    )
    return "{" + ",".join(escaped) + "}"


def format_text(samples: Iterable[MetricSample]) -> str:
    """Prometheus text exposition (untyped, which is all ``rate()`` needs)."""
    return "".join(f"{s.name}{_label_text(s.labels)} {s.value!r}\n" for s in samples)


def format_openmetrics(
    history: Iterable[tuple[float, Iterable[MetricSample]]], *, extra_labels: Mapping[str, str]
) -> str:
    """OpenMetrics with timestamps, for ``promtool tsdb create-blocks-from openmetrics``.

    ``extra_labels`` are the ``job``/``instance`` labels Prometheus adds when it
    scrapes, so backfilled and scraped samples land in the same series.
    """
    lines = []
    for at, samples in history:
        for s in samples:
            labels = _label_text({**s.labels, **extra_labels})
            lines.append(f"{s.name}{labels} {s.value!r} {at:.3f}\n")
    # promtool wants each series' samples together and in time order.
    lines.sort(key=lambda line: (line.rsplit(" ", 2)[0], float(line.rsplit(" ", 1)[1])))
    return "".join(lines) + "# EOF\n"


@dataclass
class ExporterServer:
    """``/metrics`` for ``profile`` on 127.0.0.1, on a port the OS picks.

    Async so it can run on whichever loop owns it (the Prometheus harness runs
    it on a background thread's loop, so it keeps answering scrapes while
    tests run on their own loops).
    """

    profile: Profile
    warm_up_s: float = 3600.0
    clock: Callable[[], float] = time.time
    started_at: float = field(init=False, default=0.0)
    _runner: web.AppRunner | None = field(init=False, default=None, repr=False)
    _port: int = field(init=False, default=0)

    @property
    def host_port(self) -> str:
        """The scrape target, and the ``instance`` label Prometheus will attach."""
        return f"127.0.0.1:{self._port}"

    @property
    def url(self) -> str:
        """Base URL of the exporter."""
        return f"http://{self.host_port}"

    @property
    def metrics_url(self) -> str:
        """What Prometheus scrapes."""
        return f"{self.url}/metrics"

    def samples(self, at: float) -> list[MetricSample]:
        """The metrics as they read at wall-clock time ``at`` (seconds since the epoch)."""
        return samples_at(self.profile, uptime_s=max(0.0, at - self.started_at))

    async def _metrics(self, request: web.Request) -> web.Response:
        return web.Response(
            text=format_text(self.samples(self.clock())),
            content_type="text/plain",
            charset="utf-8",
            headers={"X-Profile": self.profile.name},
        )

    async def start(self) -> None:
        """Bind first (no free-port race), then serve."""
        self.started_at = self.clock() - self.warm_up_s
        app = web.Application()
        app.router.add_get("/metrics", self._metrics)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        self._port = sock.getsockname()[1]
        await web.SockSite(self._runner, sock).start()

    async def close(self) -> None:
        """Stop serving; idempotent so teardown paths need not track state."""
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> ExporterServer:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()
