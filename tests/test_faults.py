"""Engines that misbehave, sockets the Agent may not open, and daemons that change under a running check.

Whatever goes wrong, a run ends within its timeout plus a small margin, says why in cis_docker.can_connect, sends
registry_tls UNKNOWN and no count: a count of 0 would read as compliant.
"""

import gc
import json
import os
import pwd
import shutil
import socket
import stat
import sys
import tempfile
import threading
import time
import warnings

import pytest
from datadog_checks.base import AgentCheck

from datadog_checks.cis_docker import CisDockerCheck, cli
from sandbox.engines import Dockerd
from sandbox.probes import RawInfo, reader_threads

from .common import CAN_CONNECT, CHECK_NAME, INSECURE_REGISTRIES, REGISTRY_TLS

pytestmark = pytest.mark.integration

TIMEOUT = 2.0
# Thread hand-off and the check's own work after the read; generous for a loaded 2-core CI machine.
MARGIN = 1.5
DRIP_INTERVAL = 0.2
HUGE_BODY = 512 * 1024 * 1024
UPSTREAM_REGISTRIES = ['10.99.0.0/16']


class MisbehavingPeer:
    """A unix-socket peer that accepts connections, then answers `GET /info` as `mode` says.

    `hang` never answers; `drip` sends a valid answer one byte every DRIP_INTERVAL; `truncate` closes halfway through
    the body; `huge` streams a body of HUGE_BODY bytes; `answer` passes on the real /info of `upstream`, a dockerd.
    `release()` lets go of every connection held by `hang` and `drip`.
    """

    def __init__(self, path, upstream: Dockerd, mode: str):
        self.path = str(path)
        self.upstream = upstream
        self.mode = mode
        self.released = threading.Event()
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.listener.bind(self.path)
        self.listener.listen(16)
        threading.Thread(target=self._accept, daemon=True).start()

    def release(self, mode: str) -> None:
        self.mode = mode
        self.released.set()

    def close(self) -> None:
        self.released.set()
        self.listener.close()

    def _accept(self) -> None:
        while True:
            try:
                connection, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(connection,), daemon=True).start()

    def _serve(self, connection: socket.socket) -> None:
        with connection:
            try:
                while self._read_request(connection):
                    if not self._answer(connection):
                        return
            except OSError:  # the check gave up and closed its end, as it should
                return

    def _read_request(self, connection) -> bool:
        request = b''
        while b'\r\n\r\n' not in request:
            data = connection.recv(4096)
            if not data:
                return False
            request += data
        return True

    def _answer(self, connection) -> bool:
        """Answer one request; False once the connection must end."""
        mode = self.mode
        if mode == 'hang':
            self.released.wait()
            return False
        if mode == 'huge':
            connection.sendall(self._head(HUGE_BODY))
            block = b' ' * (1024 * 1024)
            for _ in range(HUGE_BODY // len(block)):
                connection.sendall(block)
            return False

        upstream = RawInfo(self.upstream.socket_path)
        body = upstream.get()
        upstream.close()
        response = self._head(len(body)) + body
        if mode == 'drip':
            for index in range(len(response)):
                if self.released.wait(DRIP_INTERVAL):
                    return False
                connection.sendall(response[index : index + 1])
            return True
        if mode == 'truncate':
            connection.sendall(response[: len(response) - len(body) // 2])
            return False
        connection.sendall(response)
        return True

    @staticmethod
    def _head(length: int) -> bytes:
        return f'HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {length}\r\n\r\n'.encode()


@pytest.fixture(scope='module')
def upstream(tmp_path_factory):
    engine = Dockerd(tmp_path_factory.mktemp('upstream'), daemon_json={'insecure-registries': UPSTREAM_REGISTRIES})
    engine.start()
    yield engine
    engine.stop()


@pytest.fixture
def peer_factory(tmp_path, upstream):
    peers = []

    def start(mode):
        peer = MisbehavingPeer(tmp_path / f'{mode}-{len(peers)}.sock', upstream, mode)
        peers.append(peer)
        return peer

    yield start
    for peer in peers:
        peer.close()


def make_check(url, **options):
    return CisDockerCheck(CHECK_NAME, {}, [{'url': url, 'timeout': TIMEOUT, **options}])


def timed_run(check) -> float:
    started = time.monotonic()
    check.run()
    return time.monotonic() - started


def assert_unaudited(aggregator, reason):
    [connect] = aggregator.service_checks(CAN_CONNECT)
    assert connect.status == AgentCheck.CRITICAL
    assert reason in connect.message, connect.message
    [verdict] = aggregator.service_checks(REGISTRY_TLS)
    assert verdict.status == AgentCheck.UNKNOWN
    assert aggregator.metrics(INSECURE_REGISTRIES) == []
    assert aggregator.metric_names == []


def assert_audited(aggregator, count):
    aggregator.assert_service_check(CAN_CONNECT, AgentCheck.OK, count=1)
    aggregator.assert_service_check(REGISTRY_TLS, AgentCheck.CRITICAL if count else AgentCheck.OK, count=1)
    aggregator.assert_metric(INSECURE_REGISTRIES, count, count=1)


@pytest.mark.parametrize(
    'mode, reason',
    [
        ('hang', 'no answer from unix://'),
        ('drip', f'within {TIMEOUT:g} s'),
        ('truncate', 'closed the connection before a complete answer'),
        ('huge', 'sent more than 32 MiB for /info'),
    ],
)
def test_a_misbehaving_engine_ends_the_run_in_time_and_is_never_compliant(aggregator, peer_factory, mode, reason):
    peer = peer_factory(mode)
    check = make_check(f'unix://{peer.path}')

    elapsed = timed_run(check)

    assert elapsed < TIMEOUT + MARGIN
    assert_unaudited(aggregator, reason)
    check.cancel()


def test_a_stuck_read_is_not_doubled_and_the_recovered_engine_is_read_again(aggregator, peer_factory):
    peer = peer_factory('drip')
    gc.collect()
    threads_before = reader_threads()
    check = make_check(f'unix://{peer.path}')

    assert timed_run(check) < TIMEOUT + MARGIN
    assert_unaudited(aggregator, f'no answer from unix://{peer.path} within {TIMEOUT:g} s')
    stuck = reader_threads() - threads_before
    assert len(stuck) == 1

    # The first read is still receiving a byte at a time: the next run says so instead of starting another reader.
    aggregator.reset()
    assert timed_run(check) < TIMEOUT + MARGIN
    assert_unaudited(aggregator, 'has still not answered a request sent')
    assert reader_threads() - threads_before == stuck

    peer.release('answer')
    assert check.engine._stalled.wait(TIMEOUT + MARGIN), 'the stuck read did not end once the peer let go'
    aggregator.reset()
    assert timed_run(check) < TIMEOUT + MARGIN
    assert_audited(aggregator, len(UPSTREAM_REGISTRIES))
    assert reader_threads() - threads_before == stuck
    check.cancel()


@pytest.fixture
def root_only_dockerd():
    """A dockerd whose socket is root:root 0660 in a directory anyone may traverse, as on a host without a docker
    group: only the socket's own permissions stand between another user and the engine."""
    root = tempfile.mkdtemp(prefix='cis-root-only-')
    os.chmod(root, 0o755)
    engine = Dockerd(root, args=['--group', 'root'])
    engine.start()
    yield engine
    engine.stop()
    shutil.rmtree(root, ignore_errors=True)


def run_cli_as_nobody(url: str) -> tuple[int, dict]:
    """The command-line audit in a child process that drops to `nobody`, no groups, before it touches the socket.

    The project's interpreter lives under /root, which `nobody` may not traverse, so the child is a fork of this
    process with everything already imported rather than a fresh interpreter.
    """
    nobody = pwd.getpwnam('nobody')
    read_end, write_end = os.pipe()
    with warnings.catch_warnings():
        warnings.simplefilter('ignore', DeprecationWarning)  # fork with threads: the child only runs the audit
        pid = os.fork()
    if pid == 0:  # pragma: no cover - the child reports through its pipe and exit status
        code = 99
        try:
            os.close(read_end)
            sys.stdout = os.fdopen(write_end, 'w')
            os.setgroups([])
            os.setgid(nobody.pw_gid)
            os.setuid(nobody.pw_uid)
            code = cli.main(['--url', url, '--json', '--timeout', str(TIMEOUT)])
            sys.stdout.flush()
        finally:
            os._exit(code)
    os.close(write_end)
    with os.fdopen(read_end) as output:
        document = output.read()
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status), json.loads(document)


def test_a_socket_the_agent_user_may_not_open_says_what_to_do(root_only_dockerd):
    socket_stat = os.stat(root_only_dockerd.socket_path)
    assert stat.S_IMODE(socket_stat.st_mode) == 0o660 and (socket_stat.st_uid, socket_stat.st_gid) == (0, 0)
    # As root the same command audits the engine; this also loads every module the unprivileged child will need.
    assert cli.run_instance({'url': root_only_dockerd.url}).exit_code == cli.EXIT_COMPLIANT

    exit_code, document = run_cli_as_nobody(root_only_dockerd.url)

    assert exit_code == cli.EXIT_UNAUDITED
    assert document['verdict'] == 'unaudited' and document['violations'] is None
    checks = {check['name']: check for check in document['service_checks']}
    message = checks[CAN_CONNECT]['message']
    assert checks[CAN_CONNECT]['status'] == 'CRITICAL'
    assert f'permission denied on {root_only_dockerd.socket_path}' in message
    assert 'docker group' in message and 'mount the socket' in message
    assert checks[REGISTRY_TLS]['status'] == 'UNKNOWN'


def wait_for_registries(engine, expected, timeout=15.0):
    """dockerd applies a reloaded daemon.json asynchronously; poll /info until it shows `expected` CIDRs."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        raw = RawInfo(engine.socket_path)
        cidrs = json.loads(raw.get())['RegistryConfig']['InsecureRegistryCIDRs']
        raw.close()
        if set(cidrs) - {'127.0.0.0/8', '::1/128'} == set(expected):
            return
        time.sleep(0.1)
    raise AssertionError(f'dockerd did not apply {expected} within {timeout:g} s')


def test_a_daemon_restarted_between_runs_is_read_right_by_the_same_instance(aggregator, dockerd_factory):
    engine = dockerd_factory(daemon_json={'insecure-registries': ['10.1.0.0/16']})
    check = make_check(engine.url, timeout=10)
    check.run()
    assert_audited(aggregator, 1)

    # Same root and socket, a new process with a new configuration: the connection kept from the last run is dead.
    engine.stop()
    engine.write_config({'insecure-registries': ['10.1.0.0/16', '10.2.0.0/16', 'registry.corp.example:5000']})
    engine.start()
    aggregator.reset()
    check.run()

    assert_audited(aggregator, 3)
    check.cancel()


def test_a_reloaded_daemon_json_is_right_on_the_next_run(aggregator, dockerd_factory):
    engine = dockerd_factory(daemon_json={'insecure-registries': ['10.1.0.0/16']})
    check = make_check(engine.url, timeout=10)
    check.run()
    assert_audited(aggregator, 1)

    engine.write_config({'insecure-registries': ['10.1.0.0/16', '10.3.0.0/16']})
    engine.reload()
    wait_for_registries(engine, ['10.1.0.0/16', '10.3.0.0/16'])
    aggregator.reset()
    check.run()
    assert_audited(aggregator, 2)

    # The key must stay in daemon.json for a reload to empty the list; dropping it would keep the old one.
    engine.write_config({'insecure-registries': []})
    engine.reload()
    wait_for_registries(engine, [])
    aggregator.reset()
    check.run()
    assert_audited(aggregator, 0)
    check.cancel()
