"""The Agent check: configuration in, one `/info` read, the CIS 2.4 verdict out as service checks and gauges."""

from __future__ import annotations

import os

from datadog_checks.base import AgentCheck, ConfigurationError

from .config_models import ConfigMixin
from .engine import EngineClient, EngineError, TLSSettings, default_url, redact_url
from .rules import OK, UNKNOWN, Audit, Policy, audit_registry_config

CONTROL_TAGS = ('cis_control:2.4', 'compliance_framework:cis-docker')
ENDPOINT_TAG = 'docker_endpoint'


class CisDockerCheck(AgentCheck, ConfigMixin):
    """Audits CIS Docker Benchmark control 2.4, "Private registry should use TLS", on one Docker Engine API endpoint.

    The check reads the engine's `/info`. On the local socket that needs the Agent's user to be allowed to open
    `/var/run/docker.sock` (membership of the `docker` group, or the socket mounted into a containerized Agent);
    whoever may open that socket controls the engine, so grant it knowingly.
    """

    __NAMESPACE__ = 'cis_docker'

    CAN_CONNECT = 'can_connect'
    REGISTRY_TLS = 'registry_tls'
    INSECURE_REGISTRIES = 'insecure_registries'
    INSECURE_REGISTRY = 'insecure_registry'
    ALLOWED_INSECURE_REGISTRIES = 'allowed_insecure_registries'

    def __init__(self, name, init_config, instances):
        super().__init__(name, init_config, instances)
        self.engine: EngineClient | None = None
        self.policy = Policy()
        self.tags: list[str] = []
        self.max_registry_series = 0
        self.check_initializations.append(self._configure)

    def _configure(self) -> None:
        config = self.config
        url = config.url or default_url()
        self.max_registry_series = config.max_registry_series
        self.policy = Policy.build(config.ignore_loopback, config.allowed_insecure_registries or ())
        self.engine = EngineClient(url, config.timeout, self._tls_settings(url))
        self.tags = [*CONTROL_TAGS, f'{ENDPOINT_TAG}:{redact_url(url)}', *(config.tags or ())]

    def _tls_settings(self, url: str) -> TLSSettings | None:
        config = self.config
        if not url.startswith('tcp://') or not config.use_tls:
            return None
        for option in ('tls_ca_cert', 'tls_cert', 'tls_private_key'):
            path = getattr(config, option)
            if path and not os.access(path, os.R_OK):
                problem = 'does not exist' if not os.path.exists(path) else 'is not readable by the Agent'
                raise ConfigurationError(f'{option}: {path} {problem}')
        if bool(config.tls_cert) != bool(config.tls_private_key):
            raise ConfigurationError('tls_cert and tls_private_key: a client certificate needs both, or neither')
        return TLSSettings(config.tls_verify, config.tls_ca_cert, config.tls_cert, config.tls_private_key)

    def check(self, _):
        self._warn_about_transport()
        try:
            info = self.engine.info()
        except EngineError as error:
            self.service_check(self.CAN_CONNECT, self.CRITICAL, tags=self.tags, message=str(error))
            self.service_check(self.REGISTRY_TLS, self.UNKNOWN, tags=self.tags, message=f'Not audited: {error}')
            return

        self.service_check(self.CAN_CONNECT, self.OK, tags=self.tags)
        self._submit(audit_registry_config(info, self.policy))
        self._set_version(info.get('ServerVersion'))

    def _submit(self, audit: Audit) -> None:
        """The single place where a verdict becomes service checks and series."""
        message = audit.message()
        if audit.status == UNKNOWN:
            self.service_check(self.REGISTRY_TLS, self.UNKNOWN, tags=self.tags, message=message)
            return

        named = audit.violations[: self.max_registry_series]
        left_out = len(audit.violations) - len(named)
        if left_out:
            message += (
                f' Series sent for the first {len(named)} only (max_registry_series); {left_out} left out, '
                'all counted in cis_docker.insecure_registries.'
            )
        status = self.OK if audit.status == OK else self.CRITICAL
        self.service_check(self.REGISTRY_TLS, status, tags=self.tags, message=None if status == self.OK else message)
        self.gauge(self.INSECURE_REGISTRIES, len(audit.violations), tags=self.tags)
        self.gauge(self.ALLOWED_INSECURE_REGISTRIES, len(audit.allowed), tags=self.tags)
        for finding in named:
            registry_tags = [*self.tags, f'registry:{finding.registry}', f'registry_kind:{finding.kind}']
            self.gauge(self.INSECURE_REGISTRY, 1, tags=registry_tags)

    def _warn_about_transport(self) -> None:
        url = self.engine.url
        if url.startswith('tcp://') and self.engine.tls is None:
            self.warning(
                'The Docker Engine API at %s is reached over plain TCP without TLS: anyone on the network can '
                'control that engine (CIS Docker 2.6). Enable --tlsverify on the daemon and set use_tls.',
                self.engine.label,
            )
        elif self.engine.tls is not None and not self.engine.tls.verify:
            self.warning(
                "TLS certificate verification is off for %s (tls_verify: false): the engine's identity is not checked.",
                self.engine.label,
            )

    def _set_version(self, version) -> None:
        if isinstance(version, str) and version:
            try:
                self.set_metadata('version', version)
            except Exception as error:  # noqa: BLE001 - metadata is a courtesy; the audit already went out
                self.log.debug('Cannot record engine version %r as metadata: %s', version, error)

    def cancel(self) -> None:
        if self.engine is not None:
            self.engine.close()
