//! `berth_storage_out`: where a storage callback reports what it found (an object's meta,
//! a reader, an id, a listing page), through setters that copy what they are given.

use std::ffi::{c_char, c_void};

use berth::StorageError;
use berth::storage::{ListPage, Listed, ObjectMeta};

use crate::result::{Failure, berth_result, guard, str_arg};

/// Where a storage callback reports what it found; filled with the
/// `berth_storage_out_*` functions during the call.
#[derive(Debug, Default)]
pub struct berth_storage_out {
    pub(crate) meta: Option<ObjectMeta>,
    pub(crate) last_modified: Option<u64>,
    pub(crate) reader: Option<usize>,
    pub(crate) id: Option<String>,
    pub(crate) page: ListPage,
}

impl berth_storage_out {
    /// The meta the callback reported, with the modification time it reported (in either
    /// order).
    pub(crate) fn meta(&self, operation: &str) -> Result<ObjectMeta, StorageError> {
        let mut meta =
            crate::callbacks::require(self.meta.clone(), operation, "the object's meta")?;
        meta.last_modified = meta.last_modified.or(self.last_modified);
        Ok(meta)
    }
}

/// Applies `change` to the out-parameter a callback was given.
///
/// # Safety
/// `out` is NULL or the `berth_storage_out` of a callback that is running.
unsafe fn report(
    out: *mut berth_storage_out,
    change: impl FnOnce(&mut berth_storage_out) -> Result<(), Failure>,
) -> berth_result {
    guard(|| {
        // SAFETY: forwarded from the caller.
        let out = unsafe { out.as_mut() }.ok_or_else(|| Failure::null("out"))?;
        change(out)
    })
}

/// Reports an object's size and version (an opaque string that changes whenever its
/// content is replaced). Call it from `get`, `head` and `put`.
///
/// # Safety
/// `out` is the one the running callback was given; `version` is NUL-terminated.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn berth_storage_out_set_meta(
    out: *mut berth_storage_out,
    size: u64,
    version: *const c_char,
) -> berth_result {
    // SAFETY: the caller's promises cover both pointers.
    unsafe {
        report(out, |out| {
            let version = str_arg(version, "version")?;
            out.meta = Some(ObjectMeta {
                size,
                version: version.into(),
                last_modified: None,
            });
            Ok(())
        })
    }
}

/// Reports when an object was last written, in milliseconds since the Unix epoch, by the
/// storage's clock (a file's mtime, a service's last-modified time, or the time the host wrote
/// it). Call it from `get` and `head` besides `berth_storage_out_set_meta`, and from `list`
/// after each `berth_storage_out_add_object`, for the object just added; ages measured for
/// garbage collection and retention come from it, so a storage that does not report it has
/// objects of unknown age (and `berth_check_storage` says so).
///
/// # Safety
/// `out` is the one the running callback was given.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn berth_storage_out_set_last_modified(
    out: *mut berth_storage_out,
    millis: u64,
) -> berth_result {
    // SAFETY: the caller's promise covers `out`.
    unsafe {
        report(out, |out| {
            out.last_modified = Some(millis);
            if let Some(listed) = out.page.objects.last_mut() {
                listed.last_modified = Some(millis);
            }
            Ok(())
        })
    }
}

/// Reports the reader `get` opened; berth reads it with `read` and closes it with `close`
/// (also when the call fails after this).
///
/// # Safety
/// `out` is the one the running `get` callback was given.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn berth_storage_out_set_reader(
    out: *mut berth_storage_out,
    reader: *mut c_void,
) -> berth_result {
    // SAFETY: the caller's promise covers `out`.
    unsafe {
        report(out, |out| {
            // Kept as an address: `berth_storage_out` itself never dereferences it.
            out.reader = Some(reader as usize);
            Ok(())
        })
    }
}

/// Reports the id of a parts upload (`create_parts`) or of a part (`put_part`).
///
/// # Safety
/// `out` is the one the running callback was given; `id` is NUL-terminated.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn berth_storage_out_set_id(
    out: *mut berth_storage_out,
    id: *const c_char,
) -> berth_result {
    // SAFETY: the caller's promises cover both pointers.
    unsafe {
        report(out, |out| {
            out.id = Some(str_arg(id, "id")?.to_owned());
            Ok(())
        })
    }
}

/// Adds an object key to a listing (`list`), in order.
///
/// # Safety
/// `out` is the one the running `list` callback was given; `key` is NUL-terminated.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn berth_storage_out_add_object(
    out: *mut berth_storage_out,
    key: *const c_char,
) -> berth_result {
    // SAFETY: the caller's promises cover both pointers.
    unsafe {
        report(out, |out| {
            out.page.objects.push(Listed::new(str_arg(key, "key")?));
            Ok(())
        })
    }
}

/// Adds a folded prefix (ending in `/`) to a listing (`list` with a delimiter), in order.
///
/// # Safety
/// `out` is the one the running `list` callback was given; `prefix` is NUL-terminated.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn berth_storage_out_add_prefix(
    out: *mut berth_storage_out,
    prefix: *const c_char,
) -> berth_result {
    // SAFETY: the caller's promises cover both pointers.
    unsafe {
        report(out, |out| {
            out.page
                .prefixes
                .push(str_arg(prefix, "prefix")?.to_owned());
            Ok(())
        })
    }
}

/// Says whether more entries follow the ones listed (`list`).
///
/// # Safety
/// `out` is the one the running `list` callback was given.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn berth_storage_out_set_truncated(
    out: *mut berth_storage_out,
    truncated: bool,
) -> berth_result {
    // SAFETY: the caller's promise covers `out`.
    unsafe {
        report(out, |out| {
            out.page.truncated = truncated;
            Ok(())
        })
    }
}
