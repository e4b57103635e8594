//! `include/berth.h` is generated from the crate; this test fails when it is out of date.
//! `BERTH_BLESS=1 cargo test -p berth-ffi --test header` rewrites it.

use std::path::Path;

#[test]
fn header_is_current() {
    let crate_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let config = cbindgen::Config::from_file(crate_dir.join("cbindgen.toml"))
        .expect("ffi/cbindgen.toml is readable");
    let mut generated = Vec::new();
    cbindgen::Builder::new()
        .with_crate(crate_dir)
        .with_config(config)
        .generate()
        .expect("cbindgen generates the header")
        .write(&mut generated);
    let path = crate_dir.join("include/berth.h");
    if std::env::var_os("BERTH_BLESS").is_some() {
        std::fs::write(&path, &generated).expect("include/berth.h is writable");
        return;
    }
    let committed = std::fs::read(&path).unwrap_or_default();
    assert!(
        committed == generated,
        "ffi/include/berth.h is out of date: run `BERTH_BLESS=1 cargo test -p berth-ffi --test header` and commit it"
    );
}
