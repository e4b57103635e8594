//! Storage implemented by the host: a table of C callbacks behind berth's `Storage` trait.
//!
//! Each callback gets the host's `env` first and reports through a `berth_storage_out`,
//! whose setters copy what they are given, so the host keeps ownership of its own memory.
//! Object bodies are read through a reader the host opens, so a blob never has to be in
//! memory whole.

use std::ffi::{CString, c_char, c_void};
use std::ops::Range;
use std::sync::Arc;

use async_trait::async_trait;
use berth::Storage;
use berth::storage::{
    ByteStream, Capabilities, Chunks, Durability, Key, ListPage, ObjectMeta, PartId, PartsUploadId,
    PutMode, PutOptions, StorageError,
};
use bytes::{Bytes, BytesMut};

use crate::result::{Failure, berth_result};
use crate::storage_out::berth_storage_out;

/// How much of an object one `read` callback is asked for.
const READ_CHUNK: usize = 64 * 1024;

/// How `put` treats an existing object.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum berth_put_mode {
    /// Replace whatever is there.
    Overwrite = 0,
    /// Write only if the key does not exist; else return `BERTH_RESULT_ALREADY_EXISTS`.
    Create = 1,
    /// Write only if the object's version is `expected_version`; else return
    /// `BERTH_RESULT_PRECONDITION_FAILED`.
    Update = 2,
}

/// Bytes berth lends to a callback for the length of the call.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct berth_slice {
    /// The first byte.
    pub data: *const u8,
    /// How many bytes.
    pub len: usize,
}

/// Storage callbacks. Every callback returns `BERTH_RESULT_OK` or one of the storage codes
/// (`BERTH_RESULT_NOT_FOUND`, `_ALREADY_EXISTS`, `_PRECONDITION_FAILED`, `_UNSUPPORTED`,
/// `_STORAGE_FAILED`). Keys are `/`-separated UTF-8 paths. The contract each must keep
/// (atomic publish, conditional writes, versions, ordered listing, parts) is the one of
/// berth's `Storage` trait; `berth_check_storage` tests an implementation against it.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct berth_storage_vtable {
    /// Opens an object (bytes `start..end` of it when `has_range`): report its whole size
    /// and version with `berth_storage_out_set_meta` and, unless the range is empty, a
    /// reader with `berth_storage_out_set_reader`.
    pub get: Option<
        unsafe extern "C" fn(
            env: *mut c_void,
            key: *const c_char,
            has_range: bool,
            start: u64,
            end: u64,
            out: *mut berth_storage_out,
        ) -> u32,
    >,
    /// Copies the next at most `capacity` bytes of an open reader into `buffer` and sets
    /// `*out_len`; 0 bytes means the end.
    pub read: Option<
        unsafe extern "C" fn(
            env: *mut c_void,
            reader: *mut c_void,
            buffer: *mut u8,
            capacity: usize,
            out_len: *mut usize,
        ) -> u32,
    >,
    /// Closes a reader (berth always closes what `get` opened).
    pub close: Option<unsafe extern "C" fn(env: *mut c_void, reader: *mut c_void)>,
    /// Reports an object's size and version with `berth_storage_out_set_meta`.
    pub head: Option<
        unsafe extern "C" fn(
            env: *mut c_void,
            key: *const c_char,
            out: *mut berth_storage_out,
        ) -> u32,
    >,
    /// Writes a whole object atomically (`expected_version` is NULL unless `mode` is
    /// `BERTH_PUT_MODE_UPDATE`) and reports the new size and version.
    pub put: Option<
        unsafe extern "C" fn(
            env: *mut c_void,
            key: *const c_char,
            data: *const u8,
            len: usize,
            mode: berth_put_mode,
            expected_version: *const c_char,
            out: *mut berth_storage_out,
        ) -> u32,
    >,
    /// Removes an object; a missing key is not an error.
    pub remove: Option<unsafe extern "C" fn(env: *mut c_void, key: *const c_char) -> u32>,
    /// Lists keys starting with `prefix`, in lexical order, after `start_after` (NULL for
    /// the start), at most `limit` entries; with `delimiter`, keys below the next `/` after
    /// the prefix fold into one prefix ending in `/`. Report them with
    /// `berth_storage_out_add_object` / `_add_prefix` and `_set_truncated`.
    pub list: Option<
        unsafe extern "C" fn(
            env: *mut c_void,
            prefix: *const c_char,
            delimiter: bool,
            start_after: *const c_char,
            limit: usize,
            out: *mut berth_storage_out,
        ) -> u32,
    >,
    /// Begins a parts upload; report its id with `berth_storage_out_set_id`.
    pub create_parts: Option<
        unsafe extern "C" fn(
            env: *mut c_void,
            staging_key: *const c_char,
            out: *mut berth_storage_out,
        ) -> u32,
    >,
    /// Stores part `number` (from 1), whose bytes are the `count` slices in order; report a
    /// part id, unique unless `positional_parts`, with `berth_storage_out_set_id`.
    pub put_part: Option<
        unsafe extern "C" fn(
            env: *mut c_void,
            upload: *const c_char,
            number: u32,
            chunks: *const berth_slice,
            count: usize,
            out: *mut berth_storage_out,
        ) -> u32,
    >,
    /// Publishes the parts, in order, as the object `target`; returns
    /// `BERTH_RESULT_ALREADY_EXISTS` (publishing nothing) when `target` exists.
    pub complete_parts: Option<
        unsafe extern "C" fn(
            env: *mut c_void,
            upload: *const c_char,
            parts: *const *const c_char,
            count: usize,
            target: *const c_char,
        ) -> u32,
    >,
    /// Discards a parts upload and everything written to it.
    pub abort_parts: Option<unsafe extern "C" fn(env: *mut c_void, upload: *const c_char) -> u32>,
    /// The smallest part (but the last) the storage accepts; 0 when any size goes.
    pub min_part_size: u64,
    /// The most parts one upload may have; 0 for no limit.
    pub max_parts: u32,
    /// Whether a part written again under the same number replaces the earlier one.
    pub positional_parts: bool,
}

/// The host's storage: its callbacks and `env`, finalized when the last user lets go.
#[derive(Debug)]
pub(crate) struct CallbackStorage {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    vtable: Option<berth_storage_vtable>,
    env: *mut c_void,
    finalizer: Option<unsafe extern "C" fn(env: *mut c_void)>,
}

// SAFETY: the host promises (berth_config_set_storage) that its callbacks may be called
// from any thread, concurrently, with `env`; berth never touches `env` itself.
unsafe impl Send for Shared {}
// SAFETY: as above.
unsafe impl Sync for Shared {}

impl Drop for Shared {
    fn drop(&mut self) {
        if let Some(finalizer) = self.finalizer {
            // SAFETY: `env` came with this finalizer, which runs exactly once, here.
            unsafe { finalizer(self.env) };
        }
    }
}

impl CallbackStorage {
    /// Takes ownership of `env`: from here on the finalizer runs when this is dropped.
    pub(crate) fn new(
        env: *mut c_void,
        finalizer: Option<unsafe extern "C" fn(env: *mut c_void)>,
    ) -> Self {
        Self {
            shared: Arc::new(Shared {
                vtable: None,
                env,
                finalizer,
            }),
        }
    }

    /// Installs the callbacks, every one of which is required.
    pub(crate) fn with_vtable(mut self, vtable: &berth_storage_vtable) -> Result<Self, Failure> {
        let missing = [
            ("get", vtable.get.is_none()),
            ("read", vtable.read.is_none()),
            ("close", vtable.close.is_none()),
            ("head", vtable.head.is_none()),
            ("put", vtable.put.is_none()),
            ("remove", vtable.remove.is_none()),
            ("list", vtable.list.is_none()),
            ("create_parts", vtable.create_parts.is_none()),
            ("put_part", vtable.put_part.is_none()),
            ("complete_parts", vtable.complete_parts.is_none()),
            ("abort_parts", vtable.abort_parts.is_none()),
        ];
        if let Some((name, _)) = missing.iter().find(|(_, missing)| *missing) {
            return Err(Failure::new(
                berth_result::InvalidArgument,
                format!("the storage vtable has no `{name}` callback"),
            ));
        }
        let shared = Arc::get_mut(&mut self.shared).ok_or_else(|| {
            Failure::new(berth_result::WrongState, "the storage is already in use")
        })?;
        shared.vtable = Some(*vtable);
        Ok(self)
    }

    fn vtable(&self) -> Result<&berth_storage_vtable, StorageError> {
        self.shared
            .vtable
            .as_ref()
            .ok_or(StorageError::Unsupported("storage without callbacks"))
    }
}

/// Turns a callback's code into a storage result, blaming `operation` for failures.
fn check(code: u32, operation: &str) -> Result<(), StorageError> {
    match berth_result::from_callback(code) {
        berth_result::Ok => Ok(()),
        berth_result::NotFound => Err(StorageError::NotFound),
        berth_result::AlreadyExists => Err(StorageError::AlreadyExists),
        berth_result::PreconditionFailed => Err(StorageError::PreconditionFailed),
        berth_result::Unsupported => Err(StorageError::Unsupported("an operation")),
        _ => Err(StorageError::backend(format!(
            "the storage callback `{operation}` failed with code {code}"
        ))),
    }
}

fn c_string(text: &str) -> Result<CString, StorageError> {
    CString::new(text).map_err(|_| StorageError::backend(format!("{text:?} contains NUL")))
}

pub(crate) fn require<T>(value: Option<T>, operation: &str, what: &str) -> Result<T, StorageError> {
    value.ok_or_else(|| {
        StorageError::backend(format!(
            "the storage callback `{operation}` returned OK without setting {what}"
        ))
    })
}

/// The callback a validated vtable is sure to have.
fn callback<F>(callback: Option<F>) -> Result<F, StorageError> {
    callback.ok_or(StorageError::Unsupported("a missing storage callback"))
}

/// An open reader of the host's, closed when dropped.
struct Reader {
    shared: Arc<Shared>,
    handle: *mut c_void,
}

// SAFETY: readers are used by one thread at a time, and the host's callbacks may be
// called from any thread (berth_config_set_storage).
unsafe impl Send for Reader {}

impl Reader {
    fn next_chunk(&mut self) -> Option<Result<Bytes, StorageError>> {
        let vtable = self.shared.vtable.as_ref()?;
        let read = match callback(vtable.read) {
            Ok(read) => read,
            Err(e) => return Some(Err(e)),
        };
        let mut buffer = BytesMut::zeroed(READ_CHUNK);
        let mut len = 0usize;
        // SAFETY: the buffer holds READ_CHUNK bytes and `len` is a valid out-parameter; the
        // host's reader came from its own `get`.
        let code = unsafe {
            read(
                self.shared.env,
                self.handle,
                buffer.as_mut_ptr(),
                READ_CHUNK,
                &mut len,
            )
        };
        if let Err(e) = check(code, "read") {
            return Some(Err(e));
        }
        if len > READ_CHUNK {
            return Some(Err(StorageError::backend(
                "the storage callback `read` reported more bytes than the buffer holds",
            )));
        }
        if len == 0 {
            return None;
        }
        buffer.truncate(len);
        Some(Ok(buffer.freeze()))
    }
}

impl Drop for Reader {
    fn drop(&mut self) {
        if let Some(close) = self.shared.vtable.as_ref().and_then(|v| v.close) {
            // SAFETY: the reader is open and closed exactly once, here.
            unsafe { close(self.shared.env, self.handle) };
        }
    }
}

#[async_trait]
impl Storage for CallbackStorage {
    async fn get(
        &self,
        key: &Key,
        range: Option<Range<u64>>,
    ) -> Result<(ObjectMeta, ByteStream), StorageError> {
        let get = callback(self.vtable()?.get)?;
        let key = c_string(key)?;
        let mut out = berth_storage_out::default();
        let (start, end) = range.as_ref().map_or((0, 0), |r| (r.start, r.end));
        // SAFETY: `key` and `out` live across the call; the host keeps the vtable contract.
        let code = unsafe {
            get(
                self.shared.env,
                key.as_ptr(),
                range.is_some(),
                start,
                end,
                &mut out,
            )
        };
        // A reader the host opened is closed even if the call failed.
        let reader = out.reader.map(|handle| Reader {
            shared: Arc::clone(&self.shared),
            handle: handle as *mut c_void,
        });
        check(code, "get")?;
        let meta = out.meta("get")?;
        let stream: ByteStream = match reader {
            Some(reader) => Box::pin(futures_util::stream::unfold(reader, |mut reader| async {
                reader.next_chunk().map(|chunk| (chunk, reader))
            })),
            None => Box::pin(futures_util::stream::empty()),
        };
        Ok((meta, stream))
    }

    async fn head(&self, key: &Key) -> Result<ObjectMeta, StorageError> {
        let head = callback(self.vtable()?.head)?;
        let key = c_string(key)?;
        let mut out = berth_storage_out::default();
        // SAFETY: `key` and `out` live across the call.
        check(
            unsafe { head(self.shared.env, key.as_ptr(), &mut out) },
            "head",
        )?;
        out.meta("head")
    }

    /// Every write reaches the host as durable: the callback table has no durability, and a
    /// host that makes every write durable is correct.
    async fn put(
        &self,
        key: &Key,
        data: Bytes,
        options: PutOptions,
    ) -> Result<ObjectMeta, StorageError> {
        let put = callback(self.vtable()?.put)?;
        let key = c_string(key)?;
        let (mode, expected) = match options.mode {
            PutMode::Overwrite => (berth_put_mode::Overwrite, None),
            PutMode::Create => (berth_put_mode::Create, None),
            PutMode::Update(version) => (berth_put_mode::Update, Some(c_string(version.as_str())?)),
        };
        let expected_ptr = expected.as_ref().map_or(std::ptr::null(), |v| v.as_ptr());
        let mut out = berth_storage_out::default();
        // SAFETY: every pointer lives across the call; `data` holds `len` bytes.
        let code = unsafe {
            put(
                self.shared.env,
                key.as_ptr(),
                data.as_ptr(),
                data.len(),
                mode,
                expected_ptr,
                &mut out,
            )
        };
        check(code, "put")?;
        out.meta("put")
    }

    async fn delete(&self, key: &Key, _: Durability) -> Result<(), StorageError> {
        let remove = callback(self.vtable()?.remove)?;
        let key = c_string(key)?;
        // SAFETY: `key` lives across the call.
        check(unsafe { remove(self.shared.env, key.as_ptr()) }, "remove")
    }

    async fn list(
        &self,
        prefix: &str,
        delimiter: bool,
        start_after: Option<&str>,
        limit: usize,
    ) -> Result<ListPage, StorageError> {
        let list = callback(self.vtable()?.list)?;
        let prefix = c_string(prefix)?;
        let start_after = start_after.map(c_string).transpose()?;
        let start_ptr = start_after
            .as_ref()
            .map_or(std::ptr::null(), |s| s.as_ptr());
        let mut out = berth_storage_out::default();
        // SAFETY: every pointer lives across the call.
        let code = unsafe {
            list(
                self.shared.env,
                prefix.as_ptr(),
                delimiter,
                start_ptr,
                limit,
                &mut out,
            )
        };
        check(code, "list")?;
        Ok(out.page)
    }

    fn capabilities(&self) -> Capabilities {
        self.shared
            .vtable
            .map_or_else(Capabilities::default, |v| Capabilities {
                min_part_size: v.min_part_size,
                max_parts: (v.max_parts > 0).then_some(v.max_parts),
                positional_parts: v.positional_parts,
                readable_parts: false,
            })
    }

    async fn create_parts(&self, staging_key: &Key) -> Result<PartsUploadId, StorageError> {
        let create_parts = callback(self.vtable()?.create_parts)?;
        let staging_key = c_string(staging_key)?;
        let mut out = berth_storage_out::default();
        // SAFETY: `staging_key` and `out` live across the call.
        let code = unsafe { create_parts(self.shared.env, staging_key.as_ptr(), &mut out) };
        check(code, "create_parts")?;
        require(out.id, "create_parts", "an upload id").map(PartsUploadId::new)
    }

    async fn put_part(
        &self,
        upload: &PartsUploadId,
        number: u32,
        data: Chunks,
    ) -> Result<PartId, StorageError> {
        let put_part = callback(self.vtable()?.put_part)?;
        let upload = c_string(upload.as_str())?;
        let slices: Vec<berth_slice> = data
            .iter()
            .map(|chunk| berth_slice {
                data: chunk.as_ptr(),
                len: chunk.len(),
            })
            .collect();
        let mut out = berth_storage_out::default();
        // SAFETY: the slices point into `data`, which lives across the call.
        let code = unsafe {
            put_part(
                self.shared.env,
                upload.as_ptr(),
                number,
                slices.as_ptr(),
                slices.len(),
                &mut out,
            )
        };
        check(code, "put_part")?;
        require(out.id, "put_part", "a part id").map(PartId::new)
    }

    async fn complete_parts(
        &self,
        upload: &PartsUploadId,
        parts: &[PartId],
        target: &Key,
    ) -> Result<(), StorageError> {
        let complete_parts = callback(self.vtable()?.complete_parts)?;
        let upload = c_string(upload.as_str())?;
        let target = c_string(target)?;
        let parts = parts
            .iter()
            .map(|part| c_string(part.as_str()))
            .collect::<Result<Vec<_>, _>>()?;
        let pointers: Vec<*const c_char> = parts.iter().map(|part| part.as_ptr()).collect();
        // SAFETY: every string and the pointer array live across the call.
        let code = unsafe {
            complete_parts(
                self.shared.env,
                upload.as_ptr(),
                pointers.as_ptr(),
                pointers.len(),
                target.as_ptr(),
            )
        };
        check(code, "complete_parts")
    }

    async fn abort_parts(&self, upload: &PartsUploadId) -> Result<(), StorageError> {
        let abort_parts = callback(self.vtable()?.abort_parts)?;
        let upload = c_string(upload.as_str())?;
        // SAFETY: `upload` lives across the call.
        check(
            unsafe { abort_parts(self.shared.env, upload.as_ptr()) },
            "abort_parts",
        )
    }
}
