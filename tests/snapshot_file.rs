//! The `snapshot_file` option against what a file system can hold at its path: a planted
//! symlink, writers sharing the file, a FIFO, a huge file, a file system that does not answer.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU16, Ordering};
use std::sync::{mpsc, Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use easdirect::ListBuilder;
use easdirect::{Client, ErrorKind, Options};
use easdirect_emulator::{Emulator, Endpoint, Fault};

const SVC: &str = "svc";

/// One test at a time: one of them occupies the process's snapshot-file threads.
fn serial() -> MutexGuard<'static, ()> {
    static SERIAL: Mutex<()> = Mutex::new(());
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// A directory of the test's own, removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        let dir =
            std::env::temp_dir().join(format!("easdirect-snapfile-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }

    /// Names in the directory that look like temporary files of a save.
    fn temporaries(&self) -> Vec<String> {
        std::fs::read_dir(&self.0)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".tmp"))
            .collect()
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn eas_client(emu: &Emulator, snapshot_file: &Path) -> Client {
    let mut options = Options::new();
    options.set("refresh_interval_ms", "20").unwrap();
    options.set("request_timeout_ms", "300").unwrap();
    options
        .set("snapshot_file", snapshot_file.to_str().unwrap())
        .unwrap();
    Client::new(&format!("eas://{}/{SVC}", emu.endpoint()), &options).unwrap()
}

/// The ports a snapshot file lists, when it is a valid snapshot.
fn saved_ports(path: &Path) -> Option<Vec<u64>> {
    let body = std::fs::read(path).ok()?;
    let value: serde_json::Value = serde_json::from_slice(&body).ok()?;
    let ports = value["instances"]
        .as_array()?
        .iter()
        .map(|i| i["port"].as_u64().unwrap())
        .collect();
    Some(ports)
}

fn mkfifo(path: &Path) {
    let c_path = std::ffi::CString::new(path.to_str().unwrap()).unwrap();
    // SAFETY: a NUL-terminated path that lives across the call.
    let rc = unsafe { libc::mkfifo(c_path.as_ptr(), 0o600) };
    assert_eq!(rc, 0, "mkfifo: {}", std::io::Error::last_os_error());
}

#[test]
fn a_symlink_planted_at_the_old_temporary_name_is_never_written_through() {
    let _serial = serial();
    let dir = TempDir::new("symlink");
    let path = dir.path("svc.json");
    let victim = dir.path("victim");
    std::fs::write(&victim, b"precious").unwrap();
    // Where earlier versions wrote their temporary file, following symlinks.
    let planted = PathBuf::from(format!("{}.tmp{}", path.display(), std::process::id()));
    std::os::unix::fs::symlink(&victim, &planted).unwrap();

    let emu = Emulator::start().unwrap();
    emu.set_endpoints(SVC, vec![Endpoint::new("127.0.0.1", 50001, 100)]);
    let c = eas_client(&emu, &path);
    c.wait_ready(Duration::from_secs(5)).unwrap();
    for port in 50002..50006 {
        emu.set_endpoints(SVC, vec![Endpoint::new("127.0.0.1", port, 100)]);
        eventually("the new list is saved", || {
            saved_ports(&path) == Some(vec![u64::from(port)])
        });
    }
    drop(c);
    assert_eq!(std::fs::read(&victim).unwrap(), b"precious");
    assert_eq!(std::fs::read_link(&planted).unwrap(), victim, "left alone");
    assert!(dir.temporaries().is_empty(), "{:?}", dir.temporaries());
}

#[test]
fn two_clients_sharing_a_snapshot_file_never_show_a_reader_anything_but_a_snapshot() {
    let _serial = serial();
    let dir = TempDir::new("shared");
    let path = dir.path("svc.json");
    let mut options = Options::new();
    options.set("refresh_interval_ms", "10").unwrap();
    options
        .set("snapshot_file", path.to_str().unwrap())
        .unwrap();
    // Each fetch of each client lists a new port: every refresh publishes and saves.
    let next_port = Arc::new(AtomicU16::new(10_000));
    let clients: Vec<Client> = (0..2)
        .map(|_| {
            let next_port = next_port.clone();
            Client::with_source(
                Box::new(move |b: &mut ListBuilder| {
                    let port = next_port.fetch_add(1, Ordering::Relaxed);
                    b.add("10.0.0.1", port, 100).map_err(|e| e.to_string())?;
                    b.add("10.0.0.2", port, 100).map_err(|e| e.to_string())
                }),
                None,
                &options,
            )
            .unwrap()
        })
        .collect();
    let mut seen = std::collections::HashSet::new();
    let mut reads = 0;
    let deadline = Instant::now() + Duration::from_secs(3);
    while (seen.len() < 50 || reads < 2000) && Instant::now() < deadline {
        let body = match std::fs::read(&path) {
            Ok(body) => body,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => panic!("reading the snapshot file: {e}"),
        };
        reads += 1;
        let value: serde_json::Value = serde_json::from_slice(&body).unwrap_or_else(|e| {
            panic!(
                "read {reads}: not JSON ({e}): {:?}",
                String::from_utf8_lossy(&body)
            )
        });
        assert_eq!(value["format"], "easdirect-snapshot-1");
        assert_eq!(value["instances"].as_array().unwrap().len(), 2, "{value}");
        seen.insert(value["instances"][0]["port"].as_u64().unwrap());
    }
    assert!(
        seen.len() >= 10,
        "the file changed while being read ({} lists in {reads} reads)",
        seen.len()
    );
    drop(clients);
    eventually("no temporary file is left", || dir.temporaries().is_empty());
}

#[test]
fn a_fifo_at_the_path_is_ignored_with_its_reason_and_refreshes_go_on() {
    let _serial = serial();
    let dir = TempDir::new("fifo");
    let path = dir.path("svc.json");
    mkfifo(&path);
    let emu = Emulator::start().unwrap();
    emu.set_endpoints(SVC, vec![Endpoint::new("127.0.0.1", 50001, 100)]);
    emu.set_fault(Fault::Status(500));
    let c = eas_client(&emu, &path);
    let t = Instant::now();
    let err = c.wait_ready(Duration::from_millis(500)).unwrap_err();
    let waited = t.elapsed();
    assert_eq!(err.kind, ErrorKind::Timeout);
    assert!(waited < Duration::from_secs(2), "on time: {waited:?}");
    assert!(err.message.contains("not a regular file"), "{err}");
    let failed = c.stats().unwrap().refresh_failed;
    eventually("refreshes go on", || {
        c.stats().unwrap().refresh_failed >= failed + 3
    });
    emu.set_fault(Fault::None);
    c.wait_ready(Duration::from_secs(5)).unwrap();
    assert_eq!(c.select().unwrap().port, 50001);
}

#[test]
fn a_huge_snapshot_file_is_ignored_with_its_reason() {
    let _serial = serial();
    let dir = TempDir::new("huge");
    let path = dir.path("svc.json");
    // Sparse: 300 MB that cost no disk (the library never reads it: see the unit test).
    std::fs::File::create(&path)
        .unwrap()
        .set_len(300_000_000)
        .unwrap();
    let emu = Emulator::start().unwrap();
    emu.set_fault(Fault::Status(500));
    let c = eas_client(&emu, &path);
    let err = c.wait_ready(Duration::from_millis(500)).unwrap_err();
    assert_eq!(err.kind, ErrorKind::Timeout);
    assert!(
        err.message
            .contains("300000000 bytes, over the 16 MiB limit"),
        "{err}"
    );
}

#[test]
fn a_file_system_that_does_not_answer_delays_the_first_refresh_by_the_request_timeout_only() {
    let _serial = serial();
    let dir = TempDir::new("hung");
    let path = dir.path("svc.json");
    // A hung network mount: every snapshot-file thread of the process is stuck in a call.
    let hung = Arc::new(AtomicBool::new(true));
    let (started_tx, started) = mpsc::channel();
    for i in 0..easdirect::internals::MAX_FILE_THREADS {
        let (hung, started_tx) = (hung.clone(), started_tx.clone());
        assert!(
            easdirect::internals::file_io().submit(&format!("/mnt/hung/{i}"), move || {
                started_tx.send(()).unwrap();
                while hung.load(Ordering::Acquire) {
                    std::thread::sleep(Duration::from_millis(5));
                }
            })
        );
    }
    for _ in 0..easdirect::internals::MAX_FILE_THREADS {
        started.recv_timeout(Duration::from_secs(5)).unwrap();
    }
    let emu = Emulator::start().unwrap();
    emu.set_endpoints(SVC, vec![Endpoint::new("127.0.0.1", 50001, 100)]);
    emu.set_fault(Fault::Status(500));
    let c = eas_client(&emu, &path);
    let err = c.wait_ready(Duration::from_millis(1000)).unwrap_err();
    assert!(
        err.message
            .contains("the file system did not answer within 300 ms"),
        "{err}"
    );
    let failed = c.stats().unwrap().refresh_failed;
    eventually("refreshes go on", || {
        c.stats().unwrap().refresh_failed >= failed + 3
    });
    // Saves are queued, never waited for: discovery goes on while the file system is stuck.
    emu.set_fault(Fault::None);
    c.wait_ready(Duration::from_secs(5)).unwrap();
    for port in 50002..50005 {
        emu.set_endpoints(SVC, vec![Endpoint::new("127.0.0.1", port, 100)]);
        eventually("the new list", || c.select().unwrap().port == port);
    }
    assert!(!path.exists(), "nothing written while the lane is stuck");
    // Close flushes the newest list, and a file system that does not answer costs it the
    // request timeout, not a hang.
    let closing = Instant::now();
    c.close();
    assert!(
        closing.elapsed() < Duration::from_secs(5),
        "close waited on the file system"
    );
    assert!(!path.exists());
    // The file system answers again: the newest list, and only it, is written.
    hung.store(false, Ordering::Release);
    eventually("the newest list is saved", || {
        saved_ports(&path) == Some(vec![50004])
    });
}

#[test]
fn a_closed_client_has_saved_its_newest_list() {
    let _serial = serial();
    let dir = TempDir::new("close");
    // A fixed list is published inside `Client::new`; closing at once must not lose it.
    let path = dir.path("static.json");
    let mut options = Options::new();
    options
        .set("snapshot_file", path.to_str().unwrap())
        .unwrap();
    let c = Client::new("static://127.0.0.1:7001,127.0.0.1:7002", &options).unwrap();
    c.close();
    assert_eq!(saved_ports(&path), Some(vec![7001, 7002]));
    // And after list changes, the newest one.
    let emu = Emulator::start().unwrap();
    let path = dir.path("eas.json");
    emu.set_endpoints(SVC, vec![Endpoint::new("127.0.0.1", 50001, 100)]);
    let c = eas_client(&emu, &path);
    c.wait_ready(Duration::from_secs(5)).unwrap();
    for port in 50002..50006 {
        emu.set_endpoints(SVC, vec![Endpoint::new("127.0.0.1", port, 100)]);
        eventually("the new list", || c.select().unwrap().port == port);
    }
    drop(c);
    assert_eq!(saved_ports(&path), Some(vec![50005]));
    assert!(dir.temporaries().is_empty(), "{:?}", dir.temporaries());
}

#[test]
fn temporary_files_that_crashed_writers_left_are_swept_and_others_kept() {
    let _serial = serial();
    let dir = TempDir::new("sweep");
    let path = dir.path("svc.json");
    let hour_ago = std::time::SystemTime::now() - Duration::from_secs(3600);
    let plant = |name: &str, old: bool| {
        let p = dir.path(name);
        let f = std::fs::File::create(&p).unwrap();
        if old {
            f.set_modified(hour_ago).unwrap();
        }
        p
    };
    // A crashed save of this path an hour ago: swept.
    let stale = plant(".svc.json.0123456789abcdef.tmp", true);
    // A save of this path in progress in another process: kept.
    let fresh = plant(".svc.json.fedcba9876543210.tmp", false);
    // Old, but not this path's temporary files: kept.
    let other_path = plant(".other.json.0123456789abcdef.tmp", true);
    let not_ours = plant(".svc.json.backup.tmp", true);
    let mut options = Options::new();
    options
        .set("snapshot_file", path.to_str().unwrap())
        .unwrap();
    let c = Client::new("static://127.0.0.1:7001", &options).unwrap();
    c.close();
    assert_eq!(saved_ports(&path), Some(vec![7001]));
    assert!(!stale.exists(), "the stale temporary file is left");
    for kept in [&fresh, &other_path, &not_ours] {
        assert!(kept.exists(), "{} was removed", kept.display());
    }
}
