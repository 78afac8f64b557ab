"""The one settings object. Everything configurable comes from the environment (12-factor).

Variables are `SENTINEL_<FIELD>`; the connection URLs also accept their conventional names
(`KAFKA_BROKER`, `REDIS_URL`). Secret values are `SecretStr`, so they never print.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal, cast
from urllib.parse import urlsplit

from stream.timefmt import parse_duration

from pydantic import AliasChoices, Field, SecretStr, TypeAdapter, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, EnvSettingsSource, SettingsConfigDict

Quantize = Literal["none", "8bit", "4bit"]
DType = Literal["auto", "float32", "bfloat16", "float16"]
# SENTINEL_NOTIFY_BODY_MAX's least value but 0: below some hundreds a notice's head lines are cut.
NOTIFY_BODY_MIN = 1000


def _default_cache_dir() -> Path:
    return Path.home() / ".cache" / "forum-sentinel"


class Settings(BaseSettings):
    # hide_input_in_errors: a ValidationError's text leaves the values out; a check of several
    # settings together would otherwise print all of them, every secret included, if it ever
    # reached a traceback.
    model_config = SettingsConfigDict(env_prefix="SENTINEL_", extra="ignore", populate_by_name=True, hide_input_in_errors=True)

    # --- model ---
    base: str = Field(
        "smollm2", description="'smollm2' (bundled GGUF), a Hugging Face model id, a local directory, or 'lexicon' (keywords; dry runs)"
    )
    adapter: str = Field(
        "default", description="PEFT LoRA adapter: 'default' (shipped, for the default base), 'none', a directory or a hub id"
    )
    device: str = Field("auto", description="auto | cpu | cuda | cuda:N")
    dtype: DType = Field("auto", description="auto picks bf16 on CUDA and on CPUs with native bf16, else fp32")
    quantize: Quantize = Field("none", description="bitsandbytes weight quantisation on CUDA")
    batch_size: int = Field(64, ge=1, le=4096, description="posts per forward pass")
    max_post_tokens: int = Field(192, ge=8, le=4096, description="posts are truncated to this many tokens")
    cache_dir: Path = Field(default_factory=_default_cache_dir, description="converted base models live here")
    ngram_head: str = Field(
        "auto", description="the n-gram head whose probabilities are pooled with the model's at the weight its card names (model/fusion.py): "
        "auto, the head shipped in model/heads/default with the model its weight was chosen with (the shipped base and adapter) and none "
        "with any other; none: off, the model alone; default: the shipped head with any model; or a directory made by sentinel train-head. "
        "The model id then ends in +ngram, or +ngram-<8 hex of its weights' sha256> for a head from another directory"
    )
    model_process: Literal["auto", "true", "false"] = Field(
        "auto", description="run the model in a child process of the worker, with an interpreter lock of its own (stream/model_process.py): "
        "auto does on a CUDA device, where it lets the model run at full speed, and not on CPU, where it measured slower; false: on a thread of the worker"
    )

    # --- connections (used by the streaming worker) ---
    kafka_broker: str | None = Field(
        None, validation_alias=AliasChoices("SENTINEL_KAFKA_BROKER", "KAFKA_BROKER"), description="host:port[,host:port]"
    )
    redis_url: SecretStr | None = Field(
        None, validation_alias=AliasChoices("SENTINEL_REDIS_URL", "REDIS_URL"), description="redis:// or rediss:// URL"
    )
    redis_password: SecretStr | None = None
    redis_cluster: bool = Field(False, description="Redis Cluster: REDIS_URL lists startup nodes (host:port, comma-separated)")
    redis_wait_replicas: int = Field(
        0, ge=0, description="replicas every Redis master must acknowledge a batch's writes to (WAIT) before its offsets commit; 0: no wait"
    )
    redis_wait_timeout: float = Field(
        1.0, gt=0, description="seconds a batch waits for those replicas; a connected replica still behind then has the batch written "
                               "and waited for again (uncommitted meanwhile); a master with fewer replicas connected than asked commits, "
                               "logged and counted"
    )
    kafka_security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    kafka_sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] = "PLAIN"
    kafka_sasl_username: str | None = None
    kafka_sasl_password: SecretStr | None = None
    kafka_ssl_cafile: Path | None = None
    kafka_max_request_bytes: int | None = Field(
        None, ge=65_536, description="the largest record the worker produces (the producer's max_request_size): where the broker's "
        "message.max.bytes or the output topics' max.message.bytes is lower, set it to that, and a dead letter keeps less of its "
        "message instead of being refused; unset: 1 MiB, or twice SENTINEL_MAX_MESSAGE_BYTES where that is more"
    )

    # --- topics and the consumer group ---
    app_id: str = Field("forum-sentinel", description="Faust app id: the Kafka consumer group")
    topic_posts: str = "forum-posts"
    topic_sentiment: str = "post-sentiment"
    topic_dlq: str = "forum-posts-dlq"
    topic_alerts: str = "sentiment-alerts"
    partitions: int = Field(4, ge=1, description="partitions for topics the project creates")

    # --- the worker ---
    max_batch: int = Field(64, ge=1, description="posts per micro-batch (stream.take)")
    max_wait: float = Field(0.5, gt=0, description="seconds to wait for a micro-batch to fill")
    web_port: int = Field(6066, ge=1, le=65535, description="worker HTTP port; give every worker its own")
    web_host: str = "0.0.0.0"
    start_step_file: Path | None = Field(
        None, description="the worker writes what its start is doing here until it serves /readyz (sentinel run sets it "
        "for its progress line); unset or empty: nowhere"
    )
    health_max_stall: float = Field(30.0, gt=0, description="seconds without an event-loop heartbeat before /healthz answers 503")
    shutdown_grace: float = Field(
        45.0, gt=0, description="seconds a worker gives its batch in flight after SIGTERM; below the pod's terminationGracePeriodSeconds"
    )
    rebalance_timeout: float = Field(30.0, gt=0, description="consumer-group rebalance timeout, seconds")
    session_timeout: float = Field(30.0, gt=0)
    heartbeat_interval: float = Field(3.0, gt=0)
    stream_processing_timeout: float = Field(
        300.0, gt=0, description="Faust's stall checks: seconds a partition may go without a fetch response after its assignment "
                                 "(counted from 2.5 s past it, the time a quiet partition's first response may take), "
                                 "or with posts waiting and no event taken, before an ERROR line"
    )
    max_message_bytes: int = Field(65_536, ge=1024)
    max_text_chars: int = Field(10_000, ge=1)
    aliases_file: Path | None = Field(None, description="JSON alias table (docs/contracts.md, Asset detection); default: the built-in table")
    max_future: str = Field(
        "1d", description="how far created_at may run ahead of the wall clock (later posts are dead-lettered); below SENTINEL_DEDUPE_WINDOW"
    )
    max_ahead: str = Field(
        "1h", description="how far one post may run ahead of its source's clock on its partition before it needs the source's next "
                          "post to confirm it, and past what most of its partition's sources agree on before it is counted as "
                          "`ahead` (a fast source clock or a post from the future: counted at its own time, moving no watermark)"
    )

    # --- windows ---
    bucket: str = Field("1m", description="event-time bucket width")
    windows: str = Field("15m,1h,24h", description="rolling windows, comma-separated")
    retention: str = Field("48h", description="how long buckets are kept, in event time")
    dedupe_window: str = Field(
        "", description="how long post ids are kept to drop redeliveries, in event time, and so how late a post may come "
                        "(older ones count as late_dropped); at most the retention; empty: the retention"
    )
    pair_retention: str = Field(
        "12h", description="incidents: how long the hidden channel|asset and source|asset counts (and their post ids) are kept, in event "
                           "time; grouping reads them from 6 h before an onset, so above 6h; capped at the retention"
    )
    author_cap: int = Field(
        3, ge=0, description="posts one author counts per scope and event-time hour (the rest are classified and published, not "
                             "counted), so one account cannot make a swing alone; the same name on two sources is two authors; 0: no cap"
    )
    new_scopes_per_hour: int = Field(
        1000, ge=0, description="new channel scopes, and new source scopes, each worker admits per event-time hour; past "
                                "that a new name's posts count in `channel: (other)` or `source: (other)` (and still in `all` "
                                "and their assets), so a flood of invented names cannot grow Redis, judging and the console "
                                "by a scope a post; scopes already written are never folded; 0: no budget"
    )
    text_cap: int = Field(
        0, ge=0, description="posts with one text (case, punctuation, links and mentions aside) that count per scope, label and "
                             "event-time hour, so a copy-paste raid from many accounts counts as a few voices; texts under 16 "
                             "characters so normalised (gm, lol, wen moon) are never capped; 0 (the default): no cap. The "
                             "production ConfigMap sets 3; streams generated from a few template sentences read as raids to it"
    )
    report_retention: str = Field("90d", description="how long daily roll-ups per scope are kept for `sentinel report`, in event time (0d: none)")

    # --- early warning (stream/alerts/detector.py, stream/alerts/incidents.py) ---
    alert_window: str = Field("1h", description="the current window the detector judges")
    alert_baseline: str = Field("24h", description="trailing baseline before the current window")
    alert_step: str = Field("1m", description="event-time step between judgements of a scope")
    alert_for: str = Field("8m", description="how long the firing condition must hold before an incident fires")
    alert_half_life: str = Field("15m", description="recency weighting of label shares inside the current window")
    alert_idle_partition: float = Field(
        60.0, gt=0, description="seconds after which a silent partition with nothing left to read stops holding alerts back")
    alert_lagging_partition: float = Field(
        1800.0, gt=0, description="seconds a partition whose last write left posts unread (consumer lag) holds alerts and trimming "
                                  "back while unwritten (a catch-up reads partitions a chunk at a time); then it is taken as idle")
    alert_grace: str = Field("2m", description="how far every partition must be past a boundary before it is judged")
    alert_repeat: str = Field("1h", description="event time between repeat notifications of a still-firing incident")
    alert_detector: Literal["zscore", "sequential"] = Field(
        "sequential", description="sequential: CUSUM charts per step bin (stream/alerts/sequential.py); zscore: the older window detector"
    )
    alert_threshold_nats: float = Field(11.0, gt=0, description="sequential: evidence per chart (nats) before ln(streams) is added")
    alert_streams: int = Field(20, ge=1, description="sequential: scope-directions sharing the false-alarm budget (adds ln of it)")
    alert_confirm_z: float = Field(3.5, ge=0, description="sequential: share z that confirms a rate alarm as a drop or surge")
    alert_thaw: str = Field("6h", description="sequential: how long an open incident keeps its scope's baseline frozen; then the live "
                                              "baseline judges, so a level that lasts (a new channel, traffic back after a lull) becomes the baseline")
    alert_fire_z: float = Field(3.0, gt=0)
    alert_resolve_z: float = Field(1.5, ge=0)
    alert_critical_z: float = Field(6.0, gt=0, description="|z| from which an incident is critical rather than warning")
    alert_min_posts: int = Field(20, ge=1, description="posts the current window needs before it can fire")
    alert_min_baseline_posts: int = Field(100, ge=1)
    alert_min_share_delta: float = Field(0.15, ge=0, description="smallest label-share change that can fire")
    alert_min_score_effect: float = Field(
        0.35, ge=0, description="zscore detector: smallest mean-score change that can fire, in the baseline's per-post score standard deviations"
    )
    alert_min_volume_ratio: float = Field(2.0, ge=1, description="smallest volume ratio to the baseline that can fire")
    alert_overrides: str = Field(
        "", description='JSON {scope pattern: {threshold: value}}, e.g. {"asset:*": {"min_posts": 30}}'
    )
    alert_samples: int = Field(3, ge=0, le=10, description="sample posts shown in a notification")
    # --- incidents (stream/alerts/grouping.py) ---
    alert_grouping: Literal["none", "incidents"] = Field(
        "incidents", description="incidents: one incident per event, notified Alertmanager-style; none: one notification per transition"
    )
    alert_group_wait: str = Field("5m", description="incidents: event time the first notification waits for related scopes")
    alert_group_interval: str = Field("15m", description="incidents: event time between updates when scopes or kinds join")
    alert_group_repeat: str = Field("4h", description="incidents: event time between repeats of an unacknowledged, still-firing incident")
    alert_settle_after: float = Field(
        300.0, ge=0, description="seconds of wall-clock silence (no batch on any partition) after which scopes with posts are judged and "
                                 "incidents in their group wait announced, since event time stands still (0: only at a replay's end)",
    )

    # --- delivery (stream/alerts/notify.py) ---
    apprise_urls: SecretStr | None = Field(
        None, description="Apprise URLs, one per line or comma-separated; 'tag1,tag2=URL' routes by severity tag"
    )
    apprise_config: Path | None = Field(None, description="an Apprise config file (YAML or text)")
    notify_attempts: int = Field(5, ge=1, description="delivery attempts per service before giving up")
    notify_backoff: float = Field(1.0, gt=0, description="first retry delay, doubled per attempt")
    notify_backoff_max: float = Field(30.0, gt=0)
    notify_chart: bool = Field(True, description="attach a PNG chart of the scope's last 24 h")
    notify_daily_cap: int = Field(0, ge=0, description="notifications per service per UTC day, then one 'limit reached' notice (0: no cap)")
    notify_body_max: int = Field(
        0, ge=0, description="most characters of a notification's body for any service, below its own limit (0: the service's own limit; "
                             f"else at least {NOTIFY_BODY_MIN})"
    )
    notify_claim_idle: float = Field(
        60.0, gt=0, description="seconds before another worker claims an outbox entry a worker took and did not finish"
    )

    # --- the risk console (stream/console; `sentinel console`) ---
    console_host: str = "0.0.0.0"
    console_port: int = Field(8080, ge=1, le=65535)
    console_read_token: SecretStr | None = Field(
        None, description="token (Bearer, or the Basic-auth password) that may read; unset: anyone may read"
    )
    console_operator_token: SecretStr | None = Field(
        None, description="token that may also acknowledge, give verdicts and silence; unset: the console is read-only for everyone"
    )
    console_url: str = Field(
        "", description="the console's address as the risk team reaches it (https://sentinel.example.com); notifications "
        "link to the incident or scope page there, and the console sets its flash cookie Secure on an https address's host. Unset: no link"
    )
    console_overview_max_age: float = Field(
        5.0, ge=0, description="seconds the overview's scope figures may lag new posts (one read shared by every page of a console "
        "process; longer while a read takes over a tenth of it; 0: every request reads); incidents are always read fresh"
    )

    # --- logging ---
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"] = "INFO"
    log_json: bool = False

    @field_validator("kafka_broker")
    @classmethod
    def _broker_addresses(cls, value: str | None) -> str | None:
        # aiokafka reads a bad port only when it first connects, as a traceback (or, in the worker,
        # as "cannot reach Kafka" and a restart loop).
        if value and not all(re.fullmatch(r"[^\s:,/]+(:\d{1,5})?|\[[0-9a-fA-F:.]+\](:\d{1,5})?", part.strip())
                                         for part in value.split(",")):
            raise ValueError("a comma-separated list of host:port, the port a number (kafka-0:9092,kafka-1:9092)")
        return value

    @field_validator("console_url")
    @classmethod
    def _console_url(cls, value: str) -> str:
        # Checked at start-up: a typo would otherwise ship a dead link in every notification, and a
        # password in the address would go to every Slack channel and mailbox.
        value = value.strip().rstrip("/")
        if not value:
            return value
        problem = "an http(s) address such as https://sentinel.example.com, without a path (the console serves from /), query or credentials"
        try:
            parts = urlsplit(value)
            port_ok = parts.port is None or parts.port > 0
        except ValueError:
            raise ValueError(problem) from None
        if (parts.scheme.lower() not in ("http", "https") or not parts.hostname or not port_ok or parts.path or parts.username is not None
                or "?" in value or "#" in value):
            raise ValueError(problem)
        return value

    @field_validator("notify_body_max")
    @classmethod
    def _body_keeps_its_head(cls, value: int) -> int:
        # Below some hundreds of characters a notice's head lines are cut (what moved, then its id,
        # actions and console link): SENTINEL_NOTIFY_BODY_MAX=4 (meant as kB) made every alert a lone
        # "…" and the worker started as if nothing were wrong. A pager's 1,024 is the least a service
        # named in docs/alerts.md takes.
        if 0 < value < NOTIFY_BODY_MIN:
            raise ValueError(f"0 (each service's own limit) or at least {NOTIFY_BODY_MIN} characters: below some hundreds a notice's "
                             "head lines, its incident_id and console link among them, are cut")
        return value

    @field_validator("start_step_file", mode="before")
    @classmethod
    def _empty_is_unset(cls, value: object) -> object:
        # SENTINEL_START_STEP_FILE="" (a manifest's way to switch it off) read as the path ".": its
        # first step stopped the worker with a ValueError ("has an empty name").
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("device")
    @classmethod
    def _known_device(cls, value: str) -> str:
        if not re.fullmatch(r"auto|cpu|cuda(:\d+)?", value):
            raise ValueError("use auto, cpu, cuda or cuda:N")
        return value

    @field_validator("log_level", mode="before")
    @classmethod
    def _level_in_any_case(cls, value: object) -> object:
        # logging's own aliases too, which it and Faust took before this was checked
        return {"WARN": "WARNING", "FATAL": "CRITICAL"}.get(value.upper(), value.upper()) if isinstance(value, str) else value

    @model_validator(mode="after")
    def _settings_together(self) -> "Settings":
        # Settings that are wrong only together, checked when the settings are read: one line
        # naming the variables at start-up, before the model loads or anything connects. The
        # messages name variables, never a value that could be a secret. (REDIS_URL is checked by
        # the commands, with the client that will use it, and named in the same line as these:
        # sentinel.cli.redis_url_problem, from `redis_given` when the settings do not validate.)
        # Every problem, a line each, not only the first: each would otherwise cost a restart.
        if problems := together_problems(self):
            raise ValueError("\n".join(problems))
        return self


def together_problems(settings: Settings) -> list[str]:
    """What is wrong only together, from each check of the settings together."""
    return [*sasl_problems(settings), *hysteresis_problems(settings), *alert_step_problems(settings)]


def sasl_problems(settings: Settings) -> list[str]:
    protocol = settings.kafka_security_protocol
    if protocol.startswith("SASL_") and not (settings.kafka_sasl_username and settings.kafka_sasl_password):
        return [f"SENTINEL_KAFKA_SECURITY_PROTOCOL={protocol} needs SENTINEL_KAFKA_SASL_USERNAME and SENTINEL_KAFKA_SASL_PASSWORD"]
    return []


def hysteresis_problems(settings: Settings) -> list[str]:
    if settings.alert_resolve_z >= settings.alert_fire_z:
        return [f"SENTINEL_ALERT_RESOLVE_Z ({settings.alert_resolve_z:g}) must be below SENTINEL_ALERT_FIRE_Z "
                f"({settings.alert_fire_z:g}) (hysteresis), e.g. fire 3, resolve 1.5"]
    return []


def alert_step_problems(settings: Settings) -> list[str]:
    """Each alert duration above zero; then, once window, baseline and step are all that, the grid
    they make: window and baseline in whole steps, the baseline in whole windows."""
    seconds: dict[str, int] = {}
    for name in ("window", "baseline", "step", "half_life"):
        try:
            seconds[name] = parse_duration(getattr(settings, f"alert_{name}"))
        except ValueError:
            continue  # said with its variable by stream.worker.settings_problems
    problems = [f"SENTINEL_ALERT_{name.upper()} must be longer than zero" for name, value in seconds.items() if value <= 0]
    if not all(seconds.get(name, 0) > 0 for name in ("window", "baseline", "step")):
        return problems  # a grid of a duration that is wrong (or a zero step to divide by) says nothing more
    problems += [f"SENTINEL_ALERT_{name.upper()} must be a multiple of SENTINEL_ALERT_STEP ({seconds['step']} s)"
                 for name in ("window", "baseline") if seconds[name] % seconds["step"]]
    if seconds["baseline"] % seconds["window"]:
        problems.append("SENTINEL_ALERT_BASELINE must be a whole number of windows (SENTINEL_ALERT_WINDOW), e.g. 24h for a 1h window")
    return problems


@dataclass(frozen=True)
class SettingsRead:
    """The settings as read, with what was wrong with them."""

    settings: Settings  # every setting that was wrong (alone or together) at its default
    problems: list[str]  # one line each, naming the variable
    failing: frozenset[str]  # the fields left at their defaults: a check that reads one would judge a default


def read_settings(overrides: Mapping[str, object] | None = None, names: Mapping[str, str] | None = None) -> SettingsRead:
    """The environment's settings with `overrides` laid over them, and every problem with them at
    once; a problem with an override is named as `names` gives it (the command's flag that set it:
    the operator typed `--device`, not SENTINEL_DEVICE), else by its variable. Pydantic runs the checks of settings together only once every field parses, and the
    stream checks need a Settings: so each round leaves the settings it found wrong at their
    defaults and validates again, until the rest validate. A problem naming a setting already found
    wrong is a follow-on of its default, and is not said."""
    failing: set[str] = set()
    problems: list[str] = []
    while True:
        try:
            settings = Settings(**{**(overrides or {}), **defaults_of(failing)})
        except ValidationError as exc:
            found = error_problems(exc, names or {})
        else:
            return SettingsRead(settings, problems, frozenset(failing))
        problems += [problem for fields, problem in found if not fields & failing]
        named = set().union(*(fields for fields, _ in found))
        if named <= failing:  # a problem naming no setting left to default: nothing more can be judged
            return SettingsRead(Settings.model_construct(), problems, frozenset(Settings.model_fields))
        failing |= named


def defaults_of(fields: Collection[str]) -> dict[str, Any]:
    return {field: Settings.model_fields[field].get_default(call_default_factory=True) for field in fields}


def error_problems(exc: ValidationError, names: Mapping[str, str]) -> list[tuple[frozenset[str], str]]:
    """Each problem a ValidationError holds, with the fields it names: a field by its name in `names`
    where it has one, else by its variable. Never the value: a mistyped variable may hold a secret."""
    problems = []
    for error in exc.errors():
        text = error["msg"].removeprefix("Value error, ")
        if not error["loc"]:  # a check of several settings together: its lines name them
            problems += [(named_fields(line), line) for line in text.splitlines()]
            continue
        field = field_of(str(error["loc"][0]))
        name = names.get(field) or variable_name(field)
        hint = "" if field in names else link_address_hint(name, error.get("input"))
        problems.append((frozenset({field}), f"{name}: {text}{hint}"))
    return problems


def field_of(name: str) -> str:
    """The field a variable sets (SENTINEL_KAFKA_BROKER and KAFKA_BROKER: kafka_broker); a field's
    own name as it is (an override's error comes back under it)."""
    return _FIELD_OF_VARIABLE.get(name.upper(), name)


def named_fields(text: str) -> frozenset[str]:
    """The fields whose variables `text` names."""
    return frozenset(_FIELD_OF_VARIABLE[word] for word in re.findall(r"[A-Z][A-Z0-9_]*[A-Z0-9]", text) if word in _FIELD_OF_VARIABLE)


_FIELD_OF_VARIABLE = {
    **{f"SENTINEL_{name.upper()}": name for name in Settings.model_fields},
    **{str(choice).upper(): name for name, field in Settings.model_fields.items() for choice in getattr(field.validation_alias, "choices", ())},
}
_SETTING_VARIABLES = frozenset(name.upper() for name in _FIELD_OF_VARIABLE)


class _Reading:
    """Settings that note the fields read through them."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self.read: set[str] = set()

    def __getattr__(self, name: str) -> Any:
        self.read.add(name)
        return getattr(self._settings, name)


def problems_unless_reading(failing: Collection[str], check: Callable[[Settings], Iterable[str]], settings: Settings) -> list[str]:
    """What `check` finds in `settings`; nothing if it read one of the `failing` fields: those are at
    their defaults, named already, and a check judging a default would say a confusing follow-on."""
    if not failing:
        return list(check(settings))
    reading = _Reading(settings)
    problems = list(check(cast(Settings, reading)))
    return [] if reading.read & set(failing) else problems


def variable_name(field: str) -> str:
    """The environment variable that set `field`: one of its alias names if that is the one set
    (REDIS_URL for SENTINEL_REDIS_URL), else SENTINEL_<FIELD>. For messages: the name the user wrote."""
    alias = Settings.model_fields[field].validation_alias if field in Settings.model_fields else None
    if isinstance(alias, AliasChoices):
        names = [str(choice) for choice in alias.choices]
        set_now = {key.upper() for key in os.environ}
        return next((name for name in names if name.upper() in set_now), names[-1])
    return f"SENTINEL_{field.upper()}"


# Kubernetes gives every pod a Service's address as variables named after it: a Service
# `sentinel-redis` with a cluster IP sets SENTINEL_REDIS_SERVICE_HOST, SENTINEL_REDIS_PORT,
# SENTINEL_REDIS_PORT_6379_TCP_ADDR, ..., always with its <NAME>_SERVICE_HOST (a headless one, as
# deploy/k8s/redis-example's, sets none). What follows <NAME>_:
_SERVICE_LINK = re.compile(r"SERVICE_HOST|SERVICE_PORT(?:_\w+)?|PORT(?:_\d+_(?:TCP|UDP|SCTP)(?:_(?:PROTO|PORT|ADDR))?)?")
# Docker's legacy `--link CONTAINER:ALIAS` sets <ALIAS>_PORT, <ALIAS>_PORT_6379_TCP (and _ADDR,
# _PORT, _PROTO; a range's first port also _START, _PORT_START, _END, _PORT_END), <ALIAS>_ENV_<KEY>
# for each of the linked container's variables, and always <ALIAS>_NAME=/<container>/<alias>
# (moby daemon/links/links.go; <ALIAS> upper-cased, "-" as "_"). What follows <ALIAS>_:
_DOCKER_LINK = re.compile(r"NAME|ENV_\w+|PORT(?:_\d+_(?:TCP|UDP|SCTP)(?:_(?:ADDR|PORT|PROTO|START|END|PORT_START|PORT_END))?)?")
# <ALIAS>_NAME's value: the container being started, then the alias (Docker's names: letters,
# digits and _.- , a letter or digit first).
_DOCKER_LINK_NAME = re.compile(r"/[A-Za-z0-9][\w.-]*/([A-Za-z0-9][\w.-]*)")
# A link's address where a setting is expected: proto://ADDR:PORT (both kinds of link set one).
_LINK_ADDRESS = re.compile(r"(?:tcp|udp|sctp)://\S+:\d+")


def _links(environ: Mapping[str, str]) -> list[tuple[str, re.Pattern[str]]]:
    """Each link's <NAME> or <ALIAS> in `environ`, with the pattern of what follows it: a
    Kubernetes Service by its <NAME>_SERVICE_HOST, a Docker link by its <ALIAS>_NAME holding
    /<container>/<alias>, the alias itself. Not an alias that is a setting's own name: that is a
    mistyped setting holding a path (SENTINEL_ADAPTER_NAME=/models/sentinel_adapter)."""
    links = [(key[:-len("_SERVICE_HOST")], _SERVICE_LINK) for key in map(str.upper, environ) if key.endswith("_SERVICE_HOST")]
    for key, value in environ.items():
        alias = key.upper().removesuffix("_NAME")
        named = _DOCKER_LINK_NAME.fullmatch(value)
        if alias != key.upper() and named and named[1].upper().replace("-", "_") == alias and alias not in _SETTING_VARIABLES:
            links.append((alias, _DOCKER_LINK))
    return links


def link_address_hint(name: str, value: object) -> str:
    """Why a variable that is a setting's name might hold a link's address instead of the setting:
    a Kubernetes Service or Docker link named after it (a Service `sentinel-web` sets
    SENTINEL_WEB_PORT=tcp://IP:PORT). "" where the value has no such shape. Never the value."""
    if not (isinstance(value, str) and name.upper().endswith("_PORT") and _LINK_ADDRESS.fullmatch(value)):
        return ""
    link = name.upper().removesuffix("_PORT").lower()
    return (f" (it holds a link's address, proto://ADDR:PORT: a Kubernetes Service {link.replace('_', '-')!r} or a Docker "
            f"--link alias {link!r} sets {name.upper()}; turn service links off (the pod's enableServiceLinks: false) or rename the Service or alias)")


def unknown_variables(environ: Mapping[str, str], said: Collection[str] = ()) -> list[str]:
    """One line for each `SENTINEL_*` variable in `environ` that sets no setting, with the nearest
    one's name where a name is close: pydantic ignores such a variable, so a typo
    (SENTINEL_ALERT_THRESHOLD_NAT=14) would leave the default in force, unnoticed. Never the value.
    `said`: names another check already speaks of (a renamed setting). Kubernetes' service-link
    variables and Docker's legacy link variables are no typo and are left alone."""
    import difflib

    known = _SETTING_VARIABLES
    # Every link's <NAME>, each tried: a name split at its first _SERVICE_ or _PORT took Service
    # `sentinel-service`'s SENTINEL_SERVICE_PORT for Service `sentinel`'s, which is not there.
    links = _links(environ)
    problems = []
    for key in sorted(environ):
        name = key.upper()
        if not name.startswith("SENTINEL_") or name in known or name in said:
            continue
        if any(name.startswith(f"{link}_") and shape.fullmatch(name, len(link) + 1) for link, shape in links):
            continue
        near = difflib.get_close_matches(name, sorted(known), n=1, cutoff=0.8)
        problems.append(f"{key}: not a setting" + (f"; did you mean {near[0]}?" if near else ""))
    return problems


def redis_given() -> tuple[str, bool | None] | None:
    """The Redis URL and SENTINEL_REDIS_CLUSTER as the environment sets them, read by Settings' own
    environment source (its aliases, any case) and nothing else validated: so a command whose other
    settings do not validate can still judge the URL, and name every bad setting in one line. None:
    no URL set. The flag is None when it is set but not a boolean (its own error says so)."""
    found = {name.lower(): value for name, value in EnvSettingsSource(Settings)().items()}
    url = found.get("sentinel_redis_url", found.get("redis_url"))
    if not isinstance(url, str):
        return None
    try:
        cluster: bool | None = TypeAdapter(bool).validate_python(found.get("redis_cluster", False))
    except ValidationError:
        cluster = None
    return url, cluster


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
