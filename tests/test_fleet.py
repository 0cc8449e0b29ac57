"""Fleets: many real engines audited from one command, and many instances of the Agent check kept apart by tag."""

import json
import os
import pty
import re
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import yaml
from datadog_checks.base import AgentCheck

from datadog_checks.cis_docker import CisDockerCheck
from datadog_checks.cis_docker.cli import UsageError
from datadog_checks.cis_docker.fleet import read_targets
from sandbox.engines import free_port

from .common import CAN_CONNECT, CHECK_NAME, INSECURE_REGISTRIES, REGISTRY_TLS, endpoint_tags, run_cli

pytestmark = pytest.mark.integration

TIMEOUT = 3


@pytest.fixture
def silent_engine():
    """A TCP endpoint that accepts connections and never says a word: the slowest engine a fleet can meet."""
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.bind(('127.0.0.1', 0))
    server.listen(16)
    accepted = []
    stop = threading.Event()

    def accept():
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                accepted.append(server.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield f'tcp://127.0.0.1:{server.getsockname()[1]}'
    stop.set()
    thread.join()
    for connection in accepted:
        connection.close()
    server.close()


def start_all(engines):
    """dockerd takes up to a couple of seconds to come up; a dozen in a row would dominate the test."""
    with ThreadPoolExecutor(len(engines)) as pool:
        list(pool.map(lambda engine: engine.start(), engines))
    return engines


def tls_listener(material, server=None):
    server = server or material.server
    return {
        'tcp': f'127.0.0.1:{free_port()}',
        'tls_ca': material.ca,
        'tls_cert': server.cert,
        'tls_key': server.key,
    }


def client_files(material, ca=None):
    return {
        'tls_ca_cert': str(ca or material.ca),
        'tls_cert': str(material.client.cert),
        'tls_private_key': str(material.client.key),
    }


def table_rows(stdout):
    """ENDPOINT -> (ENGINE, STATUS, VIOLATIONS, DETAIL), from the lines between the header and the first blank line."""
    lines = stdout.splitlines()
    assert lines[0].split() == ['ENDPOINT', 'ENGINE', 'STATUS', 'VIOLATIONS', 'DETAIL']
    rows = {}
    for line in lines[1 : lines.index('')]:
        cells = re.split(r'\s{2,}', line, maxsplit=4)
        rows[cells[0]] = (*cells[1:], '')[:4]
    return rows


@pytest.fixture
def fleet(dockerd_factory, podman_factory, tls_material, silent_engine, tmp_path):
    """Twelve endpoints of every kind, and the targets file that lists them."""
    engines = start_all(
        {
            'plain': dockerd_factory(start=False),
            'plain-too': dockerd_factory(start=False),
            'two-insecure': dockerd_factory(
                daemon_json={'insecure-registries': ['10.10.0.0/16', 'registry.corp.example:5000']}, start=False
            ),
            'http-mirror': dockerd_factory(
                daemon_json={'registry-mirrors': ['http://mirror.corp.example']}, start=False
            ),
            'one-insecure': dockerd_factory(daemon_json={'insecure-registries': ['10.20.0.0/16']}, start=False),
            'tls': dockerd_factory(start=False, **tls_listener(tls_material)),
            'tls-insecure': dockerd_factory(
                daemon_json={'insecure-registries': ['10.30.0.0/16']}, start=False, **tls_listener(tls_material)
            ),
            'tls-wrong-ca': dockerd_factory(start=False, **tls_listener(tls_material)),
            'plain-tcp': dockerd_factory(start=False, tcp=f'127.0.0.1:{free_port()}'),
        }.values()
    )
    plain, plain_too, two_insecure, http_mirror, one_insecure, tls, tls_insecure, tls_wrong_ca, plain_tcp = engines
    podman = podman_factory('[[registry]]\nlocation = "podman-registry.corp.example:5000"\ninsecure = true\n')
    dead = f'unix://{tmp_path}/nothing-listens.sock'

    targets = [
        plain.url,
        plain_too.url,
        two_insecure.url,
        http_mirror.url,
        one_insecure.url,
        {'url': tls.tcp_url, **client_files(tls_material)},
        # No TLS keys of its own: DOCKER_TLS_VERIFY and DOCKER_CERT_PATH of the command supply them.
        tls_insecure.tcp_url,
        {'url': tls_wrong_ca.tcp_url, **client_files(tls_material, ca=tls_material.other_ca)},
        {'url': plain_tcp.tcp_url, 'use_tls': False},
        podman.url,
        dead,
        {'url': silent_engine, 'use_tls': False},
    ]
    path = tmp_path / 'targets.yaml'
    path.write_text(yaml.safe_dump(targets))
    expected = {
        plain.url: ('Docker 20.10', 'compliant', '0'),
        plain_too.url: ('Docker 20.10', 'compliant', '0'),
        two_insecure.url: ('Docker 20.10', 'violations', '2'),
        http_mirror.url: ('Docker 20.10', 'violations', '1'),
        one_insecure.url: ('Docker 20.10', 'violations', '1'),
        tls.tcp_url: ('Docker 20.10', 'compliant', '0'),
        tls_insecure.tcp_url: ('Docker 20.10', 'violations', '1'),
        tls_wrong_ca.tcp_url: ('-', 'unaudited', '-'),
        plain_tcp.tcp_url: ('Docker 20.10', 'compliant', '0'),
        podman.url: ('Podman 4.', 'violations', '1'),
        dead: ('-', 'unaudited', '-'),
        silent_engine: ('-', 'unaudited', '-'),
    }
    env = {'DOCKER_TLS_VERIFY': '1', 'DOCKER_CERT_PATH': str(tls_material.docker_cert_path)}
    return path, expected, env, {'dead': dead, 'silent': silent_engine, 'wrong_ca': tls_wrong_ca.tcp_url}


def test_fleet_table(fleet):
    path, expected, env, special = fleet

    started = time.monotonic()
    result = run_cli('--targets', str(path), '--timeout', str(TIMEOUT), env=env)
    elapsed = time.monotonic() - started

    assert result.returncode == 2, result.stdout + result.stderr
    # Piped stderr stays quiet: no progress bar, no log lines.
    assert result.stderr == ''
    rows = table_rows(result.stdout)
    assert {
        endpoint: (engine[: len(expected[endpoint][0])], status, count)
        for endpoint, (engine, status, count, _) in rows.items()
    } == expected
    assert rows[special['dead']][3].startswith('socket ') and 'does not exist' in rows[special['dead']][3]
    assert rows[special['silent']][3] == f'no answer from {special["silent"]} within {TIMEOUT} s'
    assert 'not signed by the CA in tls_ca_cert' in rows[special['wrong_ca']][3]
    details = {detail for _, _, _, detail in rows.values()}
    assert '10.10.0.0/16, registry.corp.example:5000' in details
    assert 'http://mirror.corp.example/' in details
    assert 'podman-registry.corp.example:5000' in details
    assert '12 engines: 4 compliant, 5 with violations, 3 not audited' in result.stdout
    assert 'exposed without TLS' in result.stdout.split('Warnings:')[1]
    # Every engine is audited at once: the silent one costs one timeout, not one per engine behind it.
    assert elapsed < TIMEOUT + 5


def test_fleet_json(fleet):
    path, expected, env, special = fleet

    started = time.monotonic()
    result = run_cli('--targets', str(path), '--timeout', str(TIMEOUT), '--json', env=env)
    elapsed = time.monotonic() - started

    assert result.returncode == 2
    document = json.loads(result.stdout)
    by_endpoint = {entry['endpoint']: entry for entry in document['endpoints']}
    assert {endpoint: entry['verdict'] for endpoint, entry in by_endpoint.items()} == {
        endpoint: status for endpoint, (_, status, _) in expected.items()
    }
    assert [entry['endpoint'] for entry in document['endpoints']] == list(expected)
    assert document['summary'] | {'seconds': None} == {
        'engines': 12,
        'compliant': 4,
        'violations': 5,
        'unaudited': 3,
        'exit_code': 2,
        'seconds': None,
    }
    for endpoint in special.values():
        assert by_endpoint[endpoint]['reason']
        assert by_endpoint[endpoint]['series'] == []
    assert by_endpoint[special['silent']]['seconds'] >= TIMEOUT
    assert elapsed < TIMEOUT + 5


def test_exit_status_follows_the_worst_engine(dockerd_factory, tmp_path):
    compliant, insecure = start_all(
        [
            dockerd_factory(start=False),
            dockerd_factory(daemon_json={'insecure-registries': ['10.9.0.0/16']}, start=False),
        ]
    )
    only_compliant = tmp_path / 'compliant.txt'
    only_compliant.write_text(f'# the build hosts\n{compliant.url}\n\n')
    with_violation = tmp_path / 'mixed.txt'
    with_violation.write_text(f'{compliant.url}\n{insecure.url}  # the old one\n')

    assert run_cli('--targets', str(only_compliant)).returncode == 0
    assert run_cli('--targets', str(with_violation)).returncode == 1


def test_progress_bar_only_on_a_terminal(dockerd_factory, tmp_path):
    engines = start_all([dockerd_factory(start=False), dockerd_factory(start=False)])
    path = tmp_path / 'targets.txt'
    path.write_text('\n'.join(engine.url for engine in engines))
    controller, terminal = pty.openpty()
    try:
        result = run_cli('--targets', str(path), '--workers', '1', stderr=terminal)
        os.set_blocking(controller, False)
        shown = os.read(controller, 65536).decode()
    finally:
        os.close(terminal)
        os.close(controller)

    assert result.returncode == 0
    assert '] 2/2 engines audited' in shown
    assert shown.endswith('\r\x1b[K')
    assert 'engines audited' not in result.stdout


@pytest.mark.parametrize(
    'text, expected',
    [
        ('# engines\nunix:///a.sock\n\n  tcp://b:2376   # the build host\n', ['unix:///a.sock', 'tcp://b:2376']),
        (
            '- unix:///a.sock\n- url: tcp://b:2376\n  tls_verify: false\n',
            ['unix:///a.sock', {'url': 'tcp://b:2376', 'tls_verify': False}],
        ),
        (
            'init_config: {}\ninstances:\n  - url: tcp://c:2376\n    tags: [team:a]\n',
            [{'url': 'tcp://c:2376', 'tags': ['team:a']}],
        ),
    ],
)
def test_targets_file_formats(tmp_path, text, expected):
    path = tmp_path / 'targets'
    path.write_text(text)

    assert read_targets(str(path)) == expected


@pytest.mark.parametrize(
    'text, message',
    [
        ('# nothing here\n\n', 'lists no engines'),
        ('url: tcp://a:2376\n', 'neither one URL per line nor a non-empty YAML list'),
        ('- [unclosed\n', 'neither one URL per line nor valid YAML'),
    ],
)
def test_unusable_targets_file(tmp_path, text, message):
    path = tmp_path / 'targets'
    path.write_text(text)

    with pytest.raises(UsageError, match=message):
        read_targets(str(path))


def test_bad_entries_and_flags_are_reported_never_compliant(tmp_path):
    path = tmp_path / 'targets.yaml'
    path.write_text(yaml.safe_dump([42, {'url': 'ftp://nowhere'}, 'tcp://10.0.0.1:2375']))

    result = run_cli('--targets', str(path), '--json')
    refused = run_cli('--targets', str(tmp_path / 'missing.txt'))
    no_workers = run_cli('--targets', str(path), '--workers', '0')

    assert result.returncode == 2
    reasons = [entry['reason'] for entry in json.loads(result.stdout)['endpoints']]
    assert reasons[0] == 'entry 1 is a int, not a URL or an instance'
    assert 'url' in reasons[1] and 'tcp://' in reasons[1]
    assert 'no TLS is configured' in reasons[2] and '--no-tls' in reasons[2]
    assert (refused.returncode, refused.stdout) == (2, '')
    assert 'cannot read' in refused.stderr
    assert no_workers.returncode == 2
    assert '--workers must be 1 or more' in no_workers.stderr


def test_agent_instances_stay_apart_by_endpoint_tag(dd_run_check, aggregator, dockerd_factory, tls_material):
    compliant, insecure = start_all(
        [
            dockerd_factory(start=False, **tls_listener(tls_material)),
            dockerd_factory(
                daemon_json={'insecure-registries': ['10.40.0.0/16']}, start=False, **tls_listener(tls_material)
            ),
        ]
    )
    # What a cluster check dispatches: remote engines, no host of their own.
    for engine in (compliant, insecure):
        instance = {'url': engine.tcp_url, 'empty_default_hostname': True, **client_files(tls_material)}
        dd_run_check(CisDockerCheck(CHECK_NAME, {}, [instance]))

    aggregator.assert_service_check(CAN_CONNECT, AgentCheck.OK, tags=endpoint_tags(compliant.tcp_url), count=1)
    aggregator.assert_service_check(CAN_CONNECT, AgentCheck.OK, tags=endpoint_tags(insecure.tcp_url), count=1)
    aggregator.assert_service_check(REGISTRY_TLS, AgentCheck.OK, tags=endpoint_tags(compliant.tcp_url), count=1)
    aggregator.assert_service_check(REGISTRY_TLS, AgentCheck.CRITICAL, tags=endpoint_tags(insecure.tcp_url), count=1)
    aggregator.assert_metric(INSECURE_REGISTRIES, 0, tags=endpoint_tags(compliant.tcp_url), hostname='', count=1)
    aggregator.assert_metric(INSECURE_REGISTRIES, 1, tags=endpoint_tags(insecure.tcp_url), hostname='', count=1)
    assert {check.hostname for check in aggregator.service_checks(REGISTRY_TLS)} == {''}
