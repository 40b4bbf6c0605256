//! The `snapshot_file` option: each new list saved atomically, read back when the first fetch
//! fails at start.
//!
//! Both run on the process's file lane ([`crate::blocking::file_io`]), off the refresh: a refresh
//! waits for a load at most its request timeout, and a save never blocks it (queued, coalesced
//! per path so that only the newest list is written, dropped when the lane is full).
//!
//! A save writes a temporary file of an unpredictable name in the path's directory, created
//! exclusively and without following symlinks (a file or symlink planted there is never written
//! through), syncs it and renames it over the path: a reader (another client, another process)
//! sees the old file or the new one, never a mix, and each writer has a temporary file of its
//! own. A load opens without blocking (a FIFO does not hang it), reads only a regular file, and
//! at most 16 MiB of it.

use std::collections::hash_map::RandomState;
use std::ffi::OsStr;
use std::fs::{File, OpenOptions};
use std::hash::{BuildHasher, Hasher};
use std::io::{self, Write};
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime};

use serde_json::{json, Value};

use std::sync::{Arc, Mutex};

use crate::blocking::{self, Refused};
use crate::instance::{parse_ip, Instance};
use crate::log::{Level, Logger};

/// The largest snapshot file read; a bigger one is ignored, unread.
pub const MAX_FILE_BYTES: u64 = 16 * 1024 * 1024;

/// One client's saves to its `snapshot_file`: queued on the file lane as lists are published,
/// written in generation order (a save of an older list never lands after a newer one), and
/// flushed by `close` so that a short-lived process does not lose its last list.
pub struct Saver {
    path: String,
    /// The newest generation written; held while writing, so that this client's writes never
    /// overlap or go back in time.
    written: Mutex<u64>,
    /// The newest list queued and its generation, for `flush`.
    newest: Mutex<Option<(u64, Arc<[Instance]>)>>,
    /// Whether this client has swept the temporary files crashed writers left.
    swept: AtomicBool,
    /// Whether the last save failed (one warning per streak of failed saves).
    failing: AtomicBool,
    log: Logger,
}

impl Saver {
    pub fn new(path: &str, log: Logger) -> Arc<Saver> {
        Arc::new(Saver {
            path: path.to_owned(),
            written: Mutex::new(0),
            newest: Mutex::new(None),
            swept: AtomicBool::new(false),
            failing: AtomicBool::new(false),
            log,
        })
    }

    /// Queues a save of `list`, the list of `generation`; a newer list of the same path replaces
    /// one still queued. False when the lane is full (the save is dropped: a failed write never
    /// disturbs discovery; `flush` tries again).
    pub fn queue(self: &Arc<Self>, generation: u64, list: Vec<Instance>) -> bool {
        let list: Arc<[Instance]> = list.into();
        *lock(&self.newest) = Some((generation, list.clone()));
        let me = self.clone();
        let queued = blocking::file_io().submit(&self.path, move || me.write(generation, &list));
        if !queued {
            self.log.log(Level::Warn, || {
                format!(
                    "snapshot file {}: save of list {generation} dropped (the file lane is busy)",
                    self.path
                )
            });
        }
        queued
    }

    /// Writes the newest queued list unless it is written already, waiting at most `timeout`
    /// (a hung file system costs the caller that and no more). True when it is on disk.
    pub fn flush(self: &Arc<Self>, timeout: Duration) -> bool {
        let Some((generation, list)) = lock(&self.newest).clone() else {
            return true; // nothing was ever queued (a list loaded from the file is on disk)
        };
        // Not `lock`: a write in progress on a hung file system holds it, and the caller
        // (close) must wait at most `timeout`; the lane call below does the waiting.
        if matches!(self.written.try_lock(), Ok(written) if *written >= generation) {
            return true;
        }
        let me = self.clone();
        let key = format!("flush {}", self.path);
        blocking::file_io()
            .call(&key, timeout, move || {
                me.write(generation, &list);
                *lock(&me.written) >= generation
            })
            .unwrap_or(false)
    }

    fn write(&self, generation: u64, list: &[Instance]) {
        let mut written = lock(&self.written);
        if *written >= generation {
            return;
        }
        let saved = save(&self.path, list);
        if let Err(e) = &saved {
            if !self.failing.swap(true, Ordering::Relaxed) {
                self.log.log(Level::Warn, || {
                    format!("snapshot file {}: saving failed: {e}", self.path)
                });
            }
        } else if self.failing.swap(false, Ordering::Relaxed) {
            self.log.log(Level::Info, || {
                format!("snapshot file {}: saving works again", self.path)
            });
        }
        if saved.is_ok() {
            *written = generation;
            if !self.swept.swap(true, Ordering::Relaxed) {
                // Once per client, after a save proved the directory writable; under the
                // lock, so that a flush returns after it.
                sweep_stale(Path::new(&self.path), SystemTime::now());
            }
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A save that panicked leaves nothing half-updated here.
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

/// Loads `path` on the file lane, waiting at most `timeout`; the error says why the file is not
/// used, for `wait_ready`'s message.
pub fn load_within(path: &str, timeout: Duration) -> Result<Vec<Instance>, String> {
    let owned = path.to_owned();
    match blocking::file_io().call(path, timeout, move || load(&owned)) {
        Ok(loaded) => loaded,
        Err(Refused::TimedOut { .. }) => Err(format!(
            "snapshot_file \"{path}\" not used: the file system did not answer within {} ms",
            timeout.as_millis()
        )),
        Err(Refused::Saturated { .. }) => Err(format!(
            "snapshot_file \"{path}\" not used: not read, every snapshot-file thread of the \
             process is busy (a file system is not answering)"
        )),
    }
}

/// Writes `list` to `path` through a temporary file of its own and a rename, so that a reader
/// never sees half a file.
pub fn save(path: &str, list: &[Instance]) -> io::Result<()> {
    let items: Vec<Value> = list
        .iter()
        .map(|i| json!({"ip": i.ip_str(), "port": i.port, "weight": i.weight}))
        .collect();
    let body = serde_json::to_vec(&json!({"format": "easdirect-snapshot-1", "instances": items}))?;
    let path = Path::new(path);
    let (dir, base) = split(path)?;
    let (mut file, tmp) = create_temp(dir, base)?;
    let written = file.write_all(&body).and_then(|()| file.sync_all());
    drop(file);
    if let Err(e) = written.and_then(|()| std::fs::rename(&tmp, path)) {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    // The rename itself survives a crash once the directory is synced (best effort).
    if let Ok(dir) = File::open(dir) {
        let _ = dir.sync_all();
    }
    Ok(())
}

/// A temporary file older than this was left by a writer that died (a save takes
/// milliseconds); younger ones may be another process's save in progress.
const STALE_AFTER: Duration = Duration::from_secs(600);
/// Directory entries looked at by one sweep, at most.
const SWEEP_LIMIT: usize = 100_000;

/// Removes the temporary files of `path` (`.{base}.{16 hex digits}.tmp`) that writers killed
/// mid-save left behind, when older than [`STALE_AFTER`] at `now`. Best effort: an error
/// leaves the file. A symlink of that name is removed as a link, never followed.
fn sweep_stale(path: &Path, now: SystemTime) {
    let Ok((dir, base)) = split(path) else { return };
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let mut prefix = std::ffi::OsString::from(".");
    prefix.push(base);
    prefix.push(".");
    let prefix = prefix.as_encoded_bytes();
    for entry in entries.take(SWEEP_LIMIT).flatten() {
        let name = entry.file_name();
        let Some(tail) = name.as_encoded_bytes().strip_prefix(prefix) else {
            continue;
        };
        let ours = tail.len() == 20
            && tail.ends_with(b".tmp")
            && tail[..16].iter().all(u8::is_ascii_hexdigit);
        if !ours {
            continue;
        }
        let old = entry
            .metadata() // of the entry itself: a symlink is not followed
            .and_then(|m| m.modified())
            .is_ok_and(|at| now.duration_since(at).is_ok_and(|age| age > STALE_AFTER));
        if old {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

/// The directory a path is in ("." for a bare name) and its last component.
fn split(path: &Path) -> io::Result<(&Path, &OsStr)> {
    let base = path
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "the path names no file"))?;
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    Ok((dir, base))
}

/// Creates `.{base}.{random}.tmp` in `dir`, a name nobody can guess, exclusively.
fn create_temp(dir: &Path, base: &OsStr) -> io::Result<(File, PathBuf)> {
    let mut last = None;
    for _ in 0..8 {
        let mut name = std::ffi::OsString::from(".");
        name.push(base);
        name.push(format!(".{:016x}.tmp", unpredictable()));
        let tmp = dir.join(name);
        match create_exclusive(&tmp) {
            Ok(file) => return Ok((file, tmp)),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => last = Some(e),
            Err(e) => return Err(e),
        }
    }
    Err(last.expect("tried at least once"))
}

/// Creates a new file at `path`: fails when anything (a file, a symlink, even a dangling one)
/// is already there, so that nothing planted is ever written through.
fn create_exclusive(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
}

/// 64 bits from the hasher keys std draws from the system's random source.
fn unpredictable() -> u64 {
    let mut hasher = RandomState::new().build_hasher();
    hasher.write_u32(std::process::id());
    hasher.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    hasher.finish()
}

/// Reads a saved list; the error says why it cannot be used, for `wait_ready`'s message.
pub fn load(path: &str) -> Result<Vec<Instance>, String> {
    let not_used = |why: String| format!("snapshot_file \"{path}\" not used: {why}");
    let body = read_regular(Path::new(path)).map_err(not_used)?;
    let value: Value =
        serde_json::from_slice(&body).map_err(|e| not_used(format!("not JSON ({e})")))?;
    let items = value
        .get("instances")
        .and_then(Value::as_array)
        .filter(|_| value.get("format").and_then(Value::as_str) == Some("easdirect-snapshot-1"))
        .ok_or_else(|| not_used("not an easdirect snapshot".into()))?;
    let list: Vec<Instance> = items
        .iter()
        .filter_map(|item| {
            let ip = parse_ip(item.get("ip")?.as_str()?)?;
            let port = u16::try_from(item.get("port")?.as_u64()?)
                .ok()
                .filter(|&p| p > 0)?;
            let weight = u32::try_from(item.get("weight")?.as_u64()?).ok()?;
            Some(Instance::new(ip, port, weight))
        })
        .collect();
    if !list.iter().any(|i| i.weight > 0) {
        return Err(not_used("it lists no instance of positive weight".into()));
    }
    Ok(list)
}

/// The bytes of `path` when it is a regular file of at most `MAX_FILE_BYTES`.
fn read_regular(path: &Path) -> Result<Vec<u8>, String> {
    // O_NONBLOCK: opening a FIFO with no writer would otherwise wait for one forever.
    let mut file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(path)
        .map_err(|e| e.to_string())?;
    let meta = file.metadata().map_err(|e| e.to_string())?; // fstat of what was opened
    let kind = meta.file_type();
    if !kind.is_file() {
        let what = if kind.is_dir() {
            "a directory"
        } else if kind.is_fifo() {
            "a FIFO"
        } else if kind.is_socket() {
            "a socket"
        } else if kind.is_char_device() || kind.is_block_device() {
            "a device"
        } else {
            "something else"
        };
        return Err(format!("not a regular file ({what})"));
    }
    if meta.len() > MAX_FILE_BYTES {
        return Err(format!(
            "{} bytes, over the 16 MiB limit (not read)",
            meta.len()
        ));
    }
    // The size may change under us: read in chunks and stop past the limit, never trusting it.
    match crate::source::read_capped(&mut file, MAX_FILE_BYTES, meta.len() as usize) {
        Ok(Some(body)) => Ok(body),
        Ok(None) => Err("over the 16 MiB limit (it grew while being read)".into()),
        Err(e) => Err(format!("reading failed: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A directory of the test's own, removed when dropped.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new(name: &str) -> TempDir {
            let dir = std::env::temp_dir().join(format!(
                "easdirect-snap-{name}-{}-{:x}",
                std::process::id(),
                unpredictable()
            ));
            std::fs::create_dir_all(&dir).unwrap();
            TempDir(dir)
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn list() -> Vec<Instance> {
        vec![
            Instance::new("10.0.0.1".parse().unwrap(), 80, 5),
            Instance::new("::1".parse().unwrap(), 81, 0),
        ]
    }

    fn entries(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn a_saved_list_loads_back_and_leaves_no_temporary_file() {
        let dir = TempDir::new("roundtrip");
        let path = dir.0.join("list.json");
        let path = path.to_str().unwrap();
        save(path, &list()).unwrap();
        save(path, &list()).unwrap();
        assert_eq!(load(path).unwrap(), list());
        assert_eq!(entries(&dir.0), vec!["list.json"]);
        std::fs::write(path, b"{corrupt").unwrap();
        assert!(load(path).unwrap_err().contains("not JSON"));
        assert!(load(&format!("{path}.missing"))
            .unwrap_err()
            .contains("not used"));
    }

    #[test]
    fn a_symlink_planted_at_the_temporary_name_is_never_written_through() {
        let dir = TempDir::new("symlink");
        let victim = dir.0.join("victim");
        std::fs::write(&victim, b"precious").unwrap();
        let planted = dir.0.join(".list.json.0123456789abcdef.tmp");
        std::os::unix::fs::symlink(&victim, &planted).unwrap();
        let err = create_exclusive(&planted).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::AlreadyExists);
        assert_eq!(std::fs::read(&victim).unwrap(), b"precious");
        // A dangling one: its target is not created either.
        let absent = dir.0.join("absent");
        let dangling = dir.0.join(".list.json.fedcba9876543210.tmp");
        std::os::unix::fs::symlink(&absent, &dangling).unwrap();
        assert!(create_exclusive(&dangling).is_err());
        assert!(!absent.exists());
    }

    #[test]
    fn temporary_names_differ_every_time() {
        let dir = TempDir::new("names");
        let (_, a) = create_temp(&dir.0, OsStr::new("list.json")).unwrap();
        let (_, b) = create_temp(&dir.0, OsStr::new("list.json")).unwrap();
        assert_ne!(a, b);
        assert!(a.starts_with(&dir.0));
    }

    #[test]
    fn a_fifo_is_not_read_and_does_not_block() {
        let dir = TempDir::new("fifo");
        let path = dir.0.join("list.json");
        let c_path = std::ffi::CString::new(path.to_str().unwrap()).unwrap();
        // SAFETY: a NUL-terminated path that lives across the call.
        assert_eq!(unsafe { libc::mkfifo(c_path.as_ptr(), 0o600) }, 0);
        let err = load(path.to_str().unwrap()).unwrap_err();
        assert!(err.contains("not a regular file (a FIFO)"), "{err}");
        let err = load(dir.0.to_str().unwrap()).unwrap_err();
        assert!(err.contains("not a regular file (a directory)"), "{err}");
    }

    /// Bytes this thread has read through read(2) and the like, from /proc.
    fn bytes_read_by_this_thread() -> u64 {
        let io = std::fs::read_to_string("/proc/thread-self/io").unwrap();
        io.lines()
            .find_map(|l| l.strip_prefix("rchar: "))
            .unwrap()
            .trim()
            .parse()
            .unwrap()
    }

    #[test]
    fn a_huge_file_is_ignored_without_being_read() {
        let dir = TempDir::new("huge");
        let path = dir.0.join("list.json");
        // Sparse: 300 MB that cost no disk.
        File::create(&path).unwrap().set_len(300_000_000).unwrap();
        let before = bytes_read_by_this_thread();
        let err = load(path.to_str().unwrap()).unwrap_err();
        let read = bytes_read_by_this_thread() - before;
        assert!(
            err.contains("300000000 bytes, over the 16 MiB limit"),
            "{err}"
        );
        assert!(read < 64 * 1024, "read {read} bytes of it");
    }
}
