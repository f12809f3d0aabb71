"""Docker engine adapter: container state, health, logs, restarts, files, inspect facts, stats.

The ``docker`` SDK is synchronous, so every call runs in a worker thread and is
bounded by ``asyncio.wait_for``; the event loop never blocks on the engine.
Container names come only from the configured service map (``SMS_SERVICES``):
a user types a short service name, which is looked up before anything reaches
Docker, and no shell command is ever built. Library failures are re-raised as
this module's typed errors, chained ``from`` the original.

The SDK (and ``requests`` under it) is imported when the client is created,
in the worker thread: a command that never talks to Docker does not pay for it.
"""

from __future__ import annotations

import asyncio
import io
import posixpath
import re
import tarfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal, Protocol, TypeVar

from bot.errors import AdapterError, UnknownService

if TYPE_CHECKING:
    import docker

__all__ = [
    "ContainerDetails",
    "ContainerInfo",
    "ContainerNotFound",
    "ContainerOverview",
    "ContainerState",
    "ContainerStats",
    "Docker",
    "DockerAdapter",
    "DockerError",
    "DockerUnavailable",
    "ExecResult",
    "ExecTimeout",
    "FileNotInContainer",
    "HealthProbe",
    "HealthState",
    "Mount",
    "PortUse",
]

ContainerState = Literal["running", "restarting", "exited", "created", "paused", "dead", "missing"]
HealthState = Literal["healthy", "unhealthy", "starting"]

_T = TypeVar("_T")

_STATES: frozenset[str] = frozenset(
    {"running", "restarting", "exited", "created", "paused", "dead", "missing"}
)
_HEALTH: frozenset[str] = frozenset({"healthy", "unhealthy", "starting"})
_STATS_WORKERS = 8
_LOG_TAIL_MIN = 1
_LOG_TAIL_MAX = 1000
# What ``exec`` keeps of a command's output: its end, where the errors are.
_EXEC_OUTPUT_MAX = 64 * 1024
# What ``read_tail`` keeps of a file at most, whatever the caller asks.
_READ_TAIL_MAX = 16 * 1024 * 1024
# Docker reports "never started" as the zero time of Go.
_ZERO_TIME_PREFIX = "0001-01-01"
_ISO_RE = re.compile(
    r"^(?P<base>\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2})(?:\.(?P<frac>\d+))?(?P<tz>Z|[+-]\d{2}:\d{2})?$"
)


class DockerError(AdapterError):
    """The Docker engine refused or failed a request."""


class DockerUnavailable(DockerError):
    """The Docker engine could not be reached, or did not answer in time."""


class FileNotInContainer(DockerError):
    """The file asked for does not exist in the container (or is not a regular file)."""


class ContainerNotFound(DockerError):
    """A configured container does not exist on the engine.

    Distinct from ``UnknownService``: the name is valid configuration, the
    deployment is what is wrong, so it is an operational finding, not a typo.
    """

    def __init__(self, container: str, *, service: str | None = None) -> None:
        label = f"{service} ({container})" if service else container
        super().__init__(f"Container {label} does not exist.")
        self.container = container
        self.service = service


class ExecTimeout(DockerError):
    """A command run with ``exec`` did not finish in time.

    Docker cannot stop an exec'd process, so it may still be running in the
    container; the message says so.
    """


@dataclass(frozen=True, slots=True)
class ExecResult:
    """How a command run inside a container ended, and the end of its output."""

    exit_code: int
    output: str


@dataclass(frozen=True, slots=True)
class ContainerInfo:
    """One container as the runbook's ``docker ps`` would show it.

    ``state`` is ``"missing"`` only for a configured service whose container
    does not exist; such entries come from ``DockerAdapter.overview``.
    """

    name: str
    service: str | None
    state: ContainerState
    health: HealthState | None
    status_text: str
    started_at: datetime | None
    restart_count: int
    image: str

    @property
    def running(self) -> bool:
        return self.state == "running"

    def uptime(self, now: datetime) -> float | None:
        """Seconds since the last start, or None when not running.

        ``now`` is passed in so callers (and tests) control the clock.
        """
        if self.state != "running" or self.started_at is None:
            return None
        return max(0.0, (now - self.started_at).total_seconds())


@dataclass(frozen=True, slots=True)
class ContainerOverview:
    """Morning Checklist step 1: every container, and how the configured ones fare.

    ``services`` has one entry per configured service (``state="missing"``
    when its container is absent), so a check can judge the deployment without
    knowing the engine's other containers.
    """

    containers: tuple[ContainerInfo, ...]
    services: Mapping[str, ContainerInfo] = field(default_factory=dict)

    @property
    def total(self) -> int:
        return len(self.containers)

    @property
    def running(self) -> int:
        return sum(1 for c in self.containers if c.state == "running")

    @property
    def missing(self) -> list[ContainerInfo]:
        return [c for c in self.services.values() if c.state == "missing"]

    @property
    def not_running(self) -> list[ContainerInfo]:
        """Configured containers that exist but are not running (restarting included)."""
        return [c for c in self.services.values() if c.state not in ("running", "missing")]

    @property
    def unhealthy(self) -> list[ContainerInfo]:
        return [c for c in self.services.values() if c.health == "unhealthy"]

    @property
    def restarting(self) -> list[ContainerInfo]:
        return [c for c in self.services.values() if c.state == "restarting"]


@dataclass(frozen=True, slots=True)
class HealthProbe:
    """One run of the container's healthcheck, as ``docker inspect`` keeps it."""

    exit_code: int
    output: str


@dataclass(frozen=True, slots=True)
class Mount:
    type: str  # bind, volume, tmpfs
    source: str
    destination: str


@dataclass(frozen=True, slots=True)
class ContainerDetails:
    """The ``docker inspect`` facts the runbook's "Container Won't Start" reads.

    ``env_names`` are the names only: values are secrets often enough that
    the adapter does not hand them out at all. ``ports`` are the host ports the
    container wants: published ones, and with host networking its exposed ones.
    """

    name: str
    service: str | None
    state: ContainerState
    exit_code: int
    oom_killed: bool
    error: str
    restart_count: int
    restart_policy: str
    started_at: datetime | None
    finished_at: datetime | None
    health: HealthState | None
    health_log: tuple[HealthProbe, ...]
    image: str
    network_mode: str
    ports: tuple[int, ...]
    mounts: tuple[Mount, ...]
    env_names: tuple[str, ...]
    labels: Mapping[str, str]


@dataclass(frozen=True, slots=True)
class PortUse:
    """A running container using a host port (published, or exposed on the host network)."""

    container: str
    port: int


@dataclass(frozen=True, slots=True)
class ContainerStats:
    """One line of ``docker stats --no-stream``: memory use, limit and share."""

    name: str
    service: str | None
    memory_bytes: int
    limit_bytes: int

    @property
    def percent(self) -> float:
        return 100.0 * self.memory_bytes / self.limit_bytes if self.limit_bytes else 0.0


def _wanted_ports(attrs: Mapping[str, Any]) -> tuple[int, ...]:
    host = attrs.get("HostConfig") or {}
    config = attrs.get("Config") or {}
    ports: set[int] = set()
    for bindings in (host.get("PortBindings") or {}).values():
        for binding in bindings or ():
            raw = str((binding or {}).get("HostPort") or "")
            if raw.isdigit():
                ports.add(int(raw))
    if host.get("NetworkMode") == "host":
        for key in config.get("ExposedPorts") or {}:
            raw = str(key).split("/", 1)[0]
            if raw.isdigit():
                ports.add(int(raw))
    return tuple(sorted(ports))


def _details(attrs: Mapping[str, Any], service: str | None) -> ContainerDetails:
    state = attrs.get("State") or {}
    config = attrs.get("Config") or {}
    host = attrs.get("HostConfig") or {}
    health = state.get("Health") if isinstance(state.get("Health"), Mapping) else {}
    probes = tuple(
        HealthProbe(int(p.get("ExitCode") or 0), str(p.get("Output") or "").strip())
        for p in (health or {}).get("Log") or ()
    )
    return ContainerDetails(
        name=str(attrs.get("Name", "")).lstrip("/"),
        service=service,
        state=_state_of(state.get("Status")),
        exit_code=int(state.get("ExitCode") or 0),
        oom_killed=bool(state.get("OOMKilled")),
        error=str(state.get("Error") or ""),
        restart_count=int(attrs.get("RestartCount") or 0),
        restart_policy=str((host.get("RestartPolicy") or {}).get("Name") or "no"),
        started_at=_parse_time(state.get("StartedAt")),
        finished_at=_parse_time(state.get("FinishedAt")),
        health=_health_of(state),
        health_log=probes[-5:],
        image=str(config.get("Image") or ""),
        network_mode=str(host.get("NetworkMode") or ""),
        ports=_wanted_ports(attrs),
        mounts=tuple(
            Mount(str(m.get("Type") or ""), str(m.get("Source") or ""), str(m.get("Destination")))
            for m in attrs.get("Mounts") or ()
        ),
        env_names=tuple(str(e).split("=", 1)[0] for e in config.get("Env") or ()),
        labels={str(k): str(v) for k, v in (config.get("Labels") or {}).items()},
    )


def _parse_time(value: object) -> datetime | None:
    """Parse Docker's RFC 3339 nanosecond timestamps into aware UTC datetimes."""
    if not isinstance(value, str) or not value or value.startswith(_ZERO_TIME_PREFIX):
        return None
    match = _ISO_RE.match(value)
    if match is None:
        return None
    frac = (match["frac"] or "")[:6].ljust(6, "0")
    tz = match["tz"] or "Z"
    tz = "+00:00" if tz == "Z" else tz
    return datetime.fromisoformat(f"{match['base']}.{frac}{tz}").astimezone(UTC)


def _state_of(raw: object) -> ContainerState:
    # "removing" is a stopped container on its way out; report it as exited.
    text = str(raw or "").lower()
    if text in _STATES:
        return text  # type: ignore[return-value]
    return "exited" if text == "removing" else "dead"


def _health_of(state: Mapping[str, Any]) -> HealthState | None:
    health = state.get("Health")
    if not isinstance(health, Mapping):
        return None
    status = str(health.get("Status", "")).lower()
    return status if status in _HEALTH else None  # type: ignore[return-value]


class Docker(Protocol):
    """What procedures ask of the container engine; ``DockerAdapter`` is the real one."""

    @property
    def services(self) -> Mapping[str, str]: ...

    def container_name(self, service: str) -> str: ...

    async def overview(self) -> ContainerOverview: ...

    async def status(self, service: str) -> ContainerInfo: ...

    async def logs(self, service: str, *, tail: int = 100) -> str: ...

    async def restart(self, service: str, *, timeout_s: int = 10) -> ContainerInfo: ...

    async def exec(
        self, service: str, argv: Sequence[str], *, timeout_s: float = 300.0
    ) -> ExecResult: ...

    async def read_tail(
        self, service: str, path: str, *, max_bytes: int = 1024 * 1024, timeout_s: float = 30.0
    ) -> str: ...

    async def stop(self, service: str, *, timeout_s: int = 10) -> ContainerInfo: ...

    async def start(self, service: str) -> ContainerInfo: ...

    async def inspect(self, service: str) -> ContainerDetails: ...

    async def port_users(self) -> list[PortUse]: ...

    async def stats(self) -> list[ContainerStats]: ...


class DockerAdapter:
    """Async access to the containers named in the service map.

    The SDK client is created on first use (it contacts the engine to agree on
    an API version), so building the adapter never fails because Docker is down.
    """

    def __init__(
        self,
        services: Mapping[str, str],
        *,
        base_url: str | None = None,
        timeout: float = 10.0,
    ) -> None:
        self._services: dict[str, str] = dict(services)
        self._by_container: dict[str, str] = {c: s for s, c in self._services.items()}
        self._base_url = base_url
        self._timeout = timeout
        self._client: docker.DockerClient | None = None
        self._client_lock = threading.Lock()

    @property
    def services(self) -> Mapping[str, str]:
        return dict(self._services)

    def container_name(self, service: str) -> str:
        """Resolve a user-typed service name; the only way a name reaches Docker."""
        try:
            return self._services[service]
        except KeyError:
            raise UnknownService(service, list(self._services)) from None

    async def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            await asyncio.to_thread(client.close)

    async def __aenter__(self) -> DockerAdapter:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    # -- public operations -------------------------------------------------

    async def list_containers(self) -> list[ContainerInfo]:
        return await self._call(self._list_sync)

    async def status(self, service: str) -> ContainerInfo:
        name = self.container_name(service)
        return await self._call(lambda: self._info_sync(name), container=name)

    async def overview(self) -> ContainerOverview:
        containers = await self.list_containers()
        by_name = {c.name: c for c in containers}
        services = {
            service: by_name.get(name) or _missing(name, service)
            for service, name in self._services.items()
        }
        return ContainerOverview(containers=tuple(containers), services=services)

    async def logs(self, service: str, *, tail: int = 100) -> str:
        """The last ``tail`` lines of stdout and stderr, clamped to 1..1000.

        The bound keeps one chat reply small and the engine call short.
        """
        name = self.container_name(service)
        lines = max(_LOG_TAIL_MIN, min(_LOG_TAIL_MAX, tail))

        def fetch() -> str:
            raw = self._api().logs(name, stdout=True, stderr=True, timestamps=False, tail=lines)
            return raw.decode("utf-8", errors="replace")

        return await self._call(fetch, container=name)

    async def restart(self, service: str, *, timeout_s: int = 10) -> ContainerInfo:
        name = self.container_name(service)

        def run() -> ContainerInfo:
            self._api().restart(name, timeout=timeout_s)
            return self._info_sync(name)

        return await self._call(run, container=name, extra_timeout=timeout_s)

    async def stop(self, service: str, *, timeout_s: int = 10) -> ContainerInfo:
        name = self.container_name(service)

        def run() -> ContainerInfo:
            self._api().stop(name, timeout=timeout_s)
            return self._info_sync(name)

        return await self._call(run, container=name, extra_timeout=timeout_s)

    async def start(self, service: str) -> ContainerInfo:
        name = self.container_name(service)

        def run() -> ContainerInfo:
            self._api().start(name)
            return self._info_sync(name)

        return await self._call(run, container=name)

    async def exec(
        self, service: str, argv: Sequence[str], *, timeout_s: float = 300.0
    ) -> ExecResult:
        """Run ``argv`` in ``service``'s container (``docker exec``) and wait for it to end.

        ``argv`` is an argument vector from code, never from chat: it goes to
        the engine as a list, so no shell ever parses it. The wait, the
        output read included, is bounded by ``timeout_s``; stdout and stderr
        come back interleaved, at most the last 64 KiB.
        """
        name = self.container_name(service)
        cmd = [str(arg) for arg in argv]
        if not cmd:
            raise ValueError("exec needs a command")

        def run() -> ExecResult:
            deadline = time.monotonic() + timeout_s
            api = self._api()
            exec_id = str(api.exec_create(name, cmd, stdout=True, stderr=True, tty=False)["Id"])
            sock = api.exec_start(exec_id, socket=True)
            try:
                output = _read_frames(sock, deadline)
            except TimeoutError as exc:
                raise ExecTimeout(
                    f"{' '.join(cmd[:3])} in {name} did not finish within {timeout_s:g} s; "
                    "it may still be running in the container."
                ) from exc
            finally:
                sock.close()
            code = api.exec_inspect(exec_id).get("ExitCode")
            return ExecResult(exit_code=-1 if code is None else int(code), output=output)

        return await self._call(run, container=name, extra_timeout=timeout_s)

    async def read_tail(
        self, service: str, path: str, *, max_bytes: int = 1024 * 1024, timeout_s: float = 30.0
    ) -> str:
        """The end of a file in ``service``'s container: at most ``max_bytes``, whole lines.

        Read through the engine's archive API (``docker cp``), which needs no
        tool inside the container: the SMS images need not ship ``tail``. A
        relative ``path`` is taken from the container's working directory, as
        ``exec`` would. Memory is bounded by ``max_bytes`` (at most 16 MiB),
        time by ``timeout_s``: a larger file is streamed through, only its
        end is kept.
        """
        name = self.container_name(service)
        keep = max(1, min(_READ_TAIL_MAX, max_bytes))

        def fetch() -> str:
            import docker.errors

            deadline = time.monotonic() + timeout_s
            api = self._api()
            attrs = api.inspect_container(name)
            if str(attrs.get("Name", "")).lstrip("/") != name:
                raise ContainerNotFound(name, service=self._by_container.get(name))
            workdir = str((attrs.get("Config") or {}).get("WorkingDir") or "/")
            full = posixpath.join(workdir, path)
            try:
                chunks, _stat = api.get_archive(name, full, chunk_size=64 * 1024)
            except docker.errors.NotFound as exc:
                raise FileNotInContainer(f"{full}: no such file in {name}") from exc
            try:
                return _tail_of_archive(chunks, keep, deadline, what=f"{full} in {name}")
            finally:
                close = getattr(chunks, "close", None)
                if callable(close):
                    close()

        return await self._call(fetch, container=name, extra_timeout=timeout_s)

    async def inspect(self, service: str) -> ContainerDetails:
        """``docker inspect`` of ``service``'s container: the facts a diagnosis reads."""
        name = self.container_name(service)

        def run() -> ContainerDetails:
            attrs = self._api().inspect_container(name)
            if str(attrs.get("Name", "")).lstrip("/") != name:
                raise ContainerNotFound(name, service=self._by_container.get(name))
            return _details(attrs, self._by_container.get(name))

        return await self._call(run, container=name)

    async def port_users(self) -> list[PortUse]:
        """Host ports used by running containers (published, or exposed on the host network)."""

        def run() -> list[PortUse]:
            import docker.errors

            api = self._api()
            uses: list[PortUse] = []
            for summary in api.containers(all=False):
                try:
                    attrs = api.inspect_container(summary["Id"])
                except docker.errors.NotFound:
                    continue
                name = str(attrs.get("Name", "")).lstrip("/")
                uses += [PortUse(name, port) for port in _wanted_ports(attrs)]
            return uses

        return await self._call(run)

    async def stats(self) -> list[ContainerStats]:
        """``docker stats --no-stream`` for every running container, biggest memory user first.

        One engine call per container (``one_shot``: no second sample, memory
        needs none), all bounded together.
        """

        def one(container_id: str, name: str) -> ContainerStats | None:
            import docker.errors

            try:
                raw = self._api().stats(container_id, stream=False, one_shot=True)
            except docker.errors.APIError as exc:
                if exc.is_server_error():
                    raise
                return None  # stopped or gone between listing and asking
            except ValueError:
                # A container that stops while asked answers an empty body (no JSON).
                return None
            memory = raw.get("memory_stats") or {}
            usage = int(memory.get("usage") or 0)
            detail = memory.get("stats") or {}
            # What `docker stats` shows: usage minus the page cache (cgroup v2 / v1).
            cache = int(detail.get("inactive_file") or detail.get("total_inactive_file") or 0)
            return ContainerStats(
                name=name,
                service=self._by_container.get(name),
                memory_bytes=max(0, usage - cache) if usage > cache else usage,
                limit_bytes=int(memory.get("limit") or 0),
            )

        def run() -> list[ContainerStats]:
            summaries = self._api().containers(all=False)
            # The engine takes most of a second per container: ask in parallel.
            with ThreadPoolExecutor(max_workers=_STATS_WORKERS) as pool:
                items = pool.map(
                    lambda c: one(str(c["Id"]), str((c.get("Names") or [""])[0]).lstrip("/")),
                    summaries,
                )
                found = [item for item in items if item is not None]
            found.sort(key=lambda s: (-s.memory_bytes, s.name))
            return found

        return await self._call(run, extra_timeout=self._timeout)

    # -- worker-thread side ------------------------------------------------

    def _api(self) -> docker.APIClient:
        with self._client_lock:
            if self._client is None:
                import docker

                http_timeout = max(1, int(self._timeout + 0.999))
                if self._base_url is None:
                    self._client = docker.from_env(timeout=http_timeout)
                else:
                    self._client = docker.DockerClient(
                        base_url=self._base_url, timeout=http_timeout
                    )
            return self._client.api

    def _list_sync(self) -> list[ContainerInfo]:
        import docker.errors

        api = self._api()
        infos: list[ContainerInfo] = []
        for summary in api.containers(all=True):
            try:
                attrs = api.inspect_container(summary["Id"])
            except docker.errors.NotFound:
                continue  # removed between listing and inspecting
            infos.append(self._to_info(attrs, status_text=str(summary.get("Status", ""))))
        infos.sort(key=lambda c: c.name)
        return infos

    def _info_sync(self, name: str) -> ContainerInfo:
        api = self._api()
        attrs = api.inspect_container(name)
        if str(attrs.get("Name", "")).lstrip("/") != name:
            # The engine also resolves ID prefixes; a configured name must match exactly.
            raise ContainerNotFound(name, service=self._by_container.get(name))
        # Only the list endpoint carries Docker's human status ("Up 3 minutes (healthy)").
        summaries = api.containers(all=True, filters={"id": attrs["Id"]})
        status_text = str(summaries[0].get("Status", "")) if summaries else ""
        return self._to_info(attrs, status_text=status_text)

    def _to_info(self, attrs: Mapping[str, Any], *, status_text: str) -> ContainerInfo:
        name = str(attrs.get("Name", "")).lstrip("/")
        state = attrs.get("State") or {}
        config = attrs.get("Config") or {}
        container_state = _state_of(state.get("Status"))
        return ContainerInfo(
            name=name,
            service=self._by_container.get(name),
            state=container_state,
            # The engine leaves a stopped container's last health ("unhealthy") in
            # place; like `docker ps`, only a running container has a health.
            health=_health_of(state) if container_state == "running" else None,
            status_text=status_text,
            started_at=_parse_time(state.get("StartedAt")),
            restart_count=int(attrs.get("RestartCount") or 0),
            image=str(config.get("Image") or attrs.get("Image") or ""),
        )

    async def _call(
        self,
        func: Callable[[], _T],
        *,
        container: str | None = None,
        extra_timeout: float = 0.0,
    ) -> _T:
        """Run one SDK interaction off the loop and translate its failures."""
        try:
            return await asyncio.wait_for(
                asyncio.to_thread(func), timeout=self._timeout + extra_timeout
            )
        except TimeoutError as exc:
            raise DockerUnavailable(
                f"Docker engine did not answer within {self._timeout + extra_timeout:g}s."
            ) from exc
        except Exception as exc:
            error = self._translated(exc, container)
            if error is None:
                raise
            raise error from exc

    def _translated(self, exc: Exception, container: str | None) -> DockerError | None:
        """This module's error for a failure of the SDK; ``None`` for anything else."""
        import docker.errors
        import requests.exceptions

        if isinstance(exc, docker.errors.NotFound):
            if container is None:
                return DockerError(f"Docker engine error: {exc.explanation or exc}")
            return ContainerNotFound(container, service=self._by_container.get(container))
        if isinstance(exc, docker.errors.APIError):
            if exc.is_server_error():
                return DockerUnavailable(f"Docker engine error: {exc.explanation or exc}")
            return DockerError(f"Docker refused the request: {exc.explanation or exc}")
        if isinstance(exc, docker.errors.DockerException | requests.exceptions.RequestException):
            return DockerUnavailable(f"Docker engine is not reachable: {exc}")
        return None


def _read_frames(sock: object, deadline: float) -> str:
    """Read an exec's multiplexed output until it ends, raising ``TimeoutError`` at ``deadline``.

    The SDK's own reader waits in ``poll()`` without a timeout, so a command
    that never ends would hold a worker thread forever; this one reads the
    engine's socket (unwrapped from its ``SocketIO``) with a timeout. Each
    frame is an 8-byte header (stream, 0, 0, 0, big-endian size) and data.
    """
    raw: Any = getattr(sock, "_sock", sock)
    if not callable(getattr(raw, "recv", None)) or not callable(getattr(raw, "settimeout", None)):
        raise DockerError("cannot read a command's output over this kind of Docker connection")
    output = bytearray()
    pending = bytearray()
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError
        raw.settimeout(remaining)
        chunk: bytes = raw.recv(65536)
        if not chunk:
            break
        pending += chunk
        while len(pending) >= 8:
            size = int.from_bytes(pending[4:8], "big")
            if len(pending) < 8 + size:
                break
            output += pending[8 : 8 + size]
            del pending[: 8 + size]
            del output[:-_EXEC_OUTPUT_MAX]
    return output.decode("utf-8", errors="replace")


class _Chunks(io.RawIOBase):
    """The archive API's chunks as a file, for ``tarfile``'s streaming mode."""

    def __init__(self, chunks: Iterator[bytes], deadline: float) -> None:
        self._chunks = chunks
        self._deadline = deadline
        self._pending = b""

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        while not self._pending:
            if time.monotonic() > self._deadline:
                raise TimeoutError
            try:
                self._pending = next(self._chunks)
            except StopIteration:
                return 0
        n = min(len(buffer), len(self._pending))
        buffer[:n] = self._pending[:n]
        self._pending = self._pending[n:]
        return n


def _tail_of_archive(chunks: Iterator[bytes], keep: int, deadline: float, *, what: str) -> str:
    """The last ``keep`` bytes of the one file in a tar stream, cut to whole lines."""
    with tarfile.open(fileobj=_Chunks(iter(chunks), deadline), mode="r|") as archive:
        member = archive.next()
        if member is None or not member.isfile():
            raise FileNotInContainer(f"{what}: not a regular file")
        source = archive.extractfile(member)
        if source is None:
            raise FileNotInContainer(f"{what}: not a regular file")
        tail = bytearray()
        while block := source.read(64 * 1024):
            tail += block
            del tail[:-keep]
    truncated = member.size > keep
    if truncated:
        # The first line was cut: keep whole lines only.
        cut = tail.find(b"\n")
        del tail[: cut + 1 if cut >= 0 else len(tail)]
    return tail.decode("utf-8", errors="replace")


def _missing(name: str, service: str) -> ContainerInfo:
    return ContainerInfo(
        name=name,
        service=service,
        state="missing",
        health=None,
        status_text="missing",
        started_at=None,
        restart_count=0,
        image="",
    )
