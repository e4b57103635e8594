"""ctypes declarations of berth's C ABI (ffi/include/berth.h). Internal: use berth.Registry."""
from __future__ import annotations

import ctypes
import os
from ctypes import (
    POINTER,
    c_bool,
    c_char_p,
    c_size_t,
    c_uint16,
    c_uint32,
    c_uint64,
    c_void_p,
)
from pathlib import Path

from .errors import error_for

_HERE = Path(__file__).resolve().parent


def _load() -> ctypes.CDLL:
    path = os.environ.get("BERTH_FFI_LIB") or str(_HERE / "libberth_ffi.so")
    try:
        return ctypes.CDLL(path)
    except OSError as e:
        raise ImportError(
            f"berth's native library could not be loaded from {path}: {e}. "
            "Reinstall with `pip install ./bindings/python` from a berth checkout."
        ) from e


lib = _load()

# Opaque handles are plain pointers on this side.
Config = c_void_p
Registry = c_void_p
Exchange = c_void_p

_SIGNATURES = {
    "berth_result_message": (c_char_p, [c_uint32]),
    "berth_last_error": (c_size_t, [ctypes.c_char_p, c_size_t]),
    "berth_version": (c_char_p, []),
    "berth_config_new": (c_uint32, [POINTER(Config)]),
    "berth_config_free": (None, [Config]),
    "berth_config_set_fs": (c_uint32, [Config, c_char_p]),
    "berth_config_set_memory": (c_uint32, [Config]),
    "berth_config_set_s3": (c_uint32, [Config, c_char_p, c_char_p, c_char_p, c_bool, c_bool]),
    "berth_config_set_read_only": (c_uint32, [Config, c_bool]),
    "berth_config_set_retention": (c_uint32, [Config, c_char_p]),
    "berth_config_set_quotas": (c_uint32, [Config, c_char_p]),
    "berth_config_set_upstreams": (c_uint32, [Config, c_char_p]),
    "berth_config_set_track_references": (c_uint32, [Config, c_bool]),
    "berth_config_set_auth": (c_uint32, [Config, c_char_p]),
    "berth_config_set_delete_enabled": (c_uint32, [Config, c_bool]),
    "berth_config_set_automatic_mount": (c_uint32, [Config, c_bool]),
    "berth_config_set_part_size": (c_uint32, [Config, c_size_t]),
    "berth_config_set_manifest_limit": (c_uint32, [Config, c_size_t]),
    "berth_config_set_chunk_max_length": (c_uint32, [Config, c_uint64]),
    "berth_config_set_blob_redirect": (c_uint32, [Config, c_uint64]),
    "berth_config_set_worker_threads": (c_uint32, [Config, c_size_t]),
    "berth_config_set_notice_callback": (c_uint32, [Config, c_void_p, c_void_p]),
    "berth_config_set_key_set_fetcher": (c_uint32, [Config, c_void_p, c_void_p]),
    "berth_key_set_out_set_body": (c_uint32, [c_void_p, c_char_p, c_size_t]),
    "berth_key_set_out_set_error": (c_uint32, [c_void_p, c_char_p]),
    "berth_registry_new": (c_uint32, [Config, POINTER(Registry)]),
    "berth_registry_free": (None, [Registry]),
    "berth_registry_purge_uploads": (c_uint32, [Registry, c_uint64, POINTER(c_uint64)]),
    "berth_registry_collect_garbage": (c_uint32, [Registry, c_uint64, c_size_t, c_uint32, c_void_p]),
    "berth_registry_scrub": (c_uint32, [Registry, c_uint64, c_uint64, c_uint32, c_void_p]),
    "berth_registry_mirror": (c_uint32, [Registry, c_char_p, c_char_p, c_char_p, c_void_p]),
    "berth_check_storage": (c_uint32, [Config]),
    "berth_exchange_new": (c_uint32, [Registry, c_char_p, c_char_p, c_char_p, POINTER(Exchange)]),
    "berth_exchange_add_header": (c_uint32, [Exchange, c_char_p, c_char_p]),
    "berth_exchange_write": (c_uint32, [Exchange, c_char_p, c_size_t]),
    "berth_exchange_finish": (c_uint32, [Exchange]),
    "berth_exchange_status": (c_uint32, [Exchange, POINTER(c_uint16)]),
    "berth_exchange_header_count": (c_uint32, [Exchange, POINTER(c_size_t)]),
    "berth_exchange_header": (c_uint32, [Exchange, c_size_t, POINTER(c_char_p), POINTER(c_char_p)]),
    "berth_exchange_next_chunk": (c_uint32, [Exchange, POINTER(c_void_p), POINTER(c_size_t)]),
    "berth_exchange_free": (None, [Exchange]),
}

for _name, (_restype, _argtypes) in _SIGNATURES.items():
    _function = getattr(lib, _name)
    _function.restype = _restype
    _function.argtypes = _argtypes


def last_error() -> str:
    """The detail of the last failure on this thread."""
    length = lib.berth_last_error(None, 0)
    if not length:
        return ""
    buffer = ctypes.create_string_buffer(length + 1)
    lib.berth_last_error(buffer, length + 1)
    return buffer.value.decode("utf-8", "replace")


def check(code: int) -> None:
    """Raises the exception for a result code other than OK."""
    if code != 0:
        message = lib.berth_result_message(code).decode()
        raise error_for(code, message, last_error())


def text(value: str | None) -> bytes | None:
    """A C string argument (NUL-free UTF-8), or NULL for None."""
    if value is None:
        return None
    encoded = value.encode("utf-8")
    if b"\0" in encoded:
        raise ValueError(f"{value!r} contains a NUL character")
    return encoded
