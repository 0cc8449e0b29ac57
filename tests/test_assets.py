"""The files Datadog reads besides the code: they must describe exactly what the check sends, and nothing else.

metadata.csv and assets/service_checks.json are compared with what the check really sends to a real engine; the
dashboard and the monitors are then held to those two files and to the tags the check sets.
"""

import csv
import json
import re
import subprocess
import uuid
from collections import defaultdict

import pytest
import yaml
from datadog_checks.base import AgentCheck
from datadog_checks.dev.utils import get_metadata_metrics, get_service_checks

from datadog_checks.cis_docker import CisDockerCheck, __version__
from datadog_checks.cis_docker.config_models import instance as instance_model

from .common import CHECK_NAME, REPO

STATUS_NAMES = {AgentCheck.OK: 'ok', AgentCheck.WARNING: 'warning', AgentCheck.CRITICAL: 'critical', 3: 'unknown'}

# Tag keys the check itself sets; `host` comes from the Agent's hostname on everything it forwards.
CHECK_TAG_KEYS = {'cis_control', 'compliance_framework', 'docker_endpoint', 'registry', 'registry_kind'}
AGENT_TAG_KEYS = {'host'}

EXAMPLE = REPO / 'datadog_checks' / 'cis_docker' / 'data' / 'conf.yaml.example'
SPEC = REPO / 'assets' / 'configuration' / 'spec.yaml'
MANIFEST = json.loads((REPO / 'manifest.json').read_text())
DASHBOARD_FILES = sorted(MANIFEST['assets']['dashboards'].values())
MONITOR_FILES = sorted(MANIFEST['assets']['monitors'].values())


def metadata_rows():
    with open(REPO / 'metadata.csv', newline='', encoding='utf-8') as metadata:
        return list(csv.DictReader(metadata))


def declared_service_checks():
    return {entry['check']: set(entry['statuses']) for entry in get_service_checks()}


def tag_keys(tags):
    return {tag.split(':', 1)[0] for tag in tags}


@pytest.mark.integration
def test_metadata_and_service_checks_list_exactly_what_the_check_sends(
    aggregator, dd_run_check, dockerd_factory, tmp_path
):
    engine = dockerd_factory(
        args=[
            '--insecure-registry=registry.corp.example:5000',
            '--insecure-registry=10.1.0.0/16',
            '--registry-mirror=http://mirror.corp.example:5000',
        ]
    )
    # One engine seen three ways, and one that is not there, so that every status either service check can take
    # appears at least once: violations next to an accepted exception, every registry accepted, nothing to read.
    instances = [
        {'url': engine.url, 'allowed_insecure_registries': ['10.1.0.0/16']},
        {
            'url': engine.url,
            'allowed_insecure_registries': [
                'registry.corp.example:5000',
                '10.1.0.0/16',
                'http://mirror.corp.example:5000',
            ],
        },
        {'url': f'unix://{tmp_path}/missing.sock', 'timeout': 2},
    ]
    for instance in instances:
        dd_run_check(CisDockerCheck(CHECK_NAME, {}, [instance]))

    aggregator.assert_metrics_using_metadata(
        get_metadata_metrics(), check_submission_type=True, check_symmetric_inclusion=True
    )
    aggregator.assert_service_checks(get_service_checks())

    sent_statuses = defaultdict(set)
    sent_tag_keys = set()
    for name in aggregator._service_checks:
        for service_check in aggregator.service_checks(name):
            sent_statuses[name].add(STATUS_NAMES[service_check.status])
            sent_tag_keys |= tag_keys(service_check.tags)
    for name in aggregator.metric_names:
        for series in aggregator.metrics(name):
            sent_tag_keys |= tag_keys(series.tags)
    assert dict(sent_statuses) == declared_service_checks()
    assert sent_tag_keys == CHECK_TAG_KEYS


def test_metadata_follows_the_integration_conventions():
    rows = metadata_rows()
    with open(REPO / 'metadata.csv', encoding='utf-8') as metadata:
        header = metadata.readline().strip()
    assert header == (
        'metric_name,metric_type,interval,unit_name,per_unit_name,description,orientation,integration,short_name,'
        'curated_metric'
    )
    prefix = MANIFEST['assets']['integration']['metrics']['prefix']
    assert {row['metric_name'] for row in rows} == {
        'cis_docker.insecure_registries',
        'cis_docker.insecure_registry',
        'cis_docker.allowed_insecure_registries',
    }
    for row in rows:
        assert row['metric_name'].startswith(prefix)
        assert row['metric_type'] == 'gauge'
        assert row['integration'] == CHECK_NAME
        assert row['description'].isascii()
    orientation = {row['metric_name']: row['orientation'] for row in rows}
    # Fewer violations is better; accepted exceptions are neither good nor bad.
    assert orientation == {
        'cis_docker.insecure_registries': '-1',
        'cis_docker.insecure_registry': '-1',
        'cis_docker.allowed_insecure_registries': '0',
    }
    assert MANIFEST['assets']['integration']['metrics']['check'] in orientation


def test_service_checks_are_grouped_by_host_and_endpoint():
    for entry in get_service_checks():
        assert entry['integration'] == MANIFEST['assets']['integration']['source_type_name']
        assert {'host', 'docker_endpoint'} <= set(entry['groups'])
        assert set(entry['groups']) <= CHECK_TAG_KEYS | AGENT_TAG_KEYS


def dashboard_references(dashboard):
    """Every metric, service check and tag key a dashboard's widgets query, grouped by kind."""
    metrics, service_checks, group_by = set(), set(), set()

    def walk(widgets):
        for widget in widgets:
            definition = widget['definition']
            walk(definition.get('widgets', []))
            if definition['type'] == 'check_status':
                service_checks.add(definition['check'])
                group_by.update(definition.get('group_by', []))
                group_by.update(definition.get('group', '').split(',') if definition.get('group') else [])
            for request in definition.get('requests', []):
                queries = [query['query'] for query in request.get('queries', [])]
                queries += [request['q']] if 'q' in request else []
                for query in queries:
                    metrics.update(re.findall(r'\b(?:sum|avg|min|max):([\w.]+)\{', query))
                    for keys in re.findall(r'\bby \{([^}]*)\}', query):
                        group_by.update(key.strip() for key in keys.split(','))

    walk(dashboard['widgets'])
    return metrics, service_checks, group_by


@pytest.mark.parametrize('path', DASHBOARD_FILES)
def test_dashboard_shows_only_what_the_check_sends(path):
    dashboard = json.loads((REPO / path).read_text())
    metrics, service_checks, group_by = dashboard_references(dashboard)

    assert dashboard['layout_type'] == 'ordered'
    assert metrics == {row['metric_name'] for row in metadata_rows()}
    assert service_checks == set(declared_service_checks())
    assert group_by <= CHECK_TAG_KEYS | AGENT_TAG_KEYS
    assert {'host', 'docker_endpoint', 'registry'} <= group_by
    variables = {variable['name']: variable['prefix'] for variable in dashboard['template_variables']}
    assert variables == {'host': 'host', 'docker_endpoint': 'docker_endpoint'}
    assert dashboard['widgets'][0]['definition']['type'] == 'note'
    # Widget ids are how Datadog tells widgets apart when the dashboard is installed.
    ids = [widget['id'] for widget in dashboard['widgets']]
    assert len(ids) == len(set(ids))


MONITOR_QUERY = re.compile(r'^"(?P<check>[\w.]+)"\.over\((?P<over>[^)]*)\)\.by\((?P<by>[^)]*)\)\.last\((?P<last>\d+)\)')


@pytest.mark.parametrize('path', MONITOR_FILES)
def test_monitor_is_a_recommended_service_check_monitor_on_what_the_check_sends(path):
    monitor = json.loads((REPO / path).read_text())
    definition = monitor['definition']
    match = MONITOR_QUERY.match(definition['query'])

    assert monitor['version'] == 2
    assert {'created_at', 'last_updated_at', 'title', 'description', 'tags'} <= set(monitor)
    assert definition['type'] == 'service check'
    assert match, definition['query']
    assert match['check'] in declared_service_checks()
    assert {key.strip().strip('"') for key in match['by'].split(',')} == {'host', 'docker_endpoint'}
    options = definition['options']
    # An engine that stops reporting is not audited: silence must alert rather than read as compliant.
    assert options['notify_no_data'] is True
    assert options['no_data_timeframe'] > 0
    thresholds = options['thresholds']
    assert thresholds['critical'] == 1
    assert max(thresholds.values()) <= int(match['last'])
    if 'unknown' in declared_service_checks()[match['check']]:
        assert thresholds.get('unknown') == 1


def test_registry_tls_monitor_alerts_on_critical_and_reports_unknown():
    monitor = json.loads((REPO / 'assets' / 'monitors' / 'registry_tls.json').read_text())
    thresholds = monitor['definition']['options']['thresholds']
    assert monitor['definition']['query'].startswith('"cis_docker.registry_tls"')
    assert thresholds['critical'] == 1
    assert thresholds['unknown'] == 1


def test_top_level_example_is_a_link_to_the_packaged_one():
    link = REPO / 'conf.yaml.example'
    assert link.is_symlink()
    assert link.resolve() == EXAMPLE.resolve()


def example_instances():
    example = yaml.safe_load(EXAMPLE.read_text())
    assert 'init_config' in example
    assert isinstance(example['instances'], list) and example['instances']
    # The Agent hands each instance to the check as a mapping; an instance whose options are all commented out is
    # an empty one.
    return example['init_config'] or {}, [instance or {} for instance in example['instances']]


def loaded_config(instance, init_config=None):
    check = CisDockerCheck(CHECK_NAME, init_config or {}, [instance])
    check.load_configuration_models()
    return check.config


def test_packaged_example_configuration_loads_with_the_documented_defaults():
    init_config, instances = example_instances()

    for instance in instances:
        config = loaded_config(instance, init_config)
        assert config.url is None  # DOCKER_HOST, else the local socket, decided when the check starts
        assert config.timeout == 5
        assert config.ignore_loopback is True
        assert config.use_tls is True
        assert config.tls_verify is True
        assert config.max_registry_series == 100
        assert config.allowed_insecure_registries is None


def spec_instance_options():
    spec = yaml.safe_load(SPEC.read_text())
    [config_file] = spec['files']
    [instances] = [option for option in config_file['options'] if option.get('template') == 'instances']
    return [option for option in instances['options'] if 'name' in option]


def test_every_documented_example_value_is_accepted():
    options = spec_instance_options()
    instance = {option['name']: option['value']['example'] for option in options}

    config = loaded_config(instance)

    assert {'url', 'timeout', 'allowed_insecure_registries', 'max_registry_series'} <= set(instance)
    for name, value in instance.items():
        loaded = getattr(config, name)
        assert loaded == (tuple(value) if isinstance(value, list) else value)


def test_certificate_paths_need_a_trusted_configuration_provider():
    marked = {option['name'] for option in spec_instance_options() if option['value'].get('require_trusted_provider')}
    assert marked == {'tls_ca_cert', 'tls_cert', 'tls_private_key'}
    assert marked == instance_model.SECURE_FIELD_NAMES


def test_manifest_points_at_files_that_exist():
    integration = MANIFEST['assets']['integration']
    paths = [
        integration['configuration']['spec'],
        integration['metrics']['metadata_path'],
        integration['service_checks']['metadata_path'],
        MANIFEST['tile']['changelog'],
        *DASHBOARD_FILES,
        *MONITOR_FILES,
    ]
    for path in paths:
        assert (REPO / path).is_file(), path

    assert MANIFEST['manifest_version'] == '2.0.0'
    assert MANIFEST['app_id'] == 'cis-docker'
    assert MANIFEST['display_on_public_website'] is False
    assert str(uuid.UUID(MANIFEST['app_uuid'])) == MANIFEST['app_uuid']
    assert isinstance(integration['source_type_id'], int)
    assert integration['events']['creates_events'] is False
    assert len(MANIFEST['tile']['description']) <= 80


def test_manifest_sections_of_the_readme_exist():
    headers = set(re.findall(r'^## (.+?)\s*$', (REPO / 'README.md').read_text(), flags=re.MULTILINE))
    for key in ('overview', 'configuration', 'support'):
        path, _, anchor = MANIFEST['tile'][key].partition('#')
        assert path == 'README.md'
        assert anchor in headers, f'README.md has no "## {anchor}" section for tile.{key}'


def test_changelog_starts_with_this_version():
    entries = re.findall(r'^## (\S+) / (\d{4}-\d{2}-\d{2})', (REPO / 'CHANGELOG.md').read_text(), flags=re.MULTILINE)
    assert entries[0][0] == __version__


def test_datadog_integration_validators_pass():
    """ddev's own validators, as Datadog runs them on integrations: the example configuration and the config models
    must be what the spec renders, and metadata, service checks, dashboards, README and manifest must be valid.

    The script installs ddev into .venv-ddev on its first run (from PyPI).
    """
    result = subprocess.run(
        [str(REPO / 'scripts' / 'validate-integration')], capture_output=True, text=True, timeout=600, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert 'all validators passed' in result.stderr
