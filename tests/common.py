"""Names, tags and payload locations shared by the tests: what dashboards and monitors rely on."""

import os
import subprocess
import sys
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


def run_cli(*args, env=None, timeout=120, stderr=subprocess.PIPE):
    """`python -m datadog_checks.cis_docker` in a child process, with Docker's variables only as the test sets them."""
    environment = {key: value for key, value in os.environ.items() if not key.startswith('DOCKER_')}
    environment.update(env or {})
    return subprocess.run(
        [sys.executable, '-m', 'datadog_checks.cis_docker', *args],
        stdout=subprocess.PIPE,
        stderr=stderr,
        text=True,
        timeout=timeout,
        cwd=REPO,
        env=environment,
    )
