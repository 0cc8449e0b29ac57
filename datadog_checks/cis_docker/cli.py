"""Run the check once from a shell and show what it would send to Datadog.

    python -m datadog_checks.cis_docker [--url URL] [--json]

Exit status: 0 compliant, 1 one or more insecure registries, 2 the engine could not be audited.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import textwrap
from dataclasses import asdict, dataclass, field

from datadog_checks.base import AgentCheck

from .check import CisDockerCheck

EXIT_COMPLIANT = 0
EXIT_VIOLATIONS = 1
EXIT_UNAUDITED = 2

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

    def to_json(self) -> dict:
        document = asdict(self)
        document.update(verdict=self.verdict, exit_code=self.exit_code, violations=self.violations)
        return document


class RecordingCheck(CisDockerCheck):
    """The real check, keeping what it submits instead of handing it to an Agent's aggregator.

    Outside the Agent the base class submits to a process-wide stub; recording per check object keeps concurrent runs
    over many endpoints apart.
    """

    def __init__(self, name, init_config, instances):
        super().__init__(name, init_config, instances)
        self.recorded_checks: list[ServiceCheckResult] = []
        self.recorded_series: list[SeriesResult] = []
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

    def set_metadata(self, name, value, **options):
        if name == 'version':
            self.engine_version = value


def run_instance(instance: dict) -> RunResult:
    """Run the check once over one instance configuration, as the Agent would, and collect what it sends."""
    check = RecordingCheck('cis_docker', {}, [instance])
    error_report = check.run()
    result = RunResult(
        endpoint=check.engine.label if check.engine else str(instance.get('url', '')),
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
        epilog='Exit status: 0 compliant, 1 insecure registries found, 2 the engine could not be audited.',
    )
    parser.add_argument('--url', help='engine endpoint (default: DOCKER_HOST, else unix:///var/run/docker.sock)')
    parser.add_argument('--timeout', type=float, help='seconds one audit may take (default 5)')
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
    return parser


def instance_from_args(args: argparse.Namespace) -> dict:
    instance = {}
    if args.url:
        instance['url'] = args.url
    if args.timeout is not None:
        instance['timeout'] = args.timeout
    if args.include_loopback:
        instance['ignore_loopback'] = False
    if args.allow:
        instance['allowed_insecure_registries'] = args.allow
    return instance


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    result = run_instance(instance_from_args(args))
    if args.json:
        print(json.dumps(result.to_json(), indent=2))
    else:
        print(render_table(result))
    return result.exit_code


if __name__ == '__main__':
    sys.exit(main())
