//! `RegistryError`: what JavaScript catches when a call fails (as opposed to a protocol
//! error, which is a `Response` with the OCI error body).

use wasm_bindgen::prelude::*;

/// A failure of a berth call: `code` names it (`INVALID_OPTIONS`, `INVALID_REQUEST`,
/// `STORAGE`), `status` is the HTTP status it corresponds to, `message` says what to do.
#[wasm_bindgen]
#[derive(Debug, Clone)]
pub struct RegistryError {
    code: String,
    status: u16,
    message: String,
}

#[wasm_bindgen]
impl RegistryError {
    /// The error's code.
    #[wasm_bindgen(getter)]
    pub fn code(&self) -> String {
        self.code.clone()
    }

    /// The HTTP status the error corresponds to.
    #[wasm_bindgen(getter)]
    pub fn status(&self) -> u16 {
        self.status
    }

    /// What went wrong, and what to do about it.
    #[wasm_bindgen(getter)]
    pub fn message(&self) -> String {
        self.message.clone()
    }

    /// `RegistryError(CODE, status): message`.
    #[wasm_bindgen(js_name = toString)]
    pub fn to_js_string(&self) -> String {
        format!(
            "RegistryError({}, {}): {}",
            self.code, self.status, self.message
        )
    }
}

impl RegistryError {
    fn new(code: &str, status: u16, message: impl Into<String>) -> Self {
        Self {
            code: code.to_owned(),
            status,
            message: message.into(),
        }
    }

    /// The options given to `new Registry` are not usable.
    pub(crate) fn options(message: impl Into<String>) -> Self {
        Self::new("INVALID_OPTIONS", 400, message)
    }

    /// What was passed to `fetch` is not a request.
    pub(crate) fn request(message: impl Into<String>) -> Self {
        Self::new("INVALID_REQUEST", 400, message)
    }

    /// The storage failed.
    pub(crate) fn storage(message: impl Into<String>) -> Self {
        Self::new("STORAGE", 500, message)
    }

    /// An error the registry answers with: its spec code, status and message.
    pub(crate) fn registry(error: &berth::Error) -> Self {
        Self::new(error.code().as_str(), error.status(), error.message())
    }
}
