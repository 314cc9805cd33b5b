"""Worker configuration: one frozen object, filled from defaults, `UAPT_*` env vars and flags.

Every field has exactly one flag (``--batch-size``) and one environment variable
(``UAPT_BATCH_SIZE``); a flag beats the environment, which beats the default. The
table of fields doubles as the ``uapt worker --help`` text, so the two cannot drift.
These defaults are the only ones: ``uapt publish`` and ``uapt tail`` take their
topic and server defaults from here, the image fields take theirs from
`ImagePolicy`, the image guards' limits, and the decoding fields take theirs (and
their help) from `model.config.DecodingOptions`, which they fill (`Settings.decoding`).
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from model.config import (
    DEFAULT_SERVING_DTYPE,
    SERVING_DTYPE_HELP,
    DecodingError,
    DecodingOptions,
    ServingDtypeError,
    check_serving_dtype,
    decoding_field,
)
from model.guidance.abstention import AbstentionError, check_max_ood_score, check_min_confidence
from model.image_policy import ImagePolicy
from worker.errors import ConfigurationError
from worker.kafka_security import KafkaSecurity, KafkaSecurityError, Secret

ENV_PREFIX = "UAPT_"


class SettingsError(ConfigurationError):
    """A configuration value (flag or environment variable) cannot be used."""


def _opt(default: Any, help: str, *, parse=None) -> Any:
    return field(default=default, metadata={"help": help, "parse": parse})


def _image_opt(policy_field: str, help: str, *, parse=None) -> Any:
    """A setting that fills ``ImagePolicy.<policy_field>`` and defaults to the policy's own default."""
    default = getattr(ImagePolicy, policy_field)
    return field(default=default, metadata={"help": help, "parse": parse, "image_policy": policy_field})


def _kafka_opt(default: Any, help: str, *, parse=None, env_only: bool = False) -> Any:
    """A setting that fills ``KafkaSecurity.<name>``; an env-only one (the password) has no flag and no repr."""
    metadata = {"help": help, "parse": parse, "kafka_security": True, "env_only": env_only}
    return field(default=default, repr=not env_only, metadata=metadata)


def _decoding_opt(name: str, *, parse=None) -> Any:
    """A setting that fills ``DecodingOptions.<name>``, with that field's default and help."""
    source = decoding_field(name)
    return field(
        default=source.default, metadata={"help": "decoding: " + source.metadata["help"], "parse": parse, "decoding": name}
    )


def _csv(text: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in text.split(",") if part.strip())


def _optional_path(text: str) -> Path | None:
    return Path(text).expanduser() if text else None


def _optional_str(text: str) -> str | None:
    return text or None


def _upper(text: str) -> str:
    return text.strip().upper()


def _optional_upper(text: str) -> str | None:
    return _upper(text) or None


def _optional_secret(text: str) -> Secret | None:
    return Secret(text) if text else None


def _optional_float(text: str) -> float | None:
    return float(text) if text else None


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
    security_protocol: str = _kafka_opt(
        "PLAINTEXT", "Kafka security protocol: PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL", parse=_upper
    )
    sasl_mechanism: str | None = _kafka_opt(
        None, "SASL mechanism for the SASL_* protocols: PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512", parse=_optional_upper
    )
    sasl_username: str | None = _kafka_opt(None, "SASL user name", parse=_optional_str)
    sasl_password_file: Path | None = _kafka_opt(
        None,
        "file whose first line is the SASL password (or set the UAPT_SASL_PASSWORD variable; never a flag)",
        parse=_optional_path,
    )
    sasl_password: Secret | None = _kafka_opt(
        None, "SASL password (environment only, never shown)", parse=_optional_secret, env_only=True
    )
    ssl_cafile: Path | None = _kafka_opt(
        None, "PEM file of the CAs that sign the brokers' certificates (default: the system's CAs)", parse=_optional_path
    )
    ssl_certfile: Path | None = _kafka_opt(None, "PEM client certificate, for brokers that require one", parse=_optional_path)
    ssl_keyfile: Path | None = _kafka_opt(None, "PEM private key of that client certificate", parse=_optional_path)
    max_poll_interval_ms: int = _opt(
        300_000,
        "longest the worker may go between consumer polls before the group gives its partitions away "
        "(Kafka's max.poll.interval.ms; a database outage does not count: the worker keeps polling through it)",
    )
    database_url: str = _opt(
        "sqlite:///uapt-profiles.db",
        "profile store URL: sqlite:///FILE or postgresql+psycopg://USER@HOST/DB",
    )
    preset: str = _opt("offline", "model preset: offline, tiny or paper")
    checkpoint: str | None = _opt(None, "trained prefix-network checkpoint directory (default: untrained)", parse=_optional_str)
    device: str = _opt("auto", "torch device: auto, cpu, cuda, ...")
    serving_dtype: str = _opt(DEFAULT_SERVING_DTYPE, SERVING_DTYPE_HELP)
    batch_size: int = _opt(16, "micro-batch: most events captioned together")
    linger_ms: int = _opt(200, "micro-batch: most milliseconds spent filling a batch")
    pipeline_depth: int = _opt(
        1,
        "batches polled, parsed, fetched and image-encoded while the one before generates: "
        "1 keeps the model busy, 0 runs each batch's stages one after another",
    )
    num_captions: int = _opt(3, "captions per post when the event does not ask for a number")
    max_captions: int = _opt(5, "upper bound on the num_captions an event may ask for")
    top_k: int = _opt(5, "user keywords (top TF-IDF terms) fed to the model")
    max_record_attempts: int = _opt(
        3, "tries of a post that keeps failing in the model or its keyword read before it is dead-lettered"
    )
    no_repeat_ngram_size: int = _decoding_opt("no_repeat_ngram_size")
    repetition_penalty: float = _decoding_opt("repetition_penalty")
    image_word_weight: float | None = _decoding_opt("image_word_weight", parse=_optional_float)
    scene_constraint: bool = _decoding_opt("scene_constraint")
    max_ood_score: float | None = _opt(
        None,
        "abstention: withhold a post's captions when its image's out-of-distribution score is above this "
        "(inf turns it off; default: the threshold stored with the checkpoint's OOD file, uapt fit-ood)",
        parse=_optional_float,
    )
    min_confidence: float | None = _opt(
        None,
        "abstention: withhold a post's captions when its best caption's confidence is below this, in [0, 1] "
        "(0 turns it off; default: the threshold stored with the checkpoint's OOD file)",
        parse=_optional_float,
    )
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
    max_image_bytes_per_s: int = _image_opt("max_bytes_per_s", "fastest one image URL is downloaded, in bytes per second")
    max_image_pixels: int = _image_opt("max_pixels", "largest image, in pixels (width x height), checked before decoding")
    connect_timeout_s: float = _image_opt("connect_timeout_s", "image URL connect timeout, seconds")
    read_timeout_s: float = _image_opt(
        "read_timeout_s",
        "wall-clock budget of a batch's image URLs, seconds: connect, headers and body together, however slow the server",
    )
    max_redirects: int = _image_opt("max_redirects", "most HTTP redirects followed for one image URL")

    def __post_init__(self) -> None:
        positive = ("batch_size", "max_message_bytes", "num_captions", "max_captions", "top_k", "max_record_attempts", "partitions", "replication_factor", "max_poll_interval_ms", "max_image_bytes", "max_image_bytes_per_s", "max_image_pixels")
        for name in positive:
            if getattr(self, name) < 1:
                raise SettingsError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.pipeline_depth not in (0, 1):  # a second batch ahead would only wait: each generation waits for the fold before it
            raise SettingsError(f"pipeline_depth must be 0 or 1, got {self.pipeline_depth}")
        if self.linger_ms < 0:
            raise SettingsError(f"linger_ms must be >= 0, got {self.linger_ms}")
        if self.num_captions > self.max_captions:
            raise SettingsError(f"num_captions ({self.num_captions}) exceeds max_captions ({self.max_captions})")
        try:
            check_serving_dtype(self.serving_dtype)
        except ServingDtypeError as error:
            raise SettingsError(str(error)) from None
        try:
            self.decoding  # built once, here, so that a bad decoding setting stops the worker at start-up
        except DecodingError as error:
            raise SettingsError(str(error)) from None
        try:
            if self.max_ood_score is not None:
                check_max_ood_score(self.max_ood_score)
            if self.min_confidence is not None:
                check_min_confidence(self.min_confidence)
        except AbstentionError as error:
            raise SettingsError(str(error)) from None
        if self.connect_timeout_s <= 0 or self.read_timeout_s <= 0:
            raise SettingsError("connect_timeout_s and read_timeout_s must be positive")
        try:
            KafkaSecurity(**self._kafka_security_values())  # checks the combination and the files it names
        except KafkaSecurityError as error:
            raise SettingsError(str(error)) from None

    @property
    def kafka_security(self) -> KafkaSecurity:
        """The Kafka clients' SASL and TLS settings (checked when these settings were built)."""
        return KafkaSecurity(**self._kafka_security_values())

    def _kafka_security_values(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in KAFKA_SECURITY_FIELDS}

    @functools.cached_property
    def decoding(self) -> DecodingOptions:
        """The Captioner's decoding options, from the fields that name a DecodingOptions field (the rest at their defaults)."""
        return DecodingOptions(
            **{f.metadata["decoding"]: getattr(self, f.name) for f in dataclasses.fields(self) if "decoding" in f.metadata}
        )

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


KAFKA_SECURITY_FIELDS = tuple(f.name for f in dataclasses.fields(Settings) if f.metadata.get("kafka_security"))
"""The settings every command that talks to Kafka takes (worker, publish, publish-forget, tail)."""


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


class _RefusedFlag(argparse.Action):
    """The flag of an environment-only setting: using it is an error that does not repeat the value."""

    def __init__(self, option_strings, dest, **kwargs) -> None:
        super().__init__(option_strings, argparse.SUPPRESS, nargs="?", default=argparse.SUPPRESS, metavar="REFUSED", **kwargs)

    def __call__(self, parser, namespace, values, option_string=None) -> None:
        parser.error(f"{option_string} is not accepted: {self.help}")


def add_settings_arguments(
    parser: argparse.ArgumentParser,
    names: tuple[str, ...] | None = None,
    title: str = "worker settings (each flag also reads UAPT_<NAME>, e.g. UAPT_BATCH_SIZE)",
) -> None:
    """Add one flag per Settings field (or per field in ``names``); defaults stay None so the environment
    can fill in. An environment-only field (the SASL password) gets a flag that only refuses, so that
    neither argparse's prefix matching nor its "unrecognized arguments" line can take or echo the value."""
    group = parser.add_argument_group(title)
    for f in dataclasses.fields(Settings):
        if names is not None and f.name not in names:
            continue
        flag = "--" + f.name.replace("_", "-")
        if f.metadata.get("env_only"):
            group.add_argument(flag, action=_RefusedFlag, help=f"never a flag (a command line shows in ps): set {env_var(f.name)}")
            continue
        default = f.default if not isinstance(f.default, tuple) else ",".join(f.default)
        help_text = f"{f.metadata['help']} [env {env_var(f.name)}; default: {default}]"
        if f.type in ("bool", bool):
            group.add_argument(flag, dest=f.name, default=None, action=argparse.BooleanOptionalAction, help=help_text)
        else:
            group.add_argument(flag, dest=f.name, default=None, metavar=f.name.upper(), help=help_text)


def settings_from_args(args: argparse.Namespace, **overrides: Any) -> Settings:
    """Settings from parsed flags (plus the environment); raises SettingsError naming the flag or field at fault."""
    flags = {f.name: getattr(args, f.name, None) for f in dataclasses.fields(Settings)}
    flags.update({k: v for k, v in overrides.items() if v is not None})
    return Settings.from_sources(flags)


def kafka_security_from_args(args: argparse.Namespace) -> KafkaSecurity:
    """The Kafka security settings alone, from their flags and ``UAPT_*`` variables (for publish and tail)."""
    flags = {name: getattr(args, name, None) for name in KAFKA_SECURITY_FIELDS}
    wanted = {env_var(name) for name in KAFKA_SECURITY_FIELDS}
    return Settings.from_sources(flags, env={k: v for k, v in os.environ.items() if k in wanted}).kafka_security
