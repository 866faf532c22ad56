//! Storage tests against a real RocksDB in a temporary directory.

use std::{
    io::{BufRead, BufReader},
    process::{Command, Stdio},
    sync::Arc,
    time::{Duration, Instant},
};

use ruma::{OwnedDeviceId, OwnedUserId, UserId, device_id};
use serde_json::json;

use super::*;

fn open(dir: &std::path::Path) -> Storage {
    Storage::open(&DatabaseConfig { path: dir.to_path_buf(), cache_mb: 8, ..DatabaseConfig::default() }).unwrap()
}

fn user(n: u64) -> OwnedUserId {
    format!("@user{n}:example.org").try_into().unwrap()
}

/// One logical operation touching three column families, as registration does.
fn three_column_batch(user_id: &UserId, n: u64) -> Batch {
    let mut batch = Batch::new();
    batch.put_user(user_id, &UserRecord { created_ts: n, ..Default::default() });
    batch.put_device(user_id, device_id!("DEVICE"), &DeviceRecord { created_ts: n, ..Default::default() });
    batch.put_profile_field(user_id, "n", &json!(n));
    batch
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap()
}

#[test]
fn a_committed_batch_is_visible_whole_and_survives_reopening() {
    let dir = tempfile::tempdir().unwrap();
    let alice = user(1);
    {
        let storage = open(dir.path());
        runtime().block_on(storage.commit(three_column_batch(&alice, 7))).unwrap();
        assert_eq!(storage.user(&alice).unwrap().unwrap().created_ts, 7);
        assert_eq!(storage.devices(&alice).unwrap().len(), 1);
        assert_eq!(storage.profile_field(&alice, "n").unwrap(), Some(json!(7)));
    }
    let storage = open(dir.path());
    assert_eq!(storage.user(&alice).unwrap().unwrap().created_ts, 7);
    let devices = storage.devices(&alice).unwrap();
    assert_eq!(devices[0].0, OwnedDeviceId::from("DEVICE"));

    // Deleting a device removes its tokens in the same write.
    let token = TokenHash([3; 32]);
    let record = DeviceRecord { access_token: Some(token), ..Default::default() };
    let mut batch = Batch::new();
    batch.put_device(&alice, device_id!("D2"), &record);
    batch.put_access_token(
        &token,
        &AccessTokenRecord { user_id: alice.clone(), device_id: "D2".into(), expires_ts: None, revokes_on_use: None },
    );
    runtime().block_on(storage.commit(batch)).unwrap();
    assert!(storage.access_token(&token).unwrap().is_some());
    let mut batch = Batch::new();
    batch.delete_device(&alice, device_id!("D2"), &record);
    runtime().block_on(storage.commit(batch)).unwrap();
    assert!(storage.access_token(&token).unwrap().is_none());
    assert!(storage.device(&alice, device_id!("D2")).unwrap().is_none());
}

#[test]
fn a_second_process_cannot_open_the_same_database() {
    let dir = tempfile::tempdir().unwrap();
    let _first = open(dir.path());
    let second =
        Storage::open(&DatabaseConfig { path: dir.path().to_path_buf(), cache_mb: 8, ..DatabaseConfig::default() });
    let message = second.err().expect("the lock must refuse a second opener").to_string();
    assert!(message.contains("in use"), "{message}");
}

#[test]
fn concurrent_commits_all_land() {
    let dir = tempfile::tempdir().unwrap();
    let storage = Arc::new(open(dir.path()));
    runtime().block_on(async {
        let tasks: Vec<_> = (0..16u64)
            .map(|writer| {
                let storage = storage.clone();
                tokio::spawn(async move {
                    for i in 0..50 {
                        let n = writer * 1000 + i;
                        storage.commit(three_column_batch(&user(n), n)).await.unwrap();
                    }
                })
            })
            .collect();
        for task in tasks {
            task.await.unwrap();
        }
    });
    for writer in 0..16u64 {
        for i in 0..50 {
            assert!(storage.user_exists(&user(writer * 1000 + i)).unwrap());
        }
    }
}

const CHILD_DB: &str = "MYELIN_TEST_KILLED_WRITER_DB";

/// The batch number in a line the child printed (libtest may put its own text before it).
fn acknowledged(line: &str) -> Option<u64> {
    line.split("acked ").nth(1)?.trim().parse().ok()
}

/// Not a test on its own: run as a child process by the kill test below, it commits batches from
/// eight tasks forever and prints each one it has seen acknowledged.
#[test]
fn killed_writer_child() {
    let Some(path) = std::env::var_os(CHILD_DB) else { return };
    let storage = Arc::new(open(std::path::Path::new(&path)));
    runtime().block_on(async {
        let tasks: Vec<_> = (0..8u64)
            .map(|writer| {
                let storage = storage.clone();
                tokio::spawn(async move {
                    for i in 0.. {
                        let n = writer * 1_000_000 + i;
                        storage.commit(three_column_batch(&user(n), n)).await.unwrap();
                        println!("acked {n}");
                    }
                })
            })
            .collect();
        for task in tasks {
            task.await.unwrap();
        }
    });
}

/// Kills a writing process with SIGKILL at arbitrary moments: every acknowledged batch must be
/// there after reopening, and every batch must be there whole or not at all.
#[test]
fn batches_are_atomic_and_durable_across_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let mut acked: Vec<u64> = Vec::new();
    for round in 0..4u64 {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args(["--exact", "storage::tests::killed_writer_child", "--nocapture", "--test-threads=1"])
            .env(CHILD_DB, dir.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = BufReader::new(child.stdout.take().unwrap());
        let mut lines = stdout.lines();
        // Once it writes (starting may take a while on a busy machine), let it write a varying
        // while, then kill it mid-stream.
        let started = Instant::now();
        let mut deadline = started + Duration::from_secs(60);
        let mut seen = 0;
        while Instant::now() < deadline && seen < 5_000 {
            match lines.next() {
                Some(Ok(line)) => {
                    if let Some(n) = acknowledged(&line) {
                        if seen == 0 {
                            deadline = Instant::now() + Duration::from_millis(100 + round * 170);
                        }
                        acked.push(n);
                        seen += 1;
                    }
                }
                _ => break,
            }
        }
        child.kill().unwrap();
        // Acknowledgements printed before the kill are still in the pipe.
        acked.extend(lines.map_while(Result::ok).filter_map(|line| acknowledged(&line)));
        child.wait().unwrap();
        assert!(seen > 0, "round {round}: the child acknowledged nothing");

        let storage = open(dir.path());
        for &n in &acked {
            assert!(storage.user_exists(&user(n)).unwrap(), "acknowledged batch {n} lost in round {round}");
        }
        let users = storage.engine.scan_prefix(Column::Users, b"").count();
        let devices = storage.engine.scan_prefix(Column::Devices, b"").count();
        let profiles = storage.engine.scan_prefix(Column::Profiles, b"").count();
        assert_eq!((users, devices), (users, profiles), "a batch was applied in part");
        assert_eq!(users, devices, "a batch was applied in part");
    }
}
