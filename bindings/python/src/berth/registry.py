"""The registry: requests in, responses out, bodies streamed both ways."""
from __future__ import annotations

import ctypes
import json
import logging
import urllib.request
from dataclasses import dataclass
from os import PathLike, fspath
from typing import Callable, Iterable, Iterator, Mapping, Optional, Sequence, Tuple, Union

from . import _native
from ._native import check, lib, text
from .errors import WrongStateError

Headers = Union[Mapping[str, str], Sequence[Tuple[str, str]]]
Body = Union[bytes, bytearray, memoryview, Iterable[bytes], None]

#: How much of a request body is handed to berth per call when a body is given whole.
WRITE_CHUNK = 1 << 20


@dataclass(frozen=True)
class S3:
    """An S3 bucket (AWS, R2, MinIO, any S3-compatible service) to store data in.

    Credentials come from the usual ``AWS_*`` environment variables.
    """

    bucket: str
    endpoint: Optional[str] = None
    region: Optional[str] = None
    allow_http: bool = False
    path_style: bool = False


#: The C type of a notice callback: ``void (*)(void *env, const char *message)``.
_NOTICE_CALLBACK = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_char_p)
#: Every notice callback handed to the library: a registry (or an exchange it still runs)
#: may call one until the process ends, so none is ever collected.
_NOTICE_CALLBACKS = []


def _log_notice(message: str) -> None:
    logging.getLogger("berth").warning("%s", message)


def _notice_callback(on_notice: Callable[[str], None]):
    def call(_env, message: bytes) -> None:
        try:
            on_notice(message.decode("utf-8", "replace"))
        except Exception:  # an exception cannot cross into the library
            logging.getLogger("berth").exception("the notice callback failed")

    callback = _NOTICE_CALLBACK(call)
    _NOTICE_CALLBACKS.append(callback)
    return callback


#: The C type of a key set fetcher:
#: ``void (*)(void *env, const char *url, berth_key_set_out *out)``.
_KEY_SET_FETCHER = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_char_p, ctypes.c_void_p)
#: The largest key set fetched (berth's own limit).
_KEY_SET_LIMIT = 1 << 20


def _fetch_key_set(url: str) -> bytes:
    """A token issuer's key set (the ``keys-url`` of the login settings), by a GET with the
    standard library, bounded in time and size."""
    if not url.startswith(("http://", "https://")):
        raise ValueError(f"{url} is no http(s) URL")
    with urllib.request.urlopen(url, timeout=10) as response:
        body = response.read(_KEY_SET_LIMIT + 1)
    if len(body) > _KEY_SET_LIMIT:
        raise ValueError(f"{url} answered more than {_KEY_SET_LIMIT} bytes")
    return body


def _key_set_fetcher(fetch: Callable[[str], bytes]):
    def call(_env, url: bytes, out) -> None:
        try:
            body = fetch(url.decode("utf-8", "replace"))
            lib.berth_key_set_out_set_body(out, body, len(body))
        except Exception as error:  # an exception cannot cross into the library
            lib.berth_key_set_out_set_error(out, text(str(error) or type(error).__name__))

    callback = _KEY_SET_FETCHER(call)
    _NOTICE_CALLBACKS.append(callback)
    return callback


# enum berth_collection_flag.
_FLAG_DRY_RUN, _FLAG_UNTAGGED, _FLAG_ORPHANED_REFERRERS = 1, 2, 4


class _CollectionReport(ctypes.Structure):
    """``struct berth_collection_report``."""

    _fields_ = [(name, ctypes.c_uint64) for name in
                ("visited", "blobs_deleted", "bytes_deleted", "links_removed", "left", "marked",
                 "manifests_deleted", "tags_deleted")]


@dataclass(frozen=True)
class CollectionReport:
    """What a garbage collection step did (or, in a dry run, would do)."""

    #: Candidates visited.
    visited: int
    #: Blobs (layers, configs, manifests) deleted.
    blobs_deleted: int
    #: Their bytes.
    bytes_deleted: int
    #: Layer links removed from repositories whose manifests no longer reference the blob.
    links_removed: int
    #: Candidates left for a later step (0: every candidate old enough was visited; 1 while
    #: the first marking has pages left).
    left: int
    #: Back-links the first collection wrote for what was stored before.
    marked: int
    #: Untagged manifests deleted (with ``untagged``).
    manifests_deleted: int
    #: Tags the retention rules removed.
    tags_deleted: int


class _MirrorReport(ctypes.Structure):
    """``struct berth_mirror_report``."""

    _fields_ = [(name, ctypes.c_uint64) for name in
                ("manifests", "blobs_fetched", "bytes_fetched", "blobs_cached")]


@dataclass(frozen=True)
class MirrorReport:
    """What pre-filling an image (:meth:`Registry.mirror`) did."""

    #: Manifests read: the image's, and an index's children for the platforms asked for.
    manifests: int
    #: Blobs fetched from the upstream.
    blobs_fetched: int
    #: Their bytes.
    bytes_fetched: int
    #: Blobs the cache held already.
    blobs_cached: int


class _ScrubReport(ctypes.Structure):
    """``struct berth_scrub_report``."""

    _fields_ = [(name, ctypes.c_uint64) for name in
                ("marked", "blobs", "stray_blobs", "stray_bytes", "uploads_purged", "leftovers",
                 "leftover_bytes")] + [("usage_recounted", ctypes.c_uint32)]


@dataclass(frozen=True)
class ScrubReport:
    """What a scrub found (and, unless a dry run, did)."""

    #: Back-links and link entries written again.
    marked: int
    #: Blobs looked at.
    blobs: int
    #: Of those, blobs nothing references or links: now candidates for collection.
    stray_blobs: int
    #: Their bytes.
    stray_bytes: int
    #: Expired upload sessions purged.
    uploads_purged: int
    #: Scratch files and orphaned parts uploads removed (a filesystem storage's).
    leftovers: int
    #: Their bytes.
    leftover_bytes: int
    #: Whether quota usage is to be counted afresh.
    usage_recounted: bool


class _Config:
    """A berth_config handle, freed when dropped."""

    def __init__(self, path, s3, memory, options: dict, on_notice: Callable[[str], None],
                 fetch_key_set: Callable[[str], bytes] = _fetch_key_set) -> None:
        handle = _native.Config()
        check(lib.berth_config_new(ctypes.byref(handle)))
        self.handle = handle
        chosen = sum(x is not None and x is not False for x in (path, s3, memory))
        if chosen != 1:
            raise ValueError("give exactly one storage: path=..., s3=S3(...) or memory=True")
        if path is not None:
            check(lib.berth_config_set_fs(handle, text(fspath(path))))
        elif s3 is not None:
            check(
                lib.berth_config_set_s3(
                    handle,
                    text(s3.bucket),
                    text(s3.endpoint),
                    text(s3.region),
                    s3.allow_http,
                    s3.path_style,
                )
            )
        else:
            check(lib.berth_config_set_memory(handle))
        setters = {
            "read_only": lib.berth_config_set_read_only,
            "track_references": lib.berth_config_set_track_references,
            "delete_enabled": lib.berth_config_set_delete_enabled,
            "automatic_mount": lib.berth_config_set_automatic_mount,
            "part_size": lib.berth_config_set_part_size,
            "manifest_limit": lib.berth_config_set_manifest_limit,
            "chunk_max_length": lib.berth_config_set_chunk_max_length,
            "blob_redirect": lib.berth_config_set_blob_redirect,
            "worker_threads": lib.berth_config_set_worker_threads,
            "auth": lambda handle, settings: lib.berth_config_set_auth(
                handle, text(settings if isinstance(settings, str) else json.dumps(settings))
            ),
            "retention": lambda handle, rules: lib.berth_config_set_retention(
                handle, text(rules if isinstance(rules, str) else json.dumps(rules))
            ),
            "quotas": lambda handle, rules: lib.berth_config_set_quotas(
                handle, text(rules if isinstance(rules, str) else json.dumps(rules))
            ),
            "upstreams": lambda handle, rules: lib.berth_config_set_upstreams(
                handle, text(rules if isinstance(rules, str) else json.dumps(rules))
            ),
        }
        for name, value in options.items():
            if value is not None:
                check(setters[name](handle, value))
        callback = _notice_callback(on_notice)
        check(lib.berth_config_set_notice_callback(handle, ctypes.cast(callback, ctypes.c_void_p), None))
        fetcher = _key_set_fetcher(fetch_key_set)
        check(lib.berth_config_set_key_set_fetcher(handle, ctypes.cast(fetcher, ctypes.c_void_p), None))

    def __del__(self) -> None:
        handle = getattr(self, "handle", None)
        if handle is not None and lib is not None:
            lib.berth_config_free(handle)


class _Handle:
    """Owns one handle of the C ABI, released once: by ``close()``, at the end of a ``with``
    block, or when the object is collected."""

    _handle: Optional[ctypes.c_void_p] = None

    @staticmethod
    def _free(handle: ctypes.c_void_p) -> None:
        raise NotImplementedError

    def close(self) -> None:
        """Releases the handle (again is fine)."""
        handle, self._handle = self._handle, None
        if handle is not None:
            self._free(handle)

    def __enter__(self):
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def __del__(self) -> None:
        # At interpreter exit the library may be gone before this object.
        if self._handle is not None and lib is not None:
            self.close()


class Registry(_Handle):
    """An OCI registry over a directory, an S3 bucket or memory.

    >>> registry = Registry(memory=True)
    >>> registry.handle("GET", "/v2/").status
    200

    One registry serves any number of threads at once; calls that wait for storage release
    the GIL.

    :param path: a directory to store data in (registry:2's layout; created if missing).
    :param s3: an :class:`S3` bucket instead.
    :param memory: store in memory instead (lost when the registry is dropped).
    :param read_only: refuse pushes and deletes (405).
    :param delete_enabled: allow DELETE (default True).
    :param automatic_mount: let ``?mount=<digest>`` without ``from`` link a blob the
        registry already has (default True).
    :param part_size: upload part size in bytes (default 2 MiB); an upload request holds at
        most three parts in memory.
    :param manifest_limit: the largest manifest accepted, in bytes (default 4 MiB).
    :param chunk_max_length: the largest PATCH chunk accepted (default: no limit).
    :param blob_redirect: answer blob GETs with redirects to URLs signed for this many
        seconds (S3 only).
    :param worker_threads: berth's worker threads (default: one per core).
    :param auth: turns on logins: a dict (or its JSON text) with ``htpasswd`` (an htpasswd
        file's text, bcrypt hashes), ``rules`` (who may pull, push, overwrite and delete
        which repositories), ``realm``, ``service``, ``token`` (``{"key": PEM}`` runs the
        token service at ``/token``) and ``issuers`` (other token services' keys, or the
        ``keys-url`` where they live). Invalid settings raise :class:`BerthError`.
    :param fetch_key_set: fetches a token issuer's key set at a ``keys-url`` (``url ->
        bytes``, raising when it cannot), when a token names a key berth does not know; by
        default a GET with ``urllib``, 10 s at most. It is called from berth's threads.
    :param track_references: record who references each blob, so that
        :meth:`collect_garbage` can delete what nothing needs while pushes go on (every
        registry over one storage must have it on).
    :param retention: retention rules that :meth:`collect_garbage` applies: a list of
        ``{"repositories": glob, "keep-last": n, "keep-tags": [glob, ...],
        "remove-older-than": seconds or "30d"}`` (or its JSON text); the tags a rule expires
        are removed. Invalid rules raise :class:`BerthError`.
    :param quotas: quota rules: a list of ``{"repositories": glob, "limit": bytes or
        "10GiB"}`` and ``{"namespace": prefix, "limit": ...}`` (or its JSON text); pushes
        past a limit are refused with ``DENIED``, and ``GET /v2/_usage/<name>`` reports
        usage to admins. Invalid rules raise :class:`BerthError`.
    :param upstreams: pull-through cache rules: a list of ``{"prefix": "docker-hub",
        "urls": ["https://registry-1.docker.io"], "namespace": "docker.io", "revalidate":
        "5m", "stale-if-error": "7d", ...}`` (or its JSON text); repositories below a prefix
        are filled from their upstream when pulled, by the library's own HTTP client.
        Invalid rules raise :class:`BerthError`.
    :param on_notice: called with each notice, a message for the operator that no response
        carries (a listing that left out an entry it cannot index, and why); by default
        logged as a warning on the ``berth`` logger. It may be called from berth's threads.
    """

    def __init__(
        self,
        path: Union[str, "PathLike[str]", None] = None,
        *,
        s3: Optional[S3] = None,
        memory: bool = False,
        read_only: Optional[bool] = None,
        delete_enabled: Optional[bool] = None,
        automatic_mount: Optional[bool] = None,
        part_size: Optional[int] = None,
        manifest_limit: Optional[int] = None,
        chunk_max_length: Optional[int] = None,
        blob_redirect: Optional[int] = None,
        worker_threads: Optional[int] = None,
        auth: Union[dict, str, None] = None,
        track_references: Optional[bool] = None,
        retention: Union[list, str, None] = None,
        quotas: Union[list, str, None] = None,
        upstreams: Union[list, str, None] = None,
        on_notice: Callable[[str], None] = _log_notice,
        fetch_key_set: Callable[[str], bytes] = _fetch_key_set,
    ) -> None:
        self._config = _Config(
            path,
            s3,
            memory or None,
            {
                "read_only": read_only,
                "delete_enabled": delete_enabled,
                "automatic_mount": automatic_mount,
                "part_size": part_size,
                "manifest_limit": manifest_limit,
                "chunk_max_length": chunk_max_length,
                "blob_redirect": blob_redirect,
                "worker_threads": worker_threads,
                "auth": auth,
                "track_references": track_references,
                "retention": retention,
                "quotas": quotas,
                "upstreams": upstreams,
            },
            on_notice,
            fetch_key_set,
        )
        handle = _native.Registry()
        check(lib.berth_registry_new(self._config.handle, ctypes.byref(handle)))
        self._handle = handle

    _free = staticmethod(lib.berth_registry_free)

    def check_storage(self) -> None:
        """Runs berth's storage contract suite against this registry's storage (it writes,
        then removes, keys under ``conformance/``); raises :class:`StorageCheckError` with
        the failed check."""
        check(lib.berth_check_storage(self._config.handle))

    def start(
        self,
        method: str,
        path: str,
        query: Optional[str] = None,
        headers: Headers = (),
    ) -> "Exchange":
        """Begins a request whose body you stream with :meth:`Exchange.write`.

        :param path: the request path, still percent-encoded (``/v2/alpine/tags/list``).
        :param query: the query string after ``?``, if any.
        """
        exchange = Exchange(self._live(), method, path, query)
        items = headers.items() if isinstance(headers, Mapping) else headers
        for name, value in items:
            exchange.add_header(name, value)
        return exchange

    def handle(
        self,
        method: str,
        target: str,
        headers: Headers = (),
        body: Body = None,
    ) -> "Response":
        """Answers one request. ``target`` is the path with its query (``/v2/x/tags/list?n=5``);
        ``body`` is bytes or an iterable of bytes chunks (streamed, never joined)."""
        path, _, query = target.partition("?")
        exchange = self.start(method, path, query or None, headers)
        if isinstance(body, (bytes, bytearray, memoryview)):
            view = memoryview(body)
            for offset in range(0, len(view), WRITE_CHUNK):
                exchange.write(view[offset : offset + WRITE_CHUNK])
        elif body is not None:
            for chunk in body:
                exchange.write(chunk)
        return exchange.finish()

    def purge_uploads(self, older_than: int) -> int:
        """Removes upload sessions started more than ``older_than`` seconds ago; returns how
        many there were."""
        purged = ctypes.c_uint64()
        check(lib.berth_registry_purge_uploads(self._live(), older_than, ctypes.byref(purged)))
        return purged.value

    def collect_garbage(
        self,
        grace: int = 24 * 60 * 60,
        max_candidates: int = 1000,
        dry_run: bool = False,
        untagged: bool = False,
        orphaned_referrers: bool = False,
    ) -> "CollectionReport":
        """One step of garbage collection (with ``track_references`` on): visits at most
        ``max_candidates`` candidates older than ``grace`` seconds and deletes the blobs and
        repository links nothing references (or, with ``dry_run``, counts them). With
        ``untagged``, manifests untagged that long go too (not an index's children, not the
        referrers of a kept subject; with ``orphaned_referrers``, referrers whose subject
        goes). Call it again while the report's ``left`` is not 0."""
        flags = (_FLAG_DRY_RUN if dry_run else 0) | (_FLAG_UNTAGGED if untagged else 0) | (
            _FLAG_ORPHANED_REFERRERS if orphaned_referrers else 0)
        report = _CollectionReport()
        check(lib.berth_registry_collect_garbage(
            self._live(), grace, max_candidates, flags, ctypes.byref(report)))
        return CollectionReport(**{name: getattr(report, name) for name, _ in report._fields_})

    def mirror(self, name: str, reference: str = "latest",
               platforms: Iterable[str] = ()) -> MirrorReport:
        """Pre-fills the pull-through cache (``upstreams``) with the image ``name:reference``
        (``name`` as clients pull it, e.g. ``docker-hub/nginx``; ``reference`` a tag or
        digest), fetching what a pull would: the manifest, an index's children for
        ``platforms`` (``linux/amd64``...; all of them when empty), their configs and layers,
        each blob once and verified; nothing already cached. Raises :class:`BerthError` when
        ``name`` is in no cache, or the upstream has no such image or fails."""
        report = _MirrorReport()
        check(lib.berth_registry_mirror(self._live(), name.encode(), reference.encode(),
                                        ",".join(platforms).encode(), ctypes.byref(report)))
        return MirrorReport(**{field: getattr(report, field) for field, _ in report._fields_})

    def scrub(
        self,
        dry_run: bool = False,
        upload_expiry: int = 7 * 24 * 60 * 60,
        leftovers_older_than: int = 24 * 60 * 60,
    ) -> "ScrubReport":
        """Scrubs the whole storage (with ``track_references`` on): writes every back-link
        again, makes each blob nothing references or links a candidate (for
        :meth:`collect_garbage` to delete once past its grace period), purges uploads started
        more than ``upload_expiry`` seconds ago (0 keeps them), removes what killed writes left
        (scratch files, parts no session names) untouched for ``leftovers_older_than``
        seconds, and has quota usage counted afresh; with ``dry_run``, only counts. An
        occasional walk of everything, not a bounded step."""
        report = _ScrubReport()
        check(lib.berth_registry_scrub(self._live(), upload_expiry, leftovers_older_than,
                                       _FLAG_DRY_RUN if dry_run else 0, ctypes.byref(report)))
        fields = {name: getattr(report, name) for name, _ in report._fields_}
        fields["usage_recounted"] = bool(fields["usage_recounted"])
        return ScrubReport(**fields)

    def _live(self) -> ctypes.c_void_p:
        handle = self._handle
        if handle is None:
            raise WrongStateError("the registry is closed")
        return handle


class Exchange(_Handle):
    """One request being sent: add headers, write the body, then :meth:`finish`."""

    def __init__(self, registry: ctypes.c_void_p, method: str, path: str, query: Optional[str]):
        handle = _native.Exchange()
        check(lib.berth_exchange_new(registry, text(method), text(path), text(query), ctypes.byref(handle)))
        self._handle = handle

    _free = staticmethod(lib.berth_exchange_free)

    def add_header(self, name: str, value: str) -> None:
        """Adds a request header (before the body)."""
        check(lib.berth_exchange_add_header(self._live(), text(name), text(value)))

    def write(self, chunk: Union[bytes, bytearray, memoryview]) -> None:
        """Passes the next chunk of the request body (may wait while storage catches up)."""
        if not chunk:
            return
        data = bytes(chunk) if not isinstance(chunk, bytes) else chunk
        check(lib.berth_exchange_write(self._live(), data, len(data)))

    def finish(self) -> "Response":
        """Ends the body and returns the response (whose body is read lazily)."""
        handle = self._live()
        check(lib.berth_exchange_finish(handle))
        self._handle = None  # the response owns it now
        return Response(handle)

    def _live(self) -> ctypes.c_void_p:
        if self._handle is None:
            raise WrongStateError("the exchange is finished")
        return self._handle


class Response(_Handle):
    """A response: ``status``, ``headers`` and a body to iterate over in chunks (or
    :meth:`read` whole, for small bodies)."""

    _free = staticmethod(lib.berth_exchange_free)

    def __init__(self, handle: ctypes.c_void_p) -> None:
        self._handle = handle
        status = ctypes.c_uint16()
        check(lib.berth_exchange_status(handle, ctypes.byref(status)))
        count = ctypes.c_size_t()
        check(lib.berth_exchange_header_count(handle, ctypes.byref(count)))
        headers = []
        for index in range(count.value):
            name, value = ctypes.c_char_p(), ctypes.c_char_p()
            check(lib.berth_exchange_header(handle, index, ctypes.byref(name), ctypes.byref(value)))
            headers.append(((name.value or b"").decode(), (value.value or b"").decode()))
        #: The HTTP status.
        self.status: int = status.value
        #: Headers in order, as (name, value).
        self.headers: list[tuple[str, str]] = headers

    def header(self, name: str) -> Optional[str]:
        """The first value of a header, by case-insensitive name."""
        wanted = name.lower()
        return next((v for n, v in self.headers if n.lower() == wanted), None)

    def next_chunk(self) -> bytes:
        """The next chunk of the body; ``b""`` once it has ended."""
        if self._handle is None:
            return b""
        data, length = ctypes.c_void_p(), ctypes.c_size_t()
        check(lib.berth_exchange_next_chunk(self._handle, ctypes.byref(data), ctypes.byref(length)))
        if not length.value:
            self.close()
            return b""
        return ctypes.string_at(data.value, length.value)

    def __iter__(self) -> Iterator[bytes]:
        while True:
            chunk = self.next_chunk()
            if not chunk:
                return
            yield chunk

    def read(self) -> bytes:
        """The whole body (for manifests and JSON; iterate for blobs)."""
        return b"".join(self)

    def json(self):
        """The body parsed as JSON."""
        import json

        return json.loads(self.read())

    def __repr__(self) -> str:
        return f"<berth.Response {self.status}>"
