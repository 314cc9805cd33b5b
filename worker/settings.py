"""Worker configuration: one frozen object, filled from defaults, `UAPT_*` env vars and flags.

Every field has exactly one flag (``--batch-size``) and one environment variable
(``UAPT_BATCH_SIZE``); a flag beats the environment, which beats the default. The
table of fields doubles as the ``uapt worker --help`` text, so the two cannot drift.
These defaults are the only ones: ``uapt publish`` and ``uapt tail`` take their
topic and server defaults from here, and the image fields take theirs from
`ImagePolicy`, the image guards' limits.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ENV_PREFIX = "UAPT_"


class SettingsError(ValueError):
    """A configuration value (flag or environment variable) cannot be used."""


@dataclass(frozen=True)
class ImagePolicy:
    """The image guards' limits (enforced in worker/images.py); tests build one directly."""

    root: Path | None = None
    allow: tuple[str, ...] = ()
    max_bytes: int = 10_000_000
    max_pixels: int = 40_000_000
    connect_timeout_s: float = 3.0
    read_timeout_s: float = 10.0
    max_redirects: int = 3


def _opt(default: Any, help: str, *, parse=None) -> Any:
    return field(default=default, metadata={"help": help, "parse": parse})


def _image_opt(policy_field: str, help: str, *, parse=None) -> Any:
    """A setting that fills ``ImagePolicy.<policy_field>`` and defaults to the policy's own default."""
    default = getattr(ImagePolicy, policy_field)
    return field(default=default, metadata={"help": help, "parse": parse, "image_policy": policy_field})


def _csv(text: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in text.split(",") if part.strip())


def _optional_path(text: str) -> Path | None:
    return Path(text).expanduser() if text else None


def _optional_str(text: str) -> str | None:
    return text or None


@dataclass(frozen=True)
class Settings:
    """Everything a worker needs to know; immutable once built."""

    bootstrap_servers: str = _opt("127.0.0.1:9092", "Kafka bootstrap servers, comma-separated host:port")
    input_topic: str = _opt("uapt.posts", "topic of new-post events (key = user_id)")
    output_topic: str = _opt("uapt.captions", "topic the suggested captions go to (key = user_id)")
    dlq_topic: str = _opt("uapt.posts.dlq", "dead-letter topic for events that cannot be captioned")
    group_id: str = _opt("uapt-worker", "Kafka consumer group; run more workers with the same id to scale out")
    create_topics: bool = _opt(True, "create missing topics at start-up (off where topics are managed)")
    partitions: int = _opt(4, "partitions for topics the worker creates")
    replication_factor: int = _opt(
        1, "replication factor for topics the worker creates (1 suits one broker; 3 on a production cluster)"
    )
    database_url: str = _opt(
        "sqlite:///uapt-profiles.db",
        "profile store URL: sqlite:///FILE or postgresql+psycopg://USER@HOST/DB",
    )
    preset: str = _opt("offline", "model preset: offline, tiny or paper")
    checkpoint: str | None = _opt(None, "trained prefix-network checkpoint directory (default: untrained)", parse=_optional_str)
    device: str = _opt("auto", "torch device: auto, cpu, cuda, ...")
    batch_size: int = _opt(16, "micro-batch: most events captioned together")
    linger_ms: int = _opt(200, "micro-batch: most milliseconds spent filling a batch")
    num_captions: int = _opt(3, "captions per post when the event does not ask for a number")
    max_captions: int = _opt(5, "upper bound on the num_captions an event may ask for")
    top_k: int = _opt(5, "user keywords (top TF-IDF terms) fed to the model")
    max_message_bytes: int = _opt(
        16 * 1024 * 1024,
        "largest message the worker produces (keep at or below the broker's message.max.bytes); "
        "a larger dead letter is sent without its value",
    )
    metrics_host: str = _opt("127.0.0.1", "address of the /metrics, /healthz and /readyz server")
    metrics_port: int = _opt(9108, "port of that server (0 picks a free port, -1 turns it off)")
    image_root: Path | None = _image_opt(
        "root", "directory 'path' images must live under (unset: path images refused)", parse=_optional_path
    )
    allow_hosts: tuple[str, ...] = _image_opt(
        "allow",
        "comma-separated CIDRs or host names image URLs may reach even though they are "
        "private, loopback or link-local (default: none)",
        parse=_csv,
    )
    max_image_bytes: int = _image_opt("max_bytes", "largest image download or file, in bytes")
    max_image_pixels: int = _image_opt("max_pixels", "largest image, in pixels (width x height), checked before decoding")
    connect_timeout_s: float = _image_opt("connect_timeout_s", "image URL connect timeout, seconds")
    read_timeout_s: float = _image_opt("read_timeout_s", "image URL read timeout (whole download), seconds")
    max_redirects: int = _image_opt("max_redirects", "most HTTP redirects followed for one image URL")

    def __post_init__(self) -> None:
        positive = ("batch_size", "max_message_bytes", "num_captions", "max_captions", "top_k", "partitions", "replication_factor", "max_image_bytes", "max_image_pixels")
        for name in positive:
            if getattr(self, name) < 1:
                raise SettingsError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.linger_ms < 0:
            raise SettingsError(f"linger_ms must be >= 0, got {self.linger_ms}")
        if self.num_captions > self.max_captions:
            raise SettingsError(f"num_captions ({self.num_captions}) exceeds max_captions ({self.max_captions})")
        if self.connect_timeout_s <= 0 or self.read_timeout_s <= 0:
            raise SettingsError("connect_timeout_s and read_timeout_s must be positive")

    @property
    def image_policy(self) -> ImagePolicy:
        """The image guards' limits, from the fields that name an ImagePolicy field."""
        return ImagePolicy(
            **{
                f.metadata["image_policy"]: getattr(self, f.name)
                for f in dataclasses.fields(self)
                if "image_policy" in f.metadata
            }
        )

    @classmethod
    def from_sources(cls, flags: Mapping[str, Any] | None = None, env: Mapping[str, str] | None = None) -> Settings:
        """Build settings: defaults, overridden by ``UAPT_*`` env vars, overridden by non-None flags."""
        env = os.environ if env is None else env
        flags = flags or {}
        values: dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            env_name = env_var(f.name)
            if flags.get(f.name) is not None:
                raw, origin = flags[f.name], f"--{f.name.replace('_', '-')}"
            elif env_name in env:
                raw, origin = env[env_name], env_name
            else:
                continue
            values[f.name] = _convert(f, raw, origin)
        return cls(**values)


def env_var(name: str) -> str:
    """The environment variable of setting ``name``, e.g. UAPT_BATCH_SIZE."""
    return ENV_PREFIX + name.upper()


def default_of(name: str) -> Any:
    """The default of setting ``name``, for commands that share a setting without taking them all."""
    return {f.name: f.default for f in dataclasses.fields(Settings)}[name]


def _convert(f: dataclasses.Field, raw: Any, origin: str) -> Any:
    if not isinstance(raw, str):
        return raw
    parse = f.metadata.get("parse")
    try:
        if parse is not None:
            return parse(raw)
        if f.type in ("bool", bool):
            lowered = raw.strip().lower()
            if lowered not in ("1", "0", "true", "false", "yes", "no", "on", "off"):
                raise ValueError(raw)
            return lowered in ("1", "true", "yes", "on")
        kind = {"int": int, "float": float, "str": str}[str(f.type)]
        return kind(raw)
    except ValueError:
        raise SettingsError(f"{origin}: cannot use {raw!r} for {f.name}") from None


def add_settings_arguments(parser: argparse.ArgumentParser) -> None:
    """Add one flag per Settings field; defaults stay None so the environment can fill in."""
    group = parser.add_argument_group("worker settings (each flag also reads UAPT_<NAME>, e.g. UAPT_BATCH_SIZE)")
    for f in dataclasses.fields(Settings):
        flag = "--" + f.name.replace("_", "-")
        default = f.default if not isinstance(f.default, tuple) else ",".join(f.default)
        help_text = f"{f.metadata['help']} [env {env_var(f.name)}; default: {default}]"
        if f.type in ("bool", bool):
            group.add_argument(flag, dest=f.name, default=None, action=argparse.BooleanOptionalAction, help=help_text)
        else:
            group.add_argument(flag, dest=f.name, default=None, metavar=f.name.upper(), help=help_text)


def settings_from_args(args: argparse.Namespace, **overrides: Any) -> Settings:
    """Settings from parsed flags (plus the environment); raises SystemExit with a clear line on bad values."""
    flags = {f.name: getattr(args, f.name, None) for f in dataclasses.fields(Settings)}
    flags.update({k: v for k, v in overrides.items() if v is not None})
    try:
        return Settings.from_sources(flags)
    except SettingsError as exc:
        raise SystemExit(f"uapt {getattr(args, 'command', 'worker')}: {exc}") from None
