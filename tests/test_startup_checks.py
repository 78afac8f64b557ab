"""Start-up checks: a setting that could only fail later (a Redis URL the client cannot use, SASL
without its credentials, alert durations that do not fit together, an Apprise URL Apprise cannot
load) is one `error:` line naming the variable the user set, exit 2, before the model loads or
anything connects, and never echoes a secret. No servers: nothing here may get as far as connecting."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import ValidationError

from stream.redis_client import url_problem
from stream.settings import Settings

SECRET = "s3cretZq8Wm2"


def sentinel(args: list[str], env_extra: dict[str, str], timeout: float = 120) -> subprocess.CompletedProcess:
    # No broker or Redis listens on port 9: a check that let a bad setting through would fail later,
    # differently (a connection error, exit 1, or a traceback).
    env = {k: v for k, v in os.environ.items() if not k.startswith("SENTINEL_") and k not in ("KAFKA_BROKER", "REDIS_URL")}
    env.update({"SENTINEL_BASE": "lexicon", **env_extra})
    return subprocess.run([sys.executable, "-m", "sentinel.cli", *args], capture_output=True, text=True, env=env, timeout=timeout)


def one_error_line(r: subprocess.CompletedProcess) -> str:
    output = r.stdout + r.stderr
    assert r.returncode == 2, output
    assert "Traceback" not in output and SECRET not in output, output
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), output
    return lines[0]


# --- Redis URLs (pure) ------------------------------------------------------------------------------


@pytest.mark.parametrize("url, cluster, expected", [
    (f"http://user:{SECRET}@x/0", False, "scheme http:// is not one of redis://, rediss://"),
    (f"redis://:{SECRET}@h:6379/1", True, "Redis Cluster has only database 0"),
    (f"redis://:{SECRET}@host:6379?ssl_ca_certs=/etc/ssl/certs/ca-certificates.crt", False, "TLS options (ssl_ca_certs) need a rediss:// URL"),
    (f"redis://:{SECRET}@host:6379?sssl_ca_certs=/x", False, "client does not take sssl_ca_certs"),
    (f"rediss://:{SECRET}@h1:7000?ssl_password=x", True, "Redis Cluster client does not take ssl_password"),
    (f"redis://:{SECRET}@h/abc", False, "the database in the path must be a number"),
    ("redis://a:1,b:2", False, "several Redis endpoints need SENTINEL_REDIS_CLUSTER=1"),
    # A password holding / ? or # unencoded: urllib would read part of it as the port and say so.
    (f"redis://u:s3c/{SECRET}@h:6379/0", False, "its host:port cannot be read"),
    (f"redis://u:{SECRET}?x@h:6379/0", False, "its host:port cannot be read"),
    (f"redis://:{SECRET}#x@h:6379/0", False, "its host:port cannot be read"),
    (f"redis://:{SECRET}", False, "its host:port cannot be read"),
    ("unix:///var/run/redis.sock", False, "scheme unix:// is not one of redis://, rediss://"),
    ("redis://a:6379?ssl_ca_certs=/ca.pem,b:6379", True, "TLS options (ssl_ca_certs) need a rediss:// URL"),
    ("redis://a:6379?bogus=1,b:6379", True, "Redis Cluster client does not take bogus"),
    # Would reach the cluster client as the string "false" (true), or twice (decode_responses).
    ("redis://a:6379?read_from_replicas=false,b:6379", True, "Redis Cluster client does not take read_from_replicas"),
    ("redis://a:6379?decode_responses=false,b:6379", True, "Redis Cluster client does not take decode_responses"),
    # A password whose part before an unencoded # or ? is all digits reads as a port.
    ("redis://user:1234#x@h:6379", False, "its host:port cannot be read"),
    ("redis://user:1234?x@h:6379", False, "its host:port cannot be read"),
])
def test_a_redis_url_the_client_cannot_use_is_named_without_its_secret(url, cluster, expected):
    problem = url_problem(url, cluster=cluster)
    assert problem is not None and expected in problem and SECRET not in problem, problem


@pytest.mark.parametrize("url, cluster", [
    (f"redis://:{SECRET}@h:6379/3", False),
    (f"rediss://:{SECRET}@h:6379?ssl_ca_certs=/ca.pem&ssl_cert_reqs=none&ssl_check_hostname=false", False),
    ("redis://h:6379?socket_timeout=3&max_connections=20", False),
    ("rediss://:pw@h1:7000?ssl_ca_certs=/ca.pem,h2:7001", True),
    ("h1:7000,h2:7001", True),
    # What a cluster client takes besides TLS: its own arguments and each node connection's.
    ("redis://a:6379?socket_timeout=5&health_check_interval=10&max_connections=50,b:6379", True),
    ("rediss://a:6379?socket_timeout=5&ssl_ca_certs=/ca.pem,b:6379", True),
])
def test_a_redis_url_the_client_takes_passes(url, cluster):
    assert url_problem(url, cluster=cluster) is None


# --- settings checked together (pure) ---------------------------------------------------------------


@pytest.mark.parametrize("values, expected", [
    ({"alert_resolve_z": 3.0, "alert_fire_z": 3.0}, "SENTINEL_ALERT_RESOLVE_Z (3) must be below SENTINEL_ALERT_FIRE_Z (3)"),
    ({"alert_baseline": "90m"}, "SENTINEL_ALERT_BASELINE must be a whole number of windows (SENTINEL_ALERT_WINDOW)"),
    ({"alert_half_life": "0m"}, "SENTINEL_ALERT_HALF_LIFE must be longer than zero"),
    ({"alert_window": "7m", "alert_step": "2m"}, "SENTINEL_ALERT_WINDOW must be a multiple of SENTINEL_ALERT_STEP"),
    ({"kafka_security_protocol": "SASL_SSL"}, "SENTINEL_KAFKA_SECURITY_PROTOCOL=SASL_SSL needs SENTINEL_KAFKA_SASL_USERNAME and SENTINEL_KAFKA_SASL_PASSWORD"),
    ({"kafka_security_protocol": "SASL_PLAINTEXT", "kafka_sasl_password": SECRET}, "needs SENTINEL_KAFKA_SASL_USERNAME"),
])
def test_settings_wrong_together_name_their_variables(values, expected):
    with pytest.raises(ValidationError) as info:
        Settings(**values)
    assert expected in str(info.value) and SECRET not in str(info.value), str(info.value)


def test_every_setting_wrong_together_is_named_at_once_each_its_own_problem():
    from stream.settings import read_settings

    problems = read_settings(dict(kafka_security_protocol="SASL_SSL", kafka_sasl_password=SECRET, alert_resolve_z=3.5, alert_half_life="0m",
                                  alert_window="7m", alert_step="2m")).problems
    assert problems == [
        "SENTINEL_KAFKA_SECURITY_PROTOCOL=SASL_SSL needs SENTINEL_KAFKA_SASL_USERNAME and SENTINEL_KAFKA_SASL_PASSWORD",
        "SENTINEL_ALERT_RESOLVE_Z (3.5) must be below SENTINEL_ALERT_FIRE_Z (3) (hysteresis), e.g. fire 3, resolve 1.5",
        "SENTINEL_ALERT_HALF_LIFE must be longer than zero",
        "SENTINEL_ALERT_WINDOW must be a multiple of SENTINEL_ALERT_STEP (120 s)",
        "SENTINEL_ALERT_BASELINE must be a whole number of windows (SENTINEL_ALERT_WINDOW), e.g. 24h for a 1h window",
    ], problems
    assert SECRET not in " ".join(problems)
    # A zero step is named, and no grid is judged by it (nor divided by it): not the window's 90 s
    # against the default step it is left at. What does not involve the step is still judged.
    assert read_settings({"alert_step": "0m", "alert_window": "90s"}).problems == ["SENTINEL_ALERT_STEP must be longer than zero"]
    assert read_settings({"alert_step": "0m", "alert_window": "7m"}).problems == [
        "SENTINEL_ALERT_STEP must be longer than zero",
        "SENTINEL_ALERT_BASELINE must be a whole number of windows (SENTINEL_ALERT_WINDOW), e.g. 24h for a 1h window"]


# --- a setting that does not parse hides none of the others (pure) ----------------------------------


def test_a_field_that_does_not_parse_is_named_with_the_settings_wrong_together_and_the_stream_checks():
    from sentinel.cli import stream_problems
    from stream.settings import read_settings

    found = read_settings({"batch_size": 0, "alert_resolve_z": 5, "bucket": "0s", "device": SECRET})
    assert found.problems == [
        "SENTINEL_DEVICE: use auto, cpu, cuda or cuda:N",
        "SENTINEL_BATCH_SIZE: Input should be greater than or equal to 1",
        "SENTINEL_ALERT_RESOLVE_Z (5) must be below SENTINEL_ALERT_FIRE_Z (3) (hysteresis), e.g. fire 3, resolve 1.5",
    ], found.problems
    # The settings the stream checks judge: each wrong one at its default, the others as given.
    assert (found.settings.batch_size, found.settings.device, found.settings.alert_resolve_z, found.settings.bucket) == (64, "auto", 1.5, "0s")
    assert found.failing == {"batch_size", "device", "alert_resolve_z", "alert_fire_z"}
    assert stream_problems(found.settings, "worker", found.failing) == ["SENTINEL_BUCKET: must be at least 1s"]
    assert SECRET not in " ".join(found.problems)


def test_a_check_that_reads_a_setting_already_named_wrong_is_skipped_not_said_as_a_follow_on():
    from sentinel.cli import stream_problems
    from stream.settings import read_settings

    # The hysteresis judged against the default fire z would be a confusing follow-on of the fire z's own error.
    assert read_settings({"alert_fire_z": "high", "alert_resolve_z": 3.5}).problems == [
        "SENTINEL_ALERT_FIRE_Z: Input should be a valid number, unable to parse string as a number"]
    # The claim timeout judged against the retry delays of the default attempts, which are not what
    # the operator meant: skipped. The window's own duration, which reads no wrong setting: named.
    found = read_settings({"notify_attempts": 0, "notify_claim_idle": 40, "alert_thaw": "soon"})
    assert found.problems == ["SENTINEL_NOTIFY_ATTEMPTS: Input should be greater than or equal to 1"]
    assert stream_problems(found.settings, "reader", found.failing) == [
        "SENTINEL_ALERT_THAW: bad duration 'soon'; use a number and one of s, m, h, d (e.g. 15m)"]
    assert stream_problems(found.settings, "reader") == [  # what the skip leaves out
        "SENTINEL_ALERT_THAW: bad duration 'soon'; use a number and one of s, m, h, d (e.g. 15m)",
        "SENTINEL_NOTIFY_CLAIM_IDLE (40 s) must exceed the notification retry delays (15 s) by more than 30 s"]
    # A step wrong together: the other alert durations are still each judged, the config they make is not.
    found = read_settings({"alert_step": "0m", "alert_half_life": "soon"})
    assert found.problems == ["SENTINEL_ALERT_STEP must be longer than zero"]
    assert stream_problems(found.settings, "reader", found.failing) == [
        "SENTINEL_ALERT_HALF_LIFE: bad duration 'soon'; use a number and one of s, m, h, d (e.g. 15m)"]


def test_the_settings_redis_url_is_judged_naming_its_variable():
    from stream.redis_client import settings_problem

    problem = settings_problem(Settings(redis_url=f"redis://:{SECRET}@h:6379/1", redis_cluster=True))
    assert problem is not None and "REDIS_URL: " in problem and "Redis Cluster has only database 0" in problem and SECRET not in problem
    assert settings_problem(Settings(redis_url="redis://h:6379/1")) is None and settings_problem(Settings()) is None


def test_settings_right_together_pass():
    Settings(kafka_security_protocol="SASL_SSL", kafka_sasl_username="u", kafka_sasl_password=SECRET,
             alert_window="30m", alert_baseline="12h", alert_step="5m", alert_fire_z=2.5, alert_resolve_z=1.0)


# --- the command line: the variable the user set, exit 2, before the model loads ----------------------


@pytest.mark.parametrize("env, expected", [
    ({"KAFKA_BROKER": "kafka:abc", "REDIS_URL": "redis://127.0.0.1:9/0"}, "error: invalid settings: KAFKA_BROKER: a comma-separated list"),
    ({"SENTINEL_KAFKA_BROKER": "kafka:abc", "REDIS_URL": "redis://127.0.0.1:9/0"}, "error: invalid settings: SENTINEL_KAFKA_BROKER: a comma"),
    ({"KAFKA_BROKER": "127.0.0.1:9", "REDIS_URL": f"http://user:{SECRET}@x/0"}, "error: invalid settings: REDIS_URL: scheme http://"),
    ({"KAFKA_BROKER": "127.0.0.1:9", "SENTINEL_REDIS_URL": f"redis://:{SECRET}@127.0.0.1:9?ssl_ca_certs=/etc/ssl/certs/ca.crt"},
     "error: invalid settings: SENTINEL_REDIS_URL: TLS options (ssl_ca_certs) need a rediss:// URL"),
    ({"KAFKA_BROKER": "127.0.0.1:9", "REDIS_URL": "redis://127.0.0.1:9/1", "SENTINEL_REDIS_CLUSTER": "1"},
     "error: invalid settings: REDIS_URL: Redis Cluster has only database 0"),
    ({"KAFKA_BROKER": "127.0.0.1:9", "REDIS_URL": "redis://127.0.0.1:9/0", "SENTINEL_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
      "SENTINEL_KAFKA_SASL_PASSWORD": SECRET}, "needs SENTINEL_KAFKA_SASL_USERNAME and SENTINEL_KAFKA_SASL_PASSWORD"),
    ({"KAFKA_BROKER": "127.0.0.1:9", "REDIS_URL": "redis://127.0.0.1:9/0", "SENTINEL_ALERT_RESOLVE_Z": "3.5"},
     "SENTINEL_ALERT_RESOLVE_Z (3.5) must be below SENTINEL_ALERT_FIRE_Z (3)"),
])
def test_the_worker_refuses_a_bad_setting_in_one_line_naming_the_variable_set(env, expected):
    line = one_error_line(sentinel(["worker"], env))
    assert expected in line, line


@pytest.mark.parametrize("args, env, expected", [
    (["worker"], {"KAFKA_BROKER": "kafka:abc", "REDIS_URL": f"http://user:{SECRET}@x/0", "SENTINEL_BATCH_SIZE": "0"},
     ["KAFKA_BROKER: a comma-separated list", "SENTINEL_BATCH_SIZE: ", "REDIS_URL: scheme http://"]),
    # Settings wrong together, beside the URL.
    (["worker"], {"KAFKA_BROKER": "127.0.0.1:9", "SENTINEL_REDIS_URL": f"redis://:{SECRET}@127.0.0.1:9/x", "SENTINEL_ALERT_RESOLVE_Z": "3.5"},
     ["SENTINEL_ALERT_RESOLVE_Z (3.5) must be below", "SENTINEL_REDIS_URL: the database in the path must be a number"]),
    # A command's option that does not validate, beside the URL: named as the operator typed it.
    (["classify", "--device", "tpu", "BTC up"], {"REDIS_URL": f"redis://:{SECRET}@127.0.0.1:9?ssl_ca_certs=/ca.crt"},
     ["--device: use auto, cpu, cuda or cuda:N", "REDIS_URL: TLS options (ssl_ca_certs) need a rediss:// URL"]),
    # Options and variables together: each by the name it was given as; an option wins over its variable.
    (["classify", "--dtype", "half", "--batch-size", "2", "BTC up"], {"SENTINEL_QUANTIZE": "2bit", "SENTINEL_DTYPE": "float32"},
     ["--dtype: Input should be 'auto'", "SENTINEL_QUANTIZE: Input should be 'none'"]),
    (["bench", "classify", "--quantize", "2bit"], {"SENTINEL_DEVICE": "tpu"},
     ["SENTINEL_DEVICE: use auto", "--quantize: Input should be 'none'"]),
    (["windows", "--scope", "all"], {"REDIS_URL": "redis://h1:6379,h2:6379", "SENTINEL_REDIS_CLUSTER": "maybe", "SENTINEL_DEVICE": "tpu"},
     ["SENTINEL_REDIS_CLUSTER: ", "SENTINEL_DEVICE: use auto"]),  # the URL waits for the flag it is judged by
    # The URL the settings take (SENTINEL_REDIS_URL before REDIS_URL) is the one judged.
    (["worker"], {"KAFKA_BROKER": "kafka:abc", "SENTINEL_REDIS_URL": "redis://127.0.0.1:9/0", "REDIS_URL": f"http://user:{SECRET}@x/0"},
     ["KAFKA_BROKER: a comma-separated list"]),
])
def test_every_bad_setting_and_the_redis_url_are_named_in_one_line(args, env, expected):
    """A bad REDIS_URL is named with the other bad settings, not after they are fixed."""
    line = one_error_line(sentinel(args, env))
    assert line.startswith("error: invalid settings: "), line
    problems = line.removeprefix("error: invalid settings: ").split("; ")
    assert len(problems) == len(expected) and all(any(p.startswith(e) for p in problems) for e in expected), line


@pytest.mark.parametrize("command", [["worker"], ["windows"]])
def test_a_field_error_a_setting_wrong_together_and_a_stream_check_are_named_in_one_start(command):
    # Before, only the batch size was named: pydantic checks settings together once every field
    # parses, and the stream checks ran on parsed settings only. Three restarts for three settings.
    r = sentinel(command, {"KAFKA_BROKER": "127.0.0.1:9", "REDIS_URL": "redis://127.0.0.1:9/0", "SENTINEL_BATCH_SIZE": "0",
                           "SENTINEL_ALERT_RESOLVE_Z": "5", "SENTINEL_BUCKET": "0s"})
    assert one_error_line(r) == (
        "error: invalid settings: SENTINEL_BATCH_SIZE: Input should be greater than or equal to 1; "
        "SENTINEL_ALERT_RESOLVE_Z (5) must be below SENTINEL_ALERT_FIRE_Z (3) (hysteresis), e.g. fire 3, resolve 1.5; "
        "SENTINEL_BUCKET: must be at least 1s")


# --- variables that set nothing: a typo would leave the default in force, unnoticed ----------------


def test_a_sentinel_variable_that_names_no_setting_is_said_with_the_nearest_name_never_its_value():
    from stream.settings import unknown_variables

    assert unknown_variables({"SENTINEL_ALERT_THRESHOLD_NAT": SECRET, "sentinel_alert_fire_zz": "4", "SENTINEL_FROBNICATE": "1"}) == [
        "SENTINEL_ALERT_THRESHOLD_NAT: not a setting; did you mean SENTINEL_ALERT_THRESHOLD_NATS?",
        "SENTINEL_FROBNICATE: not a setting",
        "sentinel_alert_fire_zz: not a setting; did you mean SENTINEL_ALERT_FIRE_Z?",
    ]


def test_settings_their_aliases_other_variables_and_names_said_elsewhere_are_not_unknown():
    from stream.settings import unknown_variables

    environ = {"SENTINEL_ALERT_THRESHOLD_NATS": "14", "sentinel_base": "lexicon", "KAFKA_BROKER": "k:9092", "REDIS_URL": "redis://r",
               "SENTINEL_REDIS_URL": "redis://r", "HOME": "/root", "SENTINEL_ALERT_MIN_SCORE_DELTA": "0.1"}
    assert unknown_variables(environ, said={"SENTINEL_ALERT_MIN_SCORE_DELTA"}) == []


def test_kubernetes_service_links_are_not_taken_for_typos():
    # A Service `sentinel-redis` with a cluster IP and Strimzi's `sentinel-kafka-kafka-bootstrap` give
    # every pod in the namespace these, each Service always with its <NAME>_SERVICE_HOST.
    from stream.settings import unknown_variables

    links = {
        "SENTINEL_REDIS_SERVICE_HOST": "10.0.0.7", "SENTINEL_REDIS_SERVICE_PORT": "6379", "SENTINEL_REDIS_SERVICE_PORT_REDIS": "6379",
        "SENTINEL_REDIS_PORT": "tcp://10.0.0.7:6379", "SENTINEL_REDIS_PORT_6379_TCP": "tcp://10.0.0.7:6379",
        "SENTINEL_REDIS_PORT_6379_TCP_PROTO": "tcp", "SENTINEL_REDIS_PORT_6379_TCP_PORT": "6379", "SENTINEL_REDIS_PORT_6379_TCP_ADDR": "10.0.0.7",
        "SENTINEL_KAFKA_KAFKA_BOOTSTRAP_SERVICE_HOST": "10.0.0.8", "SENTINEL_KAFKA_KAFKA_BOOTSTRAP_SERVICE_PORT_TCP_REPLICATION": "9091",
        "SENTINEL_KAFKA_KAFKA_BOOTSTRAP_PORT_9092_TCP_ADDR": "10.0.0.8",
    }
    assert unknown_variables(links) == []
    # A Service whose name holds SERVICE or PORT: `sentinel-service`'s links are its own, not those of
    # a Service `sentinel` that is not there.
    links = {"SENTINEL_SERVICE_SERVICE_HOST": "10.0.0.9", "SENTINEL_SERVICE_SERVICE_PORT": "80", "SENTINEL_SERVICE_PORT": "tcp://10.0.0.9:80",
             "SENTINEL_SERVICE_PORT_80_TCP": "tcp://10.0.0.9:80", "SENTINEL_SERVICE_PORT_80_TCP_ADDR": "10.0.0.9"}
    assert unknown_variables(links) == []
    # Without its Service's _SERVICE_HOST a name ending in _PORT is no service link: a typo, said.
    assert unknown_variables({"SENTINEL_CONSOLE_WEB_PORT": "8080"}) == ["SENTINEL_CONSOLE_WEB_PORT: not a setting; did you mean SENTINEL_CONSOLE_PORT?"]


def docker_link(alias: str, *ports: str, env: tuple[str, ...] = ()) -> dict[str, str]:
    """What Docker's legacy `--link CONTAINER:ALIAS` sets (moby daemon/links/links.go): per port
    (e.g. "6379/tcp") <ALIAS>_PORT_6379_TCP and its _ADDR, _PORT, _PROTO, the first as <ALIAS>_PORT;
    a range its _START, _PORT_START, _END, _PORT_END; always <ALIAS>_NAME; <ALIAS>_ENV_<KEY> each."""
    name = alias.upper().replace("-", "_")
    links = {f"{name}_NAME": f"/sentinel-worker/{alias}"}
    for i, port in enumerate(ports):
        number, proto = port.split("/")
        prefix = f"{name}_PORT_{number}_{proto.upper()}"
        if i == 0:
            links[f"{name}_PORT"] = f"{proto}://172.17.0.5:{number}"
        links |= {prefix: f"{proto}://172.17.0.5:{number}", f"{prefix}_ADDR": "172.17.0.5", f"{prefix}_PORT": number, f"{prefix}_PROTO": proto}
    if len(ports) > 1:  # consecutive ports of one protocol: a range, named by its first
        first, last = ports[0].split("/")[0], ports[-1].split("/")[0]
        prefix = f"{name}_PORT_{first}_TCP"
        links |= {f"{prefix}_START": f"tcp://172.17.0.5:{first}", f"{prefix}_PORT_START": first,
                  f"{prefix}_END": f"tcp://172.17.0.5:{last}", f"{prefix}_PORT_END": last}
    return links | {f"{name}_ENV_{key}": "x" for key in env}


def test_docker_link_variables_are_not_taken_for_typos():
    # Were refused: `docker run --link redis:sentinel_redis` stopped the worker, "SENTINEL_REDIS_PORT:
    # not a setting; did you mean SENTINEL_WEB_PORT?".
    from stream.settings import unknown_variables

    links = docker_link("sentinel_redis", "6379/tcp", env=("REDIS_VERSION", "GOSU_VERSION", "redis_password")) | \
        docker_link("sentinel-kafka", "9092/tcp", "9093/tcp", "9094/tcp")
    assert "SENTINEL_KAFKA_PORT_9092_TCP_PORT_START" in links and "SENTINEL_REDIS_ENV_REDIS_VERSION" in links
    assert unknown_variables(links | {"SENTINEL_ALERT_THRESHOLD_NATS": "14"}) == []


def test_link_shapes_without_their_link_are_still_typos_and_a_link_excuses_only_its_own():
    from stream.settings import unknown_variables

    # No <ALIAS>_NAME, or one whose value is no link's (/container/alias): each said as today.
    alone = {"SENTINEL_REDIS_PORT": "tcp://172.17.0.5:6379", "SENTINEL_REDIS_PORT_6379_TCP_ADDR": "172.17.0.5", "SENTINEL_REDIS_ENV_X": "1"}
    assert len(unknown_variables(alone)) == 3
    assert len(unknown_variables(alone | {"SENTINEL_REDIS_NAME": "redis"})) == 4
    assert len(unknown_variables(alone | {"SENTINEL_REDIS_NAME": "/sentinel-worker/sentinel_kafka"})) == 4
    # A link `sentinel_redis` excuses its own names, not a mistyped setting beside it, whatever it holds.
    links = docker_link("sentinel_redis", "6379/tcp")
    assert unknown_variables(links | {"SENTINEL_CONSOLE_WEB_PORT": "tcp://172.17.0.5:8080", "SENTINEL_ALERT_THRESHOLD_NAT": SECRET}) == [
        "SENTINEL_ALERT_THRESHOLD_NAT: not a setting; did you mean SENTINEL_ALERT_THRESHOLD_NATS?",
        "SENTINEL_CONSOLE_WEB_PORT: not a setting; did you mean SENTINEL_CONSOLE_PORT?",
    ]
    # A link `sentinel` is every SENTINEL_ENV_*'s, but not a setting's mistyped name that is no link shape.
    assert unknown_variables(docker_link("sentinel", "6066/tcp", env=("A",)) | {"SENTINEL_WEB_PROT": "6066"}) == [
        "SENTINEL_WEB_PROT: not a setting; did you mean SENTINEL_WEB_PORT?"]


def test_a_mistyped_setting_holding_a_path_is_no_docker_link():
    # A link is known by <ALIAS>_NAME=/CONTAINER/ALIAS; any value ending in /<alias> was taken for
    # one, so SENTINEL_ADAPTER_NAME=/models/adapters/sentinel-adapter (meaning SENTINEL_ADAPTER)
    # was excused, with the setting's default in force, as were its _PORT and _ENV_* beside it.
    from stream.settings import unknown_variables

    for path in ("/models/adapters/sentinel-adapter", "/models/sentinel_adapter"):
        assert unknown_variables({"SENTINEL_ADAPTER_NAME": path, "SENTINEL_ADAPTER_ENV_X": "1"}) == [
            "SENTINEL_ADAPTER_ENV_X: not a setting; did you mean SENTINEL_ADAPTER?",
            "SENTINEL_ADAPTER_NAME: not a setting; did you mean SENTINEL_ADAPTER?"], path
    # A real link's names are still left alone, whatever its container is called.
    assert unknown_variables(docker_link("sentinel_redis", "6379/tcp") | {"SENTINEL_REDIS_NAME": "/my.worker_2/sentinel_redis"}) == []


@pytest.mark.parametrize("variable, link", [("SENTINEL_WEB_PORT", "sentinel_web"), ("SENTINEL_CONSOLE_PORT", "sentinel_console")])
def test_a_link_address_in_a_settings_own_variable_names_its_likely_cause(variable, link):
    # A Service `sentinel-web` or `docker run --link web:sentinel_web` sets SENTINEL_WEB_PORT to an
    # address: it read "Input should be a valid integer" and nothing more.
    line = one_error_line(sentinel(["worker"], {"KAFKA_BROKER": "127.0.0.1:9", "REDIS_URL": "redis://127.0.0.1:9/0",
                                                **docker_link(link, "6066/tcp")}))
    assert line.startswith(f"error: invalid settings: {variable}: Input should be a valid integer"), line
    assert f"a Docker --link alias '{link}' sets {variable}" in line and f"Kubernetes Service '{link.replace('_', '-')}'" in line, line
    assert "172.17.0.5" not in line, line  # never the value


@pytest.mark.parametrize("command", [["worker"], ["run"]])
def test_the_worker_and_run_refuse_a_mistyped_variable_with_the_other_bad_settings(command, tmp_path):
    # Before, SENTINEL_ALERT_THRESHOLD_NAT=14 started a worker alerting at the default 11 nats.
    if command == ["run"]:
        (tmp_path / "posts.jsonl").write_text('{"id": "p1", "text": "BTC up", "created_at": "2026-03-04T12:00:00Z"}\n')
        command = ["run", str(tmp_path / "posts.jsonl")]
    line = one_error_line(sentinel(command, {"KAFKA_BROKER": "127.0.0.1:9", "REDIS_URL": "redis://127.0.0.1:9/0",
                                             "SENTINEL_ALERT_THRESHOLD_NAT": SECRET, "SENTINEL_BATCH_SIZE": "0"}))
    assert line == ("error: invalid settings: SENTINEL_BATCH_SIZE: Input should be greater than or equal to 1; "
                    "SENTINEL_ALERT_THRESHOLD_NAT: not a setting; did you mean SENTINEL_ALERT_THRESHOLD_NATS?"), line


# --- the model's directories: named with the other settings, before anything loads ----------------


def test_a_model_name_that_can_only_be_a_directory_and_is_none_says_why(tmp_path):
    from model.paths import missing_dir

    (tmp_path / "a-file").write_text("x")
    assert missing_dir(str(tmp_path / "nope")) == "no such directory"
    assert missing_dir(str(tmp_path / "a-file")) == "not a directory"
    assert [missing_dir(name) for name in (str(tmp_path), "smollm2", "default", "none", "meta-llama/Llama-2-7b-hf")] == [None] * 5


@pytest.mark.parametrize("args, env, expected", [
    # The gpu overlay started before its weights and adapter are on the volume, beside a bad threshold:
    # before, the threshold alone, then after a restart the adapter, then after another the base.
    (["worker"], {"SENTINEL_BASE": "/models/Llama-2-7b-hf", "SENTINEL_ADAPTER": "/models/adapters/llama2-7b-v1", "SENTINEL_ALERT_FIRE_Z": "x"},
     "SENTINEL_ALERT_FIRE_Z: Input should be a valid number, unable to parse string as a number; "
     "SENTINEL_BASE: no such directory; SENTINEL_ADAPTER: no such directory"),
    (["classify", "--base", "./no-such-base", "BTC up"], {"SENTINEL_ADAPTER": "/no/such/adapter", "SENTINEL_BATCH_SIZE": "0"},
     "SENTINEL_BATCH_SIZE: Input should be greater than or equal to 1; --base: no such directory; SENTINEL_ADAPTER: no such directory"),
])
def test_a_missing_base_or_adapter_directory_is_named_with_the_other_settings(args, env, expected):
    line = one_error_line(sentinel(args, {"KAFKA_BROKER": "127.0.0.1:9", "REDIS_URL": "redis://127.0.0.1:9/0", **env}))
    assert line == f"error: invalid settings: {expected}", line


def test_the_lexicon_scorer_loads_no_adapter_so_its_directory_is_not_judged():
    from sentinel.cli import model_dir_problems

    assert model_dir_problems(Settings(base="lexicon", adapter="/no/such/adapter"), {}) == []
    assert model_dir_problems(Settings(base="/no/such/base", adapter="/no/such/adapter"), {"base": "--base"}) == [
        "--base: no such directory", "SENTINEL_ADAPTER: no such directory"]


def test_a_command_that_reads_redis_refuses_a_redis_url_with_tls_options_on_redis_scheme():
    line = one_error_line(sentinel(["windows"], {"REDIS_URL": f"redis://:{SECRET}@127.0.0.1:9?ssl_ca_certs=/etc/ssl/certs/ca.crt"}))
    assert "REDIS_URL: TLS options (ssl_ca_certs) need a rediss:// URL" in line, line


def test_a_rediss_urls_tls_file_that_cannot_load_is_named_by_its_option_without_the_path(tmp_path):
    # Before, the first connection said `Error 2 connecting to HOST:PORT. No such file or directory.`:
    # neither the option nor the variable.
    import certifi

    from stream.redis_client import url_setting_problem

    missing, garbage = tmp_path / "no-such-ca.pem", tmp_path / "garbage.pem"
    garbage.write_text("not a certificate\n")
    base = f"rediss://:{SECRET}@h:6380/0"
    for url, expected in [
        (f"{base}?ssl_ca_certs={missing}", "REDIS_URL: cannot load the TLS file of ssl_ca_certs (No such file or directory)"),
        (f"{base}?ssl_ca_certs={garbage}", "REDIS_URL: cannot load the TLS file of ssl_ca_certs ("),
        (f"{base}?ssl_certfile={missing}&ssl_keyfile={missing}", "REDIS_URL: cannot load the TLS file of ssl_certfile and ssl_keyfile ("),
        (f"rediss://:{SECRET}@h1:7000?ssl_ca_certs={missing},h2:7001", "REDIS_URL: cannot load the TLS file of ssl_ca_certs ("),
    ]:
        problem = url_setting_problem(url, cluster="," in url)
        assert problem is not None and problem.startswith(expected) and SECRET not in problem and str(tmp_path) not in problem, (url, problem)
    assert url_setting_problem(f"{base}?ssl_ca_certs={certifi.where()}", cluster=False) is None
    assert url_setting_problem("redis://h:6379/0?socket_timeout=3", cluster=False) is None  # no TLS, nothing to load


def client_pki(where: Path, passphrase: str | None) -> tuple[Path, Path]:
    """A self-signed client certificate and its key, encrypted with `passphrase` where one is given."""
    key_args = ["-passout", f"pass:{passphrase}"] if passphrase else ["-nodes"]
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", *key_args,
                    "-keyout", "client.key", "-out", "client.pem", "-subj", "/CN=client", "-days", "1"],
                   cwd=where, check=True, capture_output=True)
    return where / "client.pem", where / "client.key"


def test_a_rediss_key_alone_or_encrypted_without_its_password_is_refused_by_its_option(tmp_path):
    """ssl_keyfile without ssl_certfile was a TypeError at the first connection, naming no option;
    an encrypted key without ssl_password had OpenSSL ask for its passphrase on the terminal."""
    from stream.redis_client import url_setting_problem

    cert, key = client_pki(tmp_path, passphrase=SECRET)
    base = f"rediss://:{SECRET}@h:6380/0"
    expected = {
        f"{base}?ssl_keyfile={key}": "REDIS_URL: ssl_keyfile needs ssl_certfile (the client certificate the key belongs to)",
        f"{base}?ssl_certfile={cert}&ssl_keyfile={key}": "REDIS_URL: the private key of ssl_certfile and ssl_keyfile is encrypted and "
                                                         "no ssl_password is set: add ssl_password to the URL's query (percent-encoded), "
                                                         "or give an unencrypted key",
        f"rediss://:{SECRET}@h1:7000?ssl_certfile={cert}&ssl_keyfile={key},h2:7001": (
            "REDIS_URL: the private key of ssl_certfile and ssl_keyfile is encrypted: the Redis Cluster client takes no ssl_password, "
            "give an unencrypted key"),
    }
    for url, said in expected.items():
        assert url_setting_problem(url, cluster="," in url) == said, url
    assert url_setting_problem(f"{base}?ssl_certfile={cert}&ssl_keyfile={key}&ssl_password={SECRET}", cluster=False) is None
    wrong = url_setting_problem(f"{base}?ssl_certfile={cert}&ssl_keyfile={key}&ssl_password=not-it", cluster=False)
    # Said as the passphrase that does not open the key: OpenSSL's "(PEM lib)" sent the operator
    # after the files until session 55.
    assert wrong == ("REDIS_URL: ssl_password does not open the private key of ssl_certfile and ssl_keyfile (not the passphrase it "
                     "is encrypted with, or a cipher this OpenSSL does not decrypt, such as RC2 or DES): set the key's passphrase, "
                     "percent-encoded, or give an unencrypted key or one encrypted with AES"), wrong
    # A certificate the key does not belong to is not taken for a wrong passphrase, even with one set.
    (tmp_path / "other").mkdir()
    other_cert, _ = client_pki(tmp_path / "other", passphrase=SECRET)
    mismatched = url_setting_problem(f"{base}?ssl_certfile={other_cert}&ssl_keyfile={key}&ssl_password={SECRET}", cluster=False)
    assert mismatched is not None and mismatched.startswith("REDIS_URL: cannot load the TLS file of ssl_certfile and ssl_keyfile ("), mismatched
    assert "ssl_password" not in mismatched and SECRET not in mismatched, mismatched
    (tmp_path / "plain").mkdir()
    plain_cert, plain_key = client_pki(tmp_path / "plain", passphrase=None)
    assert url_setting_problem(f"{base}?ssl_certfile={plain_cert}&ssl_keyfile={plain_key}", cluster=False) is None


def test_a_rediss_key_that_its_passphrase_opens_is_not_called_a_wrong_ssl_password(tmp_path):
    """Only a passphrase that does not decrypt the key is said as one: OpenSSL asks for it for any
    encrypted key, so a load that fails after that (the key of another type than its certificate,
    an encrypted key OpenSSL 3 cannot decrypt at all) was said as `ssl_password does not open the
    private key ... (the key is encrypted with another passphrase)` in session 55's first cut, and
    the operator went after a passphrase that was right."""
    from stream.redis_client import url_setting_problem

    cert, key = client_pki(tmp_path, passphrase=SECRET)  # an EC key
    (tmp_path / "rsa").mkdir()
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-passout", f"pass:{SECRET}", "-keyout", "client.key",
                    "-out", "client.pem", "-subj", "/CN=client", "-days", "1"], cwd=tmp_path / "rsa", check=True, capture_output=True)
    base = f"rediss://:{SECRET}@h:6380/0"
    # The EC key with the RSA key's certificate, each with its own right passphrase: a key of another type.
    for other_cert, other_key in ((tmp_path / "rsa" / "client.pem", key), (cert, tmp_path / "rsa" / "client.key")):
        said = url_setting_problem(f"{base}?ssl_certfile={other_cert}&ssl_keyfile={other_key}&ssl_password={SECRET}", cluster=False)
        assert said is not None and said.startswith("REDIS_URL: cannot load the TLS file of ssl_certfile and ssl_keyfile ("), said
        assert "ssl_password" not in said and SECRET not in said, said
    # The right passphrase on a key encrypted with RC2 (PKCS#12's old default), which OpenSSL 3
    # decrypts only with its legacy provider: not "encrypted with another passphrase".
    legacy = subprocess.run(["openssl", "pkcs8", "-topk8", "-in", str(key), "-passin", f"pass:{SECRET}", "-v1", "PBE-SHA1-RC2-40",
                             "-passout", f"pass:{SECRET}", "-out", "rc2.key", "-provider", "legacy", "-provider", "default"],
                            cwd=tmp_path, capture_output=True, text=True)
    if legacy.returncode:
        pytest.skip(f"this openssl makes no RC2 key: {legacy.stderr[-300:]}")
    said = url_setting_problem(f"{base}?ssl_certfile={cert}&ssl_keyfile={tmp_path / 'rc2.key'}&ssl_password={SECRET}", cluster=False)
    assert said is not None and said.startswith("REDIS_URL: ssl_password does not open the private key of ssl_certfile and ssl_keyfile ("), said
    assert "cipher this OpenSSL does not decrypt, such as RC2 or DES" in said and SECRET not in said, said


def test_a_command_on_a_terminal_refuses_an_encrypted_rediss_key_and_asks_for_no_passphrase(tmp_path):
    """On a terminal, OpenSSL's prompt (`Enter PEM pass phrase:`) held the command at start-up until
    someone typed; a pod has none, and a CLI in a script hung. Run here with a pseudo-terminal as
    the controlling terminal, where the prompt reads from /dev/tty."""
    import fcntl
    import pty
    import select
    import termios
    import time

    cert, key = client_pki(tmp_path, passphrase=SECRET)
    env = {k: v for k, v in os.environ.items() if not k.startswith("SENTINEL_") and k not in ("KAFKA_BROKER", "REDIS_URL")}
    env.update(SENTINEL_BASE="lexicon", REDIS_URL=f"rediss://127.0.0.1:9/0?ssl_certfile={cert}&ssl_keyfile={key}")
    master, slave = pty.openpty()

    def take_the_terminal() -> None:  # after start_new_session's setsid: the pty becomes /dev/tty
        fcntl.ioctl(0, termios.TIOCSCTTY, 0)

    proc = subprocess.Popen([sys.executable, "-m", "sentinel.cli", "windows"], env=env, stdin=slave, stdout=slave, stderr=slave,
                            start_new_session=True, preexec_fn=take_the_terminal)
    os.close(slave)
    said = b""
    try:
        deadline = time.monotonic() + 120
        while proc.poll() is None and time.monotonic() < deadline and b"pass phrase" not in said:
            if select.select([master], [], [], 0.2)[0]:
                with contextlib.suppress(OSError):  # EIO once the command has exited
                    said += os.read(master, 4096)
        while select.select([master], [], [], 0.2)[0]:  # what is left after its exit
            try:
                if not (chunk := os.read(master, 4096)):
                    break
            except OSError:
                break
            said += chunk
        assert b"pass phrase" not in said and proc.wait(5) == 2, said.decode(errors="replace")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        os.close(master)
    text = said.decode(errors="replace")
    assert "REDIS_URL: the private key of ssl_certfile and ssl_keyfile is encrypted and no ssl_password is set" in text, text
    assert SECRET not in text and "Traceback" not in text, text


def test_a_command_names_a_rediss_ca_file_that_cannot_load_before_connecting(tmp_path):
    line = one_error_line(sentinel(["windows"], {"REDIS_URL": f"rediss://:{SECRET}@127.0.0.1:9/0?ssl_ca_certs={tmp_path / 'ca.pem'}"}))
    assert line == "error: invalid settings: REDIS_URL: cannot load the TLS file of ssl_ca_certs (No such file or directory)", line


def test_a_command_that_never_connects_to_redis_does_not_load_its_tls_files(tmp_path):
    # classify, train, replay, record ... never open Redis: a laptop or a Job given the workers'
    # REDIS_URL without their CA mounted ran them before session 53's file check, and must still.
    # The URL itself is still checked, and a command that connects still loads the files.
    url = f"rediss://:{SECRET}@127.0.0.1:9/0?ssl_ca_certs={tmp_path / 'ca.pem'}"
    done = sentinel(["classify", "--json", "BTC to the moon"], {"REDIS_URL": url})
    assert done.returncode == 0 and "label" in done.stdout, done.stdout + done.stderr
    assert one_error_line(sentinel(["classify", "hi"], {"REDIS_URL": url + "&ssl_bogus=1"})).startswith("error: invalid settings: REDIS_URL: ")
    line = one_error_line(sentinel(["silences"], {"REDIS_URL": url}))
    assert line == "error: invalid settings: REDIS_URL: cannot load the TLS file of ssl_ca_certs (No such file or directory)", line


def test_a_run_error_no_command_caught_is_one_line_and_exit_2():
    # Whatever command raises it: the app itself turns a RunError into an `error:` line.
    script = ("from sentinel.cli import app\nfrom sentinel.run import RunError\n"
              "@app.command('boom')\ndef boom() -> None:\n    raise RunError('REDIS_URL: the server went away')\n"
              "app(['boom'], prog_name='sentinel')\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("SENTINEL_")}
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    assert r.stderr.strip() == "error: REDIS_URL: the server went away", r.stderr


def test_a_cluster_client_gets_the_urls_options_typed():
    from stream.redis_client import open_redis

    client = open_redis("redis://a:6379?socket_timeout=5&health_check_interval=10,b:6379", cluster=True)
    kwargs = client.nodes_manager.connection_kwargs
    assert kwargs["socket_timeout"] == 5.0 and kwargs["health_check_interval"] == 10  # typed, as a single server's client reads them


def test_the_sentinel_name_wins_where_both_names_of_a_url_are_set(monkeypatch):
    """SENTINEL_KAFKA_BROKER over KAFKA_BROKER, SENTINEL_REDIS_URL over REDIS_URL (README, "Running the
    worker"), and a message names the variable that was used."""
    from stream.settings import redis_given, variable_name

    monkeypatch.setenv("KAFKA_BROKER", "conventional:9092")
    monkeypatch.setenv("SENTINEL_KAFKA_BROKER", "sentinel:9092")
    monkeypatch.setenv("REDIS_URL", "redis://conventional:6379/0")
    monkeypatch.setenv("SENTINEL_REDIS_URL", "redis://sentinel:6379/0")
    settings = Settings()
    assert settings.kafka_broker == "sentinel:9092"
    assert settings.redis_url is not None and settings.redis_url.get_secret_value() == "redis://sentinel:6379/0"
    assert redis_given() == ("redis://sentinel:6379/0", False)
    assert variable_name("kafka_broker") == "SENTINEL_KAFKA_BROKER" and variable_name("redis_url") == "SENTINEL_REDIS_URL"
