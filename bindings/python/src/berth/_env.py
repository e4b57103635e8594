"""A Registry from the environment, with the variables of ``berth serve``."""
from __future__ import annotations

import logging
import os
import threading
import time

from .registry import S3, Registry


def _flag(name: str) -> bool:
    return os.environ.get(name, "").lower() in ("1", "true", "yes", "on")


def _number(name: str):
    value = os.environ.get(name)
    return int(value) if value else None


def registry_from_env() -> Registry:
    """``BERTH_STORAGE`` (fs, s3 or memory; default fs), ``BERTH_ROOT`` (default
    ./berth-data), ``BERTH_S3_BUCKET``, ``BERTH_S3_ENDPOINT``, ``BERTH_S3_REGION``,
    ``BERTH_S3_ALLOW_HTTP``, ``BERTH_S3_PATH_STYLE``, ``BERTH_READ_ONLY``,
    ``BERTH_NO_DELETE``, ``BERTH_PART_SIZE``, ``BERTH_MANIFEST_LIMIT``,
    ``BERTH_CHUNK_MAX_LENGTH``, ``BERTH_AUTH`` (the login settings as JSON: see
    :class:`Registry`'s ``auth``), ``BERTH_GC`` (track references; see
    :func:`start_collector_from_env`), ``BERTH_RETENTION`` (retention rules as JSON: see
    :class:`Registry`'s ``retention``), ``BERTH_QUOTAS`` (quota rules as JSON: see
    :class:`Registry`'s ``quotas``) and ``BERTH_UPSTREAMS`` (pull-through cache rules as
    JSON: see :class:`Registry`'s ``upstreams``)."""
    storage = os.environ.get("BERTH_STORAGE", "fs")
    options = dict(
        read_only=_flag("BERTH_READ_ONLY"),
        delete_enabled=not _flag("BERTH_NO_DELETE"),
        part_size=_number("BERTH_PART_SIZE"),
        manifest_limit=_number("BERTH_MANIFEST_LIMIT"),
        chunk_max_length=_number("BERTH_CHUNK_MAX_LENGTH"),
        auth=os.environ.get("BERTH_AUTH") or None,
        track_references=_flag("BERTH_GC"),
        retention=os.environ.get("BERTH_RETENTION") or None,
        quotas=os.environ.get("BERTH_QUOTAS") or None,
        upstreams=os.environ.get("BERTH_UPSTREAMS") or None,
    )
    if storage == "fs":
        return Registry(os.environ.get("BERTH_ROOT", "berth-data"), **options)
    if storage == "memory":
        return Registry(memory=True, **options)
    if storage == "s3":
        bucket = os.environ.get("BERTH_S3_BUCKET")
        if not bucket:
            raise ValueError("BERTH_STORAGE=s3 needs BERTH_S3_BUCKET")
        s3 = S3(
            bucket,
            endpoint=os.environ.get("BERTH_S3_ENDPOINT"),
            region=os.environ.get("BERTH_S3_REGION"),
            allow_http=_flag("BERTH_S3_ALLOW_HTTP"),
            path_style=_flag("BERTH_S3_PATH_STYLE"),
        )
        return Registry(s3=s3, **options)
    raise ValueError(f"BERTH_STORAGE must be fs, s3 or memory, not {storage!r}")


def start_collector_from_env(registry: Registry) -> None:
    """With ``BERTH_GC`` on, collects garbage on a daemon thread every ``BERTH_GC_INTERVAL``
    seconds (default 3600): blobs nothing references, older than ``BERTH_GC_GRACE`` seconds
    (default 86400), and with ``BERTH_GC_UNTAGGED`` manifests untagged that long, as
    ``berth serve --gc`` does."""
    if not _flag("BERTH_GC"):
        return
    interval = _number("BERTH_GC_INTERVAL") or 3600
    grace = _number("BERTH_GC_GRACE")
    grace = 24 * 60 * 60 if grace is None else grace
    untagged = _flag("BERTH_GC_UNTAGGED")
    log = logging.getLogger("berth")

    def collect() -> None:
        while True:
            time.sleep(interval)
            try:
                while True:
                    report = registry.collect_garbage(grace=grace, untagged=untagged)
                    if report.tags_deleted or report.manifests_deleted or report.blobs_deleted or \
                            report.links_removed:
                        log.info("collected garbage: %s", report)
                    # Again while candidates are left (or the first marking has pages left).
                    if report.left == 0 or (report.visited == 0 and report.marked == 0):
                        break
            except Exception:  # a failed run is logged; the next one tries again
                log.exception("collecting garbage failed")

    threading.Thread(target=collect, name="berth-gc", daemon=True).start()
