"""Settings: defaults, then ``backchannel.toml``, then ``BACKCHANNEL_*`` environment variables.

Why this order: the embedded default must run with no configuration at all (SQLite in the
working directory, the local sandbox as destination); a file suits a deployment; environment
variables suit containers and CI and win over the file. Secrets (tokens, webhook secrets) are
not settings: they live encrypted in the store.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from backchannel.destinations import meta, tiktok

ENV_PREFIX = "BACKCHANNEL_"
CONFIG_FILE = "backchannel.toml"


class ConfigError(ValueError):
    """A setting with a bad value; the message names the setting."""


@dataclass(frozen=True, slots=True)
class Settings:
    database_url: str = "sqlite:///backchannel.db"
    host: str = "127.0.0.1"
    port: int = 8000
    #: region for phone numbers written without a country code (ISO alpha-2), e.g. "US"
    default_region: str | None = None
    #: None means "the local sandbox" while the destination has no real token
    tiktok_base_url: str | None = None
    meta_base_url: str | None = None
    meta_api_version: str = meta.DEFAULT_API_VERSION
    #: pixel codes can also be set with `backchannel token set`; these are fallbacks
    tiktok_pixel: str | None = None
    meta_pixel: str | None = None
    #: key for encrypting tokens at rest; if unset a key file is created (mode 0600)
    secret_key: str | None = None
    key_file: str = "backchannel.key"
    #: destinations that get an outbox row for every accepted conversion
    destinations: tuple[str, ...] = ("tiktok", "meta")
    #: run the delivery worker inside `serve`
    worker: bool = True
    #: delivery retry backoff: first delay and cap, in seconds (see delivery.RetryPolicy)
    retry_base: float = 1.0
    retry_cap: float = 300.0
    #: seconds a claimed outbox row stays leased before another worker may take it
    lease_seconds: float = 120.0
    #: requests in flight per destination
    delivery_concurrency: int = 4
    log_level: str = "info"
    extra: Mapping[str, Any] = field(default_factory=dict)

    @property
    def tiktok_url(self) -> str:
        return self.tiktok_base_url or tiktok.DEFAULT_BASE_URL

    @property
    def meta_url(self) -> str:
        return self.meta_base_url or meta.DEFAULT_BASE_URL


_TYPES = {f.name: f.type for f in fields(Settings)}
_FILE_KEYS = {
    ("tiktok", "base_url"): "tiktok_base_url",
    ("tiktok", "pixel"): "tiktok_pixel",
    ("meta", "base_url"): "meta_base_url",
    ("meta", "pixel"): "meta_pixel",
    ("meta", "api_version"): "meta_api_version",
}


def _coerce(name: str, raw: Any) -> Any:
    kind = str(_TYPES[name])
    if kind == "float":
        try:
            value = float(raw)
        except (TypeError, ValueError):
            raise ConfigError(f"{name}: must be a number, got {raw!r}") from None
        if value <= 0:
            raise ConfigError(f"{name}: must be positive")
        return value
    if "int" in kind and "str" not in kind:
        try:
            return int(raw)
        except (TypeError, ValueError):
            raise ConfigError(f"{name}: must be an integer, got {raw!r}") from None
    if "bool" in kind:
        if isinstance(raw, bool):
            return raw
        text = str(raw).strip().lower()
        if text in ("1", "true", "yes", "on"):
            return True
        if text in ("0", "false", "no", "off"):
            return False
        raise ConfigError(f"{name}: must be true or false, got {raw!r}")
    if "tuple" in kind:
        items = raw if isinstance(raw, list) else str(raw).split(",")
        values = tuple(str(i).strip() for i in items if str(i).strip())
        unknown = [v for v in values if v not in ("tiktok", "meta")]
        if unknown:
            raise ConfigError(f"{name}: unknown destination(s) {', '.join(unknown)}")
        return values
    return None if raw is None else str(raw)


def load(env: Mapping[str, str] | None = None, config_path: str | Path | None = None) -> Settings:
    """Build the settings from the file (if any) and the environment."""
    env = os.environ if env is None else env
    values: dict[str, Any] = {}
    path = Path(config_path or env.get(ENV_PREFIX + "CONFIG") or CONFIG_FILE)
    if path.exists():
        try:
            document = tomllib.loads(path.read_text())
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{path}: not valid TOML ({exc})") from None
        for key, value in document.items():
            if isinstance(value, dict):
                for sub, sub_value in value.items():
                    target = _FILE_KEYS.get((key, sub))
                    if target is None:
                        raise ConfigError(f"{path}: unknown setting [{key}] {sub}")
                    values[target] = _coerce(target, sub_value)
            elif key in _TYPES and key != "extra":
                values[key] = _coerce(key, value)
            else:
                raise ConfigError(f"{path}: unknown setting {key}")
    for name in _TYPES:
        env_value = env.get(ENV_PREFIX + name.upper())
        if env_value is not None and name != "extra":
            values[name] = _coerce(name, env_value)
    settings = replace(Settings(), **values)
    if settings.default_region is not None:
        region = settings.default_region.strip().upper()
        if len(region) != 2 or not region.isalpha():
            raise ConfigError("default_region: must be an ISO 3166-1 alpha-2 code such as US")
        settings = replace(settings, default_region=region)
    return settings
