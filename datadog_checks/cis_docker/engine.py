"""Reading `GET /info` from a Docker Engine API endpoint through the docker SDK, with failures a person can act on.

The check needs nothing but `/info`. It asks for the unversioned path, which every engine answers with its own
current API version, so the client never spends a request negotiating one; Engine 29 refuses versions below 1.44 and
Engine 20.10 knows none above 1.41, so there is no single version that would do.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import ssl
import threading
import time
import weakref
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

from .__about__ import __version__

DEFAULT_URL = 'unix:///var/run/docker.sock'
SCHEMES = ('unix', 'tcp', 'npipe')

# Ten thousand insecure registries make an /info of about 1.5 MB; a body far larger is not an engine's.
MAX_INFO_BYTES = 32 * 1024 * 1024
CHUNK_BYTES = 256 * 1024
ERROR_BODY_BYTES = 4096

DOCKER_SDK_MISSING = (
    'the docker Python package is not installed next to this check. The Agent installs integrations without their '
    "dependencies; install it into the Agent's embedded Python with "
    '"sudo -Hu dd-agent /opt/datadog-agent/embedded/bin/pip install \'docker>=7.1\'" '
    '(Windows: "& \'C:\\Program Files\\Datadog\\Datadog Agent\\embedded3\\python.exe\' -m pip install docker"), '
    'then restart the Agent'
)


class EngineError(Exception):
    """The engine could not be read; the message says why and what to do."""


@dataclass(frozen=True)
class TLSSettings:
    """TLS towards a tcp:// engine. File paths are the operator's; their contents never leave this process."""

    verify: bool = True
    ca_cert: str | None = None
    cert: str | None = None
    private_key: str | None = None


def default_url() -> str:
    return os.environ.get('DOCKER_HOST') or DEFAULT_URL


def is_tcp(url: str | None) -> bool:
    """A network endpoint, where TLS matters; URL schemes are case-insensitive."""
    return bool(url) and url.strip().lower().startswith('tcp://')


def redact_url(url: str) -> str:
    """The endpoint without credentials, query or fragment: safe for tags, logs and messages."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return '<unparseable url>'
    if parts.scheme in ('unix', 'npipe'):
        return f'{parts.scheme}://{parts.netloc}{parts.path}'
    host = parts.hostname or ''
    if ':' in host:
        host = f'[{host}]'
    try:
        port = parts.port
    except ValueError:
        port = None
    netloc = f'{host}:{port}' if port is not None else host
    return urlunsplit((parts.scheme, netloc, parts.path, '', ''))


def import_docker():
    try:
        import docker
    except ImportError as error:
        raise EngineError(DOCKER_SDK_MISSING) from error
    return docker


class EngineClient:
    """One docker SDK client for one endpoint, reused across reads until one fails."""

    def __init__(self, url: str, timeout: float, tls: TLSSettings | None = None):
        self.url = url
        self.label = redact_url(url)
        self.timeout = timeout
        self.tls = tls
        self._api = None
        # A read that outlived its deadline keeps the reader thread until the engine lets go; never start a second one.
        self._stalled: threading.Event | None = None
        self._reads: queue.SimpleQueue | None = None

    def info(self) -> dict:
        """The parsed `/info` payload, or EngineError within `timeout` seconds (plus thread hand-off)."""
        if self._stalled is not None:
            if not self._stalled.is_set():
                raise EngineError(
                    f'{self.label} has still not answered a request sent {self.timeout:g} s or more ago; '
                    'the engine is hung or overloaded'
                )
            self._stalled = None

        api = self._client()
        done = threading.Event()
        outcome: list = []
        self._reader().put((self._fetch, (api, time.monotonic() + self.timeout, outcome), done))

        if not done.wait(self.timeout):
            self._stalled = done
            self.close()
            raise EngineError(f'no answer from {self.label} within {self.timeout:g} s')
        result = outcome[0]
        if isinstance(result, EngineError):
            self.close()
            raise result
        return result

    def _reader(self) -> queue.SimpleQueue:
        """The queue of this client's one reader thread, started on first use and kept for every later read.

        A thread started per read cost more CPU than all the rest of a check run's own work (a fresh thread state and
        frame stack each time). The thread holds no reference to the client, and ends once the client is collected.
        """
        if self._reads is None:
            self._reads = queue.SimpleQueue()
            threading.Thread(target=_serve_reads, args=(self._reads,), name='cis_docker-info', daemon=True).start()
            weakref.finalize(self, self._reads.put, None)
        return self._reads

    def close(self) -> None:
        api, self._api = self._api, None
        if api is not None:
            api.close()

    def _client(self):
        if self._api is None:
            self._api = self._build_client()
        return self._api

    def _build_client(self):
        docker = import_docker()
        tls_config = False
        if self.tls is not None:
            client_cert = (self.tls.cert, self.tls.private_key) if self.tls.cert else None
            try:
                tls_config = docker.tls.TLSConfig(
                    client_cert=client_cert, ca_cert=self.tls.ca_cert, verify=self.tls.verify
                )
            except docker.errors.TLSParameterError as error:
                raise EngineError(f'TLS settings for {self.label} are unusable: {error}') from None
        try:
            api = docker.APIClient(
                base_url=self.url,
                version=docker.constants.DEFAULT_DOCKER_API_VERSION,
                timeout=self.timeout,
                tls=tls_config,
                user_agent=f'datadog-cis-docker/{__version__}',
            )
        except docker.errors.DockerException as error:
            # The SDK quotes the address it refused, credentials included; only the redacted form may leave.
            raise EngineError(f'cannot use {self.label}: {str(error).replace(self.url, self.label)}') from None
        # The configuration decides about CA bundles and proxies, not REQUESTS_CA_BUNDLE or HTTPS_PROXY in the
        # environment of whichever process happens to run the check.
        api.trust_env = False
        return api

    def _fetch(self, api, deadline: float, outcome: list) -> None:
        try:
            outcome.append(self._read_info(api, deadline))
        except EngineError as error:
            outcome.append(error)
        except Exception as error:  # noqa: BLE001 - every failure of a read is reported, none escapes the thread
            outcome.append(EngineError(explain(error, self.label, self.timeout, self.tls)))

    def _read_info(self, api, deadline: float) -> dict:
        response = api.get(f'{api.base_url}/info', stream=True, timeout=self.timeout)
        try:
            if response.status_code != 200:
                raise EngineError(_http_status_message(response, self.label))
            body = bytearray()
            for chunk in response.iter_content(CHUNK_BYTES):
                body += chunk
                if len(body) > MAX_INFO_BYTES:
                    raise EngineError(
                        f'{self.label} sent more than {MAX_INFO_BYTES // (1024 * 1024)} MiB for /info; '
                        "that is not a Docker engine's answer"
                    )
                if time.monotonic() > deadline:
                    raise EngineError(f'{self.label} did not finish its answer within {self.timeout:g} s')
        finally:
            response.close()
        return parse_info(bytes(body), self.label)


def _serve_reads(reads: queue.SimpleQueue) -> None:
    """Run each queued read and wake its waiter; `None` ends the thread.

    Nothing of a finished read stays referenced here, so that the client it came from can be collected between reads.
    """
    while (read := reads.get()) is not None:
        fetch, args, done = read
        try:
            fetch(*args)
        finally:
            done.set()
            del read, fetch, args


def parse_info(body: bytes, label: str) -> dict:
    try:
        info = json.loads(body)
    except ValueError:
        raise EngineError(
            f'{label} answered /info with something that is not JSON: it is not a Docker engine'
        ) from None
    if not isinstance(info, dict) or 'ServerVersion' not in info:
        raise EngineError(f'{label} answered /info without a ServerVersion: it is not a Docker engine')
    return info


def explain(error: BaseException, label: str, timeout: float, tls: TLSSettings | None = None) -> str:
    """Turn the exception behind a failed read into a sentence that names the cause and the remedy."""
    causes = list(_causes(error))
    path = urlsplit(label).path if label.startswith('unix://') else label

    for cause in causes:
        if isinstance(cause, FileNotFoundError):
            return (
                f'socket {path} does not exist: is the Docker daemon running on this host? A containerized Agent '
                'needs the socket mounted, e.g. -v /var/run/docker.sock:/var/run/docker.sock:ro'
            )
        if isinstance(cause, PermissionError):
            return (
                f"permission denied on {path}: add the Agent's user to the docker group "
                '("usermod -aG docker dd-agent", then restart the Agent), or mount the socket into the Agent container'
            )
        if isinstance(cause, ssl.SSLCertVerificationError):
            return _explain_certificate(cause, label, tls)
        if isinstance(cause, ssl.SSLError):
            return _explain_handshake(cause, label, tls)
        if isinstance(cause, ConnectionRefusedError):
            return f'connection refused by {label}: nothing listens there, or a firewall rejects the Agent'
        if isinstance(cause, TimeoutError) or type(cause).__name__ in ('ReadTimeout', 'ConnectTimeout'):
            return f'no answer from {label} within {timeout:g} s'
    for cause in causes:
        if type(cause).__name__ in ('ProtocolError', 'RemoteDisconnected', 'IncompleteRead', 'ChunkedEncodingError'):
            return f'{label} closed the connection before a complete answer: it is not a Docker engine, or it failed'
    return f'cannot read /info from {label}: {type(error).__name__}: {error}'


# OpenSSL verification codes (X509_V_ERR_*) that name the reason a server certificate was refused.
UNKNOWN_ISSUER_CODES = frozenset({2, 18, 19, 20, 21})
EXPIRED_CODE = 10
NOT_YET_VALID_CODE = 9
NAME_MISMATCH_CODES = frozenset({62, 64})

# TLS alerts a server sends when it wanted a client certificate and got none, or one it does not accept.
CLIENT_CERT_ALERTS = frozenset(
    {
        'SSLV3_ALERT_BAD_CERTIFICATE',
        'SSLV3_ALERT_CERTIFICATE_UNKNOWN',
        'SSLV3_ALERT_CERTIFICATE_EXPIRED',
        'TLSV1_ALERT_UNKNOWN_CA',
        'TLSV13_ALERT_CERTIFICATE_REQUIRED',
    }
)
# What OpenSSL reports when the answer to a ClientHello is not a TLS record: an HTTP listener said "400 Bad Request".
NOT_TLS_REASONS = frozenset(
    {'WRONG_VERSION_NUMBER', 'RECORD_LAYER_FAILURE', 'PACKET_LENGTH_TOO_LONG', 'UNKNOWN_PROTOCOL'}
)


def _explain_certificate(cause: ssl.SSLCertVerificationError, label: str, tls: TLSSettings | None) -> str:
    detail = (cause.verify_message or cause.reason or str(cause)).rstrip('.')
    head = f'TLS certificate problem with {label}'
    if cause.verify_code in UNKNOWN_ISSUER_CODES:
        trusted = f'the CA in tls_ca_cert {tls.ca_cert}' if tls and tls.ca_cert else 'any CA in the default trust store'
        return (
            f"{head}: the engine's certificate is not signed by {trusted} (unknown issuer: {detail}). Set "
            "tls_ca_cert to the CA that signed the daemon's --tlscert"
        )
    if cause.verify_code == EXPIRED_CODE:
        return f"{head}: the engine's certificate has expired. Renew the daemon's --tlscert"
    if cause.verify_code == NOT_YET_VALID_CODE:
        return (
            f"{head}: the engine's certificate is not valid yet ({detail}). Check the clocks of both hosts, or the "
            "certificate's start date"
        )
    if cause.verify_code in NAME_MISMATCH_CODES:
        return (
            f"{head}: the engine's certificate is not issued for the host in url ({detail}). Use a host name or "
            'address the certificate lists in its subjectAltName, or reissue it with that name'
        )
    return f'{head}: {detail}'


def _explain_handshake(cause: ssl.SSLError, label: str, tls: TLSSettings | None) -> str:
    reason = cause.reason or ''
    if reason in CLIENT_CERT_ALERTS:
        if tls is None or not tls.cert:
            return (
                f'TLS client certificate required by {label}: the engine runs with --tlsverify and demands one, and '
                'none is configured. Set tls_cert and tls_private_key to a certificate signed by the CA the daemon '
                'trusts (its --tlscacert)'
            )
        return (
            f'TLS client certificate refused by {label} ({reason}): the certificate in tls_cert ({tls.cert}) is not '
            'signed by the CA the daemon trusts (its --tlscacert), or it has expired'
        )
    if reason in NOT_TLS_REASONS:
        return (
            f'{label} does not speak TLS: it answered the TLS handshake in plain text, so the engine listens without '
            'TLS and anyone on the network can control it (CIS Docker 2.6). Enable --tlsverify on the daemon; to '
            'audit it as it is, set use_tls: false (--no-tls on the command line)'
        )
    return f'TLS failure with {label}: {reason or cause}'


def _causes(error: BaseException):
    """The exception and everything it wraps: requests and urllib3 nest the OS error several levels deep."""
    seen = set()
    pending = [error]
    while pending:
        current = pending.pop(0)
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        pending.extend(arg for arg in getattr(current, 'args', ()) if isinstance(arg, BaseException))
        pending.extend([getattr(current, 'reason', None), current.__cause__, current.__context__])
        pending = [item for item in pending if isinstance(item, BaseException)]


def _http_status_message(response, label: str) -> str:
    if response.status_code == 404:
        return f'{label} has no /info endpoint (HTTP 404): it is not a Docker Engine API'
    # An error answer is quoted, never trusted: read only its beginning, whatever its size.
    body = b''
    with contextlib.suppress(Exception):
        body = response.raw.read(ERROR_BODY_BYTES, decode_content=True) or b''
    if response.status_code == 400 and b'HTTP request to an HTTPS server' in body:
        # Go's TLS listeners answer a plain HTTP request with this fixed 400, before any handler sees it.
        return (
            f'{label} speaks TLS and refused a plain HTTP request: remove use_tls: false (--no-tls on the command '
            'line) and set tls_ca_cert, tls_cert and tls_private_key'
        )
    detail = ''
    with contextlib.suppress(Exception):  # the message of an error answer is a courtesy, not a requirement
        detail = str(json.loads(body).get('message', ''))[:200]
    return f'{label} answered /info with HTTP {response.status_code}' + (f': {detail}' if detail else '')
