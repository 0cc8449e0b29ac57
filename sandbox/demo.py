"""Audit this machine's Docker engine; where none answers, audit a throwaway demo engine instead.

    python -m sandbox.demo [options of python -m datadog_checks.cis_docker]

An explicit target (--url, --targets or DOCKER_HOST) is always audited as given, answering or not. Only when nothing
was asked for and the local socket is silent does this start a sandboxed dockerd, configured to fail the control,
so that a first run shows what the check reports.
"""

import os
import sys

from datadog_checks.cis_docker.cli import main as audit
from datadog_checks.cis_docker.engine import DEFAULT_URL

from .engines import Dockerd, ping

DEMO_CONFIG = {
    'insecure-registries': ['10.99.0.0/16'],
    'registry-mirrors': ['http://mirror.demo.example:5000'],
}


LOCAL_SOCKET = DEFAULT_URL.removeprefix('unix://')
TARGET_OPTIONS = ('--url', '-H', '--host', '--targets')


def main(argv=None, local_socket=LOCAL_SOCKET):
    argv = sys.argv[1:] if argv is None else argv
    explicit = os.environ.get('DOCKER_HOST') or any(arg.split('=')[0] in TARGET_OPTIONS for arg in argv)
    if explicit or ping(local_socket) or {'-h', '--help'} & set(argv):
        return audit(argv)

    with Dockerd(daemon_json=DEMO_CONFIG) as engine:
        print(
            f'No Docker engine answers at {local_socket}, so this is a DEMO: a throwaway dockerd was started under '
            f'{engine.root} with one insecure registry (10.99.0.0/16) and one plain-HTTP mirror. It is stopped '
            'when the audit ends; nothing else on this machine changes.\n',
            file=sys.stderr,
            flush=True,
        )
        return audit([*argv, '--url', engine.url])


if __name__ == '__main__':
    sys.exit(main())
