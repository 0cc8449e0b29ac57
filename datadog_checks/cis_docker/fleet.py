"""Audit many engines from one command: the check runs once per endpoint, a bounded number at a time, and one summary
says which engines comply, which do not, and which could not be audited and why.

    python -m datadog_checks.cis_docker --targets FILE [--workers N] [--timeout SECONDS] [--json]

FILE holds either one endpoint URL per line (blank lines and `#` comments ignored), or a YAML list whose items are
URLs or instances with the keys of a conf.yaml instance (`url`, `timeout`, `use_tls`, `tls_verify`, `tls_ca_cert`,
`tls_cert`, `tls_private_key`, ...), or a whole conf.yaml with `instances:`.

Options on the command line fill what a target leaves unset. TLS settings are taken as a whole: a target that sets any
of them keeps its own, a target that sets none gets those of the flags and Docker's environment (DOCKER_TLS_VERIFY,
DOCKER_CERT_PATH; DOCKER_HOST plays no part here). A tcp:// target with no TLS settings anywhere is not spoken to in
plain HTTP: it is reported unaudited with the fix, as --url would be.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass

import yaml

from .cli import (
    EXIT_COMPLIANT,
    EXIT_UNAUDITED,
    EXIT_VIOLATIONS,
    TLS_OPTIONS,
    RunResult,
    UsageError,
    common_options,
    plain_tcp_refusal,
    run_instance,
    transport_options,
)
from .engine import is_tcp, redact_url

MAX_WORKERS = 32
# Registries named in the DETAIL column before it says "and N more"; the JSON document has them all.
DETAIL_NAMES = 3


@dataclass
class Target:
    """One engine to audit, or the reason its entry in the targets file cannot be audited as written."""

    endpoint: str
    instance: dict
    problem: str | None = None


@dataclass
class FleetEntry:
    target: Target
    result: RunResult
    seconds: float


def read_targets(path: str) -> list[str | dict | object]:
    """The entries of a targets file, URLs as strings and instances as mappings; UsageError for an unusable file."""
    try:
        with open(path, encoding='utf-8') as targets_file:
            text = targets_file.read()
    except OSError as error:
        raise UsageError(f'--targets: cannot read {path}: {error.strerror}') from None
    except UnicodeDecodeError:
        raise UsageError(f'--targets: {path} is not UTF-8 text') from None

    lines = [line.split('#', 1)[0].strip() for line in text.splitlines()]
    lines = [line for line in lines if line]
    if not lines:
        raise UsageError(f'--targets: {path} lists no engines')
    if all('://' in line and not any(char.isspace() for char in line) for line in lines):
        return lines

    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise UsageError(f'--targets: {path} is neither one URL per line nor valid YAML: {error}') from None
    if isinstance(document, dict) and 'instances' in document:
        document = document['instances']
    if not isinstance(document, list) or not document:
        raise UsageError(
            f'--targets: {path} holds neither one URL per line nor a non-empty YAML list of instances '
            '(a list, or a conf.yaml with instances:)'
        )
    return document


def build_targets(entries: list, args: argparse.Namespace, environ) -> list[Target]:
    defaults = common_options(args)
    transport = None  # read once, only if some target needs it: a contradiction among the flags is a usage error
    targets = []
    for number, entry in enumerate(entries, 1):
        if isinstance(entry, str):
            entry = {'url': entry}
        if not isinstance(entry, dict):
            targets.append(Target(f'entry {number}', {}, f'entry {number} is {_kind(entry)}, not a URL or an instance'))
            continue

        instance = {**defaults, **entry}
        url = instance.get('url')
        endpoint = redact_url(url) if isinstance(url, str) and url else f'entry {number}'
        if is_tcp(url) and not any(option in entry for option in TLS_OPTIONS):
            if transport is None:
                transport = transport_options(args, environ)
            if not transport:
                targets.append(Target(endpoint, instance, plain_tcp_refusal(url, f'--targets entry {number}')))
                continue
            instance.update(transport)
        targets.append(Target(endpoint, instance))
    return targets


def audit_targets(targets: list[Target], workers: int, progress: Progress | None = None) -> list[FleetEntry]:
    """Run the check over every target, `workers` at a time; the entries come back in the order of the targets."""
    entries: list[FleetEntry | None] = [None] * len(targets)
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix='cis_docker-fleet') as pool:
        futures = {pool.submit(_audit_one, target): index for index, target in enumerate(targets)}
        for future in as_completed(futures):
            entries[futures[future]] = future.result()
            if progress is not None:
                progress.advance()
    return entries


def _audit_one(target: Target) -> FleetEntry:
    started = time.monotonic()
    if target.problem is not None:
        result = RunResult(endpoint=target.endpoint, errors=[target.problem])
    else:
        try:
            result = run_instance(target.instance)
        except Exception as error:  # noqa: BLE001 - one broken audit must not lose the others' results
            result = RunResult(endpoint=target.endpoint, errors=[f'the audit failed: {type(error).__name__}: {error}'])
    return FleetEntry(target, result, time.monotonic() - started)


def fleet_exit_code(entries: list[FleetEntry]) -> int:
    codes = {entry.result.exit_code for entry in entries}
    if EXIT_UNAUDITED in codes:
        return EXIT_UNAUDITED
    return EXIT_VIOLATIONS if EXIT_VIOLATIONS in codes else EXIT_COMPLIANT


def summary(entries: list[FleetEntry], seconds: float) -> dict:
    verdicts = [entry.result.verdict for entry in entries]
    return {
        'engines': len(entries),
        'compliant': verdicts.count('compliant'),
        'violations': verdicts.count('violations'),
        'unaudited': verdicts.count('unaudited'),
        'exit_code': fleet_exit_code(entries),
        'seconds': round(seconds, 3),
    }


def to_json(entries: list[FleetEntry], seconds: float) -> dict:
    return {
        'endpoints': [{**entry.result.to_json(), 'seconds': round(entry.seconds, 3)} for entry in entries],
        'summary': summary(entries, seconds),
    }


def render_fleet_table(entries: list[FleetEntry], seconds: float) -> str:
    header = ('ENDPOINT', 'ENGINE', 'STATUS', 'VIOLATIONS', 'DETAIL')
    rows = [header]
    for entry in entries:
        result = entry.result
        engine = ' '.join(part for part in (result.engine, result.engine_version) if part) or '-'
        violations = '-' if result.violations is None else str(result.violations)
        rows.append((result.endpoint, engine, result.verdict, violations, _detail(result)))
    # Every column but the last is padded; the last, the reason an engine was not audited, is never cut.
    widths = [max(len(row[column]) for row in rows) for column in range(len(header) - 1)]
    lines = ['  '.join([*(row[i].ljust(width) for i, width in enumerate(widths)), row[-1]]).rstrip() for row in rows]

    counts = summary(entries, seconds)
    lines += [
        '',
        f'{counts["engines"]} engines: {counts["compliant"]} compliant, {counts["violations"]} with violations, '
        f'{counts["unaudited"]} not audited, in {seconds:.1f} s. Exit status {counts["exit_code"]}.',
    ]
    warned = [(entry.result.endpoint, warning) for entry in entries for warning in entry.result.warnings]
    if warned:
        lines += ['', 'Warnings:', *(f'  {endpoint}: {warning}' for endpoint, warning in warned)]
    return '\n'.join(lines)


def _detail(result: RunResult) -> str:
    if result.reason is not None:
        return result.reason
    names = [
        tag.split(':', 1)[1]
        for series in result.series
        if series.name == 'cis_docker.insecure_registry'
        for tag in series.tags
        if tag.startswith('registry:')
    ]
    hidden = (result.violations or 0) - len(names[:DETAIL_NAMES])
    return ', '.join(names[:DETAIL_NAMES]) + (f' and {hidden} more' if hidden > 0 else '')


class Progress:
    """A one-line bar on a terminal; nothing at all when the stream is piped or redirected."""

    WIDTH = 30

    def __init__(self, total: int, stream=None):
        self.total = total
        self.done = 0
        self.stream = stream or sys.stderr
        self.enabled = self.stream.isatty()
        self._draw()

    def advance(self) -> None:
        self.done += 1
        self._draw()

    def close(self) -> None:
        if self.enabled:
            self.stream.write('\r\x1b[K')
            self.stream.flush()

    def _draw(self) -> None:
        if not self.enabled:
            return
        filled = self.WIDTH * self.done // max(self.total, 1)
        self.stream.write(f'\r[{"#" * filled}{"." * (self.WIDTH - filled)}] {self.done}/{self.total} engines audited')
        self.stream.flush()


def run_fleet_command(args: argparse.Namespace, environ=None) -> int:
    environ = os.environ if environ is None else environ
    if args.url:
        raise UsageError('--url and --targets exclude each other: list every engine in the targets file')
    if args.workers is not None and args.workers < 1:
        raise UsageError(f'--workers must be 1 or more, got {args.workers}')
    targets = build_targets(read_targets(args.targets), args, environ)
    workers = args.workers or min(MAX_WORKERS, len(targets))

    started = time.monotonic()
    progress = Progress(len(targets))
    try:
        entries = audit_targets(targets, workers, progress)
    finally:
        progress.close()
    seconds = time.monotonic() - started

    if args.json:
        print(json.dumps(to_json(entries, seconds), indent=2))
    else:
        print(render_fleet_table(entries, seconds))
    return fleet_exit_code(entries)


def _kind(value: object) -> str:
    return 'empty' if value is None else f'a {type(value).__name__}'
