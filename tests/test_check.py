"""The Agent check against real, sandboxed dockerd and podman engines."""

import socket
import threading

import pytest
from datadog_checks.base import AgentCheck, ConfigurationError

from datadog_checks.cis_docker import CisDockerCheck
from datadog_checks.cis_docker.rules import CIDR, HOSTNAME, MIRROR

from .common import (
    ALLOWED_INSECURE_REGISTRIES,
    CAN_CONNECT,
    CHECK_NAME,
    INSECURE_REGISTRIES,
    INSECURE_REGISTRY,
    REGISTRY_TLS,
    endpoint_tags,
)

pytestmark = pytest.mark.integration

MIRROR_URL = 'http://mirror.corp.example:5000/'


def make_check(**instance):
    return CisDockerCheck(CHECK_NAME, {}, [instance])


def assert_audited(aggregator, url, violations, allowed=0, extra_tags=()):
    tags = endpoint_tags(url, *extra_tags)
    status = AgentCheck.CRITICAL if violations else AgentCheck.OK
    aggregator.assert_service_check(CAN_CONNECT, AgentCheck.OK, tags=tags, count=1)
    aggregator.assert_service_check(REGISTRY_TLS, status, tags=tags, count=1)
    aggregator.assert_metric(INSECURE_REGISTRIES, len(violations), tags=tags, count=1)
    aggregator.assert_metric(ALLOWED_INSECURE_REGISTRIES, allowed, tags=tags, count=1)
    for kind, registry in violations:
        aggregator.assert_metric(
            INSECURE_REGISTRY, 1, tags=[*tags, f'registry:{registry}', f'registry_kind:{kind}'], count=1
        )
    aggregator.assert_metric(INSECURE_REGISTRY, count=len(violations))
    aggregator.assert_all_metrics_covered()


def assert_not_audited(aggregator, url, reason):
    tags = endpoint_tags(url)
    aggregator.assert_service_check(CAN_CONNECT, AgentCheck.CRITICAL, tags=tags, count=1)
    [connect] = aggregator.service_checks(CAN_CONNECT)
    assert reason in connect.message
    aggregator.assert_service_check(REGISTRY_TLS, AgentCheck.UNKNOWN, tags=tags, count=1)
    # A count of 0 would read as compliant on a dashboard: nothing is sent.
    assert aggregator.metric_names == []


class TestDockerd:
    def test_flags_name_each_insecure_registry_and_http_mirror(self, aggregator, dd_run_check, dockerd_factory):
        engine = dockerd_factory(
            args=[
                '--insecure-registry=10.1.0.0/16',
                '--insecure-registry=registry.corp.example:5000',
                '--registry-mirror=http://mirror.corp.example:5000',
            ]
        )

        dd_run_check(make_check(url=engine.url, tags=['team:platform']))

        assert_audited(
            aggregator,
            engine.url,
            [(CIDR, '10.1.0.0/16'), (HOSTNAME, 'registry.corp.example:5000'), (MIRROR, MIRROR_URL)],
            extra_tags=['team:platform'],
        )
        [registry_tls] = aggregator.service_checks(REGISTRY_TLS)
        assert registry_tls.message.startswith('3 insecure registries: 10.1.0.0/16 (cidr)')
        assert '--insecure-registry' in registry_tls.message
        assert 'https' in registry_tls.message

    def test_daemon_json_is_read_the_same_way(self, aggregator, dd_run_check, dockerd_factory):
        engine = dockerd_factory(
            daemon_json={'insecure-registries': ['192.168.50.0/24'], 'registry-mirrors': ['https://mirror.example']}
        )

        dd_run_check(make_check(url=engine.url))

        # An https mirror is fine; only the CIDR offends.
        assert_audited(aggregator, engine.url, [(CIDR, '192.168.50.0/24')])

    def test_stock_daemon_passes_with_the_loopback_exemption(self, aggregator, dd_run_check, dockerd_factory):
        engine = dockerd_factory()

        dd_run_check(make_check(url=engine.url))

        assert_audited(aggregator, engine.url, [])

    def test_stock_daemon_fails_when_loopback_is_not_exempt(self, aggregator, dd_run_check, dockerd_factory):
        engine = dockerd_factory(daemon_json={'insecure-registries': ['localhost:5000']})

        dd_run_check(make_check(url=engine.url, ignore_loopback=False))

        assert_audited(aggregator, engine.url, [(CIDR, '127.0.0.0/8'), (HOSTNAME, 'localhost:5000')])

    def test_loopback_registries_and_mirrors_are_exempt_by_default(self, aggregator, dd_run_check, dockerd_factory):
        engine = dockerd_factory(
            daemon_json={
                'insecure-registries': ['localhost:5000', '127.0.0.1:5001'],
                'registry-mirrors': ['http://127.0.0.1:5002'],
            }
        )

        dd_run_check(make_check(url=engine.url))

        assert_audited(aggregator, engine.url, [])

    def test_accepted_exceptions_are_counted_not_flagged(self, aggregator, dd_run_check, dockerd_factory):
        engine = dockerd_factory(
            daemon_json={
                'insecure-registries': ['10.5.0.0/16', 'legacy.corp.example:5000', 'other.corp.example'],
                'registry-mirrors': ['http://cache.corp.example:5000'],
            }
        )

        dd_run_check(
            make_check(
                url=engine.url,
                allowed_insecure_registries=[
                    '10.0.0.0/8',
                    'legacy.corp.example:5000',
                    'http://cache.corp.example:5000',
                ],
            )
        )

        assert_audited(aggregator, engine.url, [(HOSTNAME, 'other.corp.example')], allowed=3)
        [registry_tls] = aggregator.service_checks(REGISTRY_TLS)
        assert 'Accepted exceptions in use: 10.5.0.0/16 (cidr), legacy.corp.example:5000 (hostname)' in (
            registry_tls.message
        )

    def test_a_daemon_stopped_between_runs_is_reported_then_found_again(
        self, aggregator, dd_run_check, dockerd_factory
    ):
        engine = dockerd_factory(daemon_json={'insecure-registries': ['10.8.0.0/16']})
        check = make_check(url=engine.url, timeout=3)
        dd_run_check(check)
        assert_audited(aggregator, engine.url, [(CIDR, '10.8.0.0/16')])

        engine.stop()
        aggregator.reset()
        dd_run_check(check)
        assert_not_audited(aggregator, engine.url, engine.url.removeprefix('unix://'))

        engine.write_config({})
        engine.start()
        aggregator.reset()
        dd_run_check(check)
        assert_audited(aggregator, engine.url, [])

    def test_the_engine_version_is_check_metadata(self, dd_run_check, dockerd_factory, datadog_agent):
        engine = dockerd_factory()
        check = make_check(url=engine.url)
        check.check_id = 'test:123'

        dd_run_check(check)

        version = datadog_agent._metadata[('test:123', 'version.raw')]
        assert version.startswith('20.10.')

    def test_docker_host_is_the_default_endpoint(self, aggregator, dd_run_check, dockerd_factory, monkeypatch):
        engine = dockerd_factory(daemon_json={'insecure-registries': ['10.9.0.0/16']})
        monkeypatch.setenv('DOCKER_HOST', engine.url)

        dd_run_check(make_check())

        assert_audited(aggregator, engine.url, [(CIDR, '10.9.0.0/16')])


class TestPodman:
    def test_insecure_registry_from_registries_conf(self, aggregator, dd_run_check, podman_factory):
        engine = podman_factory(
            '[[registry]]\nlocation = "registry.corp.example:5000"\ninsecure = true\n'
            '[[registry]]\nlocation = "secure.corp.example"\n'
        )

        dd_run_check(make_check(url=engine.url))

        assert_audited(aggregator, engine.url, [(HOSTNAME, 'registry.corp.example:5000')])

    def test_clean_registries_conf_is_compliant(self, aggregator, dd_run_check, podman_factory):
        engine = podman_factory('unqualified-search-registries = ["docker.io"]\n')

        dd_run_check(make_check(url=engine.url))

        assert_audited(aggregator, engine.url, [])


class TestUnreachable:
    def test_a_missing_socket(self, aggregator, dd_run_check, tmp_path):
        url = f'unix://{tmp_path}/docker.sock'

        dd_run_check(make_check(url=url))

        assert_not_audited(aggregator, url, 'does not exist')

    def test_a_socket_that_is_not_docker(self, aggregator, dd_run_check, tmp_path):
        path = tmp_path / 'web.sock'
        with _http_server(path, b'HTTP/1.1 404 Not Found\r\nContent-Length: 9\r\nConnection: close\r\n\r\nnot found'):
            dd_run_check(make_check(url=f'unix://{path}'))

        assert_not_audited(aggregator, f'unix://{path}', 'not a Docker Engine API')

    def test_a_socket_that_answers_json_of_another_kind(self, aggregator, dd_run_check, tmp_path):
        path = tmp_path / 'api.sock'
        body = b'{"status": "ok"}'
        answer = b'HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s' % (
            len(body),
            body,
        )
        with _http_server(path, answer):
            dd_run_check(make_check(url=f'unix://{path}'))

        assert_not_audited(aggregator, f'unix://{path}', 'without a ServerVersion')

    def test_an_engine_error_is_quoted(self, aggregator, dd_run_check, tmp_path):
        path = tmp_path / 'failing.sock'
        body = b'{"message": "devmapper: pool is full"}'
        answer = b'HTTP/1.1 500 Internal Server Error\r\nContent-Length: %d\r\n\r\n%s' % (len(body), body)
        with _http_server(path, answer):
            dd_run_check(make_check(url=f'unix://{path}'))

        assert_not_audited(aggregator, f'unix://{path}', 'answered /info with HTTP 500: devmapper: pool is full')


class TestConfiguration:
    @pytest.mark.parametrize(
        'instance, option',
        [
            ({'url': 'http://localhost:2375'}, 'url'),
            ({'url': 'tcp://'}, 'url'),
            ({'timeout': 0}, 'timeout'),
            ({'timeout': 'soon'}, 'timeout'),
            ({'ignore_loopback': 'maybe'}, 'ignore_loopback'),
            ({'allowed_insecure_registries': ['10.0.0.0/40']}, 'allowed_insecure_registries'),
            ({'allowed_insecure_registries': 'registry:5000'}, 'allowed_insecure_registries'),
            ({'max_registry_series': -1}, 'max_registry_series'),
        ],
    )
    def test_bad_values_are_refused_naming_the_option(self, dd_run_check, aggregator, instance, option):
        with pytest.raises(Exception, match=option) as raised:
            dd_run_check(make_check(**instance))

        assert 'ConfigurationError' in str(raised.value) or isinstance(raised.value, ConfigurationError)
        assert aggregator.metric_names == []


class _http_server:
    """A unix socket that answers every connection with one canned response: a peer that is not a Docker engine."""

    def __init__(self, path, answer):
        self.path = str(path)
        self.answer = answer
        self.server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)

    def __enter__(self):
        self.server.bind(self.path)
        self.server.listen()
        threading.Thread(target=self._serve, daemon=True).start()
        return self

    def _serve(self):
        while True:
            try:
                connection, _ = self.server.accept()
            except OSError:
                return
            with connection:
                connection.recv(65536)
                connection.sendall(self.answer)

    def __exit__(self, *exc):
        self.server.close()


def test_tls_options_on_a_unix_socket_are_ignored_with_a_warning(aggregator, dd_run_check, dockerd_factory, caplog):
    engine = dockerd_factory()

    dd_run_check(make_check(url=engine.url, tls_ca_cert='/nonexistent/ca.pem'))

    assert_audited(aggregator, engine.url, [])
    assert any(
        record.levelname == 'WARNING' and 'tls_ca_cert: ignored' in record.getMessage() for record in caplog.records
    ), caplog.text
