//! Session records: claimed while a request writes parts, saved and read back, ended and
//! purged when abandoned.

use super::*;

impl<S: Storage> Registry<S> {
    /// On storage whose parts are positional, claims the session for this request before it
    /// writes parts, by compare-and-swap: of two requests, one writes and the other gets 416.
    pub(super) async fn claim(
        &self,
        name: &RepositoryName,
        id: &UploadId,
        read: ObjectMeta,
        session: &mut UploadSession,
    ) -> Result<Claim, Error> {
        if !self.storage.capabilities().positional_parts {
            return Ok(Claim::Claimed(read));
        }
        let now = (self.options.clock)();
        let until = now.saturating_add(self.options.upload_lease);
        if let Err(busy) = session.claim((self.options.ids)(), until, now) {
            return refuse(busy, name, id, session).map(Claim::Busy);
        }
        let key = layout::upload_session(id);
        match self
            .storage
            .put(
                &key,
                session.encode(),
                PutMode::Update(read.version).volatile(),
            )
            .await
        {
            Ok(claimed) => Ok(Claim::Claimed(claimed)),
            Err(StorageError::PreconditionFailed | StorageError::NotFound) => {
                let (_, current) = self.load_session(name, id).await?;
                let error = if current.is_claimed(now) {
                    current.busy()
                } else {
                    current.out_of_order()
                };
                Ok(Claim::Busy(range_error(&error, name, id, &current)))
            }
            Err(e) => Err(internal(e)),
        }
    }

    /// Gives up a claim after a failed request, leaving the session as it was (best effort:
    /// a claim also lapses by itself).
    pub(super) async fn release(
        &self,
        id: &UploadId,
        claimed: &ObjectMeta,
        before: &UploadSession,
    ) {
        let mut released = before.clone();
        if !released.release() {
            return;
        }
        self.replace_record(id, claimed, released).await;
    }

    /// Replaces a session's record, if it is still at the version `read` (best effort, a few
    /// tries: a claim left behind keeps the session busy until it lapses).
    pub(super) async fn replace_record(
        &self,
        id: &UploadId,
        read: &ObjectMeta,
        record: UploadSession,
    ) {
        let key = layout::upload_session(id);
        let record = record.encode();
        for _ in 0..3 {
            let version = PutMode::Update(read.version.clone());
            match self
                .storage
                .put(&key, record.clone(), version.volatile())
                .await
            {
                Err(StorageError::Backend(_)) => {}
                Ok(_) | Err(_) => return,
            }
        }
    }

    /// Removes a session's record.
    pub(in crate::registry) async fn end_session(&self, id: &UploadId) -> Result<(), Error> {
        self.live_hashes.forget(id);
        self.storage
            .delete(&layout::upload_session(id), Durability::Volatile)
            .await
            .map_err(internal)
    }

    /// Purges upload sessions that started more than `max_age` seconds ago (by the host's
    /// clock): their parts are discarded and their records removed. Records list in the order
    /// their sessions started, so this reads only the ones it purges, plus one.
    pub async fn purge_uploads(&self, max_age: u64) -> Result<usize, Error> {
        let cutoff = (self.options.clock)().saturating_sub(max_age);
        let folder = layout::upload_sessions();
        let mut purged = 0;
        loop {
            let page = self
                .storage
                .list(folder, false, None, 100)
                .await
                .map_err(internal)?;
            if page.objects.is_empty() {
                return Ok(purged);
            }
            for listed in &page.objects {
                let key = &listed.key;
                let id = &key[folder.len()..];
                let started = id.split_once('-').and_then(|(t, _)| t.parse::<u64>().ok());
                if started.is_some_and(|started| started >= cutoff) {
                    return Ok(purged);
                }
                let record = match self.storage.read_small(key, SESSION_RECORD_LIMIT).await {
                    Ok((_, bytes)) => Some(bytes),
                    Err(StorageError::NotFound) => None,
                    Err(e) => return Err(internal(e)),
                };
                match record.as_deref().map(UploadSession::decode) {
                    Some(Ok(session)) => {
                        self.discard(&session).await;
                        // What a failed rehash kept for a retry that never came.
                        if let Some(id) = UploadId::parse(id) {
                            self.delete_quietly(Some(layout::rehash_interim(&id))).await;
                        }
                    }
                    Some(Err(_)) => {
                        self.purge_legacy_session(id, &record.unwrap_or_default())
                            .await?
                    }
                    None => {}
                }
                self.storage
                    .delete(key, Durability::Volatile)
                    .await
                    .map_err(internal)?;
                purged += 1;
            }
        }
    }

    /// Purges a session berth recorded in its earlier layout: `index_entry` is the entry's
    /// name (`<start time>-<id>`), `repository` what it held.
    pub(super) async fn purge_legacy_session(
        &self,
        index_entry: &str,
        repository: &[u8],
    ) -> Result<(), Error> {
        let name = String::from_utf8_lossy(repository).parse::<RepositoryName>();
        let (Ok(name), Some((_, id))) = (name, index_entry.split_once('-')) else {
            return Ok(());
        };
        let key = layout::legacy_upload_session(&name, id);
        match self.storage.read_small(&key, SESSION_RECORD_LIMIT).await {
            Ok((_, bytes)) => {
                if let Ok(session) = UploadSession::decode(&bytes) {
                    self.discard(&session).await;
                }
            }
            Err(StorageError::NotFound) => return Ok(()),
            Err(e) => return Err(internal(e)),
        }
        self.storage
            .delete(&key, Durability::Durable)
            .await
            .map_err(internal)
    }

    pub(in crate::registry) async fn load_session(
        &self,
        name: &RepositoryName,
        id: &UploadId,
    ) -> Result<(ObjectMeta, UploadSession), Error> {
        let unknown = || {
            Error::new(
                ErrorCode::BlobUploadUnknown,
                format!("upload {} is not open in {name}", id.as_str()),
            )
        };
        match self
            .storage
            .read_small(&layout::upload_session(id), SESSION_RECORD_LIMIT)
            .await
        {
            Ok((meta, bytes)) => {
                let session = UploadSession::decode(&bytes)?;
                if session.repository() != name.as_str() {
                    return Err(unknown());
                }
                Ok((meta, session))
            }
            // Records are tiny: a large object there is not one of ours.
            Err(StorageError::NotFound | StorageError::TooLarge { .. }) => Err(unknown()),
            Err(e) => Err(internal(e)),
        }
    }

    /// Stores the advanced record (returning its version), unless another request advanced
    /// it first; then this request's parts are dropped and the record as the other request
    /// left it is returned.
    #[must_use = "a lost race must reach the client as a 416"]
    pub(super) async fn save_session(
        &self,
        name: &RepositoryName,
        id: &UploadId,
        read: &ObjectMeta,
        before: &UploadSession,
        after: &UploadSession,
    ) -> Result<Saved, Error> {
        let key = layout::upload_session(id);
        let record = after.encode();
        match self
            .storage
            .put(
                &key,
                record.clone(),
                PutMode::Update(read.version.clone()).volatile(),
            )
            .await
        {
            Ok(saved) => Ok(Saved::Stored(saved)),
            Err(StorageError::PreconditionFailed | StorageError::NotFound) => {
                self.discard_new_parts(before, after).await;
                let (_, current) = self.load_session(name, id).await?;
                Ok(Saved::Overtaken(current))
            }
            // The write may have happened with only its answer lost: the record tells. (It
            // names this request's parts, so no other request wrote the same bytes.) Told
            // nothing, the parts stay: the record may name them.
            Err(e) => match self.storage.read_small(&key, SESSION_RECORD_LIMIT).await {
                Ok((saved, stored)) if stored == record => Ok(Saved::Stored(saved)),
                Ok(_) | Err(StorageError::NotFound) => {
                    self.discard_new_parts(before, after).await;
                    self.release(id, read, before).await;
                    Err(internal(e))
                }
                Err(_) => {
                    // A compare-and-swap on the claimed version: harmless if the save landed.
                    self.release(id, read, before).await;
                    Err(internal(e))
                }
            },
        }
    }
}
