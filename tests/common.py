"""Names, tags and payload locations shared by the tests: what dashboards and monitors rely on."""

from pathlib import Path

HERE = Path(__file__).parent
REPO = HERE.parent
PAYLOADS = HERE / 'fixtures' / 'info'

CHECK_NAME = 'cis_docker'
CAN_CONNECT = 'cis_docker.can_connect'
REGISTRY_TLS = 'cis_docker.registry_tls'
INSECURE_REGISTRIES = 'cis_docker.insecure_registries'
INSECURE_REGISTRY = 'cis_docker.insecure_registry'
ALLOWED_INSECURE_REGISTRIES = 'cis_docker.allowed_insecure_registries'

CONTROL_TAGS = ['cis_control:2.4', 'compliance_framework:cis-docker']


def endpoint_tags(url, *extra):
    return [*CONTROL_TAGS, f'docker_endpoint:{url}', *extra]
