//! Result codes, their messages, the per-thread error detail, and the panic boundary that
//! every entry point goes through.

use std::cell::RefCell;
use std::ffi::{CStr, CString, c_char};
use std::panic::{AssertUnwindSafe, catch_unwind};

use berth::StorageError;

/// What a call did. `BERTH_RESULT_OK` (0) is success; every other value names a failure,
/// described by `berth_result_message()` and, in detail, by `berth_last_error()`.
///
/// The codes from `BERTH_RESULT_NOT_FOUND` on are also what storage callbacks return.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum berth_result {
    /// Success.
    Ok = 0,
    /// A required pointer argument was NULL.
    NullParameter = 1,
    /// An argument was not valid: a string that is not UTF-8, a value out of range.
    InvalidArgument = 2,
    /// The call does not fit the handle's state (for example a body written after the
    /// exchange finished).
    WrongState = 3,
    /// berth panicked; the handle the call was made on should be freed.
    Panic = 4,
    /// The storage a configuration names cannot be opened.
    StorageUnavailable = 5,
    /// The registry's worker threads could not be started.
    RuntimeUnavailable = 6,
    /// A response body failed part-way (the storage failed while it was read); the
    /// response is incomplete and the connection should be closed.
    BodyFailed = 7,
    /// The storage does not meet berth's storage contract (`berth_check_storage`).
    CheckFailed = 8,
    /// Storage: no object at the key (or no parts upload with that id).
    NotFound = 100,
    /// Storage: a create-only write found the key taken.
    AlreadyExists = 101,
    /// Storage: a compare-and-swap write found another version.
    PreconditionFailed = 102,
    /// Storage: the backend cannot do this operation.
    Unsupported = 103,
    /// Storage: any other failure of the backend (IO, network, service errors).
    StorageFailed = 104,
}

impl berth_result {
    /// The result a storage callback returned, by number; unknown numbers are failures.
    pub(crate) fn from_callback(code: u32) -> Self {
        match code {
            0 => Self::Ok,
            100 => Self::NotFound,
            101 => Self::AlreadyExists,
            102 => Self::PreconditionFailed,
            103 => Self::Unsupported,
            _ => Self::StorageFailed,
        }
    }

    fn message(self) -> &'static CStr {
        match self {
            Self::Ok => c"ok",
            Self::NullParameter => c"a required pointer argument was NULL",
            Self::InvalidArgument => c"an argument was not valid",
            Self::WrongState => c"the call does not fit the state of the handle",
            Self::Panic => c"berth panicked (a bug); free the handle",
            Self::StorageUnavailable => c"the storage cannot be opened",
            Self::RuntimeUnavailable => c"the registry's worker threads could not be started",
            Self::BodyFailed => c"the response body failed part-way",
            Self::CheckFailed => c"the storage does not meet berth's storage contract",
            Self::NotFound => c"storage: object not found",
            Self::AlreadyExists => c"storage: object already exists",
            Self::PreconditionFailed => c"storage: object changed since it was read",
            Self::Unsupported => c"storage: operation not supported",
            Self::StorageFailed => c"storage: the backend failed",
        }
    }
}

/// A failure inside berth-ffi: the code the caller gets and the detail kept for
/// `berth_last_error()`.
#[derive(Debug)]
pub(crate) struct Failure {
    pub(crate) code: berth_result,
    pub(crate) detail: String,
}

impl Failure {
    pub(crate) fn new(code: berth_result, detail: impl Into<String>) -> Self {
        Self {
            code,
            detail: detail.into(),
        }
    }

    pub(crate) fn null(what: &str) -> Self {
        Self::new(berth_result::NullParameter, format!("{what} is NULL"))
    }

    pub(crate) fn wrong_state(detail: impl Into<String>) -> Self {
        Self::new(berth_result::WrongState, detail)
    }
}

impl From<&StorageError> for berth_result {
    fn from(error: &StorageError) -> Self {
        match error {
            StorageError::NotFound => Self::NotFound,
            StorageError::AlreadyExists => Self::AlreadyExists,
            StorageError::PreconditionFailed => Self::PreconditionFailed,
            StorageError::Unsupported(_) => Self::Unsupported,
            _ => Self::StorageFailed,
        }
    }
}

thread_local! {
    static LAST_ERROR: RefCell<Option<CString>> = const { RefCell::new(None) };
}

fn remember(detail: &str) {
    let detail = CString::new(detail.replace('\0', " ")).unwrap_or_default();
    LAST_ERROR.with(|last| *last.borrow_mut() = Some(detail));
}

/// Runs an entry point's body behind the panic boundary: its failure becomes a result code
/// (its detail kept for `berth_last_error`), and so does a panic.
pub(crate) fn guard(body: impl FnOnce() -> Result<(), Failure>) -> berth_result {
    match catch_unwind(AssertUnwindSafe(body)) {
        Ok(Ok(())) => berth_result::Ok,
        Ok(Err(failure)) => {
            remember(&failure.detail);
            failure.code
        }
        Err(panic) => {
            remember(&format!("berth panicked: {}", panic_message(&*panic)));
            berth_result::Panic
        }
    }
}

/// Like [`guard`] for entry points that cannot report failure (the `_free` functions).
pub(crate) fn guard_void(body: impl FnOnce()) {
    if let Err(panic) = catch_unwind(AssertUnwindSafe(body)) {
        remember(&format!("berth panicked: {}", panic_message(&*panic)));
    }
}

/// The text of a panic payload.
pub(crate) fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
        .unwrap_or_else(|| "no message".to_owned())
}

/// Reads a required NUL-terminated UTF-8 argument.
///
/// # Safety
/// `ptr` is NULL or points to a NUL-terminated string that outlives the call.
pub(crate) unsafe fn str_arg<'a>(ptr: *const c_char, what: &str) -> Result<&'a str, Failure> {
    if ptr.is_null() {
        return Err(Failure::null(what));
    }
    // SAFETY: the caller promises a NUL-terminated string that outlives the call.
    let text = unsafe { CStr::from_ptr(ptr) };
    text.to_str().map_err(|_| {
        Failure::new(
            berth_result::InvalidArgument,
            format!("{what} is not valid UTF-8"),
        )
    })
}

/// Reads a required NUL-terminated argument as text, decoding bytes that are not UTF-8 as
/// U+FFFD.
///
/// # Safety
/// As for [`str_arg`].
pub(crate) unsafe fn lossy_str_arg(ptr: *const c_char, what: &str) -> Result<String, Failure> {
    if ptr.is_null() {
        return Err(Failure::null(what));
    }
    // SAFETY: the caller promises a NUL-terminated string that outlives the call.
    let text = unsafe { CStr::from_ptr(ptr) };
    Ok(text.to_string_lossy().into_owned())
}

/// Reads an optional NUL-terminated UTF-8 argument (NULL for none).
///
/// # Safety
/// As for [`str_arg`].
pub(crate) unsafe fn optional_str_arg<'a>(
    ptr: *const c_char,
    what: &str,
) -> Result<Option<&'a str>, Failure> {
    if ptr.is_null() {
        Ok(None)
    } else {
        // SAFETY: forwarded from the caller.
        unsafe { str_arg(ptr, what) }.map(Some)
    }
}

/// [`lossy_str_arg`] for a string that may be NULL.
///
/// # Safety
/// `ptr` is NULL or a NUL-terminated string.
pub(crate) unsafe fn optional_lossy_str_arg(
    ptr: *const c_char,
    what: &str,
) -> Result<Option<String>, Failure> {
    if ptr.is_null() {
        Ok(None)
    } else {
        // SAFETY: forwarded from the caller.
        unsafe { lossy_str_arg(ptr, what) }.map(Some)
    }
}

/// Writes an out-parameter after checking it, only on success.
///
/// # Safety
/// `out` is NULL or valid for a write of `T`.
pub(crate) unsafe fn write_out<T>(out: *mut T, value: T, what: &str) -> Result<(), Failure> {
    if out.is_null() {
        return Err(Failure::null(what));
    }
    // SAFETY: checked non-NULL; the caller promises it is valid for writes.
    unsafe { out.write(value) };
    Ok(())
}

/// A static, NUL-terminated description of a result code (never NULL; unknown codes get a
/// generic text).
#[unsafe(no_mangle)]
pub extern "C" fn berth_result_message(result: u32) -> *const c_char {
    let known = [
        berth_result::Ok,
        berth_result::NullParameter,
        berth_result::InvalidArgument,
        berth_result::WrongState,
        berth_result::Panic,
        berth_result::StorageUnavailable,
        berth_result::RuntimeUnavailable,
        berth_result::BodyFailed,
        berth_result::CheckFailed,
        berth_result::NotFound,
        berth_result::AlreadyExists,
        berth_result::PreconditionFailed,
        berth_result::Unsupported,
        berth_result::StorageFailed,
    ];
    known
        .iter()
        .find(|code| **code as u32 == result)
        .map_or(c"unknown result code", |code| code.message())
        .as_ptr()
}

/// Copies the detail of the last failure on the calling thread into `buffer` (at most
/// `capacity` bytes, NUL-terminated, truncated if need be) and returns the detail's full
/// length without the NUL; 0 when no call on this thread has failed. `buffer` may be NULL
/// when `capacity` is 0, to ask for the length.
///
/// # Safety
/// `buffer` is valid for `capacity` bytes of writes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn berth_last_error(buffer: *mut c_char, capacity: usize) -> usize {
    LAST_ERROR.with(|last| {
        let last = last.borrow();
        let Some(detail) = last.as_ref() else {
            return 0;
        };
        let bytes = detail.as_bytes();
        if !buffer.is_null() && capacity > 0 {
            let n = bytes.len().min(capacity - 1);
            // SAFETY: `buffer` holds `capacity` bytes; we write `n + 1 <= capacity`.
            unsafe {
                std::ptr::copy_nonoverlapping(bytes.as_ptr(), buffer.cast::<u8>(), n);
                buffer.add(n).write(0);
            }
        }
        bytes.len()
    })
}
