//! Tests of the filesystem backend.

use super::*;
use crate::storage::StorageExt;

fn temp_root(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("berth-fs-{name}-{}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    dir
}

async fn conformance(root: PathBuf, storage: FsStorage) {
    let report = crate::storage::conformance::run(&storage).await;
    assert!(report.passed(), "{report}");
    // Nothing is left in the scratch space, and deletes pruned their directories.
    assert_eq!(fs::read_dir(root.join(".berth/tmp")).unwrap().count(), 0);
    assert_eq!(fs::read_dir(root.join(".berth/parts")).unwrap().count(), 0);
    assert!(!root.join("conformance").exists());
    fs::remove_dir_all(root).unwrap();
}

#[tokio::test]
async fn passes_the_conformance_suite() {
    let root = temp_root("conformance");
    let storage = FsStorage::new(&root).unwrap();
    conformance(root, storage).await;
}

/// Where unnamed temporary files are used, the named ones a filesystem without them gets
/// must work too.
#[cfg(target_os = "linux")]
#[tokio::test]
async fn passes_the_conformance_suite_with_named_temporary_files() {
    let root = temp_root("conformance-named");
    let mut storage = FsStorage::new(&root).unwrap();
    assert!(storage.inner.unnamed_temps, "this filesystem has O_TMPFILE");
    Arc::get_mut(&mut storage.inner).unwrap().unnamed_temps = false;
    conformance(root, storage).await;
}

/// A removed session record's inode is written again by the next record, which gets a
/// version of its own; other objects get new inodes.
#[tokio::test]
async fn removed_session_records_are_written_again() {
    let root = temp_root("spares");
    let storage = FsStorage::new(&root).unwrap();
    let create = |key: &'static str, data: &'static [u8]| {
        let storage = &storage;
        async move {
            let key = Key::from(key);
            let data = Bytes::from_static(data);
            storage.put(&key, data, PutMode::Create.volatile()).await
        }
    };
    let first = create("berth/uploads/1-a", b"a longer record")
        .await
        .unwrap();
    let inode = |key: &str| fs::metadata(root.join(key)).unwrap().ino();
    let first_inode = inode("berth/uploads/1-a");
    storage
        .delete(&"berth/uploads/1-a".into(), Durability::Volatile)
        .await
        .unwrap();
    assert!(!storage.exists(&"berth/uploads/1-a".into()).await.unwrap());

    let second = create("berth/uploads/2-b", b"short").await.unwrap();
    assert_eq!(
        inode("berth/uploads/2-b"),
        first_inode,
        "the inode is reused"
    );
    assert_ne!(second.version, first.version);
    let (_, bytes) = storage
        .read_small(&"berth/uploads/2-b".into(), 100)
        .await
        .unwrap();
    assert_eq!(
        &bytes[..],
        b"short",
        "nothing of the earlier record is left"
    );
    assert_eq!(fs::read_dir(root.join(".berth/spare")).unwrap().count(), 0);

    storage
        .delete(&"berth/uploads/2-b".into(), Durability::Volatile)
        .await
        .unwrap();
    storage
        .put(
            &"docker/x".into(),
            Bytes::from_static(b"x"),
            PutMode::Create.into(),
        )
        .await
        .unwrap();
    assert_ne!(
        inode("docker/x"),
        first_inode,
        "only volatile objects reuse them"
    );
    assert_eq!(fs::read_dir(root.join(".berth/spare")).unwrap().count(), 1);
    fs::remove_dir_all(root).unwrap();
}

/// A session record replaced by compare-and-swap is kept, to write a later record into:
/// a session's records take turns in two files. A record removed meanwhile is not brought
/// back.
#[tokio::test]
async fn replaced_session_records_are_written_again() {
    let root = temp_root("exchanged");
    let storage = FsStorage::new(&root).unwrap();
    let key = "berth/uploads/1-a";
    let kept = || fs::read_dir(root.join(".berth/spare")).unwrap().count();
    let mut meta = storage
        .put(
            &key.into(),
            Bytes::from_static(b"offset 0"),
            PutMode::Create.volatile(),
        )
        .await
        .unwrap();
    for record in ["offset 1, a longer record", "offset 2", "offset 3"] {
        meta = storage
            .put(
                &key.into(),
                Bytes::from(record),
                PutMode::Update(meta.version).volatile(),
            )
            .await
            .unwrap();
        assert_eq!(storage.head(&key.into()).await.unwrap(), meta);
        assert_eq!(read(&storage, key).await.unwrap(), record);
        #[cfg(target_os = "linux")]
        assert_eq!(kept(), 1, "the replaced record is kept");
    }

    let version = meta.version.clone();
    storage
        .delete(&key.into(), Durability::Volatile)
        .await
        .unwrap();
    let late = storage
        .put(
            &key.into(),
            Bytes::from_static(b"late"),
            PutMode::Update(version).volatile(),
        )
        .await;
    assert!(matches!(late, Err(StorageError::PreconditionFailed)));
    // Removed between the version check and the exchange.
    let spares = kept();
    let temp = storage
        .inner
        .write_temp(b"late", Syncing::Recycled, &root.join(key))
        .unwrap();
    #[cfg(target_os = "linux")]
    assert!(matches!(
        storage.inner.exchange(temp, &root.join(key)),
        Err(StorageError::NotFound)
    ));
    #[cfg(not(target_os = "linux"))]
    drop(temp);
    assert!(!storage.exists(&key.into()).await.unwrap());
    assert_eq!(
        kept(),
        spares - 1,
        "the spare written into is not left behind"
    );
    fs::remove_dir_all(root).unwrap();
}

/// A part's blocks are allocated before it is written; what a write that failed after
/// that left allocated past the parts is not kept with the published blob.
#[cfg(target_os = "linux")]
#[tokio::test]
async fn blocks_allocated_past_the_parts_are_freed_when_the_upload_completes() {
    let root = temp_root("preallocated");
    let storage = FsStorage::new(&root).unwrap();
    let upload = storage.create_parts(&"staging".into()).await.unwrap();
    let part = storage
        .put_part(&upload, 1, vec![Bytes::from(vec![7u8; 100_000])])
        .await
        .unwrap();
    let path = storage
        .inner
        .parts_dir(upload.as_str())
        .unwrap()
        .join(PARTS_DATA);
    let data = File::options().write(true).open(path).unwrap();
    FsStorage::preallocate(&data, 100_000, 8 << 20);
    assert!(
        data.metadata().unwrap().blocks() * 512 >= 8 << 20,
        "this filesystem allocates blocks past a file's end"
    );
    storage
        .complete_parts(&upload, &[part], &"docker/blob".into())
        .await
        .unwrap();
    let blob = fs::metadata(root.join("docker/blob")).unwrap();
    assert_eq!(blob.len(), 100_000);
    assert!(
        blob.blocks() * 512 < 1 << 20,
        "{} bytes allocated",
        blob.blocks() * 512
    );
    fs::remove_dir_all(root).unwrap();
}

/// Where this kernel alone mounts the root, parts are named before they are durable and
/// the boot they were named under is recorded: the processes of this boot go on with them,
/// and completing makes them durable; a later boot refuses them, as the machine stopped
/// in between and may have lost them.
#[cfg(target_os = "linux")]
#[tokio::test]
async fn parts_named_before_they_are_durable_are_refused_after_the_machine_restarts() {
    let root = temp_root("unsynced");
    let storage = FsStorage::new(&root).unwrap();
    let boot = storage.inner.page_cache_boot.clone();
    assert!(boot.is_some(), "the tests' filesystem is a local one");
    let another_process = FsStorage::new(&root).unwrap();
    let recorded = |upload: &str| {
        let dir = storage.inner.parts_dir(upload).unwrap();
        fs::read_to_string(dir.join(PARTS_UNSYNCED)).ok()
    };

    let upload = storage.create_parts(&"staging".into()).await.unwrap();
    let first = storage
        .put_part(&upload, 1, vec![Bytes::from_static(b"first ")])
        .await
        .unwrap();
    storage.sync_parts(&upload).await.unwrap();
    assert_eq!(recorded(upload.as_str()), boot);
    let second = another_process
        .put_part(&upload, 2, vec![Bytes::from_static(b"second")])
        .await
        .unwrap();
    another_process.sync_parts(&upload).await.unwrap();
    storage
        .complete_parts(&upload, &[first, second], &"docker/kept".into())
        .await
        .unwrap();
    assert_eq!(read(&storage, "docker/kept").await.unwrap(), "first second");

    let upload = storage.create_parts(&"staging".into()).await.unwrap();
    let part = storage
        .put_part(&upload, 1, vec![Bytes::from_static(b"lost?")])
        .await
        .unwrap();
    storage.sync_parts(&upload).await.unwrap();
    let dir = storage.inner.parts_dir(upload.as_str()).unwrap();
    fs::write(dir.join(PARTS_UNSYNCED), "0".repeat(32)).unwrap();
    assert!(matches!(
        storage.sync_parts(&upload).await,
        Err(StorageError::NotFound)
    ));
    assert!(matches!(
        storage
            .complete_parts(&upload, &[part], &"docker/lost".into())
            .await,
        Err(StorageError::NotFound)
    ));
    assert!(!root.join("docker/lost").exists());

    // Elsewhere (a network filesystem) the parts are made durable instead.
    let mut elsewhere = FsStorage::new(&root).unwrap();
    Arc::get_mut(&mut elsewhere.inner).unwrap().page_cache_boot = None;
    let upload = elsewhere.create_parts(&"staging".into()).await.unwrap();
    elsewhere
        .put_part(&upload, 1, vec![Bytes::from_static(b"synced")])
        .await
        .unwrap();
    elsewhere.sync_parts(&upload).await.unwrap();
    assert_eq!(recorded(upload.as_str()), None);
    fs::remove_dir_all(root).unwrap();
}

#[tokio::test]
async fn large_objects_stream_whole_and_in_ranges_from_the_cache_or_the_disk() {
    let root = temp_root("large");
    let storage = FsStorage::new(&root).unwrap();
    let data: Bytes = (0..3 * 1024 * 1024 + 123u32)
        .map(|i| (i % 251) as u8)
        .collect::<Vec<u8>>()
        .into();
    storage
        .put(&"docker/large".into(), data.clone(), PutMode::Create.into())
        .await
        .unwrap();
    let read = |range: Option<Range<u64>>| async {
        let (_, body) = storage.get(&"docker/large".into(), range).await.unwrap();
        let chunks: Vec<_> = body.collect().await;
        chunks
            .into_iter()
            .flat_map(Result::unwrap)
            .collect::<Vec<u8>>()
    };
    // First as written (in the page cache), then with its pages dropped (from the disk).
    for dropped in [false, true] {
        if dropped {
            let file = File::open(root.join("docker/large")).unwrap();
            FsStorage::start_writeback(&file, 0, data.len() as u64);
        }
        assert_eq!(read(None).await, data, "whole, dropped: {dropped}");
        assert_eq!(
            read(Some(70_001..2_500_001)).await,
            data.slice(70_001..2_500_001),
            "a range, dropped: {dropped}"
        );
    }
    // The streams' buffers were given back once their chunks were dropped, for the next.
    let kept = storage.inner.read_buffers.0.lock().unwrap().len();
    assert!(
        (1..=KEPT_READ_BUFFERS).contains(&kept),
        "{kept} buffers kept"
    );
    fs::remove_dir_all(root).unwrap();
}

/// The object at `key`, if any.
#[cfg(target_os = "linux")]
async fn read(storage: &FsStorage, key: &str) -> Option<Bytes> {
    match storage.read_small(&key.into(), 1 << 20).await {
        Ok((_, bytes)) => Some(bytes),
        Err(StorageError::NotFound) => None,
        Err(e) => panic!("{key}: {e}"),
    }
}

/// The journal files in `root`.
#[cfg(target_os = "linux")]
fn journal_files(root: &Path) -> Vec<PathBuf> {
    fs::read_dir(root.join(".berth/journal"))
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .collect()
}

#[cfg(target_os = "linux")]
#[tokio::test]
async fn journaled_writes_are_replayed_after_the_machine_stopped() {
    let root = temp_root("journal-replay");
    let storage = FsStorage::new(&root).unwrap();
    let big = Bytes::from(vec![7u8; journal::JOURNALED_MAX + 1]);
    storage
        .put(&"r/a".into(), "one".into(), PutMode::Overwrite.into())
        .await
        .unwrap();
    storage
        .put(&"r/a".into(), "two".into(), PutMode::Overwrite.into())
        .await
        .unwrap();
    storage
        .put(&"r/b".into(), "bee".into(), PutMode::Create.into())
        .await
        .unwrap();
    storage
        .delete(&"r/b".into(), Durability::Durable)
        .await
        .unwrap();
    storage
        .put(&"r/c".into(), "small".into(), PutMode::Overwrite.into())
        .await
        .unwrap();
    // Too large for the journal, over a key it holds: recorded as written in place.
    storage
        .put(&"r/c".into(), big.clone(), PutMode::Overwrite.into())
        .await
        .unwrap();
    storage
        .put(&"r/f".into(), "journaled".into(), PutMode::Overwrite.into())
        .await
        .unwrap();
    drop(storage);

    // As if the machine had stopped: the journal is another boot's, the page cache lost
    // `a`'s content and `b`'s delete, and the last record was cut short, after which a
    // complete one cannot count.
    let [file] = journal_files(&root).try_into().unwrap();
    let name = file.file_name().unwrap().to_string_lossy().into_owned();
    let (_, rest) = name.split_once('.').unwrap();
    let moved = file.with_file_name(format!("{}.{rest}", "0".repeat(32)));
    fs::rename(&file, &moved).unwrap();
    // The records end where the zeros the file was made with begin.
    let end: usize = journal::read_records(&moved)
        .unwrap()
        .iter()
        .map(|r| journal::encode(r.kind, r.stamp, &r.key, &r.data).len())
        .sum();
    let torn = journal::encode(journal::Kind::Put, u64::MAX - 1, "r/d", b"torn");
    let after = journal::encode(journal::Kind::Put, u64::MAX, "r/e", b"after");
    let mut tail = torn[..torn.len() - 1].to_vec();
    tail.extend_from_slice(&after);
    let log = OpenOptions::new().write(true).open(&moved).unwrap();
    log.write_all_at(&tail, end as u64).unwrap();
    drop(log);
    // What the disk kept is older than the records...
    let long_ago = UNIX_EPOCH + std::time::Duration::from_secs(1);
    for (key, left) in [("r/a", &b""[..]), ("r/b", b"garbage")] {
        fs::write(root.join(key), left).unwrap();
        let file = File::options().write(true).open(root.join(key)).unwrap();
        file.set_modified(long_ago).unwrap();
    }
    // ...but not what was written after one.
    fs::write(root.join("r/f"), b"newer").unwrap();

    let storage = FsStorage::new(&root).unwrap();
    assert_eq!(read(&storage, "r/a").await.unwrap(), "two");
    assert!(read(&storage, "r/b").await.is_none());
    assert_eq!(read(&storage, "r/c").await.unwrap(), big);
    assert!(read(&storage, "r/d").await.is_none());
    assert!(read(&storage, "r/e").await.is_none());
    assert_eq!(read(&storage, "r/f").await.unwrap(), "newer");
    assert!(journal_files(&root).is_empty());
    fs::remove_dir_all(root).unwrap();
}

#[cfg(target_os = "linux")]
#[tokio::test]
async fn journals_of_exited_processes_of_this_boot_are_removed_not_replayed() {
    let root = temp_root("journal-exited");
    drop(FsStorage::new(&root).unwrap());
    let boot = journal::boot_id().unwrap();
    // Nobody holds it: its process exited, and its objects are in the page cache, newer
    // than its record says.
    let exited = root.join(format!(".berth/journal/{boot}.1.0.0"));
    fs::write(
        &exited,
        journal::encode(journal::Kind::Put, 1, "r/a", b"old"),
    )
    .unwrap();
    fs::create_dir_all(root.join("r")).unwrap();
    fs::write(root.join("r/a"), b"new").unwrap();
    // A running process's journal (locked), of this boot or another machine's, is left
    // alone.
    let mut running = Vec::new();
    for (boot, key) in [(boot.as_str(), "r/b"), ("0", "r/c")] {
        let path = root.join(format!(".berth/journal/{boot}.2.0.0"));
        fs::write(&path, journal::encode(journal::Kind::Put, 1, key, b"live")).unwrap();
        let file = File::open(&path).unwrap();
        file.lock().unwrap();
        running.push((path, file));
    }

    let storage = FsStorage::new(&root).unwrap();
    assert_eq!(read(&storage, "r/a").await.unwrap(), "new");
    assert!(read(&storage, "r/b").await.is_none());
    assert!(read(&storage, "r/c").await.is_none());
    let mut left = journal_files(&root);
    left.sort();
    let mut expected: Vec<_> = running.iter().map(|(path, _)| path.clone()).collect();
    expected.sort();
    assert_eq!(left, expected);
    fs::remove_dir_all(root).unwrap();
}

#[cfg(target_os = "linux")]
#[tokio::test]
async fn a_full_journal_is_checkpointed_into_a_new_file() {
    let root = temp_root("journal-checkpoint");
    let storage = FsStorage::with_journal(root.clone(), |root| {
        journal::Journal::open_with_limit(root, 4096)
    })
    .unwrap();
    for i in 0..200 {
        let key = format!("r/{i}/link");
        let data = format!("sha256:{i}").into();
        storage
            .put(&Key::new(key), data, PutMode::Overwrite.into())
            .await
            .unwrap();
    }
    // About 50 bytes a record: the 200 were spread over several files, all but the last
    // removed once checkpointed.
    let files = journal_files(&root);
    assert_eq!(files.len(), 1);
    assert!(journal::read_records(&files[0]).unwrap().len() < 100);
    for i in 0..200 {
        let key = format!("r/{i}/link");
        let read = read(&storage, &key).await.unwrap();
        assert_eq!(read, format!("sha256:{i}"));
    }
    drop(storage);
    fs::remove_dir_all(root).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn journaled_writes_return_once_their_records_are_durable() {
    let root = temp_root("journal-durable");
    let storage = FsStorage::new(&root).unwrap();
    let journal = storage.inner.journal.as_ref().unwrap();
    let held = journal.commit_thread_holds();
    for round in 0..20 {
        let writes = (0..16).map(|i| {
            let key = format!("r/{i}/link");
            let data = format!("sha256:{round}-{i}").into();
            let storage = &storage;
            async move {
                storage
                    .put(&Key::new(key), data, PutMode::Overwrite.into())
                    .await
            }
        });
        for written in futures_util::future::join_all(writes).await {
            written.unwrap();
        }
        // Every record appended so far is durable once its writer has returned.
        let (appended, durable) = journal.progress().unwrap();
        assert_eq!(durable, appended, "round {round}");
    }
    let [file] = journal_files(&root).try_into().unwrap();
    assert_eq!(journal::read_records(&file).unwrap().len(), 20 * 16);
    drop(storage);
    // The journal's thread ends with the storage.
    for _ in 0..200 {
        if held.upgrade().is_none() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    assert!(
        held.upgrade().is_none(),
        "the journal's thread outlived its storage"
    );
    fs::remove_dir_all(root).unwrap();
}

#[tokio::test]
async fn refuses_keys_that_leave_the_root() {
    let root = temp_root("escape");
    let storage = FsStorage::new(&root).unwrap();
    for key in ["../x", "/etc/passwd", "a/../../b", "", ".berth/cas.lock"] {
        assert!(storage.head(&key.into()).await.is_err(), "{key}");
        assert!(
            storage
                .put(&key.into(), Bytes::new(), PutMode::Overwrite.into())
                .await
                .is_err(),
            "{key}"
        );
    }
    fs::remove_dir_all(root).unwrap();
}

#[tokio::test]
async fn concurrent_compare_and_swap_has_one_winner() {
    let root = temp_root("cas");
    let storage = FsStorage::new(&root).unwrap();
    let base = storage
        .put(
            &"k".into(),
            Bytes::from_static(b"0"),
            PutMode::Create.into(),
        )
        .await
        .unwrap();
    let mut tasks = Vec::new();
    for i in 0..8u8 {
        let storage = storage.clone();
        let version = base.version.clone();
        tasks.push(tokio::spawn(async move {
            storage
                .put(
                    &"k".into(),
                    Bytes::from(vec![i]),
                    PutMode::Update(version).into(),
                )
                .await
                .is_ok()
        }));
    }
    let mut winners = 0;
    for task in tasks {
        winners += usize::from(task.await.unwrap());
    }
    assert_eq!(winners, 1);
    fs::remove_dir_all(root).unwrap();
}
