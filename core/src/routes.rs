//! The route table: which endpoint a request path names.
//!
//! Paths are matched from the right end, because a repository name may itself contain the
//! segments `blobs`, `uploads`, `manifests`, `tags` or `referrers`:
//!
//! | path (after `/v2/`)                   | route          | spec id         |
//! |---------------------------------------|----------------|-----------------|
//! | *(empty)*                             | `ApiVersion`   | end-1           |
//! | `_catalog`                            | `Catalog`      | Docker v2 API   |
//! | `<name>/tags/list`                    | `Tags`         | end-8           |
//! | `<name>/blobs/uploads/` (or no `/`)   | `StartUpload`  | end-4, end-11   |
//! | `<name>/blobs/uploads/<id>`           | `Upload`       | end-5, 6, 13, 14|
//! | `<name>/blobs/<digest>`               | `Blob`         | end-2, end-10   |
//! | `<name>/manifests/<reference>`        | `Manifest`     | end-3, 7, 9     |
//! | `<name>/referrers/<digest>`           | `Referrers`    | end-12          |
//! | `<name>/` (DELETE)                    | `Repository`   | berth (admin)   |
//! | `_usage/<name>`                       | `Usage`        | berth (admin)   |
//!
//! No repository name component starts with `_`, so `_catalog` and `_usage` name no
//! repository.

use crate::digest::Digest;
use crate::error::{Error, ErrorCode};
use crate::http::parse_digest;
use crate::reference::{Reference, RepositoryName};
use crate::request::{Method, percent_decode};
use crate::upload::UploadId;

/// An endpoint, with its path parameters parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// `/v2/`: the API version check.
    ApiVersion,
    /// `/v2/_catalog`: the repository list.
    Catalog,
    /// `/v2/<name>/tags/list`.
    Tags {
        /// Repository.
        name: RepositoryName,
    },
    /// `/v2/<name>/manifests/<reference>`.
    Manifest {
        /// Repository.
        name: RepositoryName,
        /// Tag or digest.
        reference: Reference,
    },
    /// `/v2/<name>/blobs/<digest>`.
    Blob {
        /// Repository.
        name: RepositoryName,
        /// Blob digest.
        digest: Digest,
    },
    /// `/v2/<name>/blobs/uploads/`.
    StartUpload {
        /// Repository.
        name: RepositoryName,
    },
    /// `/v2/<name>/blobs/uploads/<id>`.
    Upload {
        /// Repository.
        name: RepositoryName,
        /// Session id.
        id: UploadId,
    },
    /// `/v2/<name>/referrers/<digest>`.
    Referrers {
        /// Repository.
        name: RepositoryName,
        /// Subject digest.
        digest: Digest,
    },
    /// `/v2/<name>/`: the repository itself (DELETE only: an admin deletes it whole).
    Repository {
        /// Repository.
        name: RepositoryName,
    },
    /// `/v2/_usage/<name>`: what a repository, and those below its name, hold against their
    /// quotas (GET only, an admin's).
    Usage {
        /// Repository or namespace.
        name: RepositoryName,
    },
}

impl Route {
    /// Finds the route for a (percent-encoded) path. The method matters only for the error
    /// an invalid tag gets: reading one is a miss (404), pushing one is invalid (400).
    pub fn parse(method: Method, path: &str) -> Result<Self, Error> {
        let path = percent_decode(path);
        let rest = path
            .strip_prefix("/v2/")
            .or_else(|| (path == "/v2").then_some(""))
            .ok_or_else(not_found)?;
        if rest.is_empty() {
            return Ok(Self::ApiVersion);
        }
        if rest == "_catalog" {
            return Ok(Self::Catalog);
        }
        if let Some(name) = rest.strip_prefix("_usage/") {
            return Ok(Self::Usage {
                name: parse_name(&[name.trim_end_matches('/')])?,
            });
        }
        let segments: Vec<&str> = rest.split('/').collect();
        let n = segments.len();
        if segments[n - 1].is_empty()
            && n > 1
            && let Ok(name) = segments[..n - 1].join("/").parse::<RepositoryName>()
            && !matches!(segments[n - 2], "uploads")
        {
            return Ok(Self::Repository { name });
        }
        let name_before =
            |count: usize| -> Option<&[&str]> { (n > count).then(|| &segments[..n - count]) };
        let at = |i_from_end: usize| n.checked_sub(i_from_end).map(|i| segments[i]);

        if at(2) == Some("tags")
            && at(1) == Some("list")
            && let Some(name) = name_before(2)
        {
            return Ok(Self::Tags {
                name: parse_name(name)?,
            });
        }
        if at(3) == Some("blobs")
            && at(2) == Some("uploads")
            && let Some(name) = name_before(3)
        {
            let name = parse_name(name)?;
            let id = segments[n - 1];
            if id.is_empty() {
                return Ok(Self::StartUpload { name });
            }
            let id = UploadId::parse(id).ok_or_else(|| {
                Error::new(
                    ErrorCode::BlobUploadUnknown,
                    "blob upload unknown to registry",
                )
            })?;
            return Ok(Self::Upload { name, id });
        }
        if at(2) == Some("blobs")
            && at(1) == Some("uploads")
            && let Some(name) = name_before(2)
        {
            return Ok(Self::StartUpload {
                name: parse_name(name)?,
            });
        }
        if let (Some(kind), Some(name)) = (at(2), name_before(2)) {
            let last = segments[n - 1];
            match kind {
                "blobs" => {
                    return Ok(Self::Blob {
                        name: parse_name(name)?,
                        digest: parse_digest(last)?,
                    });
                }
                "manifests" => {
                    let name = parse_name(name)?;
                    let reference = last.parse().map_err(|e| match e {
                        crate::reference::ReferenceError::Digest(e) => {
                            Error::new(ErrorCode::DigestInvalid, e.to_string())
                        }
                        crate::reference::ReferenceError::Tag(e) if method == Method::Put => {
                            Error::new(ErrorCode::ManifestInvalid, e.to_string())
                        }
                        crate::reference::ReferenceError::Tag(e) => Error::new(
                            ErrorCode::ManifestUnknown,
                            format!("no manifest can have this tag: {e}"),
                        ),
                    })?;
                    return Ok(Self::Manifest { name, reference });
                }
                "referrers" => {
                    return Ok(Self::Referrers {
                        name: parse_name(name)?,
                        digest: parse_digest(last)?,
                    });
                }
                _ => {}
            }
        }
        Err(not_found())
    }

    /// The methods the route answers; others get 405.
    pub fn allows(&self, method: Method) -> bool {
        use Method::*;
        match self {
            Self::ApiVersion
            | Self::Catalog
            | Self::Tags { .. }
            | Self::Referrers { .. }
            | Self::Usage { .. } => matches!(method, Get | Head),
            Self::Manifest { .. } => matches!(method, Get | Head | Put | Delete),
            Self::Blob { .. } => matches!(method, Get | Head | Delete),
            Self::StartUpload { .. } => method == Post,
            Self::Upload { .. } => matches!(method, Get | Patch | Put | Delete),
            Self::Repository { .. } => method == Delete,
        }
    }

    /// The repository the route addresses, if any.
    pub fn repository(&self) -> Option<&RepositoryName> {
        match self {
            Self::ApiVersion | Self::Catalog => None,
            Self::Tags { name }
            | Self::Manifest { name, .. }
            | Self::Blob { name, .. }
            | Self::StartUpload { name }
            | Self::Upload { name, .. }
            | Self::Referrers { name, .. }
            | Self::Repository { name }
            | Self::Usage { name } => Some(name),
        }
    }

    /// The same endpoint in another repository (a pull-through cache's local name).
    pub(crate) fn in_repository(mut self, repository: RepositoryName) -> Self {
        match &mut self {
            Self::ApiVersion | Self::Catalog => {}
            Self::Tags { name }
            | Self::Manifest { name, .. }
            | Self::Blob { name, .. }
            | Self::StartUpload { name }
            | Self::Upload { name, .. }
            | Self::Referrers { name, .. }
            | Self::Repository { name }
            | Self::Usage { name } => *name = repository,
        }
        self
    }
}

pub(crate) fn not_found() -> Error {
    Error::new(
        ErrorCode::Unsupported,
        "no such endpoint: the registry API lives under /v2/",
    )
    .with_status(404)
}

fn parse_name(segments: &[&str]) -> Result<RepositoryName, Error> {
    segments
        .join("/")
        .parse()
        .map_err(|e: crate::reference::NameError| Error::new(ErrorCode::NameInvalid, e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const D: &str = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    fn name(text: &str) -> RepositoryName {
        text.parse().unwrap()
    }

    #[test]
    fn usage_names_a_repository_or_namespace() {
        assert_eq!(
            Route::parse(Method::Get, "/v2/_usage/team-a/app").unwrap(),
            Route::Usage {
                name: name("team-a/app")
            }
        );
        assert_eq!(
            Route::parse(Method::Get, "/v2/_usage/team-a/").unwrap(),
            Route::Usage {
                name: name("team-a")
            }
        );
        assert!(Route::parse(Method::Get, "/v2/_usage/").is_err());
        assert!(Route::parse(Method::Get, "/v2/_usage/Bad").is_err());
    }

    #[test]
    fn routes_from_the_right() {
        assert_eq!(
            Route::parse(Method::Get, "/v2/").unwrap(),
            Route::ApiVersion
        );
        assert_eq!(Route::parse(Method::Get, "/v2").unwrap(), Route::ApiVersion);
        assert_eq!(
            Route::parse(Method::Get, "/v2/_catalog").unwrap(),
            Route::Catalog
        );
        assert_eq!(
            Route::parse(Method::Get, "/v2/a/tags/list/tags/list").unwrap(),
            Route::Tags {
                name: name("a/tags/list")
            }
        );
        assert_eq!(
            Route::parse(Method::Get, "/v2/blobs/uploads/blobs/uploads/").unwrap(),
            Route::StartUpload {
                name: name("blobs/uploads")
            }
        );
        assert_eq!(
            Route::parse(Method::Get, "/v2/a/blobs/uploads").unwrap(),
            Route::StartUpload { name: name("a") }
        );
        assert_eq!(
            Route::parse(Method::Get, "/v2/a/blobs/uploads/abc-1").unwrap(),
            Route::Upload {
                name: name("a"),
                id: UploadId::parse("abc-1").unwrap()
            }
        );
        assert!(matches!(
            Route::parse(Method::Get, &format!("/v2/x/manifests/blobs/{D}")).unwrap(),
            Route::Blob { name, .. } if name.as_str() == "x/manifests"
        ));
        assert!(matches!(
            Route::parse(Method::Get, &format!("/v2/x/blobs/manifests/{}", D.replace(':', "%3A"))).unwrap(),
            Route::Manifest { name, reference: Reference::Digest(_) } if name.as_str() == "x/blobs"
        ));
        assert!(matches!(
            Route::parse(Method::Get, &format!("/v2/r/referrers/{D}")).unwrap(),
            Route::Referrers { .. }
        ));
    }

    #[test]
    fn bad_paths_get_spec_codes() {
        let code = |path: &str| Route::parse(Method::Get, path).unwrap_err().code();
        assert_eq!(code("/v2/A/tags/list"), ErrorCode::NameInvalid);
        assert_eq!(code("/v2/a/blobs/sha256:xyz"), ErrorCode::DigestInvalid);
        assert_eq!(code("/v2/a/manifests/-bad"), ErrorCode::ManifestUnknown);
        assert_eq!(
            Route::parse(Method::Put, "/v2/a/manifests/-bad")
                .unwrap_err()
                .code(),
            ErrorCode::ManifestInvalid
        );
        assert_eq!(
            code("/v2/a/blobs/uploads/bad.id"),
            ErrorCode::BlobUploadUnknown
        );
        assert_eq!(Route::parse(Method::Get, "/v1/").unwrap_err().status(), 404);
        assert_eq!(
            Route::parse(Method::Get, "/v2/a").unwrap_err().status(),
            404
        );
    }

    proptest! {
        #[test]
        fn arbitrary_paths_never_panic(path in "/v2/[a-z/:%0-9_.-]{0,60}") {
            let _ = Route::parse(Method::Get, &path);
        }
    }
}
