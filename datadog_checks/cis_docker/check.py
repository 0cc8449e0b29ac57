"""The Agent check: configuration in, one `/info` read, the CIS 2.4 verdict out as service checks and gauges."""

from __future__ import annotations

import os
import ssl
from urllib.parse import urlsplit

from datadog_checks.base import AgentCheck, ConfigurationError

from .config_models import ConfigMixin
from .engine import EngineClient, EngineError, TLSSettings, default_url, is_tcp, redact_url
from .rules import OK, UNKNOWN, Audit, Policy, audit_registry_config

CONTROL_TAGS = ('cis_control:2.4', 'compliance_framework:cis-docker')
ENDPOINT_TAG = 'docker_endpoint'
TLS_FILE_OPTIONS = ('tls_ca_cert', 'tls_cert', 'tls_private_key')


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
        _refuse_credentials(url)
        self.max_registry_series = config.max_registry_series
        self.policy = Policy.build(config.ignore_loopback, config.allowed_insecure_registries or ())
        self.engine = EngineClient(url, config.timeout, self._tls_settings(url))
        self.tags = [*CONTROL_TAGS, f'{ENDPOINT_TAG}:{redact_url(url)}', *(config.tags or ())]

    def _tls_settings(self, url: str) -> TLSSettings | None:
        config = self.config
        if not is_tcp(url) or not config.use_tls:
            ignored = [option for option in TLS_FILE_OPTIONS if getattr(config, option)]
            if ignored:
                # Not an error, since the instance still audits something, but a silent no-op hides a wrong url.
                reason = 'use_tls is false' if is_tcp(url) else 'TLS applies only to tcp:// endpoints'
                self.log.warning('%s: ignored for %s, because %s', ', '.join(ignored), redact_url(url), reason)
            return None
        for option in TLS_FILE_OPTIONS:
            path = getattr(config, option)
            if path and not (os.path.isfile(path) and os.access(path, os.R_OK)):
                if not os.path.exists(path):
                    problem = 'does not exist'
                elif not os.path.isfile(path):
                    problem = 'is not a file'
                else:
                    problem = 'is not readable by the Agent'
                raise ConfigurationError(f'{option}: {path} {problem}')
        if bool(config.tls_cert) != bool(config.tls_private_key):
            raise ConfigurationError('tls_cert and tls_private_key: a client certificate needs both, or neither')
        settings = TLSSettings(config.tls_verify, config.tls_ca_cert, config.tls_cert, config.tls_private_key)
        _load_tls_files(settings)
        return settings

    def check(self, _):
        try:
            info = self.engine.info()
        except EngineError as error:
            self.service_check(self.CAN_CONNECT, self.CRITICAL, tags=self.tags, message=str(error))
            self.service_check(self.REGISTRY_TLS, self.UNKNOWN, tags=self.tags, message=f'Not audited: {error}')
            return

        # Only an engine that answered is known to be exposed; a failed read has its own message.
        self._warn_about_transport()
        self.service_check(self.CAN_CONNECT, self.OK, tags=self.tags)
        self._submit(audit_registry_config(info, self.policy))
        self._set_engine_metadata(info)

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
        if is_tcp(self.engine.url) and self.engine.tls is None:
            self.warning(
                'The Docker Engine API at %s is exposed without TLS: anyone on the network can control that '
                'engine (CIS Docker 2.6). Enable --tlsverify on the daemon, then audit it over TLS: drop '
                'use_tls: false and set tls_ca_cert, tls_cert and tls_private_key.',
                self.engine.label,
            )
        elif self.engine.tls is not None and not self.engine.tls.verify:
            self.warning(
                "TLS certificate verification is off for %s (tls_verify: false): the engine's identity is not checked.",
                self.engine.label,
            )

    def _set_engine_metadata(self, info: dict) -> None:
        version = info.get('ServerVersion')
        if isinstance(version, str) and version:
            try:
                self.set_metadata('version', version)
            except Exception as error:  # noqa: BLE001 - metadata is a courtesy; the audit already went out
                self.log.debug('Cannot record engine version %r as metadata: %s', version, error)

    def cancel(self) -> None:
        if self.engine is not None:
            self.engine.close()


def _refuse_credentials(url: str) -> None:
    """The Engine API authenticates clients by certificate; a user or password in the URL would only end up in logs."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return  # the url validator, or the client, says what is wrong with it
    if parts.username is not None or parts.password is not None:
        raise ConfigurationError(
            f'url: {redact_url(url)} carries a user name or password, which the Docker Engine API does not use; '
            'remove them and authenticate with a client certificate (tls_cert, tls_private_key)'
        )


def _load_tls_files(settings: TLSSettings) -> None:
    """Load the files once as the client will, so that a wrong file is named now rather than failing every run.

    An encrypted private key is refused instead of letting OpenSSL prompt for its passphrase on a terminal the Agent
    does not have.
    """
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    if settings.ca_cert:
        try:
            context.load_verify_locations(cafile=settings.ca_cert)
        except (ssl.SSLError, ValueError):
            raise ConfigurationError(f'tls_ca_cert: {settings.ca_cert} holds no PEM certificate') from None
    if not settings.cert:
        return

    def refuse_passphrase():
        raise ConfigurationError(
            f'tls_private_key: {settings.private_key} is protected by a passphrase, which the check cannot supply; '
            "store the key unencrypted, readable only by the Agent's user"
        )

    try:
        context.load_cert_chain(settings.cert, settings.private_key, password=refuse_passphrase)
    except ssl.SSLError as error:
        raise ConfigurationError(_client_pair_problem(settings, error)) from None


def _client_pair_problem(settings: TLSSettings, error: ssl.SSLError) -> str:
    if error.reason == 'KEY_VALUES_MISMATCH':
        return f'tls_cert and tls_private_key: the key in {settings.private_key} does not belong to {settings.cert}'
    with open(settings.cert, 'rb') as cert_file:
        if b'-----BEGIN CERTIFICATE-----' not in cert_file.read():
            return f'tls_cert: {settings.cert} holds no PEM certificate'
    with open(settings.private_key, 'rb') as key_file:
        if b'PRIVATE KEY-----' not in key_file.read():
            return f'tls_private_key: {settings.private_key} holds no PEM private key'
    return f'tls_cert and tls_private_key: {settings.cert} and {settings.private_key} cannot be loaded ({error.reason})'
