use super::*;

#[tokio::test]
async fn in_memory_object_store_passes_the_conformance_suite() {
    let storage = ObjectStoreStorage::new(Arc::new(::object_store::memory::InMemory::new()));
    let report = crate::storage::conformance::run(&storage).await;
    assert!(report.passed(), "{report}");
    assert!(
        storage.list_all(PARTS_PREFIX).await.unwrap().is_empty(),
        "no parts left behind"
    );
}

#[tokio::test]
async fn native_multipart_passes_the_conformance_suite() {
    let store = Arc::new(::object_store::memory::InMemory::new());
    let storage = ObjectStoreStorage::with_multipart(store.clone(), store);
    assert!(storage.capabilities().positional_parts);
    let report = crate::storage::conformance::run(&storage).await;
    assert!(report.passed(), "{report}");
    let left = storage.list_all("conformance/").await.unwrap();
    assert!(left.is_empty(), "no staging objects left behind: {left:?}");
}
