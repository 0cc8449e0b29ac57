"""Checks on the instance configuration that a type alone cannot express.

Each raises ValueError; the base class turns it into a ConfigurationError that names the option.
"""

from urllib.parse import urlsplit

from ..engine import SCHEMES
from ..rules import Policy


def instance_url(value, *, field, **kwargs):
    if not isinstance(value, str) or not value.strip():
        raise ValueError('must be a non-empty string such as unix:///var/run/docker.sock or tcp://host:2376')
    try:
        parts = urlsplit(value.strip())
    except ValueError as error:
        raise ValueError(f'is not a URL: {error}') from None
    if parts.scheme not in SCHEMES:
        raise ValueError(f'must start with one of {", ".join(s + "://" for s in SCHEMES)}, got {parts.scheme!r}')
    if parts.scheme == 'tcp' and not parts.hostname:
        raise ValueError('a tcp:// URL needs a host, e.g. tcp://docker.example.com:2376')
    if parts.scheme in ('unix', 'npipe') and not parts.path:
        raise ValueError(f'a {parts.scheme}:// URL needs a path')
    return value.strip()


def instance_timeout(value, *, field, **kwargs):
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= 300:
        raise ValueError(f'must be a number of seconds above 0 and at most 300, got {value!r}')
    return value


def instance_allowed_insecure_registries(value, *, field, **kwargs):
    if not isinstance(value, (list, tuple)):
        raise ValueError('must be a list of registry names, CIDRs or mirror URLs')
    Policy.build(allowed=value)
    return value


def instance_max_registry_series(value, *, field, **kwargs):
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f'must be a whole number of series, 0 or more, got {value!r}')
    return value
