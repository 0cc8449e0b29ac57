"""The wheel an Agent installs: what it holds, and that the check runs from it the way the Agent would run it.

The Agent installs an integration wheel with `datadog-agent integration install -w`, that is without its dependencies,
into an embedded Python that already holds datadog-checks-base. The docker SDK is not in there: the operator installs
it by hand, and until then the check has to say so.
"""

import email.parser
import json
import os
import shutil
import subprocess
import sys
import venv
import zipfile
from pathlib import Path

import pytest

from datadog_checks.cis_docker import __version__
from datadog_checks.cis_docker.engine import DOCKER_SDK_MISSING

from .common import CAN_CONNECT, INSECURE_REGISTRY, REGISTRY_TLS, REPO

DOCKER_SDK = 'docker==7.2.0'
INSECURE = 'registry.corp.example:5000'

# What a source checkout holds that has no business in a build: environments, caches and earlier builds.
NOT_SOURCES = shutil.ignore_patterns(
    '.git', '.venv', '.venv-*', '__pycache__', '*.egg-info', 'build', 'dist', '.*_cache', '.hypothesis', '.benchmarks'
)


@pytest.fixture(scope='module')
def wheel(tmp_path_factory):
    """Build from a copy of the checkout, so that the build's own scratch files never land in the working tree."""
    source = tmp_path_factory.mktemp('source') / 'cis_docker'
    shutil.copytree(REPO, source, ignore=NOT_SOURCES, symlinks=True)
    out = tmp_path_factory.mktemp('dist')
    subprocess.run(
        [sys.executable, '-m', 'build', '--wheel', '--outdir', str(out), str(source)],
        check=True,
        capture_output=True,
        timeout=600,
    )
    [built] = out.glob('*.whl')
    return built


def wheel_metadata(path):
    with zipfile.ZipFile(path) as archive:
        [name] = [name for name in archive.namelist() if name.endswith('.dist-info/METADATA')]
        return email.parser.Parser().parsestr(archive.read(name).decode())


def wheel_files(path):
    with zipfile.ZipFile(path) as archive:
        return set(archive.namelist())


def test_wheel_is_named_and_versioned_for_the_agent(wheel):
    metadata = wheel_metadata(wheel)

    assert wheel.name.startswith(f'datadog_cis_docker-{__version__}-')
    assert wheel.name.endswith('-py3-none-any.whl')
    assert metadata['Name'] == 'datadog-cis-docker'
    assert metadata['Version'] == __version__
    requirements = metadata.get_all('Requires-Dist')
    # The generated config models call `validation.security`, which datadog-checks-base has from 37.33.0 on.
    assert 'datadog-checks-base>=37.33.0' in requirements
    # The SDK stays an extra: the Agent would not install it anyway, and a hard requirement would only mislead.
    assert all('extra ==' in requirement for requirement in requirements if requirement.startswith('docker'))


def test_wheel_holds_the_check_and_its_data_but_no_test_tooling(wheel):
    files = wheel_files(wheel)

    for required in (
        'datadog_checks/cis_docker/__init__.py',
        'datadog_checks/cis_docker/check.py',
        'datadog_checks/cis_docker/data/conf.yaml.example',
        'datadog_checks/cis_docker/config_models/__init__.py',
        'datadog_checks/cis_docker/config_models/defaults.py',
        'datadog_checks/cis_docker/config_models/instance.py',
        'datadog_checks/cis_docker/config_models/shared.py',
        'datadog_checks/cis_docker/config_models/validators.py',
    ):
        assert required in files
    assert not [name for name in files if name.startswith(('sandbox/', 'tests/'))]
    # datadog-checks-base's file: removing the integration would take it away from every other check.
    assert 'datadog_checks/__init__.py' not in files
    with zipfile.ZipFile(wheel) as archive:
        packaged_example = archive.read('datadog_checks/cis_docker/data/conf.yaml.example').decode()
    assert packaged_example == (REPO / 'conf.yaml.example').read_text()


class AgentPython:
    """A fresh environment shaped like the Agent's embedded Python, with the wheel installed as the Agent does."""

    def __init__(self, root: Path):
        self.root = root
        self.python = root / 'bin' / 'python'

    def pip(self, *args):
        # pip's own cache is kept: it is what makes a second run of this suite fast.
        subprocess.run(
            [str(self.python), '-m', 'pip', 'install', '--quiet', '--disable-pip-version-check', *args],
            check=True,
            capture_output=True,
            timeout=900,
        )

    def run(self, *args, cwd):
        env = {key: value for key, value in os.environ.items() if not key.startswith(('PYTHON', 'DOCKER_'))}
        # Run outside the checkout: `python -m` puts the working directory first on sys.path.
        return subprocess.run(
            [str(self.python), *args], capture_output=True, text=True, timeout=120, cwd=cwd, env=env, check=False
        )


@pytest.fixture(scope='module')
def agent_python(wheel, tmp_path_factory):
    root = tmp_path_factory.mktemp('agent-python')
    # The interpreter behind this test run, not the test environment itself: the Agent's Python has none of the
    # test tooling.
    venv.EnvBuilder(with_pip=True).create(root)
    agent = AgentPython(root)
    agent.pip('-r', str(REPO / 'requirements' / 'agent-base.txt'))
    agent.pip('--no-deps', '--no-index', str(wheel))
    return agent


def audit(agent, url, cwd):
    result = agent.run('-m', 'datadog_checks.cis_docker', '--url', url, '--json', cwd=cwd)
    assert result.stdout, result.stderr
    return result.returncode, json.loads(result.stdout)


def service_check(document, name):
    [found] = [check for check in document['service_checks'] if check['name'] == name]
    return found


@pytest.mark.integration
def test_installed_like_the_agent_does_the_check_runs_and_names_the_violation(agent_python, dockerd_factory, tmp_path):
    engine = dockerd_factory(args=[f'--insecure-registry={INSECURE}'])

    where = agent_python.run('-c', 'import datadog_checks.cis_docker as c; print(c.__file__)', cwd=tmp_path)
    assert Path(where.stdout.strip()).is_relative_to(agent_python.root), where.stdout + where.stderr

    # Installed without its dependencies, the check runs but cannot reach the engine, and says how to fix that.
    status, document = audit(agent_python, engine.url, tmp_path)
    assert status == 2
    connect = service_check(document, CAN_CONNECT)
    assert connect['status'] == 'CRITICAL'
    assert DOCKER_SDK_MISSING in connect['message']
    assert '/opt/datadog-agent/embedded/bin/pip install' in connect['message']
    assert service_check(document, REGISTRY_TLS)['status'] == 'UNKNOWN'

    agent_python.pip(DOCKER_SDK)
    status, document = audit(agent_python, engine.url, tmp_path)

    assert status == 1
    assert service_check(document, CAN_CONNECT)['status'] == 'OK'
    verdict = service_check(document, REGISTRY_TLS)
    assert verdict['status'] == 'CRITICAL'
    assert INSECURE in verdict['message']
    flagged = [series for series in document['series'] if series['name'] == INSECURE_REGISTRY]
    assert [f'registry:{INSECURE}' in series['tags'] for series in flagged] == [True]
