"""Many consecutive runs of one instance against a real dockerd hold no more than the first few did.

`scripts/benchmark` runs the same soak at 1,000 runs; this is its shorter form, with the invariants as assertions.
"""

import gc

import pytest
from datadog_checks.base import AgentCheck

from datadog_checks.cis_docker import CisDockerCheck
from sandbox.probes import open_fds, reader_threads, rss_bytes, socket_inodes

from .common import CHECK_NAME, INSECURE_REGISTRIES, REGISTRY_TLS

pytestmark = pytest.mark.integration

WARM_UP_RUNS = 30
SOAK_RUNS = 200


def test_repeated_runs_keep_one_connection_and_hold_nothing_more(aggregator, dockerd_factory):
    engine = dockerd_factory(daemon_json={'insecure-registries': ['10.20.0.0/16', 'registry.corp.example:5000']})
    # Checks left by earlier tests would otherwise be collected mid-soak, their sockets closing under the count.
    gc.collect()
    check = CisDockerCheck(CHECK_NAME, {}, [{'url': engine.url}])
    sockets_before, threads_before = socket_inodes(), reader_threads()
    for _ in range(WARM_UP_RUNS):
        assert check.run() == ''
    fds, sockets, rss, threads = open_fds(), socket_inodes(), rss_bytes(), reader_threads()

    # Once warm the check holds one connection and one reader thread of its own, which every later run must reuse.
    own_sockets = sockets - sockets_before
    assert len(own_sockets) == 1
    assert len(threads - threads_before) == 1

    fd_counts, runs_with_new_sockets = set(), 0
    for _ in range(SOAK_RUNS):
        aggregator.reset()
        assert check.run() == ''
        aggregator.assert_service_check(REGISTRY_TLS, AgentCheck.CRITICAL, count=1)
        aggregator.assert_metric(INSECURE_REGISTRIES, 2, count=1)
        fd_counts.add(open_fds())
        now = socket_inodes()
        runs_with_new_sockets += bool(now - sockets) or not own_sockets <= now

    assert fd_counts == {fds}
    assert runs_with_new_sockets == 0, 'a run opened a connection instead of reusing the one kept'
    assert reader_threads() <= threads
    assert rss_bytes() - rss <= 1024 * 1024
    check.cancel()
