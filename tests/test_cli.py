"""`python -m datadog_checks.cis_docker` and the demo audit, run as a user would, against real engines."""

import json

import pytest

from datadog_checks.cis_docker.cli import EXIT_COMPLIANT, EXIT_UNAUDITED, EXIT_VIOLATIONS
from sandbox import demo

from .common import run_cli

pytestmark = pytest.mark.integration


def test_table_names_offenders_and_exits_1(dockerd_factory):
    engine = dockerd_factory(
        daemon_json={'insecure-registries': ['10.1.0.0/16'], 'registry-mirrors': ['http://mirror.example:5000']}
    )

    result = run_cli('--url', engine.url)

    assert result.returncode == EXIT_VIOLATIONS, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith(f'CIS Docker 2.4 "Private registry should use TLS" on {engine.url} (engine 20.10.')
    assert any(line.split()[:3] == ['cis_docker.registry_tls', 'CRITICAL', '2'] for line in lines)
    assert any(line.split() == ['cis_docker.insecure_registries', '2'] for line in lines)
    assert any('registry:10.1.0.0/16 registry_kind:cidr' in line for line in lines)
    assert any('registry:http://mirror.example:5000/ registry_kind:mirror' in line for line in lines)
    assert lines[-1] == 'Result: violations (exit status 1)'


def test_json_is_one_document_with_everything_sent(dockerd_factory):
    engine = dockerd_factory(daemon_json={'insecure-registries': ['10.1.0.0/16']})

    result = run_cli('--url', engine.url, '--json', '--allow', '10.1.0.0/16')

    assert result.returncode == EXIT_COMPLIANT, result.stderr
    document = json.loads(result.stdout)
    assert document['verdict'] == 'compliant'
    assert document['violations'] == 0
    assert document['engine_version'].startswith('20.10.')
    assert [(check['name'], check['status']) for check in document['service_checks']] == [
        ('cis_docker.can_connect', 'OK'),
        ('cis_docker.registry_tls', 'OK'),
    ]
    values = {series['name']: series['value'] for series in document['series']}
    assert values == {'cis_docker.insecure_registries': 0, 'cis_docker.allowed_insecure_registries': 1}


def test_docker_host_picks_the_engine(dockerd_factory):
    engine = dockerd_factory(daemon_json={'insecure-registries': ['10.2.0.0/16']})

    result = run_cli('--json', env={'DOCKER_HOST': engine.url})

    assert result.returncode == EXIT_VIOLATIONS
    assert json.loads(result.stdout)['endpoint'] == engine.url


def test_include_loopback_fails_a_stock_daemon(dockerd_factory):
    engine = dockerd_factory()

    assert run_cli('--url', engine.url).returncode == EXIT_COMPLIANT
    result = run_cli('--url', engine.url, '--include-loopback', '--json')
    assert result.returncode == EXIT_VIOLATIONS
    assert [series['tags'][-2:] for series in json.loads(result.stdout)['series'][2:]] == [
        ['registry:127.0.0.0/8', 'registry_kind:cidr']
    ]


def test_an_engine_that_cannot_be_read_exits_2_and_sends_no_count(tmp_path):
    result = run_cli('--url', f'unix://{tmp_path}/docker.sock')

    assert result.returncode == EXIT_UNAUDITED
    assert 'does not exist' in result.stdout
    assert 'Series: none sent' in result.stdout
    assert 'cis_docker.insecure_registries' not in result.stdout


def test_bad_configuration_exits_2_naming_the_option():
    result = run_cli('--url', 'ftp://example', '--json')

    assert result.returncode == EXIT_UNAUDITED
    document = json.loads(result.stdout)
    assert document['verdict'] == 'unaudited'
    assert 'url' in document['errors'][0]
    assert document['series'] == []


def test_demo_engine_when_nothing_answers(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv('DOCKER_HOST', raising=False)

    status = demo.main(['--json'], local_socket=str(tmp_path / 'docker.sock'))

    captured = capsys.readouterr()
    assert status == EXIT_VIOLATIONS
    assert 'this is a DEMO' in captured.err
    document = json.loads(captured.out)
    registries = sorted(tag for series in document['series'] for tag in series['tags'] if tag.startswith('registry:'))
    assert registries == ['registry:10.99.0.0/16', 'registry:http://mirror.demo.example:5000/']
    assert not list(tmp_path.iterdir())


def test_demo_audits_an_explicit_target_as_given(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv('DOCKER_HOST', raising=False)

    status = demo.main(['--url', f'unix://{tmp_path}/missing.sock'], local_socket=str(tmp_path / 'docker.sock'))

    assert status == EXIT_UNAUDITED
    assert 'DEMO' not in capsys.readouterr().err
