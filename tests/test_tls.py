"""Remote engines over TCP: mutual TLS, every way it can fail, plain TCP, secrets, and Docker's own environment.

Each engine is a real dockerd listening on 127.0.0.1 with certificates generated for the test run (sandbox/certs.py).
"""

import json
import logging
import shutil

import pytest
from datadog_checks.base import AgentCheck

from datadog_checks.cis_docker import CisDockerCheck
from datadog_checks.cis_docker.cli import UsageError, build_parser, instance_from_args, run_instance
from datadog_checks.cis_docker.engine import EngineClient, EngineError
from sandbox.engines import free_port

from .common import (
    CAN_CONNECT,
    CHECK_NAME,
    INSECURE_REGISTRIES,
    INSECURE_REGISTRY,
    REGISTRY_TLS,
    endpoint_tags,
    run_cli,
)

pytestmark = pytest.mark.integration

INSECURE = {'insecure-registries': ['10.3.0.0/16']}
CA_VARIABLES = ('REQUESTS_CA_BUNDLE', 'CURL_CA_BUNDLE', 'SSL_CERT_FILE')


def tls_engine(dockerd_factory, material, server=None, daemon_json=None, verify_clients=True):
    """A dockerd on a free 127.0.0.1 port, demanding a client certificate from our CA unless told otherwise."""
    server = server or material.server
    return dockerd_factory(
        daemon_json=daemon_json,
        tcp=f'127.0.0.1:{free_port()}',
        tls_ca=material.ca if verify_clients else None,
        tls_cert=server.cert,
        tls_key=server.key,
    )


def plain_tcp_engine(dockerd_factory, daemon_json=None):
    return dockerd_factory(daemon_json=daemon_json, tcp=f'127.0.0.1:{free_port()}')


def client_options(material, **overrides):
    options = {
        'tls_ca_cert': str(material.ca),
        'tls_cert': str(material.client.cert),
        'tls_private_key': str(material.client.key),
    }
    options.update(overrides)
    return {key: value for key, value in options.items() if value is not None}


def run_check(dd_run_check, url, **options):
    check = CisDockerCheck(CHECK_NAME, {}, [{'url': url, 'timeout': 10, **options}])
    dd_run_check(check)
    return check


def connect_message(aggregator, url):
    """The can_connect message of a run that must not have audited anything."""
    aggregator.assert_service_check(CAN_CONNECT, AgentCheck.CRITICAL, tags=endpoint_tags(url), count=1)
    aggregator.assert_service_check(REGISTRY_TLS, AgentCheck.UNKNOWN, tags=endpoint_tags(url), count=1)
    assert aggregator.metric_names == []
    [connect] = aggregator.service_checks(CAN_CONNECT)
    return connect.message


class TestMutualTLS:
    def test_audits_a_remote_engine(self, dd_run_check, aggregator, dockerd_factory, tls_material):
        engine = tls_engine(dockerd_factory, tls_material, daemon_json=INSECURE)

        check = run_check(dd_run_check, engine.tcp_url, **client_options(tls_material))

        tags = endpoint_tags(engine.tcp_url)
        aggregator.assert_service_check(CAN_CONNECT, AgentCheck.OK, tags=tags, count=1)
        aggregator.assert_service_check(REGISTRY_TLS, AgentCheck.CRITICAL, tags=tags, count=1)
        aggregator.assert_metric(INSECURE_REGISTRIES, 1, tags=tags, count=1)
        aggregator.assert_metric(
            INSECURE_REGISTRY, 1, tags=[*tags, 'registry:10.3.0.0/16', 'registry_kind:cidr'], count=1
        )
        assert check.get_warnings() == []

    def test_a_compliant_remote_engine_is_compliant(self, dockerd_factory, tls_material):
        engine = tls_engine(dockerd_factory, tls_material)

        result = run_instance({'url': engine.tcp_url, **client_options(tls_material)})

        assert result.verdict == 'compliant'
        assert (result.engine, result.violations) == ('Docker', 0)
        assert result.warnings == []

    def test_an_upper_case_scheme_is_still_tls(self, dd_run_check, aggregator, dockerd_factory, tls_material):
        engine = tls_engine(dockerd_factory, tls_material, daemon_json=INSECURE)
        url = engine.tcp_url.replace('tcp://', 'TCP://')

        check = run_check(dd_run_check, url, **client_options(tls_material))

        aggregator.assert_service_check(CAN_CONNECT, AgentCheck.OK, count=1)
        aggregator.assert_metric(INSECURE_REGISTRIES, 1, count=1)
        assert check.engine.tls is not None
        assert check.get_warnings() == []


class TestRefusedConnections:
    def test_server_from_another_ca_is_an_unknown_issuer(self, dd_run_check, aggregator, dockerd_factory, tls_material):
        engine = tls_engine(dockerd_factory, tls_material, daemon_json=INSECURE)

        run_check(dd_run_check, engine.tcp_url, **client_options(tls_material, tls_ca_cert=str(tls_material.other_ca)))

        message = connect_message(aggregator, engine.tcp_url)
        assert message.startswith(f'TLS certificate problem with {engine.tcp_url}')
        assert f'not signed by the CA in tls_ca_cert {tls_material.other_ca} (unknown issuer' in message
        assert 'unknown issuer' in message

    def test_expired_server_certificate(self, dd_run_check, aggregator, dockerd_factory, tls_material):
        engine = tls_engine(dockerd_factory, tls_material, server=tls_material.expired_server)

        run_check(dd_run_check, engine.tcp_url, **client_options(tls_material))

        message = connect_message(aggregator, engine.tcp_url)
        assert "the engine's certificate has expired" in message
        assert '--tlscert' in message

    def test_certificate_for_another_host(self, dd_run_check, aggregator, dockerd_factory, tls_material):
        engine = tls_engine(dockerd_factory, tls_material, server=tls_material.misnamed_server)

        run_check(dd_run_check, engine.tcp_url, **client_options(tls_material))

        message = connect_message(aggregator, engine.tcp_url)
        assert "the engine's certificate is not issued for the host in url" in message
        assert '127.0.0.1' in message

    def test_engine_demands_a_client_certificate(self, dd_run_check, aggregator, dockerd_factory, tls_material):
        engine = tls_engine(dockerd_factory, tls_material)

        run_check(dd_run_check, engine.tcp_url, **client_options(tls_material, tls_cert=None, tls_private_key=None))

        message = connect_message(aggregator, engine.tcp_url)
        assert message.startswith(f'TLS client certificate required by {engine.tcp_url}')
        assert 'none is configured. Set tls_cert and tls_private_key' in message

    def test_engine_refuses_a_client_certificate_from_another_ca(
        self, dd_run_check, aggregator, dockerd_factory, tls_material
    ):
        engine = tls_engine(dockerd_factory, tls_material)
        foreign = client_options(
            tls_material,
            tls_cert=str(tls_material.other_client.cert),
            tls_private_key=str(tls_material.other_client.key),
        )

        run_check(dd_run_check, engine.tcp_url, **foreign)

        message = connect_message(aggregator, engine.tcp_url)
        assert message.startswith(f'TLS client certificate refused by {engine.tcp_url}')
        assert str(tls_material.other_client.cert) in message


class TestVerificationOff:
    def test_works_and_warns_every_run(self, dd_run_check, aggregator, dockerd_factory, tls_material):
        # The server certificate has expired: only a check that really skips verification gets through.
        engine = tls_engine(dockerd_factory, tls_material, server=tls_material.expired_server, daemon_json=INSECURE)
        check = CisDockerCheck(
            CHECK_NAME, {}, [{'url': engine.tcp_url, 'tls_verify': False, **client_options(tls_material)}]
        )

        for _ in range(2):
            dd_run_check(check)
            [warning] = check.get_warnings()
            assert warning.startswith(f'TLS certificate verification is off for {engine.tcp_url} (tls_verify: false)')

        aggregator.assert_service_check(CAN_CONNECT, AgentCheck.OK, count=2)
        aggregator.assert_metric(INSECURE_REGISTRIES, 1, tags=endpoint_tags(engine.tcp_url), count=2)


class TestEnvironmentHasNoSay:
    """The configured CA is the only trust there is: CA bundle and proxy variables of the process change nothing."""

    @staticmethod
    def point_environment_at(monkeypatch, ca_path, tmp_path):
        for variable in CA_VARIABLES:
            monkeypatch.setenv(variable, str(ca_path))
        ca_dir = tmp_path / 'ca-dir'
        ca_dir.mkdir()
        shutil.copy(ca_path, ca_dir / 'ca.pem')
        monkeypatch.setenv('SSL_CERT_DIR', str(ca_dir))

    def test_environment_trusting_the_server_does_not_override_a_wrong_ca(
        self, dd_run_check, aggregator, dockerd_factory, tls_material, monkeypatch, tmp_path
    ):
        engine = tls_engine(dockerd_factory, tls_material)
        self.point_environment_at(monkeypatch, tls_material.ca, tmp_path)

        run_check(dd_run_check, engine.tcp_url, **client_options(tls_material, tls_ca_cert=str(tls_material.other_ca)))

        assert 'unknown issuer' in connect_message(aggregator, engine.tcp_url)

    def test_environment_pointing_elsewhere_does_not_break_the_configured_ca(
        self, dd_run_check, aggregator, dockerd_factory, tls_material, monkeypatch, tmp_path
    ):
        engine = tls_engine(dockerd_factory, tls_material, daemon_json=INSECURE)
        self.point_environment_at(monkeypatch, tls_material.other_ca, tmp_path)

        run_check(dd_run_check, engine.tcp_url, **client_options(tls_material))

        aggregator.assert_service_check(CAN_CONNECT, AgentCheck.OK, tags=endpoint_tags(engine.tcp_url), count=1)
        aggregator.assert_metric(INSECURE_REGISTRIES, 1, tags=endpoint_tags(engine.tcp_url), count=1)

    def test_proxy_variables_are_not_followed(
        self, dd_run_check, aggregator, dockerd_factory, tls_material, monkeypatch
    ):
        engine = tls_engine(dockerd_factory, tls_material)
        # A proxy where nothing listens: were it used, the audit could not succeed.
        for variable in ('HTTPS_PROXY', 'https_proxy', 'ALL_PROXY'):
            monkeypatch.setenv(variable, f'http://127.0.0.1:{free_port()}')

        run_check(dd_run_check, engine.tcp_url, **client_options(tls_material))

        aggregator.assert_service_check(CAN_CONNECT, AgentCheck.OK, tags=endpoint_tags(engine.tcp_url), count=1)


class TestPlainTCP:
    def test_use_tls_false_works_and_warns_once_per_run(self, dd_run_check, aggregator, dockerd_factory):
        engine = plain_tcp_engine(dockerd_factory, daemon_json=INSECURE)
        check = CisDockerCheck(CHECK_NAME, {}, [{'url': engine.tcp_url, 'use_tls': False}])

        for _ in range(2):
            dd_run_check(check)
            [warning] = check.get_warnings()
            assert warning.startswith(f'The Docker Engine API at {engine.tcp_url} is exposed without TLS')
            assert 'CIS Docker 2.6' in warning

        aggregator.assert_service_check(CAN_CONNECT, AgentCheck.OK, count=2)
        aggregator.assert_metric(INSECURE_REGISTRIES, 1, tags=endpoint_tags(engine.tcp_url), count=2)

    def test_tls_towards_a_plain_listener_says_it_does_not_speak_tls(
        self, dd_run_check, aggregator, dockerd_factory, tls_material
    ):
        engine = plain_tcp_engine(dockerd_factory, daemon_json=INSECURE)

        check = run_check(dd_run_check, engine.tcp_url, **client_options(tls_material))

        message = connect_message(aggregator, engine.tcp_url)
        assert message.startswith(f'{engine.tcp_url} does not speak TLS')
        assert 'CIS Docker 2.6' in message
        assert 'use_tls: false' in message
        assert check.get_warnings() == []

    def test_plain_http_towards_a_tls_listener_says_it_wants_tls(
        self, dd_run_check, aggregator, dockerd_factory, tls_material
    ):
        engine = tls_engine(dockerd_factory, tls_material)

        run_check(dd_run_check, engine.tcp_url, use_tls=False)

        message = connect_message(aggregator, engine.tcp_url)
        assert message.startswith(f'{engine.tcp_url} speaks TLS and refused a plain HTTP request')
        assert 'tls_ca_cert, tls_cert and tls_private_key' in message


class TestTLSFiles:
    """Files that cannot serve are named, with the option, before any connection is tried."""

    @pytest.fixture
    def bad_files(self, tmp_path, tls_material):
        not_pem = tmp_path / 'not.pem'
        not_pem.write_text('this is no certificate\n')
        encrypted = tmp_path / 'encrypted-key.pem'
        from cryptography.hazmat.primitives import serialization

        key = serialization.load_pem_private_key(tls_material.client.key.read_bytes(), None)
        encrypted.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.BestAvailableEncryption(b'passphrase'),
            )
        )
        return {'missing': tmp_path / 'missing.pem', 'directory': tmp_path, 'not_pem': not_pem, 'encrypted': encrypted}

    @pytest.mark.parametrize('option', ['tls_ca_cert', 'tls_cert', 'tls_private_key'])
    @pytest.mark.parametrize(
        'kind, problem', [('missing', 'does not exist'), ('directory', 'is not a file'), ('not_pem', 'holds no PEM')]
    )
    def test_unusable_file_is_named_with_its_option(self, dd_run_check, tls_material, bad_files, option, kind, problem):
        path = bad_files[kind]
        check = CisDockerCheck(
            CHECK_NAME, {}, [{'url': 'tcp://127.0.0.1:2376', **client_options(tls_material, **{option: str(path)})}]
        )

        with pytest.raises(Exception, match=f'{option}: {path} {problem}'):
            dd_run_check(check)

    @pytest.mark.parametrize(
        'overrides, expected',
        [
            ({'tls_private_key': 'server.key'}, 'tls_cert and tls_private_key: the key in .* does not belong to'),
            ({'tls_private_key': 'encrypted'}, 'tls_private_key: .* is protected by a passphrase'),
            ({'tls_private_key': None}, 'tls_cert and tls_private_key: a client certificate needs both, or neither'),
        ],
    )
    def test_unusable_client_pair(self, dd_run_check, tls_material, bad_files, overrides, expected):
        paths = {'server.key': str(tls_material.server.key), 'encrypted': str(bad_files['encrypted']), None: None}
        options = client_options(tls_material, **{option: paths[value] for option, value in overrides.items()})
        check = CisDockerCheck(CHECK_NAME, {}, [{'url': 'tcp://127.0.0.1:2376', **options}])

        with pytest.raises(Exception, match=expected):
            dd_run_check(check)


class TestSecrets:
    SECRET = 'hunter2-s3cret'

    def test_credentials_in_the_url_reach_no_message_log_or_tag(self, dd_run_check, aggregator, caplog, tls_material):
        caplog.set_level(logging.DEBUG)
        url = f'tcp://admin:{self.SECRET}@127.0.0.1:2376'
        check = CisDockerCheck(CHECK_NAME, {}, [{'url': url, **client_options(tls_material)}])

        with pytest.raises(Exception, match='url: tcp://127.0.0.1:2376 carries a user name or password') as error:
            dd_run_check(check)

        assert self.SECRET not in str(error.value)
        assert 'admin' not in str(error.value)
        assert self.SECRET not in caplog.text
        result = run_instance({'url': url, **client_options(tls_material)})
        assert self.SECRET not in json.dumps(result.to_json())
        assert result.endpoint == 'tcp://127.0.0.1:2376'

    def test_the_client_never_quotes_credentials(self):
        # Below the check, as DOCKER_HOST would reach it: the docker SDK's own refusal quotes the address it got.
        client = EngineClient(f'tcp://admin:{self.SECRET}@127.0.0.1:{free_port()}', 2)

        with pytest.raises(EngineError) as error:
            client.info()

        assert self.SECRET not in str(error.value)
        assert 'tcp://127.0.0.1:' in str(error.value)

    def test_no_key_material_in_logs_messages_or_tags(
        self, dd_run_check, aggregator, caplog, dockerd_factory, tls_material
    ):
        caplog.set_level(logging.DEBUG)
        engine = tls_engine(dockerd_factory, tls_material)
        key_lines = [
            line for line in tls_material.client.key.read_text().splitlines() if line and not line.startswith('-----')
        ]

        run_check(dd_run_check, engine.tcp_url, **client_options(tls_material))
        run_check(dd_run_check, engine.tcp_url, **client_options(tls_material, tls_ca_cert=str(tls_material.other_ca)))

        sent = [
            check.message or '' for name in (CAN_CONNECT, REGISTRY_TLS) for check in aggregator.service_checks(name)
        ]
        sent += [
            tag
            for name in (CAN_CONNECT, REGISTRY_TLS)
            for check in aggregator.service_checks(name)
            for tag in check.tags
        ]
        assert len(sent) > 4
        for line in key_lines:
            assert line not in caplog.text
            assert not any(line in text for text in sent)


def parse(*argv):
    return build_parser().parse_args(list(argv))


class TestDockerEnvironmentUnit:
    """How the command line turns flags and Docker's variables into an instance, before any engine is involved."""

    def test_docker_tls_verify_and_cert_path(self, tls_material):
        environ = {
            'DOCKER_HOST': 'tcp://engine.example:2376',
            'DOCKER_TLS_VERIFY': '1',
            'DOCKER_CERT_PATH': str(tls_material.docker_cert_path),
        }

        instance = instance_from_args(parse(), environ)

        assert instance == {
            'url': 'tcp://engine.example:2376',
            'use_tls': True,
            'tls_verify': True,
            'tls_ca_cert': str(tls_material.docker_cert_path / 'ca.pem'),
            'tls_cert': str(tls_material.docker_cert_path / 'cert.pem'),
            'tls_private_key': str(tls_material.docker_cert_path / 'key.pem'),
        }

    def test_cert_path_defaults_to_home_docker(self, tmp_path, monkeypatch, tls_material):
        monkeypatch.setenv('HOME', str(tmp_path))
        shutil.copytree(tls_material.docker_cert_path, tmp_path / '.docker')

        instance = instance_from_args(parse(), {'DOCKER_HOST': 'tcp://h:2376', 'DOCKER_TLS_VERIFY': 'yes'})

        assert instance['tls_ca_cert'] == str(tmp_path / '.docker' / 'ca.pem')
        assert instance['tls_private_key'] == str(tmp_path / '.docker' / 'key.pem')

    def test_client_files_that_do_not_exist_are_left_out_as_the_docker_cli_does(self, tmp_path):
        (tmp_path / 'ca.pem').write_text('')

        instance = instance_from_args(
            parse('--tlsverify'), {'DOCKER_HOST': 'tcp://h:2376', 'DOCKER_CERT_PATH': str(tmp_path)}
        )

        assert instance['tls_ca_cert'] == str(tmp_path / 'ca.pem')
        assert 'tls_cert' not in instance
        assert 'tls_private_key' not in instance

    def test_flags_win_over_the_environment(self, tls_material):
        environ = {
            'DOCKER_HOST': 'tcp://from-env:2376',
            'DOCKER_TLS_VERIFY': '1',
            'DOCKER_CERT_PATH': str(tls_material.docker_cert_path),
        }

        instance = instance_from_args(parse('-H', 'tcp://from-flag:2376', '--tlscacert', '/ca.pem'), environ)

        assert instance['url'] == 'tcp://from-flag:2376'
        assert instance['tls_ca_cert'] == '/ca.pem'
        assert instance['tls_cert'] == str(tls_material.docker_cert_path / 'cert.pem')

    def test_tcp_without_any_tls_setting_is_refused_with_the_fix(self):
        with pytest.raises(UsageError) as error:
            instance_from_args(parse(), {'DOCKER_HOST': 'tcp://admin:pw@engine.example:2375'})

        message = str(error.value)
        assert message.startswith('tcp://engine.example:2375 (from DOCKER_HOST) is a TCP endpoint and no TLS')
        assert 'DOCKER_TLS_VERIFY=1' in message
        assert 'DOCKER_CERT_PATH' in message
        assert '--no-tls' in message
        assert 'pw' not in message

    def test_no_tls_is_explicit_plain_tcp(self):
        assert instance_from_args(parse('--no-tls'), {'DOCKER_HOST': 'tcp://h:2375'}) == {
            'url': 'tcp://h:2375',
            'use_tls': False,
        }

    def test_no_tls_and_tls_flags_contradict(self):
        with pytest.raises(UsageError, match='--no-tls contradicts'):
            instance_from_args(parse('--no-tls', '--tlsverify'), {'DOCKER_HOST': 'tcp://h:2375'})

    def test_a_unix_socket_needs_no_tls(self):
        assert instance_from_args(parse(), {'DOCKER_HOST': 'unix:///run/docker.sock', 'DOCKER_TLS_VERIFY': '1'}) == {
            'url': 'unix:///run/docker.sock'
        }


class TestDockerEnvironmentCommandLine:
    def test_docker_variables_are_enough(self, dockerd_factory, tls_material):
        engine = tls_engine(dockerd_factory, tls_material, daemon_json=INSECURE)
        env = {
            'DOCKER_HOST': engine.tcp_url,
            'DOCKER_TLS_VERIFY': '1',
            'DOCKER_CERT_PATH': str(tls_material.docker_cert_path),
        }

        result = run_cli('--json', env=env)

        assert result.returncode == 1, result.stderr
        document = json.loads(result.stdout)
        assert (document['endpoint'], document['engine'], document['violations']) == (engine.tcp_url, 'Docker', 1)
        assert document['warnings'] == []

    def test_docker_style_flags(self, dockerd_factory, tls_material):
        engine = tls_engine(dockerd_factory, tls_material)
        files = (
            '--tlscacert',
            tls_material.ca,
            '--tlscert',
            tls_material.client.cert,
            '--tlskey',
            tls_material.client.key,
        )

        result = run_cli('-H', engine.tcp_url, '--tlsverify', *map(str, files), '--json')

        assert result.returncode == 0, result.stdout
        assert json.loads(result.stdout)['verdict'] == 'compliant'

    def test_plain_tcp_needs_no_tls_and_then_warns(self, dockerd_factory):
        engine = plain_tcp_engine(dockerd_factory)

        refused = run_cli(env={'DOCKER_HOST': engine.tcp_url})
        allowed = run_cli('--no-tls', '--json', env={'DOCKER_HOST': engine.tcp_url})

        assert refused.returncode == 2
        assert refused.stdout == ''
        assert 'DOCKER_TLS_VERIFY=1' in refused.stderr
        assert '--no-tls' in refused.stderr
        assert allowed.returncode == 0, allowed.stdout
        [warning] = json.loads(allowed.stdout)['warnings']
        assert 'exposed without TLS' in warning
