"""In-process fakes at the protocol boundaries (surface, Docker, SMS database, Prometheus).

They return the adapters' real result types, so the procedures under test
see exactly what they would see in production. mypy checks this module
(pyproject.toml): ``fake_deps`` puts each fake where its adapter's protocol
is expected, so a fake that drifts from its adapter fails the type check.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from bot.adapters.alertmanager import AlertInfo
from bot.adapters.backups import BackupStore
from bot.adapters.docker import (
    ContainerDetails,
    ContainerInfo,
    ContainerNotFound,
    ContainerOverview,
    ContainerState,
    ContainerStats,
    ExecResult,
    FileNotInContainer,
    HealthState,
    PortUse,
)
from bot.adapters.http_health import ComponentHealth, HealthReport
from bot.adapters.postgres import (
    ActiveQuery,
    CacheHit,
    DbCheck,
    LockWait,
    PoolState,
    StatementStat,
    UserCount,
)
from bot.adapters.prometheus import Sample, Series
from bot.audit import AuditLog
from bot.clock import Clock, utc_now
from bot.config import Settings
from bot.deps import Deps
from bot.errors import UnknownService
from bot.messages import Conversation, Message, MessageRef
from bot.store import Store
from bot.telemetry import BotMetrics

NOW = datetime(2026, 11, 26, 7, 30, tzinfo=UTC)


@dataclass
class FakeSurface:
    """Records every post, update and reply, like a chat that never fails."""

    name: str = "fake"
    events: list[tuple[str, str, Message]] = field(default_factory=list)
    keys: list[str] = field(default_factory=list)
    first_versions: dict[str, Message] = field(default_factory=dict)
    _n: int = 0

    async def post(self, where: Conversation, msg: Message) -> MessageRef:
        self._n += 1
        ref = MessageRef(where, f"m{self._n}")
        self.events.append(("post", ref.id, msg))
        return ref

    async def update(self, ref: MessageRef, msg: Message) -> None:
        self.events.append(("update", ref.id, msg))

    async def reply(self, ref: MessageRef, msg: Message, *, key: str | None = None) -> MessageRef:
        self._n += 1
        self.events.append(("reply", ref.id, msg))
        new = MessageRef(ref.conversation, key or f"m{self._n}")
        self.keys.append(new.id)
        self.first_versions[new.id] = msg
        return new

    async def ephemeral(self, where: Conversation, user: str, msg: Message) -> None:
        self.events.append(("ephemeral", user, msg))

    def last(self, ref_id: str = "m1") -> Message:
        """The latest version of a posted message."""
        versions = [m for kind, rid, m in self.events if rid == ref_id and kind != "reply"]
        if not versions and ref_id in self.first_versions:
            return self.first_versions[ref_id]
        return versions[-1]

    def replies(self) -> list[Message]:
        return [m for kind, _rid, m in self.events if kind == "reply"]


def container(
    name: str,
    *,
    service: str | None = None,
    state: ContainerState = "running",
    health: HealthState | None = "healthy",
    started: datetime = NOW - timedelta(hours=5),
) -> ContainerInfo:
    return ContainerInfo(
        name=name,
        service=service,
        state=state,
        health=health,
        status_text=f"Up 5 hours ({health})" if state == "running" else "Exited (1)",
        started_at=started,
        restart_count=0,
        image="sms/backend:1",
    )


class FakeDocker:
    def __init__(
        self,
        services: Mapping[str, str],
        containers: list[ContainerInfo],
        *,
        logs: str = "",
        delay: float = 0.0,
        error: Exception | None = None,
    ) -> None:
        self._services = dict(services)
        self.containers = containers
        self.log_text = logs
        self.delay = delay
        self.error = error
        self.log_calls: list[tuple[str, int]] = []
        self.restarts: list[str] = []
        self.stops: list[str] = []
        self.starts: list[str] = []
        # Per-service log text; services not in here answer with ``log_text``.
        self.service_logs: dict[str, str] = {}
        self.log_errors: dict[str, Exception] = {}
        # ``exec``: what it answers, what it raises, and what it does (e.g. write a file).
        self.exec_result = ExecResult(exit_code=0, output="")
        self.exec_error: Exception | None = None
        self.on_exec: Callable[[str, tuple[str, ...]], None] | None = None
        self.exec_calls: list[tuple[str, tuple[str, ...], float]] = []
        # ``read_tail``: files by (service, path); a missing one raises FileNotInContainer.
        self.files: dict[tuple[str, str], str] = {}
        self.read_calls: list[tuple[str, str, int]] = []

    @property
    def services(self) -> Mapping[str, str]:
        return self._services

    def container_name(self, service: str) -> str:
        if service not in self._services:
            raise UnknownService(service, list(self._services))
        return self._services[service]

    async def overview(self) -> ContainerOverview:
        await asyncio.sleep(self.delay)
        if self.error:
            raise self.error
        by_name = {c.name: c for c in self.containers}
        services: dict[str, ContainerInfo] = {}
        for svc, name in self._services.items():
            services[svc] = by_name.get(name) or ContainerInfo(
                name, svc, "missing", None, "", None, 0, ""
            )
        return ContainerOverview(containers=tuple(self.containers), services=services)

    async def status(self, service: str) -> ContainerInfo:
        name = self.container_name(service)
        for info in self.containers:
            if info.name == name:
                return info
        raise ContainerNotFound(name, service=service)

    async def restart(self, service: str, *, timeout_s: int = 10) -> ContainerInfo:
        info = await self.status(service)
        self.restarts.append(service)
        return info

    async def stop(self, service: str, *, timeout_s: int = 10) -> ContainerInfo:
        info = await self.status(service)
        self.stops.append(service)
        return info

    async def start(self, service: str) -> ContainerInfo:
        info = await self.status(service)
        self.starts.append(service)
        return info

    async def logs(self, service: str, *, tail: int = 100) -> str:
        name = self.container_name(service)
        if name not in {c.name for c in self.containers}:
            raise ContainerNotFound(name, service=service)
        self.log_calls.append((service, tail))
        if service in self.log_errors:
            raise self.log_errors[service]
        lines = self.service_logs.get(service, self.log_text).splitlines()
        return "\n".join(lines[-tail:])

    async def exec(
        self, service: str, argv: Sequence[str], *, timeout_s: float = 300.0
    ) -> ExecResult:
        name = self.container_name(service)
        if name not in {c.name for c in self.containers}:
            raise ContainerNotFound(name, service=service)
        self.exec_calls.append((service, tuple(argv), timeout_s))
        if self.exec_error:
            raise self.exec_error
        if self.on_exec is not None:
            self.on_exec(service, tuple(argv))
        return self.exec_result

    async def read_tail(
        self, service: str, path: str, *, max_bytes: int = 1024 * 1024, timeout_s: float = 30.0
    ) -> str:
        name = self.container_name(service)
        if name not in {c.name for c in self.containers}:
            raise ContainerNotFound(name, service=service)
        self.read_calls.append((service, path, max_bytes))
        if (service, path) not in self.files:
            raise FileNotInContainer(f"{path}: no such file in {name}")
        return self.files[(service, path)][-max_bytes:]

    # -- issue 11: inspect facts, host ports, memory stats ---------------------

    async def inspect(self, service: str) -> ContainerDetails:
        info = await self.status(service)
        return ContainerDetails(
            name=info.name,
            service=service,
            state=info.state,
            exit_code=0 if info.state == "running" else 1,
            oom_killed=False,
            error="",
            restart_count=info.restart_count,
            restart_policy="no",
            started_at=info.started_at,
            finished_at=None,
            health=info.health,
            health_log=(),
            image=info.image,
            network_mode="default",
            ports=(),
            mounts=(),
            env_names=(),
            labels={},
        )

    async def port_users(self) -> list[PortUse]:
        return []

    async def stats(self) -> list[ContainerStats]:
        running = [c for c in self.containers if c.state == "running"]
        return [
            ContainerStats(c.name, c.service, (len(running) - i) * 100 * 2**20, 2**30)
            for i, c in enumerate(running)
        ]

    async def close(self) -> None:
        return None


class FakeHealth:
    def __init__(self, report: HealthReport | None = None, *, delay: float = 0.0) -> None:
        self.report = report or healthy_report()
        self.delay = delay
        self.error: Exception | None = None

    async def fetch(self) -> HealthReport:
        await asyncio.sleep(self.delay)
        if self.error:
            raise self.error
        return self.report


def healthy_report(**failing: str) -> HealthReport:
    components = tuple(
        ComponentHealth(name, failing.get(name, "healthy"), name not in failing)
        for name in ("database", "redis", "disk")
    )
    ok = not failing
    return HealthReport(
        status="healthy" if ok else "degraded",
        healthy=ok,
        components=components,
        http_status=200 if ok else 503,
        latency_ms=3.0,
    )


class FakePrometheus:
    """Answers each query with the value in ``values`` (by metric key, via the query text)."""

    def __init__(self, values: Mapping[str, float | None], queries: Mapping[str, str]) -> None:
        self.by_query = {queries[key]: value for key, value in values.items()}
        # Labelled answers of ``query()``, by exact PromQL text.
        self.samples: dict[str, list[Sample]] = {}
        self.errors: dict[str, Exception] = {}
        self.unavailable: Exception | None = None
        self.delay = 0.0
        # Answers of ``scalar(promql, at=...)`` by (PromQL, time); other times answer as now.
        self.at_values: dict[tuple[str, datetime], float | None] = {}
        # Answers of ``query_range`` by exact PromQL text (nothing for others), and its calls.
        self.ranges: dict[str, list[Series]] = {}
        self.range_calls: list[tuple[str, datetime, datetime, float]] = []

    async def scalar(self, promql: str, *, at: datetime | None = None, **_: Any) -> float | None:
        await asyncio.sleep(self.delay)
        if self.unavailable:
            raise self.unavailable
        if promql in self.errors:
            raise self.errors[promql]
        if at is not None and (promql, at) in self.at_values:
            return self.at_values[(promql, at)]
        return self.by_query.get(promql)

    async def query_range(
        self, promql: str, *, start: datetime, end: datetime, step_s: float
    ) -> list[Series]:
        await asyncio.sleep(self.delay)
        if self.unavailable:
            raise self.unavailable
        if promql in self.errors:
            raise self.errors[promql]
        self.range_calls.append((promql, start, end, step_s))
        return list(self.ranges.get(promql, []))

    async def query(self, promql: str, **_: Any) -> list[Sample]:
        """``samples[promql]``, or one unlabelled sample from ``by_query``, or nothing."""
        await asyncio.sleep(self.delay)
        if self.unavailable:
            raise self.unavailable
        if promql in self.errors:
            raise self.errors[promql]
        if promql in self.samples:
            return list(self.samples[promql])
        value = self.by_query.get(promql)
        return [] if value is None else [Sample(labels={}, value=value)]


def series(values: Sequence[float], *, labels: Mapping[str, str] | None = None) -> Series:
    """A range-query series with one point per hour, ending at ``NOW``."""
    start = NOW - timedelta(hours=len(values) - 1)
    return Series(
        labels=dict(labels or {}),
        points=tuple((start + timedelta(hours=i), v) for i, v in enumerate(values)),
    )


def samples(label: str, values: Mapping[str, float]) -> list[Sample]:
    """One sample per label value, e.g. ``samples("handler", {"/api": 120.0})``."""
    return [Sample(labels={label: key}, value=value) for key, value in values.items()]


def active_query(
    pid: int,
    *,
    age_s: float,
    query: str = "SELECT pg_sleep(30)",
    state: str = "active",
    user: str = "sms_user",
) -> ActiveQuery:
    """A ``pg_stat_activity`` row that started ``age_s`` seconds before ``NOW``."""
    return ActiveQuery(
        pid=pid,
        user=user,
        state=state,
        started_at=NOW - timedelta(seconds=age_s),
        duration_s=age_s,
        query=query,
    )


class FakeDb:
    def __init__(self) -> None:
        self.users = 18
        self.error: Exception | None = None
        self.queries: list[ActiveQuery] = []
        self.delay = 0.0
        self.terminated: list[int] = []
        # A backend that ignores pg_terminate_backend (stuck in uninterruptible I/O).
        self.survives_terminate = False
        # ``vacuum_analyze``: the duration it reports, and the timeouts it was called with.
        self.vacuum_s = 1.5
        self.vacuums: list[float] = []
        # ``table_counts`` and ``count_older``: rows per table (absent: no such table).
        self.rows: dict[str, int] = {"users": 18, "courses": 5}
        self.older: dict[tuple[str, str], int] = {}
        self.size_bytes = 100 * 1024 * 1024

    async def count_users(self) -> UserCount:
        await asyncio.sleep(self.delay)
        if self.error:
            raise self.error
        return UserCount(self.users, 2.0)

    async def check(self) -> DbCheck:
        if self.error:
            raise self.error
        return DbCheck("15.8", "student_management", self.size_bytes, 12, 100, 1.0)

    async def active_queries(self, *, min_age_s: float = 5.0) -> list[ActiveQuery]:
        if self.error:
            raise self.error
        return [q for q in self.queries if q.state == "active" and q.duration_s >= min_age_s]

    async def backend(self, pid: int) -> ActiveQuery | None:
        if self.error:
            raise self.error
        return next((q for q in self.queries if q.pid == pid), None)

    async def terminate(self, pid: int, *, query_start: datetime | None = None) -> bool:
        """Like ``pg_terminate_backend``: the backend (and its row) goes away."""
        if self.error:
            raise self.error
        if query_start is not None and not any(
            q.pid == pid and q.started_at == query_start and q.state == "active"
            for q in self.queries
        ):
            return False
        self.terminated.append(pid)
        if self.survives_terminate:
            return True
        before = len(self.queries)
        self.queries = [q for q in self.queries if q.pid != pid]
        return len(self.queries) < before

    async def table_counts(self, tables: Sequence[str]) -> dict[str, int | None]:
        if self.error:
            raise self.error
        return {t: self.rows.get(t) for t in tables}

    async def count_older(self, table: str, column: str, before: datetime) -> int | None:
        if self.error:
            raise self.error
        if table not in self.rows:
            return None
        return self.older.get((table, column), 0)

    async def vacuum_analyze(self, *, timeout_s: float = 600.0) -> float:
        if self.error:
            raise self.error
        self.vacuums.append(timeout_s)
        return self.vacuum_s

    # -- issue 11: performance degradation -----------------------------------

    async def pool(self) -> PoolState:
        if self.error:
            raise self.error
        return PoolState((("idle", 10), ("active", 2)), 100)

    async def cache_hit(self) -> CacheHit:
        if self.error:
            raise self.error
        return CacheHit(9990, 10)

    async def lock_waits(self) -> list[LockWait]:
        if self.error:
            raise self.error
        return []

    async def statements(
        self, *, order: str = "calls", limit: int = 5
    ) -> list[StatementStat] | None:
        if self.error:
            raise self.error
        return None

    async def explain(self, query: str) -> str:
        if self.error:
            raise self.error
        return "Seq Scan on users  (cost=0.00..1.18 rows=18 width=36)"

    async def analyze(self, *, timeout_s: float = 600.0) -> float:
        if self.error:
            raise self.error
        return 0.5

    async def close(self) -> None:
        return None


class FakeAlertmanager:
    """Records silences like Alertmanager's v2 API would create them."""

    def __init__(self, base_url: str = "http://localhost:9093") -> None:
        self.base_url = base_url
        self.silences: list[dict[str, Any]] = []
        self.expired: list[str] = []
        self.error: Exception | None = None
        # ``alerts()``: what Alertmanager holds now, or the error it fails with.
        self.active: list[AlertInfo] = []
        self.alerts_error: Exception | None = None

    async def create_silence(
        self,
        *,
        matchers: Mapping[str, str],
        starts_at: datetime,
        ends_at: datetime,
        created_by: str,
        comment: str,
    ) -> str:
        if self.error:
            raise self.error
        silence_id = f"silence-{len(self.silences) + 1}"
        self.silences.append(
            {
                "id": silence_id,
                "matchers": dict(matchers),
                "starts_at": starts_at,
                "ends_at": ends_at,
                "created_by": created_by,
                "comment": comment,
            }
        )
        return silence_id

    async def expire_silence(self, silence_id: str) -> None:
        if self.error:
            raise self.error
        self.expired.append(silence_id)

    def silence_url(self, silence_id: str) -> str:
        return f"{self.base_url}/#/silences/{silence_id}"

    async def alerts(self, **_: Any) -> list[AlertInfo]:
        if self.alerts_error:
            raise self.alerts_error
        return list(self.active)


def alert_info(
    name: str, *, severity: str = "warning", since: datetime = NOW - timedelta(hours=1)
) -> AlertInfo:
    """An alert as Alertmanager's v2 API lists it."""
    return AlertInfo(
        fingerprint=f"fp-{name}",
        labels={"alertname": name, "severity": severity},
        annotations={"summary": f"{name} is firing"},
        starts_at=since,
        ends_at=since + timedelta(hours=4),
        state="active",
        generator_url="http://localhost:9090/graph",
    )


def fake_deps(
    settings: Settings,
    store: Store,
    *,
    docker: FakeDocker,
    prometheus: FakePrometheus,
    db: FakeDb | None = None,
    health: FakeHealth | None = None,
    alertmanager: FakeAlertmanager | None = None,
    clock: Clock = utc_now,
) -> Deps:
    """``Deps`` over the fakes, a real store and the real backup directory reader."""
    return Deps(
        settings=settings,
        store=store,
        audit=AuditLog(store, settings.bot_audit_log),
        docker=docker,
        db=db or FakeDb(),
        health=health or FakeHealth(),
        prometheus=prometheus,
        backups=BackupStore(settings.sms_backup_dir),
        alertmanager=alertmanager or FakeAlertmanager(),
        metrics=BotMetrics(),
        clock=clock,
    )
