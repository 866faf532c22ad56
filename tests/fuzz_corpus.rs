//! Replays the committed fuzz corpus (`fuzz/corpus/<target>/`) through the fuzz targets' entry
//! points (`myelin::fuzzing`), so every seed and every crash once found (kept there as
//! `crash-*`) is a regression test of `cargo test`, without nightly Rust or cargo-fuzz.
//! Files ending in `.hex` hold binary inputs as hex text.

use std::path::Path;

#[test]
fn every_corpus_file_passes_its_target() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus");
    for (target, run) in myelin::fuzzing::TARGETS {
        let dir = root.join(target);
        let mut files: Vec<_> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .map(|entry| entry.unwrap().path())
            .collect();
        files.sort();
        assert!(!files.is_empty(), "{target} has no corpus");
        for file in files {
            let bytes = std::fs::read(&file).unwrap();
            let input = if file.extension().is_some_and(|e| e == "hex") {
                hex::decode(String::from_utf8(bytes).unwrap().trim()).unwrap()
            } else {
                bytes
            };
            let outcome = std::panic::catch_unwind(|| run(&input));
            assert!(outcome.is_ok(), "{target}: {} panics", file.display());
        }
    }
}
