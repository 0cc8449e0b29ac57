"""Throwaway container engines for the tests, the benchmarks and the demo audit.

Each engine lives entirely under one temporary directory: its data, its state, its socket and its configuration.
dockerd is always given its own `--config-file`, so the host's /etc/docker/daemon.json never leaks in. Starting an
engine needs root (dockerd) and the Debian packages docker.io and podman; `scripts/bootstrap` installs them.

This module is not part of the wheel that goes into an Agent.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

READY_TIMEOUT = 60.0


def ping(socket_path: str | os.PathLike, timeout: float = 1.0) -> bool:
    """True when an engine answers `GET /_ping` on the unix socket."""
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(timeout)
            sock.connect(str(socket_path))
            sock.sendall(b'GET /_ping HTTP/1.0\r\nHost: engine\r\n\r\n')
            answer = sock.recv(64)
    except OSError:
        return False
    return answer.startswith(b'HTTP/1.') and b' 200 ' in answer[:16]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now, for an engine about to bind it."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(('127.0.0.1', 0))
        return sock.getsockname()[1]


class Engine:
    """A daemon process started under `root`, stopped by `stop()` or at the end of a `with` block."""

    kind = 'engine'

    def __init__(self, root: str | os.PathLike | None = None):
        self._own_root = root is None
        self.root = Path(root or tempfile.mkdtemp(prefix=f'cis-{self.kind}-'))
        self.root.mkdir(parents=True, exist_ok=True)
        self.socket_path = self.root / f'{self.kind}.sock'
        self.log_path = self.root / f'{self.kind}.log'
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f'unix://{self.socket_path}'

    def command(self) -> list[str]:
        raise NotImplementedError

    def environment(self) -> dict[str, str]:
        return dict(os.environ)

    def start(self) -> Engine:
        with open(self.log_path, 'ab') as log:
            self.process = subprocess.Popen(
                self.command(),
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=self.environment(),
                start_new_session=True,
            )
        self.wait_ready()
        return self

    def wait_ready(self, timeout: float = READY_TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f'{self.kind} exited with {self.process.returncode}: {self.log_tail()}')
            if self.ready():
                return
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f'{self.kind} did not become ready within {timeout:g} s: {self.log_tail()}')

    def ready(self) -> bool:
        return ping(self.socket_path)

    def reload(self) -> None:
        """SIGHUP: dockerd re-reads its configuration file."""
        self.process.send_signal(signal.SIGHUP)

    def stop(self, timeout: float = 20.0) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        self.process = None
        self.cleanup()

    def cleanup(self) -> None:
        _unmount_below(self.root)
        if self._own_root:
            shutil.rmtree(self.root, ignore_errors=True)

    def log_tail(self, lines: int = 15) -> str:
        try:
            return '\n'.join(self.log_path.read_text(errors='replace').splitlines()[-lines:])
        except OSError:
            return '(no log)'

    def __enter__(self) -> Engine:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


class Dockerd(Engine):
    """dockerd from Debian's docker.io, with no networking and the vfs storage driver, so nothing on the host moves.

    `daemon_json` is written as the engine's configuration file and re-read on `reload()`; `args` are extra flags.

    `tcp` adds a listener such as `127.0.0.1:2376` next to the unix socket, which stays the one used to see that the
    engine is up. With `tls_cert` and `tls_key` that listener speaks TLS; adding `tls_ca` makes it demand a client
    certificate signed by that CA (`--tlsverify`), as a remote engine should.
    """

    kind = 'dockerd'

    def __init__(
        self,
        root=None,
        daemon_json: dict | None = None,
        args: list[str] | tuple[str, ...] = (),
        tcp: str | None = None,
        tls_ca: str | os.PathLike | None = None,
        tls_cert: str | os.PathLike | None = None,
        tls_key: str | os.PathLike | None = None,
    ):
        super().__init__(root)
        self.config_path = self.root / 'daemon.json'
        self.tcp = tcp
        self.args = [*self._listener_args(tcp, tls_ca, tls_cert, tls_key), *args]
        self.write_config(daemon_json or {})

    @property
    def tcp_url(self) -> str:
        if self.tcp is None:
            raise ValueError('this engine has no TCP listener')
        return f'tcp://{self.tcp}'

    @staticmethod
    def _listener_args(tcp, tls_ca, tls_cert, tls_key) -> list[str]:
        if tcp is None:
            return []
        args = ['-H', f'tcp://{tcp}']
        if tls_cert is not None and tls_key is not None:
            args += ['--tlsverify', '--tlscacert', str(tls_ca)] if tls_ca is not None else ['--tls']
            args += ['--tlscert', str(tls_cert), '--tlskey', str(tls_key)]
        return args

    def write_config(self, daemon_json: dict) -> None:
        self.config_path.write_text(json.dumps(daemon_json, indent=2))

    def command(self) -> list[str]:
        return [
            shutil.which('dockerd') or '/usr/sbin/dockerd',
            '--config-file',
            str(self.config_path),
            '--data-root',
            str(self.root / 'data'),
            '--exec-root',
            str(self.root / 'exec'),
            '--pidfile',
            str(self.root / 'dockerd.pid'),
            '-H',
            self.url,
            '--iptables=false',
            '--ip6tables=false',
            '--bridge=none',
            '--storage-driver=vfs',
            *self.args,
        ]


class Podman(Engine):
    """`podman system service` with its own storage and a registries.conf of the test's choosing."""

    kind = 'podman'

    def __init__(self, root=None, registries_conf: str = ''):
        super().__init__(root)
        self.registries_path = self.root / 'registries.conf'
        self.registries_path.write_text(registries_conf)

    def environment(self) -> dict[str, str]:
        env = dict(os.environ)
        env['CONTAINERS_REGISTRIES_CONF'] = str(self.registries_path)
        # Keep podman away from the invoking user's own configuration and from /etc/containers/registries.conf.d.
        env['CONTAINERS_CONF'] = str(self.root / 'containers.conf')
        (self.root / 'containers.conf').touch()
        env['XDG_CONFIG_HOME'] = str(self.root / 'xdg-config')
        return env

    def command(self) -> list[str]:
        return [
            shutil.which('podman') or '/usr/bin/podman',
            '--root',
            str(self.root / 'storage'),
            '--runroot',
            str(self.root / 'run'),
            '--storage-driver',
            'vfs',
            '--cgroup-manager',
            'cgroupfs',
            '--events-backend',
            'file',
            'system',
            'service',
            '--time',
            '0',
            self.url,
        ]


def _unmount_below(root: Path) -> None:
    """dockerd leaves bind mounts under its data and exec roots; a directory with a mount cannot be removed."""
    try:
        mounts = Path('/proc/self/mounts').read_text().splitlines()
    except OSError:
        return
    prefix = str(root.resolve())
    targets = [line.split()[1] for line in mounts if line.split()[1].startswith(prefix)]
    for target in sorted(targets, key=len, reverse=True):
        subprocess.run(['umount', '-l', target], check=False, capture_output=True)
