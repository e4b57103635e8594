//! The names the storage contract deals in: object keys, and what a storage hands out (object
//! versions, parts uploads and their parts). Each is a string underneath, but a type of its
//! own, so that one is never passed where another belongs. A leaf: the upload state machine
//! records them without depending on the storage contract, which re-exports them.

use std::fmt;

use serde::{Deserialize, Serialize};

macro_rules! opaque_name {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            /// Wraps the backend's text.
            pub fn new(text: impl Into<String>) -> Self {
                Self(text.into())
            }

            /// The text, as the backend gave it.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({:?})", stringify!($name), self.0)
            }
        }

        impl From<String> for $name {
            fn from(text: String) -> Self {
                Self(text)
            }
        }

        impl From<&str> for $name {
            fn from(text: &str) -> Self {
                Self(text.to_owned())
            }
        }

        impl From<$name> for String {
            fn from(name: $name) -> String {
                name.0
            }
        }
    };
}

opaque_name! {
    /// An object's version: changes whenever its content is replaced; what
    /// `PutMode::Update` compares.
    Version
}

opaque_name! {
    /// A parts upload, as `Storage::create_parts` names it.
    PartsUploadId
}

opaque_name! {
    /// One part of a parts upload, as `Storage::put_part` names it.
    PartId
}

opaque_name! {
    /// An object's key: `/`-separated UTF-8 segments without a leading `/` (the registry's
    /// layout makes them; a backend refuses one it cannot store). Reads as the `str` it is.
    Key
}

impl std::ops::Deref for Key {
    type Target = str;

    fn deref(&self) -> &str {
        &self.0
    }
}

impl PartialEq<str> for Key {
    fn eq(&self, other: &str) -> bool {
        self.0 == other
    }
}

impl PartialEq<&str> for Key {
    fn eq(&self, other: &&str) -> bool {
        self.0 == *other
    }
}

impl AsRef<str> for Key {
    fn as_ref(&self) -> &str {
        &self.0
    }
}
