"""The CIS 2.4 rules under payloads no engine should send, and under generated ones with a known right answer.

Two promises are checked: the rules never raise, and they never call a configuration compliant that they could not
judge. For simple configurations the expected verdict comes from an oracle that knows, by construction, which entries
are local and which are insecure; it shares no code with the rules.
"""

import ipaddress

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from datadog_checks.cis_docker.rules import OK, UNKNOWN, VIOLATION, Policy, audit_registry_config

pytestmark = pytest.mark.unit

FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# Any JSON document: what a broken or hostile engine could put anywhere in /info.
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=30),
    lambda children: st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=12), children, max_size=5),
    max_leaves=25,
)
odd_text = st.text(
    st.characters(codec='utf-8') | st.sampled_from(['/', ':', '[', ']', '%', '.', '\x00', '\u202e', '\ufeff', ' ']),
    max_size=40,
)
registry_names = odd_text | st.sampled_from(['10.0.0.0/8', '::ffff:127.0.0.1/104', 'http://[::1', 'http://[bad', ''])
string_lists = st.lists(registry_names, max_size=6)
field_values = st.none() | string_lists | json_values
index_entries = st.fixed_dictionaries(
    {},
    optional={
        'Name': json_values | odd_text,
        'Secure': st.booleans() | json_values,
        'Mirrors': field_values,
        'Official': json_values,
    },
)
registry_configs = st.fixed_dictionaries(
    {},
    optional={
        'InsecureRegistryCIDRs': field_values,
        'IndexConfigs': st.none() | st.dictionaries(odd_text, index_entries | json_values, max_size=5) | json_values,
        'Mirrors': field_values,
    },
)
policies = st.builds(
    Policy.build,
    ignore_loopback=st.booleans(),
    allowed=st.lists(
        st.sampled_from(['10.0.0.0/8', 'registry.example:5000', 'http://mirror.example', '::/0']), max_size=3
    ),
)


def is_name(value):
    return isinstance(value, str) and value.strip() != ''


def is_name_list(value):
    return value is None or (isinstance(value, list) and all(is_name(item) for item in value))


def judgeable(config):
    """What a payload must look like to be judged; the wrong type anywhere here makes the verdict unknown."""
    if not isinstance(config, dict):
        return False
    if not is_name_list(config.get('InsecureRegistryCIDRs')) or not is_name_list(config.get('Mirrors')):
        return False
    indexes = config.get('IndexConfigs')
    if indexes is None:
        return True
    if not isinstance(indexes, dict):
        return False
    return all(
        isinstance(index, dict) and type(index.get('Secure')) is bool and is_name_list(index.get('Mirrors'))
        for index in indexes.values()
    )


@FUZZ
@given(payload=json_values, policy=policies)
def test_any_json_document_is_judged_without_raising(payload, policy):
    audit = audit_registry_config(payload, policy)

    assert audit.status in (OK, VIOLATION, UNKNOWN)
    assert isinstance(audit.message(), str)
    if not isinstance(payload, dict) or not isinstance(payload.get('RegistryConfig'), dict):
        assert audit.status == UNKNOWN


@FUZZ
@given(config=registry_configs, policy=policies)
def test_a_payload_with_a_wrong_type_is_unknown_never_ok(config, policy):
    audit = audit_registry_config({'ServerVersion': '20.10.24', 'RegistryConfig': config}, policy)
    message = audit.message()

    if judgeable(config):
        assert audit.status in (OK, VIOLATION)
    else:
        assert audit.status == UNKNOWN
        assert message.startswith('Cannot judge the registry configuration')


# Generated registries carry their own truth: whether they are local, and whether the engine reaches them insecurely.


@st.composite
def ipv4_cidrs(draw):
    """Any IPv4 CIDR, host bits included; local when the whole range lies in 127.0.0.0/8."""
    address = draw(st.integers(0, 2**32 - 1) | st.integers(127 << 24, (128 << 24) - 1))
    prefix = draw(st.integers(0, 32))
    local = address >> 24 == 127 and prefix >= 8
    return f'{ipaddress.IPv4Address(address)}/{prefix}', local, ('v4', address >> (32 - prefix), prefix)


@st.composite
def ipv6_cidrs(draw):
    """Any IPv6 CIDR; local only as ::1/128 or as an IPv4-mapped range inside 127.0.0.0/8."""
    # IPv4-mapped addresses have their own strategy, with their own truth.
    address = draw((st.integers(0, 2**128 - 1) | st.just(1)).filter(lambda value: value >> 32 != 0xFFFF))
    prefix = draw(st.integers(0, 128) | st.just(128))
    local = address == 1 and prefix == 128
    return f'{ipaddress.IPv6Address(address)}/{prefix}', local, ('v6', address >> (128 - prefix), prefix)


@st.composite
def mapped_cidrs(draw):
    """IPv4 ranges written as IPv4-mapped IPv6 (`::ffff:a.b.c.d/p` or its hex form): the engine matches them as IPv4."""
    v4 = draw(st.integers(0, 2**32 - 1) | st.integers(127 << 24, (128 << 24) - 1))
    v4_prefix = draw(st.integers(0, 32))
    mapped = ipaddress.IPv6Address((0xFFFF << 32) | v4)
    text = f'::ffff:{ipaddress.IPv4Address(v4)}' if draw(st.booleans()) else mapped.compressed
    local = v4 >> 24 == 127 and v4_prefix >= 8
    return f'{text}/{96 + v4_prefix}', local, ('v4', v4 >> (32 - v4_prefix), v4_prefix)


dns_labels = st.from_regex(r'\A[a-z][a-z0-9-]{0,12}\Z')
unicode_labels = st.text(st.characters(categories=['L']), min_size=1, max_size=8)
ports = st.none() | st.integers(1, 65535)


@st.composite
def hostnames(draw):
    """A registry as /info names it in IndexConfigs: host[:port]. Local only for localhost and loopback literals."""
    kind = draw(st.sampled_from(['dns', 'unicode', 'hexlike', 'local', 'ip']))
    port = draw(ports)
    if kind == 'local':
        host = draw(
            st.sampled_from(['localhost', 'LocalHost', '127.0.0.1', '127.200.3.4', '[::1]', '[::ffff:127.0.0.1]'])
        )
    elif kind == 'ip':
        host = draw(st.sampled_from(['10.1.2.3', '192.168.0.10', '[2001:db8::5]', '[::ffff:10.0.0.1]']))
    elif kind == 'hexlike':
        # Hex digits and dots only: names that look like IP literals until parsed.
        host = draw(st.sampled_from(['cafe.bad', 'dead.beef', 'ace.add.bed.fed']))
    else:
        labels = draw(st.lists(unicode_labels if kind == 'unicode' else dns_labels, min_size=2, max_size=4))
        host = '.'.join(labels)
    name = host if port is None else f'{host}:{port}'
    return name, kind == 'local'


@st.composite
def mirrors(draw):
    scheme = draw(st.sampled_from(['http', 'https', 'HTTP', 'Https']))
    local = draw(st.booleans())
    host = (
        draw(st.sampled_from(['localhost', '127.0.0.1', '[::1]']))
        if local
        else '.'.join(draw(st.lists(dns_labels, min_size=2, max_size=3)))
    )
    return f'{scheme}://{host}:5000/', local, scheme.lower() == 'http'


@st.composite
def simple_configs(draw):
    cidrs = draw(st.lists(ipv4_cidrs() | ipv6_cidrs() | mapped_cidrs(), max_size=12, unique_by=lambda cidr: cidr[2]))
    hosts = draw(st.lists(hostnames(), max_size=12, unique_by=lambda host: host[0].lower()))
    secure = draw(st.lists(st.booleans(), min_size=len(hosts), max_size=len(hosts)))
    mirror_list = draw(st.lists(mirrors(), max_size=4, unique_by=lambda mirror: mirror[0].lower()))
    ignore_loopback = draw(st.booleans())

    insecure = [(text, local) for text, local, _ in cidrs]
    insecure += [(name, local) for (name, local), is_secure in zip(hosts, secure, strict=True) if not is_secure]
    insecure += [(url.strip(), local) for url, local, plain in mirror_list if plain]
    allowed = draw(st.lists(st.sampled_from([name for name, local in insecure if not local] or ['none.example'])))
    allowed = sorted({name for name in allowed if '://' not in name and '/' not in name})

    config = {
        'InsecureRegistryCIDRs': [text for text, _, _ in cidrs],
        'IndexConfigs': {
            name: {'Name': name, 'Mirrors': [], 'Secure': is_secure, 'Official': False}
            for (name, _), is_secure in zip(hosts, secure, strict=True)
        },
        'Mirrors': [url for url, _, _ in mirror_list],
    }
    expected = {name for name, local in insecure if not (ignore_loopback and local) and name not in allowed}
    expected_allowed = {name for name, local in insecure if not (ignore_loopback and local) and name in allowed}
    return config, Policy.build(ignore_loopback, allowed), expected, expected_allowed


@FUZZ
@given(case=simple_configs())
def test_the_verdict_matches_an_independent_oracle(case):
    config, policy, expected, expected_allowed = case

    audit = audit_registry_config({'ServerVersion': '20.10.24', 'RegistryConfig': config}, policy)

    assert {finding.registry for finding in audit.violations} == expected
    assert len(audit.violations) == len(expected)
    assert {finding.registry for finding in audit.allowed} == expected_allowed
    assert audit.status == (VIOLATION if expected else OK)


@pytest.mark.parametrize('size', [10_000])
def test_a_giant_list_is_counted_exactly_and_one_bad_entry_makes_it_unknown(size):
    cidrs = [f'10.{index // 256 % 256}.{index % 256}.0/24' for index in range(size // 2)]
    hosts = [f'registry-{index}.corp.example:5000' for index in range(size - len(cidrs))]
    config = {
        'InsecureRegistryCIDRs': [*cidrs, '127.0.0.0/8'],
        'IndexConfigs': {host: {'Name': host, 'Secure': False} for host in hosts},
    }

    audit = audit_registry_config({'RegistryConfig': config})

    assert audit.status == VIOLATION
    assert len(audit.violations) == size
    assert str(size) in audit.message() and 'and 9990 more' in audit.message()

    config['InsecureRegistryCIDRs'].append(None)
    assert audit_registry_config({'RegistryConfig': config}).status == UNKNOWN


def test_an_unparseable_http_mirror_is_flagged_not_a_crash():
    audit = audit_registry_config({'RegistryConfig': {'Mirrors': ['http://[fd00::1:5000/']}})

    assert audit.status == VIOLATION
    assert [finding.registry for finding in audit.violations] == ['http://[fd00::1:5000/']
