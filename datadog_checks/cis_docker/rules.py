"""CIS Docker Benchmark control 2.4, "Private registry should use TLS", judged from an engine's `GET /info`.

Pure functions over the parsed payload: no I/O and nothing from Datadog, so that the same code serves the Agent
check, the command line and the tests.

The engine's own semantics decide what is insecure (moby `registry/config.go`, `isSecureIndex`):

- a registry named in `IndexConfigs` uses whatever `Secure` says for it;
- any other registry is insecure when one of its addresses falls in `InsecureRegistryCIDRs`;
- a registry mirror is reached over the scheme it was configured with, so an `http://` mirror carries every pull
  through it in clear text, although `/info` never marks it insecure.

The daemon always adds `127.0.0.0/8` (and, from Engine 28, `::1/128`) to the CIDRs itself. The CIS text calls local
registries acceptable ("all registries except local ones are secure"), so loopback entries are exempt unless the
policy says otherwise.
"""

from __future__ import annotations

import ipaddress
import operator
from dataclasses import dataclass
from urllib.parse import urlsplit

CIDR = 'cidr'
HOSTNAME = 'hostname'
MIRROR = 'mirror'

OK = 'ok'
VIOLATION = 'violation'
UNKNOWN = 'unknown'

LOOPBACK_NETWORKS = (ipaddress.ip_network('127.0.0.0/8'), ipaddress.ip_network('::1/128'))
IP_LITERAL_CHARACTERS = frozenset('0123456789abcdefABCDEF:.')
_ORDER = operator.attrgetter('kind', 'registry')

# Names listed in a message before it says "and N more": enough to act on, short enough for a page.
MESSAGE_NAME_LIMIT = 10

REGISTRY_REMEDIATION = (
    'drop them from "insecure-registries" in daemon.json or the --insecure-registry flag (on Podman, '
    '"insecure = true" in registries.conf) and trust each registry\'s CA in /etc/docker/certs.d/<registry>/'
)
MIRROR_REMEDIATION = 'move each http mirror to https in "registry-mirrors" in daemon.json or the --registry-mirror flag'


@dataclass(frozen=True, order=True)
class RegistryFinding:
    """One registry the engine talks to without verified TLS, named as `/info` shows it."""

    kind: str
    registry: str


@dataclass(frozen=True)
class Policy:
    """What the operator accepts: the loopback exemption and a list of known, accepted insecure registries."""

    ignore_loopback: bool = True
    allowed_names: frozenset[str] = frozenset()
    allowed_networks: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()

    @classmethod
    def build(cls, ignore_loopback: bool = True, allowed: list[str] | tuple[str, ...] = ()) -> Policy:
        """Parse accepted exceptions; raise ValueError, naming the entry, for one that cannot be understood."""
        names = set()
        networks = []
        for entry in allowed:
            if not isinstance(entry, str) or not entry.strip():
                raise ValueError(f'entries must be non-empty strings, got {entry!r}')
            entry = entry.strip()
            if '://' in entry:
                names.add(normalize_mirror(entry))
            elif '/' in entry:
                try:
                    networks.append(ipaddress.ip_network(entry, strict=False))
                except ValueError:
                    raise ValueError(f'{entry!r} looks like a CIDR but is not a valid network') from None
            else:
                names.add(entry.lower())
        return cls(ignore_loopback, frozenset(names), tuple(networks))

    def allows(self, finding: RegistryFinding) -> bool:
        if finding.kind == MIRROR:
            return normalize_mirror(finding.registry) in self.allowed_names
        if finding.registry.lower() in self.allowed_names:
            return True
        if not self.allowed_networks:
            return False
        network = parse_network(finding.registry) if finding.kind == CIDR else host_network(finding.registry)
        return network is not None and any(_inside(network, allowed) for allowed in self.allowed_networks)


@dataclass(frozen=True)
class Audit:
    """The verdict on one engine.

    `problems` lists what in the payload could not be judged. With any problem the status is UNKNOWN and no count is
    trustworthy: a partial count of 0 would read as compliant.
    """

    violations: tuple[RegistryFinding, ...] = ()
    allowed: tuple[RegistryFinding, ...] = ()
    exempt: tuple[RegistryFinding, ...] = ()
    problems: tuple[str, ...] = ()

    @property
    def status(self) -> str:
        if self.problems:
            return UNKNOWN
        return VIOLATION if self.violations else OK

    def message(self) -> str:
        """One paragraph for a service check or a terminal: what was found, and what to change."""
        parts = []
        if self.problems:
            parts.append('Cannot judge the registry configuration: ' + '; '.join(self.problems) + '.')
        if self.violations:
            count = len(self.violations)
            noun = 'registry' if count == 1 else 'registries'
            parts.append(f'{count} insecure {noun}: {_name_list(self.violations)}.')
            kinds = {finding.kind for finding in self.violations}
            fixes = [REGISTRY_REMEDIATION] if kinds & {CIDR, HOSTNAME} else []
            fixes += [MIRROR_REMEDIATION] if MIRROR in kinds else []
            parts.append('To fix: ' + '; '.join(fixes) + '.')
        elif not self.problems:
            parts.append('Every registry and mirror the engine uses is reached over verified TLS.')
        if self.allowed:
            parts.append(f'Accepted exceptions in use: {_name_list(self.allowed)}.')
        return ' '.join(parts)


def audit_registry_config(info: object, policy: Policy = Policy()) -> Audit:
    """Judge a parsed `/info` payload against CIS Docker 2.4 under `policy`."""
    if not isinstance(info, dict):
        return Audit(problems=(f'/info is {_type_name(info)}, not an object',))
    config = info.get('RegistryConfig')
    if not isinstance(config, dict):
        what = 'has no RegistryConfig' if config is None else f'has a RegistryConfig that is {_type_name(config)}'
        return Audit(problems=(f'/info {what}',))

    problems: list[str] = []
    candidates: dict[tuple[str, str], RegistryFinding] = {}

    def add(kind: str, registry: str, key: object) -> None:
        candidates.setdefault((kind, key), RegistryFinding(kind, registry))

    cidr_networks = {}
    for cidr in _string_list(config, 'InsecureRegistryCIDRs', problems):
        network = cidr_networks[cidr] = parse_network(cidr)
        add(CIDR, cidr, network if network is not None else cidr)

    index_configs = config.get('IndexConfigs')
    if index_configs is None:
        index_configs = {}
    elif not isinstance(index_configs, dict):
        problems.append(f'IndexConfigs is {_type_name(index_configs)}, not an object')
        index_configs = {}

    mirrors = _string_list(config, 'Mirrors', problems)
    for key, index in sorted(index_configs.items()):
        if not isinstance(index, dict):
            problems.append(f'IndexConfigs[{key!r}] is {_type_name(index)}, not an object')
            continue
        name = index.get('Name', key)
        if not isinstance(name, str):
            name = key
        secure = index.get('Secure')
        if secure is False:
            add(HOSTNAME, name, name.lower())
        elif secure is not True:
            problems.append(f'IndexConfigs[{key!r}].Secure is {_describe(secure)}, not true or false')
        mirrors.extend(_string_list(index, 'Mirrors', problems, f'IndexConfigs[{key!r}].Mirrors'))

    for mirror in mirrors:
        if _scheme(mirror) == 'http':
            add(MIRROR, mirror, normalize_mirror(mirror))

    violations, allowed, exempt = [], [], []
    for finding in candidates.values():
        if policy.ignore_loopback and _is_loopback_parsed(finding, cidr_networks):
            exempt.append(finding)
        elif policy.allows(finding):
            allowed.append(finding)
        else:
            violations.append(finding)

    return Audit(_in_order(violations), _in_order(allowed), _in_order(exempt), tuple(problems))


def is_loopback(finding: RegistryFinding) -> bool:
    """True for a registry that can only be reached on this machine: the CIS text's "local" registries."""
    if finding.kind == CIDR:
        return _is_loopback_network(parse_network(finding.registry))
    host = _host_of(finding.registry)
    if host is None:
        return False
    if host.lower() == 'localhost':
        return True
    return _is_loopback_network(host_network(host))


def _is_loopback_parsed(finding: RegistryFinding, cidr_networks: dict) -> bool:
    """`is_loopback` with the CIDRs the audit has parsed already: parsing is most of the cost of a long list."""
    if finding.kind == CIDR:
        return _is_loopback_network(cidr_networks[finding.registry])
    return is_loopback(finding)


def _in_order(findings: list[RegistryFinding]) -> tuple[RegistryFinding, ...]:
    """The dataclass order, by kind then name, through a key: comparing dataclasses is slow on a long list."""
    return tuple(sorted(findings, key=_ORDER))


def _is_loopback_network(network) -> bool:
    return network is not None and any(_inside(network, loopback) for loopback in LOOPBACK_NETWORKS)


def parse_network(text: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network | None:
    """A CIDR as the daemon lists it; host bits are ignored, as Go's `net.ParseCIDR` does for matching."""
    try:
        network = ipaddress.ip_network(text.strip(), strict=False)
    except ValueError:
        return None
    return _unmap(network)


def host_network(registry: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network | None:
    """The single-address network of a registry named by an IP literal (`10.0.0.5:5000`, `[::1]:5000`), else None."""
    host = _host_of(registry)
    # Most registries are named by DNS; ruling those out by their characters spares an exception per name.
    if host is None or not IP_LITERAL_CHARACTERS.issuperset(host.partition('%')[0]):
        return None
    try:
        return _unmap(ipaddress.ip_network(host))
    except ValueError:
        return None


def normalize_mirror(url: str) -> str:
    """Compare mirrors as the daemon does: scheme and host are case-insensitive, a trailing slash is not significant."""
    try:
        parts = urlsplit(url.strip())
    except ValueError:  # an unbalanced IPv6 bracket: the text is the only name such a mirror has
        return url.strip().lower()
    return f'{parts.scheme.lower()}://{parts.netloc.lower()}{parts.path.rstrip("/")}'


def _host_of(registry: str) -> str | None:
    """The host part of `host`, `host:port`, `[v6]:port`, a bare IPv6 literal, or a mirror URL."""
    registry = registry.strip()
    if '://' in registry:
        try:
            return urlsplit(registry).hostname
        except ValueError:
            return None
    if registry.startswith('['):
        end = registry.find(']')
        return registry[1:end] if end > 0 else None
    if registry.count(':') > 1:
        return registry
    return registry.split(':', 1)[0] or None


def _unmap(network):
    """An IPv4-mapped IPv6 network (`::ffff:127.0.0.1/104`) is the IPv4 network it maps."""
    if network.version == 6 and network.network_address.ipv4_mapped is not None and network.prefixlen >= 96:
        return ipaddress.ip_network(f'{network.network_address.ipv4_mapped}/{network.prefixlen - 96}')
    return network


def _inside(network, container) -> bool:
    return network.version == container.version and network.subnet_of(container)


def _scheme(url: str) -> str:
    head, sep, _ = url.strip().partition('://')
    return head.lower() if sep else ''


def _string_list(container: dict, key: str, problems: list[str], label: str | None = None) -> list[str]:
    """A list of strings from the payload; `null` and absent mean empty, anything else odd is a problem."""
    value = container.get(key)
    label = label or key
    if value is None:
        return []
    if not isinstance(value, list):
        problems.append(f'{label} is {_type_name(value)}, not a list')
        return []
    strings = []
    for item in value:
        if isinstance(item, str) and item.strip():
            strings.append(item.strip())
        else:
            problems.append(f'{label} holds {_describe(item)}, not a registry name')
    return strings


def _name_list(findings) -> str:
    shown = [f'{finding.registry} ({finding.kind})' for finding in findings[:MESSAGE_NAME_LIMIT]]
    hidden = len(findings) - len(shown)
    return ', '.join(shown) + (f' and {hidden} more' if hidden else '')


def _type_name(value: object) -> str:
    return 'null' if value is None else f'a {type(value).__name__}'


def _describe(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + '...'
