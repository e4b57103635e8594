//! Streamed reads: buffers kept for the next read, batches read on the blocking pool.

use super::*;

/// Size of the chunks a read streams. Kept below glibc's initial mmap threshold (128 KiB):
/// larger buffers raise it, after which freed buffers stay resident in per-thread arenas.
pub(super) const READ_CHUNK: usize = 64 * 1024;
/// How much of an unfinished upload's parts one trip to the blocking pool reads back
/// (`read_parts`): a chunk re-read there is typically 16 MiB, and a trip costs 50-100 us.
pub(super) const READ_BACK_PIECE: u64 = 1024 * 1024;
/// Chunks read per trip to the blocking pool.
pub(super) const READ_BATCH: usize = 8;
/// Objects up to this size (manifests, links, records) are read on the calling thread.
pub(super) const INLINE_READ: u64 = READ_CHUNK as u64;
/// Read buffers kept for the next stream: every chunk of 8 streams in flight, 4 MiB at most.
pub(super) const KEPT_READ_BUFFERS: usize = 8 * READ_BATCH;

/// Buffers a stream reads into, used again once its chunks are sent. A new buffer is zeroed
/// before it is read into; for every chunk of a pull that was 5.7% of the server's samples
/// (measured: docs/decisions/2026-12-07-measured-and-adopted.md).
#[derive(Debug, Default)]
pub(super) struct ReadBuffers(pub(super) Mutex<Vec<Vec<u8>>>);

impl ReadBuffers {
    /// A buffer of `READ_CHUNK` bytes, kept or new.
    fn take(&self) -> Vec<u8> {
        let kept = self.0.lock().unwrap_or_else(PoisonError::into_inner).pop();
        kept.unwrap_or_else(|| vec![0; READ_CHUNK])
    }

    /// Keeps `buffer` for the next stream, if fewer than `KEPT_READ_BUFFERS` are kept.
    fn give_back(&self, buffer: Vec<u8>) {
        let mut kept = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        if kept.len() < KEPT_READ_BUFFERS {
            kept.push(buffer);
        }
    }
}

/// The first `len` bytes of a kept buffer, which goes back to its `ReadBuffers` when dropped.
pub(super) struct ReadChunk {
    buffer: Vec<u8>,
    len: usize,
    kept: Arc<ReadBuffers>,
}

impl AsRef<[u8]> for ReadChunk {
    fn as_ref(&self) -> &[u8] {
        &self.buffer[..self.len]
    }
}

impl Drop for ReadChunk {
    fn drop(&mut self) {
        self.kept.give_back(std::mem::take(&mut self.buffer));
    }
}

/// Where a read's chunks go: new buffers of the size read (a small object, which may be kept
/// long after), or kept ones (a stream).
#[derive(Clone, Copy)]
pub(super) enum ReadInto<'a> {
    Exact,
    Kept(&'a Arc<ReadBuffers>),
}

/// Reads up to `READ_BATCH` chunks of at most `remaining` bytes in all.
pub(super) fn read_batch(
    mut file: File,
    remaining: u64,
    into: ReadInto<'_>,
) -> Result<(File, Vec<Bytes>, u64), StorageError> {
    let (chunks, read) = gather(remaining, into, |buffer| match file.read(buffer) {
        Ok(0) => Err(StorageError::backend("object shrank while being read")),
        Ok(n) => Ok(Some(n)),
        Err(e) => Err(io_error(e)),
    })?;
    Ok((file, chunks, read))
}

/// Fills up to `READ_BATCH` chunks of at most `remaining` bytes in all with `read_into`, which
/// returns how many bytes it put in a buffer, or `None` to end the batch there.
pub(super) fn gather(
    remaining: u64,
    into: ReadInto<'_>,
    mut read_into: impl FnMut(&mut [u8]) -> Result<Option<usize>, StorageError>,
) -> Result<(Vec<Bytes>, u64), StorageError> {
    let mut chunks = Vec::with_capacity(READ_BATCH);
    let mut read = 0u64;
    while chunks.len() < READ_BATCH && read < remaining {
        // At most `READ_CHUNK`, the length of a kept buffer.
        let want = usize::try_from((remaining - read).min(READ_CHUNK as u64)).unwrap_or(READ_CHUNK);
        let (mut buffer, kept) = match into {
            ReadInto::Exact => (vec![0; want], None),
            ReadInto::Kept(kept) => (kept.take(), Some(kept)),
        };
        let Some(n) = read_into(&mut buffer[..want])? else {
            if let Some(kept) = kept {
                kept.give_back(buffer);
            }
            break;
        };
        read += n as u64;
        chunks.push(match kept {
            None => {
                buffer.truncate(n);
                Bytes::from(buffer)
            }
            Some(kept) => Bytes::from_owner(ReadChunk {
                buffer,
                len: n,
                kept: Arc::clone(kept),
            }),
        });
    }
    Ok((chunks, read))
}

/// Reads, like `read_batch`, what of the next `remaining` bytes the page cache already holds,
/// without waiting for the disk (`RWF_NOWAIT`); nothing if none of it is cached. A cached
/// blob then streams without a trip to the blocking pool per batch (measured: docs/decisions/
/// 2026-12-07-measured-and-adopted.md).
pub(super) fn read_cached(file: &File, remaining: u64, into: ReadInto<'_>) -> (Vec<Bytes>, u64) {
    #[cfg(target_os = "linux")]
    return gather(remaining, into, |buffer| {
        // At the file's position (`u64::MAX`), as `read` would.
        let cached = rustix::io::preadv2(
            file,
            &mut [io::IoSliceMut::new(buffer)],
            u64::MAX,
            rustix::io::ReadWriteFlags::NOWAIT,
        );
        Ok(cached.ok().filter(|&n| n > 0))
    })
    .unwrap_or_default();
    #[cfg(not(target_os = "linux"))]
    {
        let _ = (file, remaining, into);
        (Vec::new(), 0)
    }
}
