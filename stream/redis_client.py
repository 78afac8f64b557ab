"""Redis connections: one server, or a Redis Cluster (`SENTINEL_REDIS_CLUSTER`), and the replica
acknowledgement (`WAIT`) a batch waits for before its Kafka offsets may be committed.

Every key the project writes carries a hash tag (stream/keys.py), and every Lua script touches the
keys of one tag, so the same code runs on one server and on a cluster; only the client differs.

Why WAIT needs care: it covers the writes made on *its own connection* (Redis records the
replication offset per client), and a pooled client spreads a batch over several connections. A
write followed by WAIT on one connection covers everything the master replicated before that write,
whoever made it, because the replication stream is ordered. So each master gets a tiny write of its
own (a key whose hash tag lands in its slots) and a WAIT, pipelined on one connection.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import re
import ssl
import time
from dataclasses import dataclass
from typing import Any, Awaitable, Callable, Sequence, TypeVar
from urllib.parse import parse_qs, urlsplit

import redis.asyncio as aioredis
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.connection import URL_QUERY_ARGUMENT_PARSERS, Connection, ConnectionPool, SSLConnection, parse_url
from redis.crc import key_slot
from redis.exceptions import AuthenticationError, ClusterError, NoScriptError, ReadOnlyError, RedisClusterException, ResponseError, SlotNotCoveredError, TryAgainError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from stream.settings import Settings, variable_name

from stream.keys import wait_key

log = logging.getLogger(__name__)
T = TypeVar("T")

# Errors a retry can outlive: the server is away, or a cluster is moving a slot or promoting a
# replica. Everything else (a bad script, a wrong type) is a bug and must surface.
TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (
    RedisConnectionError, RedisTimeoutError, OSError, ClusterError, TryAgainError, SlotNotCoveredError,
    ReadOnlyError,  # a write reached a master that has just become a replica
)

WAIT_KEY_TTL_MS = 60_000


class ReplicasBehind(TryAgainError):
    """A master's connected replicas had not all caught up when WAIT timed out: the batch is
    written again and waited for again (its offsets stay uncommitted meanwhile)."""


def is_transient(exc: BaseException) -> bool:
    """A Redis failure that waiting can cure. Two are told by their message, their classes being
    the ones redis-py uses for misuse too: the cluster client's "no node reachable", and a blocking
    command's `UNBLOCKED` (a plain ResponseError: redis-py maps no class to it), which the server
    answers to a client blocked on a master that has just become a replica (`CLUSTER FAILOVER`,
    the delivery loop's XREADGROUP BLOCK); the next try reaches the new master."""
    if isinstance(exc, TRANSIENT_ERRORS):
        return True
    # The code, where redis-py keeps it (status_code; older versions lack it): the message of an "ERR ..."
    # reply has lost its code, and "ERR UNBLOCKED ..." would read as the same thing.
    if isinstance(exc, ResponseError) and getattr(exc, "status_code", "UNBLOCKED") == "UNBLOCKED" and str(exc).startswith("UNBLOCKED "):
        return True
    return isinstance(exc, RedisClusterException) and "cannot be connected" in str(exc)


async def retry_transient(call: Callable[[], Awaitable[T]], *, what: str, first_delay_s: float = 0.1, max_delay_s: float = 5.0,
                          give_up_after_s: float | None = None) -> T:
    """`call()` until it succeeds, backing off (doubled, capped at `max_delay_s`) while Redis is away
    (`is_transient`). Any other error is raised at once; a transient one too once the next try would
    start past `give_up_after_s` (None: never give up). Only for calls that may safely run twice: a
    write whose reply was lost has landed."""
    delay = first_delay_s
    deadline = None if give_up_after_s is None else time.monotonic() + give_up_after_s
    while True:
        try:
            return await call()
        except Exception as exc:
            if not is_transient(exc) or (deadline is not None and time.monotonic() + delay > deadline):
                raise
            log.warning("redis unavailable, retrying", extra={"what": what, "error": type(exc).__name__, "retry_in_s": round(delay, 2)})
            await asyncio.sleep(delay)
            delay = min(delay * 2, max_delay_s)


@dataclass(frozen=True)
class Endpoint:
    host: str
    port: int


def split_url(url: str) -> tuple[str, list[Endpoint]]:
    """`redis://[:pw@]h1:p1,h2:p2/0`, `redis://h1:p1,redis://h2:p2` or `h1:p1,h2:p2` -> (the first
    URL, every endpoint). Later entries inherit the first's scheme and credentials; with no scheme
    it is `redis://` (pure)."""
    parts = [part.strip() for part in url.split(",") if part.strip()]
    if not parts:
        raise ValueError("empty Redis URL")
    # Without "://", urlsplit would read "h1:6379" as scheme "h1" and path "6379".
    first = parts[0] if "://" in parts[0] else f"redis://{parts[0]}"
    scheme = urlsplit(first).scheme
    endpoints = []
    for i, part in enumerate(parts, start=1):
        parsed = urlsplit(part if "://" in part else f"{scheme}://{part}")
        try:
            host, port = parsed.hostname, parsed.port
        except ValueError:  # urllib's message quotes the "port", which may be part of a password
            host, port = None, None
        if parsed.fragment or "@" in parsed.path + parsed.query:
            host = None  # a password's # ? or / cut it short: what urllib took for host and port is part of it
        if not host:
            # Never the entry itself: a password holding / ? # or @ unencoded is read as host or port.
            raise ValueError(f"entry {i}: its host:port cannot be read (percent-encode / ? # @ : in a password)")
        if i > 1 and parsed.query:  # read from the first entry only: here it would be dropped unseen
            raise ValueError("Redis URL: put the options (?ssl_ca_certs=... and the like) on the first entry")
        endpoints.append(Endpoint(host, port or 6379))
    return first, endpoints


def _init_parameters(*classes: type) -> set[str]:
    """The keyword arguments the __init__ of each class (and its bases) names."""
    names: set[str] = set()
    for cls in classes:
        for base in cls.__mro__:
            if "__init__" in vars(base):
                names |= {name for name, p in inspect.signature(vars(base)["__init__"]).parameters.items()
                          if name != "self" and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
    return names


# Options a cluster URL may carry as text: the rest of what the cluster client names are objects
# (retry, address_remap ...), flags parse_url would leave as the string "false", or set here.
_CLUSTER_TEXT_OPTIONS = {"client_name", "ssl_ca_certs", "ssl_ca_data", "ssl_certfile", "ssl_keyfile", "ssl_cert_reqs", "ssl_ciphers"}


def cluster_options(scheme: str) -> set[str]:
    """The URL options (`?socket_timeout=5`) a cluster client takes: those parse_url reads into
    their types (`URL_QUERY_ARGUMENT_PARSERS`) and the text ones, each one the cluster client names
    (it hands them to every node's connection); TLS ones only over rediss://."""
    names = (set(URL_QUERY_ARGUMENT_PARSERS) | _CLUSTER_TEXT_OPTIONS) & _init_parameters(RedisCluster) - {"db"}
    return names if scheme == "rediss" else {n for n in names if not n.startswith("ssl")}


def url_problem(url: str, *, cluster: bool = False) -> str | None:
    """What is wrong with a Redis URL (pure; None: nothing), found before any client is made, so a
    bad REDIS_URL is one line at start-up and not a traceback at the first connection. Never the
    URL itself in the answer: it may hold a password. Checks the scheme, that the database is a
    number (and 0 on a cluster), one endpoint unless `cluster`, and that every option in the query
    is one the client for that scheme takes (TLS options only with rediss://)."""
    for part in url.split(","):  # before the host is read: a unix:// socket path has none
        scheme = part.strip().split("://", 1)[0].lower() if "://" in part else "redis"
        if scheme not in ("redis", "rediss"):
            return f"scheme {scheme}:// is not one of redis://, rediss:// (TLS)"
    try:
        first, endpoints = split_url(url)
    except ValueError as exc:
        return str(exc)
    schemes = {urlsplit(part if "://" in part else first).scheme.lower() for part in url.split(",") if part.strip()}
    if bad := sorted(schemes - {"redis", "rediss"}):
        return f"scheme {bad[0]}:// is not one of redis://, rediss:// (TLS)"
    if len(schemes) > 1:
        return "every entry needs the same scheme"
    parsed = urlsplit(first)
    if not re.fullmatch(r"/?\d*", parsed.path):
        # redis-py ignores a path it cannot read as a number and uses database 0.
        return "the database in the path must be a number (redis://host:6379/0)"
    if not cluster and len(endpoints) > 1:
        return "several Redis endpoints need SENTINEL_REDIS_CLUSTER=1"
    if cluster and parsed.path.strip("/") not in ("", "0"):
        return "Redis Cluster has only database 0: drop the /N"
    try:
        options = parse_url(first)
    except ValueError as exc:  # "Invalid value for 'db' in connection URL.": the option's name, not its value
        return str(exc)
    given = sorted(set(parse_qs(parsed.query)))
    taken = cluster_options(parsed.scheme) if cluster else _init_parameters(SSLConnection if parsed.scheme == "rediss" else Connection, ConnectionPool)
    if cluster:
        given = sorted(set(given) - ({"db"} if options.get("db", 0) == 0 else set()))
    if unknown := [name for name in given if name not in taken]:
        if parsed.scheme != "rediss" and all(name.startswith("ssl_") and name in _init_parameters(SSLConnection) for name in unknown):
            return f"TLS options ({', '.join(unknown)}) need a rediss:// URL"
        return f"{'Redis Cluster' if cluster else 'the Redis'} client does not take {', '.join(unknown)} (the URL's query)"
    return None


def settings_problem(settings: Settings) -> str | None:
    """What is wrong with the settings' Redis URL, naming its variable (None: nothing or no URL)."""
    if settings.redis_url is None:
        return None
    return url_setting_problem(settings.redis_url.get_secret_value(), cluster=settings.redis_cluster)


def url_setting_problem(url: str, *, cluster: bool, files: bool = True) -> str | None:
    """What is wrong with `url` as the Redis URL setting, naming the variable that set it. `files`:
    the TLS files it names loaded too (a command that never connects leaves them unread)."""
    problem = url_problem(url, cluster=cluster) or (tls_files_problem(url, cluster=cluster) if files else None)
    return f"{variable_name('redis_url')}: {problem}" if problem else None


def tls_files_problem(url: str, *, cluster: bool = False) -> str | None:
    """A rediss:// URL's CA or client certificate that cannot be loaded, loaded as the client will
    (None: none named, or all load). Said at start-up by its option: at the first connection it
    was `Error 2 connecting to HOST:PORT. No such file or directory.`, naming neither the option
    nor the variable. The path stays out of the message (never a setting's value), as for
    SENTINEL_KAFKA_SSL_CAFILE. Also refused: ssl_keyfile without ssl_certfile, and an encrypted key
    without ssl_password, whose passphrase OpenSSL asked for on the terminal (`cluster`: the
    cluster client, which takes no ssl_password)."""
    first, _ = split_url(url)
    if urlsplit(first).scheme.lower() != "rediss":
        return None
    options: dict[str, Any] = dict(parse_url(first))
    if options.get("ssl_keyfile") and not options.get("ssl_certfile"):
        # redis-py loads a key only with its certificate: alone it was a TypeError at the first
        # connection ("certfile should be a valid filesystem path"), naming no option.
        return "ssl_keyfile needs ssl_certfile (the client certificate the key belongs to)"
    context = ssl.create_default_context()
    steps: list[tuple[str, Callable[[], object]]] = []
    asked: list[bool] = []  # whether OpenSSL asked for the key's passphrase: the key is encrypted
    if options.get("ssl_ca_certs") or options.get("ssl_ca_path"):
        steps.append(("ssl_ca_certs" if options.get("ssl_ca_certs") else "ssl_ca_path",
                      lambda: context.load_verify_locations(cafile=options.get("ssl_ca_certs"), capath=options.get("ssl_ca_path"))))
    if options.get("ssl_certfile"):
        # Without ssl_password, OpenSSL asks for an encrypted key's passphrase on the terminal, here
        # and at the client's first connection: a command waited on a prompt, and a pod has no
        # terminal. The callable is asked only for an encrypted key.
        given = options.get("ssl_password")

        def password() -> str:
            asked.append(True)
            return given if given else _no_key_password()

        steps.append(("ssl_certfile" + (" and ssl_keyfile" if options.get("ssl_keyfile") else ""),
                      lambda: context.load_cert_chain(options["ssl_certfile"], options.get("ssl_keyfile"), password)))
    for names, load in steps:
        try:
            load()
        except EncryptedKey:
            if cluster:  # redis-py's cluster client takes no ssl_password (url_problem refuses one)
                return f"the private key of {names} is encrypted: the Redis Cluster client takes no ssl_password, give an unencrypted key"
            return (f"the private key of {names} is encrypted and no ssl_password is set: add ssl_password to the "
                    "URL's query (percent-encoded), or give an unencrypted key")
        except OSError as exc:  # a missing file, or one ssl cannot read (ssl.SSLError is an OSError)
            if asked and isinstance(exc, ssl.SSLError) and "PEM lib" in str(exc):
                # Asked for the passphrase, and then the key did not decode: OpenSSL says only
                # "(PEM lib)", and the operator went after the files. Not any failure once asked: a
                # key of another type than its certificate fails later (NO_CERTIFICATE_ASSIGNED), one
                # of another pair with KEY_VALUES_MISMATCH, each with the right passphrase. A key
                # under a cipher OpenSSL 3 leaves to its legacy provider (RC2, DES: old PKCS#12
                # exports) fails as a wrong passphrase does, and Python's ssl tells the two apart by
                # no code, so the line names both.
                return (f"ssl_password does not open the private key of {names} (not the passphrase it is encrypted "
                        "with, or a cipher this OpenSSL does not decrypt, such as RC2 or DES): set the key's passphrase, "
                        "percent-encoded, or give an unencrypted key or one encrypted with AES")
            why = exc.strerror or getattr(exc, "reason", None) or type(exc).__name__
            return f"cannot load the TLS file of {names} ({why})"
    return None


class EncryptedKey(Exception):
    """A client key that needs a passphrase, where the URL sets no ssl_password."""


def _no_key_password() -> str:
    raise EncryptedKey()


def open_redis(url: str, *, password: str | None = None, cluster: bool = False, **kwargs: Any) -> Any:
    """The asyncio client for `url`: redis-py's cluster client when `cluster`, with every listed
    endpoint as a startup node; otherwise a plain client for the first (and only) URL."""
    if problem := url_problem(url, cluster=cluster):
        raise ValueError(problem)
    first, endpoints = split_url(url)
    if not cluster:
        extra: dict[str, Any] = {"password": password} if password else {}
        return aioredis.Redis.from_url(first, decode_responses=True, **extra, **kwargs)
    parsed = urlsplit(first)
    # The URL's options as a single server's client would read them (typed: socket_timeout=5.0),
    # given to the cluster client as arguments: it takes none from a URL.
    taken = cluster_options(parsed.scheme)
    options = {k: v for k, v in parse_url(first).items() if k in taken and k not in ("username", "password")}
    return RedisCluster(
        startup_nodes=[ClusterNode(e.host, e.port) for e in endpoints],
        username=parsed.username or None,
        password=password or parsed.password or None,
        ssl=parsed.scheme == "rediss",
        decode_responses=True,
        **{**options, **kwargs},
    )


def cluster_node_problem() -> str:
    """The one line for a plain client on a cluster node, naming the URL's variable as it was set."""
    return (f"{variable_name('redis_url')} names a Redis Cluster node but SENTINEL_REDIS_CLUSTER is not set: "
            "set SENTINEL_REDIS_CLUSTER=true (docs/operations.md, \"Redis Cluster\")")


async def cluster_mode_problem(client: Any, *, timeout_s: float = 5.0) -> str | None:
    """Whether a plain client was opened on a node of a Redis Cluster. Such a node answers PING, so a
    worker becomes ready, then serves the keys of its own slots and answers MOVED for the rest: a
    batch writes part of its scopes (reading the cluster's watermarks, dropping posts as late) and
    stops on a cross-slot script, again after every restart. None when it is no cluster node, and
    when the server cannot say (away, or INFO renamed on a managed Redis): the worker's own retries
    and readiness handle a Redis that is away."""
    if is_cluster(client):
        return None
    try:
        info = await asyncio.wait_for(client.info("cluster"), timeout_s)
    except (asyncio.TimeoutError, RedisConnectionError, RedisTimeoutError, ResponseError, OSError):
        return None
    return cluster_node_problem() if str(info.get("cluster_enabled", "0")) == "1" else None


async def credentials_refused(client: Any, *, timeout_s: float = 5.0) -> Exception | None:
    """The error of a Redis that answers but refuses these credentials (no password where it needs
    one, a wrong one, a disabled ACL user): a setting to fix, which no retry mends, where the worker
    would wait unready, "redis unavailable, retrying", for as long as it ran. None when it takes
    them, and when it is away or slow: the worker's own retries and readiness handle that."""
    try:
        await asyncio.wait_for(client.ping(), timeout_s)
    except AuthenticationError as exc:  # before ConnectionError: redis-py makes it one
        return exc
    except ResponseError as exc:
        return exc if str(exc).startswith(("NOAUTH", "WRONGPASS")) else None
    except (asyncio.TimeoutError, RedisConnectionError, RedisTimeoutError, RedisClusterException, OSError):
        return None
    return None


def is_cluster(client: Any) -> bool:
    return isinstance(client, RedisCluster)


ScriptCall = tuple[Any, Sequence[Any], Sequence[Any]]  # (a registered Script, keys, args)


async def run_scripts(client: Any, calls: Sequence[ScriptCall]) -> list[Any]:
    """Run Lua scripts in one pipeline and return their replies in order.

    On a cluster the pipeline splits by node and the nodes run their parts concurrently, so calls
    on different slots have no order among them. redis-py's cluster pipeline refuses its `evalsha`
    method (not the command), and a node that was restarted or promoted may lack a script: so
    EVALSHA goes in as a raw command, and a NoScriptError loads every script on every master and
    runs the pipeline once more (each script here is idempotent)."""
    if not calls:
        return []
    if not is_cluster(client):
        async with client.pipeline(transaction=False) as pipe:
            for script, keys, args in calls:
                await script(keys=list(keys), args=list(args), client=pipe)
            return list(await pipe.execute())
    try:
        return await _evalsha_pipeline(client, calls)
    except NoScriptError:
        for text in {script.script for script, _, _ in calls}:
            await client.script_load(text)
    return await _evalsha_pipeline(client, calls)


async def _evalsha_pipeline(client: RedisCluster, calls: Sequence[ScriptCall]) -> list[Any]:
    async with client.pipeline(transaction=False) as pipe:
        for script, keys, args in calls:
            pipe.execute_command("EVALSHA", script.sha, len(keys), *keys, *args)
        return list(await pipe.execute())


def tag_for_slots(owned: set[int]) -> str:
    """The first `wait<i>` hash tag whose slot is in `owned` (pure): a key the master owning
    those slots accepts."""
    i = 0
    while key_slot(f"wait{i}".encode()) not in owned:
        i += 1
    return f"wait{i}"


class ReplicaWait:
    """WAIT for `replicas` replicas on every master (`SENTINEL_REDIS_WAIT_REPLICAS`), at most
    `timeout_ms` (`SENTINEL_REDIS_WAIT_TIMEOUT`). Calling it returns the fewest replicas any master
    reached; a result below `replicas` means some write is on a master alone."""

    def __init__(self, client: Any, replicas: int, timeout_ms: int):
        self.client = client
        self.replicas = replicas
        self.timeout_ms = timeout_ms
        self._direct: dict[str, aioredis.Redis] = {}  # master name -> a plain client to it
        self._tags: tuple[frozenset[str], list[tuple[ClusterNode, str]]] = (frozenset(), [])

    async def __call__(self) -> int:
        if self.replicas <= 0:
            return 0
        if not is_cluster(self.client):
            return await self._wait_on(self.client, wait_key("wait"))
        try:
            acks = await asyncio.gather(*(self._wait_on(self._client_of(node), wait_key(tag)) for node, tag in self._masters()))
        except ResponseError as exc:
            if "MOVED" not in str(exc):
                raise
            self._tags = (frozenset(), [])  # a slot moved under the same masters: map again on the retry
            raise TryAgainError(str(exc)) from exc
        return min(acks, default=0)

    async def close(self) -> None:
        for direct in self._direct.values():
            await direct.aclose()
        self._direct.clear()

    def _masters(self) -> list[tuple[ClusterNode, str]]:
        primaries = frozenset(node.name for node in self.client.get_primaries())
        if primaries != self._tags[0]:  # a failover or a reshard: map the slots again
            self._tags = (primaries, _master_tags(self.client))
        return self._tags[1]

    def _client_of(self, node: ClusterNode) -> aioredis.Redis:
        # The cluster client hands out connections per command; WAIT needs its own write's connection.
        if node.name not in self._direct:
            pool = aioredis.ConnectionPool(connection_class=node.connection_class, max_connections=4, **node.connection_kwargs)
            self._direct[node.name] = aioredis.Redis(connection_pool=pool)
        return self._direct[node.name]

    async def _wait_on(self, client: Any, key: str) -> int:
        """A write and WAIT pipelined on one connection (see the module's note). A replica that is
        connected and still behind at the timeout raises ReplicasBehind; one that is not there at
        all (the master was just promoted, or lost its replica) cannot be waited for: fewer acks."""
        async with client.pipeline(transaction=False) as pipe:
            pipe.set(key, 1, px=WAIT_KEY_TTL_MS)
            pipe.execute_command("WAIT", self.replicas, self.timeout_ms)
            pipe.info("replication")
            _, acked, info = await pipe.execute()
        acked = int(acked)
        if acked < min(self.replicas, int(info.get("connected_slaves", 0))):
            raise ReplicasBehind(f"{acked} of {info.get('connected_slaves')} connected replicas acknowledged within {self.timeout_ms} ms")
        return acked


def _master_tags(client: RedisCluster) -> list[tuple[ClusterNode, str]]:
    """Each master with a hash tag in its slots, from the client's current slot map."""
    owned: dict[str, set[int]] = {}
    nodes: dict[str, ClusterNode] = {}
    for slot, holders in client.nodes_manager.slots_cache.items():
        if holders:
            owned.setdefault(holders[0].name, set()).add(slot)
            nodes[holders[0].name] = holders[0]
    return [(nodes[name], tag_for_slots(slots)) for name, slots in owned.items()]
