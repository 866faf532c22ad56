//! RocksDB's archive (`ROCKSDB_STATIC`, see .cargo/config.toml) calls the compression libraries it
//! was built with; link them too, from the same directory.
fn main() {
    println!("cargo:rerun-if-env-changed=ROCKSDB_STATIC");
    println!("cargo:rerun-if-env-changed=ROCKSDB_LIB_DIR");
    if std::env::var_os("ROCKSDB_STATIC").is_none() {
        return;
    }
    if let Some(dir) = std::env::var_os("ROCKSDB_LIB_DIR") {
        println!("cargo:rustc-link-search=native={}", dir.to_string_lossy());
    }
    for lib in ["snappy", "lz4", "zstd", "bz2", "z"] {
        println!("cargo:rustc-link-lib=static={lib}");
    }
}
