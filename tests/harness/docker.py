"""Docker engine harness: the engine, a FROM-scratch busybox image, a fake SMS.

Nothing can be pulled and tests may only use loopback, so the engine runs
with ``--bridge=none --iptables=false``, images are built from the host's
static busybox, and every container uses host networking bound to 127.0.0.1.
An engine that already answers (CI, another session) is reused and left
alone; one started here is stopped at session end unless
``SMS_TEST_KEEP_DOCKERD=1`` asks to keep it for the next session.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import io
import json
import os
import shutil
import struct
import subprocess
import tarfile
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import docker
import docker.errors
import pytest
import pytest_asyncio
import requests.exceptions
from docker.models.containers import Container

from tests.harness.loopback import free_port
from tests.harness.processes import stop

__all__ = [
    "BUSYBOX",
    "BUSYBOX_IMAGE",
    "DEFAULT_HEALTH",
    "BusyboxUnavailable",
    "DockerEngine",
    "SmsContainers",
    "busybox_image",
    "docker_engine",
    "ensure_busybox_image",
    "free_port",
    "is_static_elf",
    "sms_containers",
    "wait_until",
]

BUSYBOX = Path("/bin/busybox")
BUSYBOX_IMAGE = "sms-bot-test/busybox:1"
TEST_LABEL = "sms-bot-test"
DEFAULT_HEALTH: dict[str, Any] = {
    "status": "healthy",
    "checks": {"database": {"status": "healthy"}, "redis": {"status": "healthy"}},
}
DEFAULT_SOCKET_URL = "unix:///var/run/docker.sock"
DOCKERD_START_TIMEOUT_S = 30.0
_DOCKERD_LOCK = Path(tempfile.gettempdir()) / "sms-bot-test-dockerd.lock"
_NS_PER_S = 1_000_000_000


# -- small helpers other harnesses may import ----------------------------------


async def wait_until(
    probe: Callable[[], Awaitable[bool]],
    *,
    timeout: float,
    what: str,
    interval: float = 0.1,
) -> None:
    """Poll ``probe`` until it is true; fail the test naming ``what`` after ``timeout``.

    Tests wait for a condition, never for a fixed time.
    """
    deadline = time.monotonic() + timeout
    while not await probe():
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")
        await asyncio.sleep(interval)


def is_static_elf(path: Path) -> bool:
    """True when ``path`` is an ELF executable without a program interpreter.

    A dynamically linked busybox would start in a FROM-scratch image only to
    fail on its missing loader, so this is checked before building.
    """
    data = path.read_bytes()
    if len(data) < 64 or data[:4] != b"\x7fELF":
        return False
    is64 = data[4] == 2
    endian = "<" if data[5] == 1 else ">"
    if is64:
        phoff, phentsize, phnum = (
            struct.unpack_from(f"{endian}Q", data, 0x20)[0],
            *struct.unpack_from(f"{endian}HH", data, 0x36),
        )
    else:
        phoff, phentsize, phnum = (
            struct.unpack_from(f"{endian}I", data, 0x1C)[0],
            *struct.unpack_from(f"{endian}HH", data, 0x2A),
        )
    pt_interp = 3
    for index in range(phnum):
        (p_type,) = struct.unpack_from(f"{endian}I", data, phoff + index * phentsize)
        if p_type == pt_interp:
            return False
    return True


def _parse_docker_time(value: str) -> datetime:
    base, _, rest = value.partition(".")
    frac = rest.rstrip("Z")[:6].ljust(6, "0") if rest else "000000"
    return datetime.fromisoformat(f"{base.rstrip('Z')}.{frac}+00:00").astimezone(UTC)


# -- the engine ---------------------------------------------------------------


@dataclass(frozen=True)
class DockerEngine:
    """The engine tests talk to: a client plus the URL adapters should use."""

    client: docker.DockerClient
    base_url: str
    started_here: bool


def _connect(base_url: str) -> docker.DockerClient | None:
    try:
        client = docker.DockerClient(base_url=base_url, timeout=10)
        client.ping()
    except (docker.errors.DockerException, requests.exceptions.RequestException):
        return None
    return client


def _log_tail(path: Path, lines: int = 30) -> str:
    with contextlib.suppress(OSError):
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    return "(no log)"


def _start_dockerd(base_url: str, workdir: Path) -> tuple[subprocess.Popen[bytes], Path]:
    log_path = workdir / "dockerd.log"
    cmd = [
        "dockerd",
        "--bridge=none",
        "--iptables=false",
        f"--pidfile={workdir / 'dockerd.pid'}",
    ]
    if base_url != DEFAULT_SOCKET_URL:
        cmd.append(f"--host={base_url}")
    with log_path.open("wb") as log:
        # Own session and a file (not a pipe) for output: the daemon may outlive
        # this process when asked to, and must not die of a closed pipe.
        proc = subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    return proc, log_path


def _wait_for_dockerd(
    proc: subprocess.Popen[bytes], base_url: str, log_path: Path
) -> docker.DockerClient:
    deadline = time.monotonic() + DOCKERD_START_TIMEOUT_S
    while True:
        client = _connect(base_url)
        if client is not None:
            return client
        try:
            # Doubles as the pause between pings and as crash detection.
            code = proc.wait(timeout=0.2)
        except subprocess.TimeoutExpired:
            if time.monotonic() >= deadline:
                break
            continue
        pytest.fail(f"dockerd exited with {code} before answering:\n{_log_tail(log_path)}")
    proc.terminate()
    pytest.fail(
        f"dockerd did not answer within {DOCKERD_START_TIMEOUT_S:g}s:\n{_log_tail(log_path)}"
    )


@pytest.fixture(scope="session")
def docker_engine() -> Iterator[DockerEngine]:
    """The Docker engine at ``DOCKER_HOST`` (or the default socket), started if silent."""
    base_url = os.environ.get("DOCKER_HOST") or DEFAULT_SOCKET_URL
    client = _connect(base_url)
    if client is not None:
        yield DockerEngine(client=client, base_url=base_url, started_here=False)
        client.close()
        return
    if not base_url.startswith("unix://"):
        pytest.fail(f"Docker engine at DOCKER_HOST={base_url} does not answer")
    if shutil.which("dockerd") is None:
        pytest.fail("Docker engine does not answer and dockerd is not installed")

    # Several sessions may start at once; only one of them starts the daemon.
    with _DOCKERD_LOCK.open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        client = _connect(base_url)
        proc: subprocess.Popen[bytes] | None = None
        if client is None:
            workdir = Path(tempfile.mkdtemp(prefix="sms-bot-dockerd-"))
            proc, log_path = _start_dockerd(base_url, workdir)
            client = _wait_for_dockerd(proc, base_url, log_path)
    try:
        yield DockerEngine(client=client, base_url=base_url, started_here=proc is not None)
    finally:
        client.close()
        if proc is not None and os.environ.get("SMS_TEST_KEEP_DOCKERD") != "1":
            stop(proc, timeout=30)
            shutil.rmtree(workdir, ignore_errors=True)


class BusyboxUnavailable(RuntimeError):
    """The test image is absent and cannot be built here; the message says why."""


def ensure_busybox_image(client: docker.DockerClient) -> str:
    """Tag of the FROM-scratch busybox image on ``client``'s engine, built if absent.

    For the fixture below and for benches, which use the same image outside pytest.
    """
    with contextlib.suppress(docker.errors.ImageNotFound):
        client.images.get(BUSYBOX_IMAGE)
        return BUSYBOX_IMAGE
    if not BUSYBOX.is_file() or not is_static_elf(BUSYBOX):
        raise BusyboxUnavailable(
            f"{BUSYBOX} is missing or not statically linked; install the Debian package "
            "busybox-static (test images are FROM scratch and have no loader)"
        )
    with tempfile.TemporaryDirectory(prefix="sms-bot-image-") as context:
        shutil.copy2(BUSYBOX, Path(context) / "busybox")
        (Path(context) / "Dockerfile").write_text("FROM scratch\nCOPY busybox /bin/busybox\n")
        client.images.build(
            path=context,
            tag=BUSYBOX_IMAGE,
            rm=True,
            network_mode="host",
            labels={TEST_LABEL: "1"},
        )
    return BUSYBOX_IMAGE


@pytest.fixture(scope="session")
def busybox_image(docker_engine: DockerEngine) -> str:
    """Tag of the FROM-scratch busybox image, built once and then reused."""
    try:
        return ensure_busybox_image(docker_engine.client)
    except BusyboxUnavailable as exc:
        pytest.fail(str(exc))


# -- the fake SMS deployment ----------------------------------------------------


_POSTGRES_LOG = (
    'echo "LOG:  database system was shut down"; '
    'echo "LOG:  database system is ready to accept connections"'
)
_BACKUP_LOG = 'echo "backup: scheduler started"; echo "backup: next run at 02:00"'


def _backend_script(port: int) -> str:
    return (
        'echo "INFO backend starting"; '
        'echo "INFO connected to redis"; '
        'echo "ERROR db timeout password=hunter2" >&2; '
        'echo "INFO listening on 127.0.0.1:' + str(port) + '"; '
        f"exec /bin/busybox httpd -f -p 127.0.0.1:{port} -h /www"
    )


@dataclass
class SmsContainers:
    """A running fake SMS deployment: backend (httpd + /health), postgres, backup."""

    client: docker.DockerClient
    base_url: str
    services: dict[str, str]
    health_url: str
    port: int
    www: Path
    _containers: dict[str, Container] = field(default_factory=dict)

    @property
    def health_file(self) -> Path:
        return self.www / "health"

    def set_health(self, body: dict[str, Any] | str) -> None:
        """Replace what ``GET /health`` returns (atomically, so no torn reads)."""
        text = body if isinstance(body, str) else json.dumps(body)
        tmp = self.www / ".health.tmp"
        tmp.write_text(text)
        tmp.chmod(0o644)
        os.replace(tmp, self.health_file)

    def remove_health(self) -> None:
        """Make ``/health`` answer 404, which fails the backend's Docker healthcheck."""
        self.health_file.unlink(missing_ok=True)

    def container(self, service: str) -> Container:
        container = self.client.containers.get(self.services[service])
        return container

    def put_file(self, service: str, path: str, text: str) -> None:
        """Write ``text`` at absolute ``path`` in a container through the archive API.

        The test image has no tool to write with; ``docker cp`` needs none.
        """
        data = text.encode()
        buffer = io.BytesIO()
        parts = path.strip("/").split("/")
        with tarfile.open(fileobj=buffer, mode="w") as archive:
            for depth in range(1, len(parts)):
                folder = tarfile.TarInfo("/".join(parts[:depth]))
                folder.type, folder.mode = tarfile.DIRTYPE, 0o755
                archive.addfile(folder)
            member = tarfile.TarInfo("/".join(parts))
            member.size, member.mode = len(data), 0o644
            archive.addfile(member, io.BytesIO(data))
        assert self.container(service).put_archive("/", buffer.getvalue())

    def stop(self, service: str) -> None:
        self.container(service).stop(timeout=0)

    def start(self, service: str) -> None:
        self.container(service).start()

    def remove(self, service: str) -> None:
        self.container(service).remove(force=True)

    def started_at(self, service: str) -> datetime:
        attrs = self.client.api.inspect_container(self.services[service])
        return _parse_docker_time(attrs["State"]["StartedAt"])

    async def backend_answers(self) -> bool:
        """True when the backend's HTTP server answers at all (any status)."""
        timeout = aiohttp.ClientTimeout(total=1)
        try:
            async with (
                aiohttp.ClientSession(timeout=timeout) as session,
                session.get(self.health_url) as resp,
            ):
                await resp.read()
                return True
        except (aiohttp.ClientError, TimeoutError):
            return False

    def _start_all(self, image: str) -> None:
        common: dict[str, Any] = {
            "detach": True,
            "network_mode": "host",
            "labels": {TEST_LABEL: "1"},
            # PID 1 ignores SIGTERM here; stop and restart should not wait 10 s.
            "stop_signal": "SIGKILL",
        }
        check_url = self.health_url
        self._containers["backend"] = self.client.containers.run(
            image,
            ["/bin/busybox", "sh", "-c", _backend_script(self.port)],
            name=self.services["backend"],
            volumes={str(self.www): {"bind": "/www", "mode": "ro"}},
            healthcheck={
                "test": ["CMD", "/bin/busybox", "wget", "-q", "-O", "/dev/null", check_url],
                "interval": _NS_PER_S,
                "timeout": _NS_PER_S,
                "retries": 1,
            },
            **common,
        )
        for service, script in (("postgres", _POSTGRES_LOG), ("backup", _BACKUP_LOG)):
            self._containers[service] = self.client.containers.run(
                image,
                ["/bin/busybox", "sh", "-c", f"{script}; exec /bin/busybox sleep 3600"],
                name=self.services[service],
                **common,
            )

    def _remove_all(self) -> None:
        for name in self.services.values():
            with contextlib.suppress(docker.errors.NotFound):
                self.client.api.remove_container(name, force=True)


@pytest_asyncio.fixture
async def sms_containers(
    docker_engine: DockerEngine, busybox_image: str
) -> AsyncIterator[SmsContainers]:
    """A fresh fake SMS deployment per test, removed afterwards whatever happened."""
    prefix = f"smsbot-{uuid.uuid4().hex[:8]}"
    port = free_port()
    www = Path(tempfile.mkdtemp(prefix=f"{prefix}-www-"))
    www.chmod(0o755)
    deployment = SmsContainers(
        client=docker_engine.client,
        base_url=docker_engine.base_url,
        services={s: f"{prefix}-{s}" for s in ("backend", "postgres", "backup")},
        health_url=f"http://127.0.0.1:{port}/health",
        port=port,
        www=www,
    )
    deployment.set_health(DEFAULT_HEALTH)
    try:
        await asyncio.to_thread(deployment._start_all, busybox_image)
        try:
            await wait_until(deployment.backend_answers, timeout=15, what="backend HTTP")
        except AssertionError as exc:
            logs = deployment.container("backend").logs().decode(errors="replace")
            raise AssertionError(f"{exc}; backend logs:\n{logs}") from exc
        yield deployment
    finally:
        await asyncio.to_thread(deployment._remove_all)
        shutil.rmtree(www, ignore_errors=True)
