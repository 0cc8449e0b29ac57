"""What one audit costs, measured side by side against the floor and against the CIS audit command, on real engines.

    scripts/benchmark [--quick]

Every engine is a sandboxed dockerd started here (sandbox/engines.py). Compared quantities are measured in the same
rounds, alternating, so that a slow second of the machine hits all of them alike; figures are medians and 90th
percentiles over the rounds. CPU is this process's CPU time (the check reads in a worker thread, so per-thread time
would miss it), or for a subprocess its children's rusage.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field

from datadog_checks.base import AgentCheck
from datadog_checks.base.stubs import aggregator

from datadog_checks.cis_docker.check import CisDockerCheck
from sandbox.engines import Dockerd
from sandbox.probes import RawInfo, open_fds, reader_threads, rss_bytes, socket_inodes

TARGETS = {
    'wall_vs_raw': 1.10,
    'cpu_ms': 2.0,
    'wall_vs_cli': 3.0,
    'cpu_vs_cli': 5.0,
    'overhead_at_10000_ms': 50.0,
    'soak_rss_growth_bytes': 1024 * 1024,
}
# Per-instance cost at the most instances over the cost at one; beyond this it no longer counts as flat.
FLAT_TOLERANCE = 1.25
CLI_FORMAT = '{{.RegistryConfig.InsecureRegistryCIDRs}}'
SMALL_CONFIG = {'insecure-registries': ['10.20.0.0/16', 'registry.corp.example:5000']}


@dataclass
class Samples:
    wall: list[float] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)

    def add(self, wall: float, cpu: float) -> None:
        self.wall.append(wall)
        self.cpu.append(cpu)


@dataclass
class Verdict:
    name: str
    met: bool
    figure: str


def median(values) -> float:
    return statistics.median(values)


def p90(values) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(0.9 * len(ordered)))]


def ms(seconds: float) -> str:
    return f'{seconds * 1000:.2f}'


def registries(count: int) -> list[str]:
    """Half CIDRs, half host names, all distinct, none loopback: every one is a violation the check must count."""
    names = []
    for index in range(count):
        if index % 2 == 0:
            names.append(f'10.{index // 256 % 256}.{index % 256}.0/24')
        else:
            names.append(f'registry-{index}.corp.example:5000')
    return names


def new_check(url: str) -> CisDockerCheck:
    return CisDockerCheck('cis_docker', {}, [{'url': url, 'timeout': 10}])


def timed_check_run(check: CisDockerCheck) -> tuple[float, float]:
    aggregator.reset()
    started, cpu = time.perf_counter(), time.process_time()
    error = check.run()
    wall, cpu = time.perf_counter() - started, time.process_time() - cpu
    if error:
        raise RuntimeError(f'check run failed: {error}')
    return wall, cpu


def timed_raw(raw: RawInfo) -> tuple[float, float]:
    started, cpu = time.perf_counter(), time.process_time()
    raw.get()
    return time.perf_counter() - started, time.process_time() - cpu


def timed_cli(docker: str, url: str) -> tuple[float, float]:
    env = {**os.environ, 'DOCKER_HOST': url}
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    answer = subprocess.run([docker, 'info', '--format', CLI_FORMAT], env=env, capture_output=True, text=True)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if answer.returncode != 0 or '10.20.0.0/16' not in answer.stdout:
        raise RuntimeError(f'docker info failed: {answer.stderr or answer.stdout}')
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def registry_tls() -> tuple[int, str]:
    checks = aggregator.service_checks('cis_docker.registry_tls')
    return checks[-1].status, checks[-1].message or ''


def gauge_value(name: str) -> float | None:
    metrics = aggregator.metrics(name)
    return metrics[-1].value if metrics else None


def interleave(rounds: int, measures: dict) -> dict[str, Samples]:
    """Each round runs every measure once, starting from a different one each round."""
    samples = {name: Samples() for name in measures}
    names = list(measures)
    for round_index in range(rounds):
        shift = round_index % len(names)
        for name in names[shift:] + names[:shift]:
            samples[name].add(*measures[name]())
    return samples


def machine_facts(docker_cli: str | None) -> list[tuple[str, str]]:
    model = 'unknown'
    with open('/proc/cpuinfo') as cpuinfo:
        for line in cpuinfo:
            if line.startswith('model name'):
                model = line.split(':', 1)[1].strip()
                break
    dockerd = subprocess.run([shutil.which('dockerd') or 'dockerd', '--version'], capture_output=True, text=True)
    facts = [
        ('CPU', model),
        ('cores', str(os.cpu_count())),
        ('kernel', platform.release()),
        ('Python', platform.python_version()),
        ('dockerd', dockerd.stdout.strip()),
        ('docker SDK', importlib.metadata.version('docker')),
        ('datadog-checks-base', importlib.metadata.version('datadog-checks-base')),
    ]
    if docker_cli:
        cli = subprocess.run([docker_cli, '--version'], capture_output=True, text=True)
        facts.append(('docker CLI', f'{docker_cli}: {cli.stdout.strip()}'))
    return facts


def print_table(title: str, header: list[str], rows: list[list[str]]) -> None:
    widths = [max(len(str(row[column])) for row in [header, *rows]) for column in range(len(header))]
    print(f'\n{title}')
    print('  ' + '  '.join(str(cell).rjust(width) for cell, width in zip(header, widths, strict=True)))
    for row in rows:
        print('  ' + '  '.join(str(cell).rjust(width) for cell, width in zip(row, widths, strict=True)))


def bench_one_run(rounds: int, docker_cli: str | None, verdicts: list[Verdict]) -> None:
    with Dockerd(daemon_json=SMALL_CONFIG) as engine:
        raw = RawInfo(engine.socket_path)
        check = new_check(engine.url)
        for _ in range(5):
            timed_raw(raw)
            timed_check_run(check)
        status, _ = registry_tls()
        if status != AgentCheck.CRITICAL or gauge_value('cis_docker.insecure_registries') != 2:
            raise RuntimeError('the check did not find the two insecure registries of the benchmark engine')

        measures = {'raw GET /info': lambda: timed_raw(raw), 'check run': lambda: timed_check_run(check)}
        if docker_cli:
            measures['docker info --format'] = lambda: timed_cli(docker_cli, engine.url)
        samples = interleave(rounds, measures)
        raw.close()
        check.cancel()

    rows = [
        [name, ms(median(s.wall)), ms(p90(s.wall)), ms(median(s.cpu)), ms(p90(s.cpu))] for name, s in samples.items()
    ]
    print_table(
        f'One audit, small daemon.json (2 insecure registries), {rounds} interleaved rounds',
        ['', 'wall med ms', 'wall p90 ms', 'CPU med ms', 'CPU p90 ms'],
        rows,
    )
    check_s, raw_s = samples['check run'], samples['raw GET /info']
    wall_ratio = median(check_s.wall) / median(raw_s.wall)
    print(f'  check / raw /info, wall (medians): {wall_ratio:.2f}x')
    met = wall_ratio <= TARGETS['wall_vs_raw']
    verdicts.append(Verdict('check wall <= 1.10x raw GET /info', met, f'{wall_ratio:.2f}x'))
    cpu = median(check_s.cpu) * 1000
    verdicts.append(Verdict('check CPU <= 2 ms per run', cpu <= TARGETS['cpu_ms'], f'{cpu:.2f} ms'))
    if docker_cli:
        cli_s = samples['docker info --format']
        wall_gain = median(cli_s.wall) / median(check_s.wall)
        cpu_gain = median(cli_s.cpu) / median(check_s.cpu)
        print(f'  docker info / check: wall {wall_gain:.1f}x, CPU {cpu_gain:.1f}x')
        met = wall_gain >= TARGETS['wall_vs_cli']
        verdicts.append(Verdict('>= 3x less wall than docker info', met, f'{wall_gain:.1f}x'))
        met = cpu_gain >= TARGETS['cpu_vs_cli']
        verdicts.append(Verdict('>= 5x less CPU than docker info', met, f'{cpu_gain:.1f}x'))


MEMORY_PROBE = """
import re, sys
def rss():
    return int(re.search(r'VmRSS:\\s+(\\d+)', open('/proc/self/status').read()).group(1))
import datadog_checks.base
stage = sys.argv[1]
if stage != 'base':
    from datadog_checks.cis_docker.check import CisDockerCheck
    check = CisDockerCheck('cis_docker', {}, [{'url': sys.argv[2]}])
    if stage == 'run':
        assert not check.run(), 'check run failed'
print(rss())
"""


def bench_memory(repeats: int) -> None:
    stages = ('base', 'create', 'run')
    figures = {stage: [] for stage in stages}
    with Dockerd(daemon_json=SMALL_CONFIG) as engine:
        for _ in range(repeats):
            for stage in stages:
                answer = subprocess.run(
                    [sys.executable, '-c', MEMORY_PROBE, stage, engine.url], capture_output=True, text=True, check=True
                )
                figures[stage].append(int(answer.stdout.strip()))
    base, create, run = (median(figures[stage]) for stage in stages)
    print_table(
        f'Resident memory of a fresh process (VmRSS, median of {repeats})',
        ['', 'RSS MiB', 'added MiB'],
        [
            ['import datadog_checks.base', f'{base / 1024:.1f}', ''],
            ['+ import and create the check', f'{create / 1024:.1f}', f'{(create - base) / 1024:.2f}'],
            ['+ first run (docker SDK, connection)', f'{run / 1024:.1f}', f'{(run - base) / 1024:.2f}'],
        ],
    )


def bench_growth(sizes: list[int], rounds: int, verdicts: list[Verdict]) -> None:
    rows = []
    overheads = {}
    for size in sizes:
        started = time.perf_counter()
        engine = Dockerd(daemon_json={'insecure-registries': registries(size)}).start()
        startup = time.perf_counter() - started
        try:
            raw = RawInfo(engine.socket_path)
            info_bytes = len(raw.get())
            check = new_check(engine.url)
            timed_check_run(check)
            _verify_growth(size)
            size_rounds = rounds if size < 10_000 else max(20, rounds // 4)
            measures = {'raw': lambda raw=raw: timed_raw(raw), 'check': lambda check=check: timed_check_run(check)}
            samples = interleave(size_rounds, measures)
            _verify_growth(size)
            raw.close()
            check.cancel()
        finally:
            engine.stop()
        differences = [c - r for c, r in zip(samples['check'].wall, samples['raw'].wall, strict=True)]
        overhead = median(differences)
        overheads[size] = overhead
        rows.append(
            [
                f'{size:,}',
                f'{startup:.2f}',
                f'{info_bytes / 1024:,.0f}',
                ms(median(samples['raw'].wall)),
                ms(median(samples['check'].wall)),
                ms(overhead),
                ms(p90(differences)),
                ms(median(samples['check'].cpu)),
                f'{overhead / size * 1e6:.1f}',
            ]
        )
    print_table(
        'Growth with the number of insecure registries (half CIDRs, half host names); count and series cap verified',
        [
            'registries',
            'dockerd start s',
            '/info KiB',
            'raw med ms',
            'check med ms',
            'check-raw med ms',
            'check-raw p90 ms',
            'check CPU ms',
            'us per registry',
        ],
        rows,
    )
    largest = max(overheads)
    if len(overheads) > 1:
        smaller = sorted(overheads)[-2]
        scale = (overheads[largest] / overheads[smaller]) / (largest / smaller)
        print(f'  overhead growth {smaller:,} -> {largest:,}: {scale:.2f} of proportional (1.00 = linear)')
    if largest >= 10_000:
        figure = overheads[largest] * 1000
        verdicts.append(
            Verdict(
                'check time beyond the daemon < 50 ms at 10,000',
                figure < TARGETS['overhead_at_10000_ms'],
                f'{figure:.1f} ms',
            )
        )


def _verify_growth(size: int) -> None:
    count = gauge_value('cis_docker.insecure_registries')
    named = len(aggregator.metrics('cis_docker.insecure_registry'))
    status, message = registry_tls()
    if count != size or status != AgentCheck.CRITICAL or named != min(size, 100):
        raise RuntimeError(f'{size} registries: counted {count}, {named} series, status {status}')
    if size > 100 and f'{size - 100} left out' not in message:
        raise RuntimeError(f'the message does not say how many series were left out: {message[:300]}')


def bench_instances(counts: list[int], rounds: int, verdicts: list[Verdict]) -> None:
    engines = []
    started = time.perf_counter()
    try:
        for _ in range(max(counts)):
            engines.append(Dockerd(daemon_json=SMALL_CONFIG).start())
        startup = time.perf_counter() - started
        daemons_rss = sum(rss_bytes(engine.process.pid) for engine in engines)
        print(
            f'\nStarted {len(engines)} sandboxed dockerd in {startup:.1f} s ({startup / len(engines):.2f} s each, '
            f'one after another); together {daemons_rss / 2**20:.0f} MiB resident'
        )
        rows = []
        per_instance = {}
        for count in counts:
            raws = [RawInfo(engine.socket_path) for engine in engines[:count]]
            checks = [new_check(engine.url) for engine in engines[:count]]
            for raw, check in zip(raws, checks, strict=True):
                timed_raw(raw)
                timed_check_run(check)

            def all_raw(raws=raws):
                return _sum_pairs(timed_raw(raw) for raw in raws)

            def all_checks(checks=checks):
                return _sum_pairs(timed_check_run(check) for check in checks)

            samples = interleave(rounds, {'raw': all_raw, 'check': all_checks})
            per_instance[count] = median(samples['check'].cpu) / count
            differences = [c - r for c, r in zip(samples['check'].wall, samples['raw'].wall, strict=True)]
            rows.append(
                [
                    str(count),
                    ms(median(samples['raw'].wall) / count),
                    ms(median(samples['check'].wall) / count),
                    ms(median(differences) / count),
                    ms(per_instance[count]),
                    str(len(reader_threads())),
                    str(open_fds()),
                ]
            )
            for raw, check in zip(raws, checks, strict=True):
                raw.close()
                check.cancel()
            del checks
    finally:
        for engine in engines:
            engine.stop()
    print_table(
        f'Instances on distinct dockerd, each run once per round, one after another ({rounds} rounds)',
        ['instances', 'raw /inst. ms', 'check /inst. ms', 'check-raw /inst. ms', 'CPU /inst. ms', 'threads', 'fds'],
        rows,
    )
    smallest, largest = min(per_instance), max(per_instance)
    flatness = per_instance[largest] / per_instance[smallest]
    print(f'  client CPU per instance at {largest} / at {smallest}: {flatness:.2f}x')
    name = f'CPU per instance flat from {smallest} to {largest} (within 25%)'
    verdicts.append(Verdict(name, flatness <= FLAT_TOLERANCE, f'{flatness:.2f}x'))


def _sum_pairs(pairs) -> tuple[float, float]:
    wall = cpu = 0.0
    for one_wall, one_cpu in pairs:
        wall += one_wall
        cpu += one_cpu
    return wall, cpu


def bench_soak(runs: int, verdicts: list[Verdict]) -> None:
    with Dockerd(daemon_json=SMALL_CONFIG) as engine:
        check = new_check(engine.url)
        for _ in range(50):
            timed_check_run(check)
        fds, sockets, rss, threads = open_fds(), socket_inodes(), rss_bytes(), len(reader_threads())
        fd_counts, socket_changes = set(), 0
        started = time.perf_counter()
        for _ in range(runs):
            timed_check_run(check)
            fd_counts.add(open_fds())
            if socket_inodes() != sockets:
                socket_changes += 1
        elapsed = time.perf_counter() - started
        if registry_tls()[0] != AgentCheck.CRITICAL or gauge_value('cis_docker.insecure_registries') != 2:
            raise RuntimeError('the last soak run did not report the engine correctly')
        growth = rss_bytes() - rss
        end_threads = len(reader_threads())
        check.cancel()
    print(
        f'\nSoak: {runs} consecutive runs of one instance in {elapsed:.1f} s; open fds {fds} before, '
        f'{min(fd_counts)}..{max(fd_counts)} during; runs whose socket set changed (a new connection): '
        f'{socket_changes}; RSS growth {growth / 1024:.0f} KiB; reader threads {threads} -> {end_threads}'
    )
    verdicts.append(Verdict('soak: open fds constant', fd_counts == {fds}, f'{sorted(fd_counts)} vs {fds}'))
    verdicts.append(Verdict('soak: no connection opened per run', socket_changes == 0, f'{socket_changes} runs'))
    verdicts.append(
        Verdict('soak: RSS growth <= 1 MiB', growth <= TARGETS['soak_rss_growth_bytes'], f'{growth / 1024:.0f} KiB')
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog='scripts/benchmark', description=__doc__.split('\n\n')[0])
    parser.add_argument('--quick', action='store_true', help='a short run: fewer rounds, sizes and instances')
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        parser.error('the sandboxed dockerd engines need root')

    rounds = 40 if args.quick else 250
    docker_cli = shutil.which('docker')
    print('Machine')
    for name, value in machine_facts(docker_cli):
        print(f'  {name}: {value}')
    print(f'Mode: {"quick" if args.quick else "full"}')

    verdicts: list[Verdict] = []
    bench_one_run(rounds, docker_cli, verdicts)
    bench_memory(3 if args.quick else 7)
    bench_growth([10, 100, 1_000] if args.quick else [10, 100, 1_000, 10_000], rounds // 2, verdicts)
    bench_instances([1, 10] if args.quick else [1, 10, 50], max(10, rounds // 10), verdicts)
    bench_soak(200 if args.quick else 1_000, verdicts)

    print('\nTargets')
    width = max(len(verdict.name) for verdict in verdicts)
    for verdict in verdicts:
        print(f'  {verdict.name:<{width}}  {"met" if verdict.met else "NOT MET"}  ({verdict.figure})')
    return 0 if all(verdict.met for verdict in verdicts) else 1


if __name__ == '__main__':
    sys.exit(main())
