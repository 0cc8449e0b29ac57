"""Run the check once from a shell and show what it would send to Datadog, or audit a fleet of engines.

    python -m datadog_checks.cis_docker [--url URL] [--json]
    python -m datadog_checks.cis_docker --targets FILE [--workers N] [--json]

Like the docker CLI, it reads DOCKER_HOST, DOCKER_TLS_VERIFY and DOCKER_CERT_PATH, and takes --tlsverify, --tlscacert,
--tlscert and --tlskey. Unlike it, a tcp:// endpoint is never spoken to in plain HTTP unless --no-tls says so.

Exit status: 0 compliant, 1 one or more insecure registries, 2 an engine could not be audited.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import sys
import textwrap
import warnings
from dataclasses import asdict, dataclass, field

from urllib3.exceptions import InsecureRequestWarning

from datadog_checks.base import AgentCheck

from .check import CisDockerCheck
from .engine import is_tcp, redact_url

EXIT_COMPLIANT = 0
EXIT_VIOLATIONS = 1
EXIT_UNAUDITED = 2

# The files the docker CLI looks for in DOCKER_CERT_PATH, by the check option each one fills.
DOCKER_CERT_FILES = {'tls_ca_cert': 'ca.pem', 'tls_cert': 'cert.pem', 'tls_private_key': 'key.pem'}
TLS_OPTIONS = ('use_tls', 'tls_verify', 'tls_ca_cert', 'tls_cert', 'tls_private_key')


class UsageError(Exception):
    """A command line that cannot be run as given; the message says how to fix it."""


STATUS_NAMES = {
    AgentCheck.OK: 'OK',
    AgentCheck.WARNING: 'WARNING',
    AgentCheck.CRITICAL: 'CRITICAL',
    AgentCheck.UNKNOWN: 'UNKNOWN',
}


@dataclass
class ServiceCheckResult:
    name: str
    status: str
    message: str
    tags: list[str]


@dataclass
class SeriesResult:
    name: str
    type: str
    value: float
    tags: list[str]


@dataclass
class RunResult:
    """Everything one run of the check would have sent, and what it means for an exit status."""

    endpoint: str
    engine: str | None = None
    engine_version: str | None = None
    service_checks: list[ServiceCheckResult] = field(default_factory=list)
    series: list[SeriesResult] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    @property
    def exit_code(self) -> int:
        statuses = {check.name: check.status for check in self.service_checks}
        if self.errors or statuses.get('cis_docker.registry_tls', 'UNKNOWN') == 'UNKNOWN':
            return EXIT_UNAUDITED
        return EXIT_VIOLATIONS if statuses['cis_docker.registry_tls'] == 'CRITICAL' else EXIT_COMPLIANT

    @property
    def verdict(self) -> str:
        return {EXIT_COMPLIANT: 'compliant', EXIT_VIOLATIONS: 'violations', EXIT_UNAUDITED: 'unaudited'}[self.exit_code]

    @property
    def violations(self) -> int | None:
        for series in self.series:
            if series.name == 'cis_docker.insecure_registries':
                return int(series.value)
        return None

    @property
    def reason(self) -> str | None:
        """Why the engine was not audited, in the check's own words; None when it was."""
        if self.exit_code != EXIT_UNAUDITED:
            return None
        if self.errors:
            return self.errors[0]
        for check in self.service_checks:
            if check.status != 'OK' and check.message:
                return check.message
        return 'the check sent no verdict'

    def to_json(self) -> dict:
        document = asdict(self)
        document.update(verdict=self.verdict, exit_code=self.exit_code, violations=self.violations, reason=self.reason)
        return document


def engine_name(info: dict) -> str:
    # Podman's Docker-compatible /info carries the Buildah version it embeds; Docker's never has that key.
    return 'Podman' if 'BuildahVersion' in info else 'Docker'


class RecordingCheck(CisDockerCheck):
    """The real check, keeping what it submits instead of handing it to an Agent's aggregator.

    Outside the Agent the base class submits to a process-wide stub; recording per check object keeps concurrent runs
    over many endpoints apart.
    """

    def __init__(self, name, init_config, instances):
        super().__init__(name, init_config, instances)
        self.recorded_checks: list[ServiceCheckResult] = []
        self.recorded_series: list[SeriesResult] = []
        self.engine_name: str | None = None
        self.engine_version: str | None = None

    def gauge(self, name, value, tags=None, hostname=None, device_name=None, raw=False):
        self.recorded_series.append(SeriesResult(self._format_namespace(name, raw), 'gauge', value, list(tags or ())))

    def service_check(self, name, status, tags=None, hostname=None, message=None, raw=False):
        self.recorded_checks.append(
            ServiceCheckResult(
                self._format_namespace(name, raw),
                STATUS_NAMES.get(status, str(status)),
                message or '',
                list(tags or ()),
            )
        )

    def _set_engine_metadata(self, info: dict) -> None:
        version = info.get('ServerVersion')
        self.engine_version = version if isinstance(version, str) and version else None
        self.engine_name = engine_name(info)


def run_instance(instance: dict) -> RunResult:
    """Run the check once over one instance configuration, as the Agent would, and collect what it sends."""
    check = RecordingCheck('cis_docker', {}, [instance])
    error_report = check.run()
    result = RunResult(
        endpoint=check.engine.label if check.engine else redact_url(str(instance.get('url') or '(default)')),
        engine=check.engine_name,
        engine_version=check.engine_version,
        service_checks=check.recorded_checks,
        series=check.recorded_series,
        warnings=[str(warning) for warning in check.get_warnings()],
    )
    if error_report:
        result.errors = [entry['message'] for entry in json.loads(error_report)]
    check.cancel()
    return result


def render_table(result: RunResult, width: int | None = None) -> str:
    """A screenful in the spirit of `datadog-agent check`: service checks first, then series, common tags once."""
    width = width or min(shutil.get_terminal_size((120, 24)).columns, 160)
    version = f' (engine {result.engine_version})' if result.engine_version else ''
    lines = [f'CIS Docker 2.4 "Private registry should use TLS" on {result.endpoint}{version}', '']

    for error in result.errors:
        lines.append('Configuration error:')
        lines.extend('  ' + line for line in error.splitlines())
        lines.append('')
    for warning in result.warnings:
        lines.extend(textwrap.wrap(f'Warning: {warning}', width, subsequent_indent='  ', break_on_hyphens=False))
        lines.append('')

    common = _common_tags(result)
    if result.service_checks:
        lines.append('Service checks')
        name_width = max(len(check.name) for check in result.service_checks)
        for check in result.service_checks:
            head = f'  {check.name:<{name_width}}  {check.status:<8}'
            if not check.message:
                lines.append(head.rstrip())
                continue
            wrapped = textwrap.wrap(check.message, max(40, width - len(head) - 2), break_on_hyphens=False)
            lines.append(f'{head}  {wrapped[0]}')
            lines.extend(' ' * (len(head) + 2) + line for line in wrapped[1:])
        lines.append('')

    if result.series:
        lines.append('Series (gauges)')
        name_width = max(len(series.name) for series in result.series)
        for series in result.series:
            own = [tag for tag in series.tags if tag not in common]
            lines.append(f'  {series.name:<{name_width}}  {series.value:>6g}  {" ".join(own)}'.rstrip())
        lines.append('')
    elif not result.errors:
        lines.append('Series: none sent, because nothing could be audited.')
        lines.append('')

    if common:
        lines.append('Tags on every series and service check: ' + ' '.join(common))
        lines.append('')
    lines.append(f'Result: {result.verdict} (exit status {result.exit_code})')
    return '\n'.join(lines)


def _common_tags(result: RunResult) -> list[str]:
    tag_sets = [check.tags for check in result.service_checks] + [series.tags for series in result.series]
    if not tag_sets:
        return []
    shared = set(tag_sets[0]).intersection(*map(set, tag_sets[1:]))
    return [tag for tag in tag_sets[0] if tag in shared]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog='python -m datadog_checks.cis_docker',
        description=(
            'Audit CIS Docker Benchmark control 2.4 ("Private registry should use TLS") on a Docker or Podman '
            'engine, as the cis_docker Agent check does, and print what the check would send.'
        ),
        epilog='Exit status: 0 compliant, 1 insecure registries found, 2 an engine could not be audited.',
    )
    parser.add_argument(
        '--url',
        '-H',
        '--host',
        dest='url',
        help='engine endpoint, as for docker -H (default: DOCKER_HOST, else unix:///var/run/docker.sock)',
    )
    parser.add_argument('--timeout', type=float, help='seconds one audit may take, per engine (default 5)')
    parser.add_argument(
        '--include-loopback',
        action='store_true',
        help='also report loopback registries, which CIS exempts and the daemon always lists (127.0.0.0/8, ::1/128)',
    )
    parser.add_argument(
        '--allow',
        action='append',
        default=[],
        metavar='REGISTRY',
        help='an accepted insecure registry (name as docker info shows it, CIDR, or mirror URL); repeatable',
    )
    parser.add_argument('--json', action='store_true', help='print one JSON document instead of a table')
    parser.add_argument('-v', '--verbose', action='store_true', help="show the check's log lines on stderr")

    tls = parser.add_argument_group(
        'TLS towards tcp:// engines',
        'As with the docker CLI, DOCKER_TLS_VERIFY set to any non-empty value means --tlsverify, and the files default '
        'to ca.pem, cert.pem and key.pem in DOCKER_CERT_PATH (else ~/.docker). Flags win over the environment.',
    )
    tls.add_argument('--tlsverify', action='store_true', help='use TLS and verify the engine against the CA')
    tls.add_argument('--tlscacert', metavar='FILE', help='CA that signed the engine certificate')
    tls.add_argument('--tlscert', metavar='FILE', help='client certificate, for an engine run with --tlsverify')
    tls.add_argument('--tlskey', metavar='FILE', help='private key of the client certificate')
    tls.add_argument(
        '--no-tls',
        action='store_true',
        help='speak plain HTTP to a tcp:// engine that listens without TLS (itself a finding: CIS Docker 2.6)',
    )

    fleet = parser.add_argument_group('fleets')
    fleet.add_argument(
        '--targets',
        metavar='FILE',
        help='audit many engines: one URL per line, or a YAML list of instances (or a conf.yaml with instances:)',
    )
    fleet.add_argument('--workers', type=int, metavar='N', help='engines audited at once (default: min(32, targets))')
    return parser


def common_options(args: argparse.Namespace) -> dict:
    """The options that apply to every engine audited by one command, whatever its endpoint."""
    options = {}
    if args.timeout is not None:
        options['timeout'] = args.timeout
    if args.include_loopback:
        options['ignore_loopback'] = False
    if args.allow:
        options['allowed_insecure_registries'] = args.allow
    return options


def transport_options(args: argparse.Namespace, environ) -> dict:
    """TLS options from the flags, else from Docker's environment; empty when neither says anything about TLS."""
    files = {'tls_ca_cert': args.tlscacert, 'tls_cert': args.tlscert, 'tls_private_key': args.tlskey}
    if args.no_tls:
        if args.tlsverify or any(files.values()):
            raise UsageError('--no-tls contradicts --tlsverify, --tlscacert, --tlscert and --tlskey: choose one')
        return {'use_tls': False}
    if not (args.tlsverify or environ.get('DOCKER_TLS_VERIFY') or any(files.values())):
        return {}

    cert_path = environ.get('DOCKER_CERT_PATH') or os.path.join(os.path.expanduser('~'), '.docker')
    for option, name in DOCKER_CERT_FILES.items():
        default = os.path.join(cert_path, name)
        # As the docker CLI does: the CA file is always expected, a client certificate only where there is one.
        if not files[option] and (option == 'tls_ca_cert' or os.path.isfile(default)):
            files[option] = default
    return {'use_tls': True, 'tls_verify': True, **{option: path for option, path in files.items() if path}}


def plain_tcp_refusal(url: str, source: str) -> str:
    return (
        f'{redact_url(url)} (from {source}) is a TCP endpoint and no TLS is configured. The docker CLI would speak '
        'plain HTTP to it; this audit does not unless told to. Set DOCKER_TLS_VERIFY=1 and DOCKER_CERT_PATH to the '
        'directory holding ca.pem, cert.pem and key.pem (or pass --tlsverify with --tlscacert, --tlscert and '
        '--tlskey), or pass --no-tls to audit it over plain TCP.'
    )


def instance_from_args(args: argparse.Namespace, environ=None) -> dict:
    """The instance the Agent would run, from the flags first and then Docker's environment, as the docker CLI reads
    them; UsageError for a tcp:// endpoint with no word on TLS."""
    environ = os.environ if environ is None else environ
    instance = common_options(args)
    url = args.url or environ.get('DOCKER_HOST') or None
    if url:
        instance['url'] = url
    if is_tcp(url):
        transport = transport_options(args, environ)
        if not transport:
            raise UsageError(plain_tcp_refusal(url, '--url' if args.url else 'DOCKER_HOST'))
        instance.update(transport)
    return instance


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # Warnings already appear in the output; without a handler Python would print them to stderr a second time (and
    # through a fleet's progress bar).
    if args.verbose:
        logging.basicConfig(level=logging.DEBUG, format='%(levelname)s %(name)s: %(message)s')
    else:
        logging.getLogger('datadog_checks').addHandler(logging.NullHandler())
    # The check warns about unverified TLS in words a user can act on; urllib3's own warning would only repeat it.
    warnings.simplefilter('ignore', InsecureRequestWarning)
    try:
        if args.targets:
            from .fleet import run_fleet_command  # here, because the fleet module builds on this one

            return run_fleet_command(args)
        instance = instance_from_args(args)
    except UsageError as error:
        print(f'error: {error}', file=sys.stderr)
        return EXIT_UNAUDITED

    result = run_instance(instance)
    if args.json:
        print(json.dumps(result.to_json(), indent=2))
    else:
        print(render_table(result))
    return result.exit_code


if __name__ == '__main__':
    sys.exit(main())
