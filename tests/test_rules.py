"""The CIS 2.4 rules over recorded `/info` payloads: no engine, no Datadog."""

import copy
import json
import random

import pytest

from datadog_checks.cis_docker.rules import (
    CIDR,
    HOSTNAME,
    MIRROR,
    OK,
    UNKNOWN,
    VIOLATION,
    Audit,
    Policy,
    RegistryFinding,
    audit_registry_config,
    is_loopback,
)

from .common import PAYLOADS

pytestmark = pytest.mark.unit


def payload(name):
    return json.loads((PAYLOADS / f'{name}.json').read_text())


def names(findings):
    return [(finding.kind, finding.registry) for finding in findings]


def with_registry_config(**registry_config):
    info = payload('docker-27')
    info['RegistryConfig'] = registry_config
    return info


class TestRecordedEngines:
    def test_docker_20_10_flags_mirror_and_loopback(self):
        audit = audit_registry_config(payload('docker-20.10'))

        assert audit.status == VIOLATION
        assert names(audit.violations) == [
            (CIDR, '10.1.0.0/16'),
            (HOSTNAME, 'registry.corp.example:5000'),
            # Listed twice in /info (top level and under docker.io), reported once.
            (MIRROR, 'http://mirror.corp.example:5000/'),
        ]
        assert names(audit.exempt) == [(CIDR, '127.0.0.0/8'), (HOSTNAME, 'localhost:5000')]
        assert audit.problems == ()

    def test_docker_27_stock_daemon_is_compliant_by_default(self):
        audit = audit_registry_config(payload('docker-27'))

        assert audit.status == OK
        assert audit.violations == ()
        assert names(audit.exempt) == [(CIDR, '127.0.0.0/8')]

    def test_docker_27_stock_daemon_fails_without_the_loopback_exemption(self):
        audit = audit_registry_config(payload('docker-27'), Policy.build(ignore_loopback=False))

        assert audit.status == VIOLATION
        assert names(audit.violations) == [(CIDR, '127.0.0.0/8')]

    def test_docker_28_ipv6_loopback_null_lists_and_https_mirror(self):
        audit = audit_registry_config(payload('docker-28'))

        assert names(audit.violations) == [(CIDR, '192.168.0.0/16'), (HOSTNAME, 'registry.lab.example')]
        assert names(audit.exempt) == [(CIDR, '127.0.0.0/8'), (CIDR, '::1/128')]

    def test_docker_29_unordered_cidrs_give_the_same_verdict(self):
        info = payload('docker-29')
        audit = audit_registry_config(info)
        shuffled = copy.deepcopy(info)
        random.Random(29).shuffle(shuffled['RegistryConfig']['InsecureRegistryCIDRs'])
        shuffled['RegistryConfig']['InsecureRegistryCIDRs'].reverse()

        assert names(audit.violations) == [
            (CIDR, '10.20.0.0/16'),
            (CIDR, 'fd00:dead:beef::/48'),
            (MIRROR, 'http://10.20.0.5:5000/'),
        ]
        assert audit_registry_config(shuffled) == audit

    def test_docker_desktop_hub_proxy_is_reported_and_can_be_accepted(self):
        info = payload('docker-desktop')

        assert names(audit_registry_config(info).violations) == [(HOSTNAME, 'hubproxy.docker.internal:5555')]
        accepted = audit_registry_config(info, Policy.build(allowed=['hubproxy.docker.internal:5555']))
        assert accepted.status == OK
        assert names(accepted.allowed) == [(HOSTNAME, 'hubproxy.docker.internal:5555')]

    def test_podman_insecure_registry_and_schemeless_mirror(self):
        audit = audit_registry_config(payload('podman-4.3'))

        # Podman lists mirrors without a scheme and never says whether one is insecure: not judged as http.
        assert names(audit.violations) == [(HOSTNAME, 'registry.corp.example:5000')]
        assert audit.exempt == ()


class TestMalformedPayloads:
    @pytest.mark.parametrize('info', [None, [], 'info', 42])
    def test_a_payload_that_is_not_an_object_is_unknown(self, info):
        audit = audit_registry_config(info)

        assert audit.status == UNKNOWN
        assert 'not an object' in audit.problems[0]

    @pytest.mark.parametrize('registry_config', ['absent', None, [], 'x'])
    def test_missing_or_odd_registry_config_is_unknown(self, registry_config):
        info = payload('docker-27')
        if registry_config == 'absent':
            del info['RegistryConfig']
        else:
            info['RegistryConfig'] = registry_config

        audit = audit_registry_config(info)

        assert audit.status == UNKNOWN
        assert 'RegistryConfig' in audit.problems[0]

    def test_null_and_absent_fields_mean_none(self):
        audit = audit_registry_config(with_registry_config(InsecureRegistryCIDRs=None, IndexConfigs=None))

        assert audit == Audit()
        assert audit.status == OK

    @pytest.mark.parametrize(
        'registry_config, problem',
        [
            ({'InsecureRegistryCIDRs': '10.0.0.0/8'}, 'InsecureRegistryCIDRs is a str, not a list'),
            ({'InsecureRegistryCIDRs': ['10.0.0.0/8', 8]}, 'InsecureRegistryCIDRs holds 8'),
            ({'InsecureRegistryCIDRs': [None]}, 'InsecureRegistryCIDRs holds None'),
            ({'IndexConfigs': ['docker.io']}, 'IndexConfigs is a list, not an object'),
            ({'IndexConfigs': {'r:5000': 'insecure'}}, "IndexConfigs['r:5000'] is a str"),
            ({'IndexConfigs': {'r:5000': {'Name': 'r:5000', 'Secure': 'false'}}}, "Secure is 'false'"),
            ({'IndexConfigs': {'r:5000': {'Name': 'r:5000'}}}, 'Secure is None'),
            ({'Mirrors': {'http://m': 1}}, 'Mirrors is a dict, not a list'),
        ],
    )
    def test_wrongly_typed_fields_are_unknown_never_ok(self, registry_config, problem):
        audit = audit_registry_config(with_registry_config(**registry_config))

        assert audit.status == UNKNOWN
        assert any(problem in text for text in audit.problems), audit.problems
        assert 'Cannot judge' in audit.message()

    def test_known_violations_are_still_named_when_part_of_the_payload_is_unreadable(self):
        audit = audit_registry_config(with_registry_config(InsecureRegistryCIDRs=['10.0.0.0/8', {}]))

        assert audit.status == UNKNOWN
        assert '10.0.0.0/8 (cidr)' in audit.message()

    def test_an_unparseable_cidr_is_still_a_violation(self):
        # The daemon calls it insecure; not being able to parse it proves nothing about loopback.
        audit = audit_registry_config(with_registry_config(InsecureRegistryCIDRs=['not-a-cidr']))

        assert names(audit.violations) == [(CIDR, 'not-a-cidr')]


class TestLoopback:
    @pytest.mark.parametrize(
        'kind, registry',
        [
            (CIDR, '127.0.0.0/8'),
            (CIDR, '127.0.0.1/32'),
            (CIDR, '127.1.2.3/16'),
            (CIDR, '::1/128'),
            (CIDR, '::ffff:127.0.0.1/104'),
            (HOSTNAME, 'localhost'),
            (HOSTNAME, 'LOCALHOST:5000'),
            (HOSTNAME, '127.0.0.2:5000'),
            (HOSTNAME, '[::1]:5000'),
            (HOSTNAME, '::1'),
            (MIRROR, 'http://localhost:5000/'),
            (MIRROR, 'http://127.0.0.1:5000'),
            (MIRROR, 'http://[::1]:5000/'),
        ],
    )
    def test_local_registries(self, kind, registry):
        assert is_loopback(RegistryFinding(kind, registry))

    @pytest.mark.parametrize(
        'kind, registry',
        [
            (CIDR, '0.0.0.0/0'),
            (CIDR, '127.0.0.0/7'),
            (CIDR, '::/0'),
            (CIDR, '::ffff:10.0.0.0/104'),
            (HOSTNAME, 'localhost.example.com'),
            (HOSTNAME, 'mylocalhost:5000'),
            (HOSTNAME, '128.0.0.1:5000'),
            (MIRROR, 'http://mirror.example/'),
        ],
    )
    def test_registries_beyond_this_machine(self, kind, registry):
        assert not is_loopback(RegistryFinding(kind, registry))


class TestAllowedExceptions:
    def test_a_cidr_covers_narrower_cidrs_and_ip_literal_registries(self):
        info = with_registry_config(
            InsecureRegistryCIDRs=['10.1.0.0/16', '172.16.0.0/12'],
            IndexConfigs={'10.2.3.4:5000': {'Name': '10.2.3.4:5000', 'Secure': False}},
        )

        audit = audit_registry_config(info, Policy.build(allowed=['10.0.0.0/8']))

        assert names(audit.allowed) == [(CIDR, '10.1.0.0/16'), (HOSTNAME, '10.2.3.4:5000')]
        assert names(audit.violations) == [(CIDR, '172.16.0.0/12')]

    def test_names_match_without_regard_to_case_and_mirrors_without_a_trailing_slash(self):
        info = with_registry_config(
            IndexConfigs={'registry.corp:5000': {'Name': 'registry.corp:5000', 'Secure': False}},
            Mirrors=['http://mirror.corp:5000/'],
        )

        audit = audit_registry_config(info, Policy.build(allowed=['Registry.Corp:5000', 'HTTP://MIRROR.corp:5000']))

        assert audit.status == OK
        assert len(audit.allowed) == 2
        assert 'Accepted exceptions in use' in audit.message()

    def test_an_allowed_name_does_not_cover_another_port(self):
        info = with_registry_config(
            IndexConfigs={'registry.corp:5001': {'Name': 'registry.corp:5001', 'Secure': False}}
        )

        audit = audit_registry_config(info, Policy.build(allowed=['registry.corp:5000']))

        assert audit.status == VIOLATION

    @pytest.mark.parametrize(
        'entry, problem', [('', 'non-empty'), ('10.0.0.0/33', 'not a valid network'), (5, 'non-empty')]
    )
    def test_entries_that_cannot_be_understood_are_refused(self, entry, problem):
        with pytest.raises(ValueError, match=problem):
            Policy.build(allowed=[entry])


class TestMessage:
    def test_names_are_sorted_capped_and_followed_by_the_remedy(self):
        cidrs = [f'10.{n}.0.0/16' for n in range(12)]
        audit = audit_registry_config(with_registry_config(InsecureRegistryCIDRs=cidrs, Mirrors=['http://m.example/']))

        message = audit.message()

        assert message.startswith('13 insecure registries: 10.0.0.0/16 (cidr), 10.1.0.0/16 (cidr)')
        assert 'and 3 more' in message
        assert '"insecure-registries" in daemon.json' in message
        assert '"registry-mirrors"' in message

    def test_a_compliant_engine_says_so(self):
        assert 'verified TLS' in audit_registry_config(payload('docker-27')).message()
