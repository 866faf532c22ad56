//! RocksDB's archive (`ROCKSDB_STATIC`, see .cargo/config.toml) calls the compression libraries it
//! was built with; link them too, from the same directory. Its C++ runtime is linked statically as
//! well, when the compiler has the archive: the binary then carries the few hundred KiB of it that
//! RocksDB calls instead of mapping the whole 2 MB shared library (1.4 MiB of it resident, measured),
//! and runs where no libstdc++ is installed. Relocations are packed (below).
use std::{path::PathBuf, process::Command};

fn main() {
    pack_relative_relocations();
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
    link_cxx_runtime_statically();
}

/// librocksdb-sys asks for `-lstdc++`. The linker takes the first directory on its search path
/// that holds the library, whatever the kind: a directory of our own, searched first, holding only
/// the archive makes that `-lstdc++` the static one.
fn link_cxx_runtime_statically() {
    let compiler = std::env::var("CC").unwrap_or_else(|_| "cc".into());
    let Ok(output) = Command::new(compiler).arg("-print-file-name=libstdc++.a").output() else { return };
    let archive = PathBuf::from(String::from_utf8_lossy(&output.stdout).trim());
    // Without the archive, the compiler prints the bare name back: keep the shared library.
    if !archive.is_absolute() || !archive.exists() {
        return;
    }
    let dir = PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets OUT_DIR")).join("static-cxx");
    let link = dir.join("libstdc++.a");
    let _ = std::fs::remove_file(&link);
    if std::fs::create_dir_all(&dir).is_err() || std::os::unix::fs::symlink(&archive, &link).is_err() {
        return;
    }
    println!("cargo:rustc-link-search=native={}", dir.display());
}

/// A position-independent binary (the default, for address-space randomisation) carries a
/// relocation for every pointer in its read-only data, 24 bytes each: 0.9 MB, all read at start-up
/// and resident from then on. Packed (DT_RELR, glibc 2.36 and binutils 2.38 or later, Debian 12
/// has both) they take a few KiB.
fn pack_relative_relocations() {
    let var = |name: &str| std::env::var(name).unwrap_or_default();
    if var("CARGO_CFG_TARGET_OS") == "linux" && var("CARGO_CFG_TARGET_ENV") == "gnu" {
        println!("cargo:rustc-link-arg=-Wl,-z,pack-relative-relocs");
    }
}
