import pytest

from sandbox import certs
from sandbox.engines import Dockerd, Podman


@pytest.fixture
def dockerd_factory(tmp_path_factory):
    """Start sandboxed dockerd engines; every one started is stopped and unmounted when the test ends."""
    started = []

    def start(daemon_json=None, args=(), start=True, **listener):
        engine = Dockerd(tmp_path_factory.mktemp('dockerd'), daemon_json=daemon_json, args=args, **listener)
        started.append(engine)
        return engine.start() if start else engine

    yield start
    for engine in started:
        engine.stop()


@pytest.fixture
def podman_factory(tmp_path_factory):
    """Start sandboxed `podman system service` engines with a registries.conf of the test's choosing."""
    started = []

    def start(registries_conf=''):
        engine = Podman(tmp_path_factory.mktemp('podman'), registries_conf=registries_conf)
        started.append(engine)
        return engine.start()

    yield start
    for engine in started:
        engine.stop()


@pytest.fixture(scope='session')
def tls_material(tmp_path_factory):
    """A CA with server and client certificates, the bad certificates, and an unrelated CA, generated once."""
    return certs.generate(tmp_path_factory.mktemp('tls'))


@pytest.fixture
def instance():
    return {}
