//! The spool: the local directory where recordings are written as calls go
//! and wait until the store has confirmed them. [`Spool`] is the only code
//! that creates, appends to, renames or removes a file in it, and it keeps a
//! ledger of every file and its length. Occupancy is the sum of that ledger:
//! a file's bytes are added when they are written and exactly those bytes
//! are taken away when the file goes, so the figure can neither drift nor go
//! negative, and it equals the directory's apparent size (`du -sb`).
//!
//! Files found at start (left by a crash, or put there by someone else) are
//! read into the ledger, so they count against the limit too; none is ever
//! deleted to make room.
//!
//! A spool that cannot take a new recording never stops the recorder: the
//! spool says why ([`Spool::refusal`]: its limit is reached, its directory
//! cannot be read, a write failed for want of space or permission) and new
//! recordings are refused while it does. A write that fails marks it; a
//! probe ([`Spool::probe`], a file of [`PROBE_BYTES`] written, synced and
//! removed) clears the mark once the disk takes writes again. A recording
//! the recorder cannot read is set aside under its names with
//! [`QUARANTINE_SUFFIX`] ([`Spool::quarantine`]) for an operator.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::SystemTime;

/// Suffix of a file being written by [`Spool::write_atomic`] before its rename.
const TEMP_SUFFIX: &str = ".tmp";

/// Suffix of the files of a recording set aside because they cannot be
/// read: kept for an operator, never uploaded or counted as recordings.
pub const QUARANTINE_SUFFIX: &str = ".quarantined";

/// The probe's file (a temporary: a crash mid-probe leaves nothing behind
/// that the next start keeps).
const PROBE: &str = "earshot-probe.tmp";

/// Bytes the probe writes: the room a new recording needs to start (its
/// start record and half a minute of audio at 64 kbit/s).
pub const PROBE_BYTES: usize = 256 * 1024;

/// One file in the ledger.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Entry {
    bytes: u64,
    since: SystemTime,
}

/// What the spool holds, for metrics and the drain.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Usage {
    /// Bytes of every file (apparent size).
    pub bytes: u64,
    /// Recordings (MP3 files), in progress or waiting for upload.
    pub recordings: u64,
    /// Seconds since the oldest recording was started; 0 when none.
    pub oldest_age_seconds: f64,
    /// Whether a new recording may start ([`Spool::refusal`] is `None`).
    pub accepting: bool,
    /// Files set aside because they could not be read.
    pub quarantined_files: u64,
}

/// The spool directory and the ledger of its files.
#[derive(Debug)]
pub struct Spool {
    dir: PathBuf,
    max_bytes: u64,
    ledger: Mutex<Ledger>,
    /// Why the spool cannot take new recordings now (its directory cannot
    /// be read, a write failed); `None` while it can.
    trouble: Mutex<Option<String>>,
    /// Tests: appends past this many bytes of a file fail as a full disk would.
    #[cfg(test)]
    pub(crate) disk_full_at: std::sync::atomic::AtomicU64,
    /// Tests: whole-file writes, new files and the probe fail as on a full disk.
    #[cfg(test)]
    pub(crate) writes_fail: std::sync::atomic::AtomicBool,
    /// Tests: files that cannot be read, as a file of another user with
    /// mode 0600 cannot be by a recorder that is not root.
    #[cfg(test)]
    pub(crate) unreadable: Mutex<Vec<String>>,
}

#[derive(Debug, Default)]
struct Ledger {
    files: BTreeMap<String, Entry>,
    bytes: u64,
    /// Whether the directory has been read into the ledger.
    scanned: bool,
}

impl Ledger {
    fn set(&mut self, name: &str, bytes: u64, since: SystemTime) {
        let old = self.files.insert(name.to_owned(), Entry { bytes, since });
        self.bytes = self.bytes - old.map_or(0, |e| e.bytes) + bytes;
    }

    fn grow(&mut self, name: &str, by: u64) {
        if let Some(e) = self.files.get_mut(name) {
            e.bytes += by;
            self.bytes += by;
        }
    }

    fn shrink_to(&mut self, name: &str, bytes: u64) {
        if let Some(e) = self.files.get_mut(name) {
            self.bytes = self.bytes - e.bytes + bytes;
            e.bytes = bytes;
        }
    }

    fn forget(&mut self, name: &str) {
        if let Some(e) = self.files.remove(name) {
            self.bytes -= e.bytes;
        }
    }
}

impl Spool {
    /// Opens (creating) the spool directory and reads what it holds into the
    /// ledger. Half-written temporary files of an interrupted atomic write are
    /// removed: their content was never the file's. Never fails: a directory
    /// that cannot be read or written gives a spool that refuses new
    /// recordings and says why ([`Spool::refusal`]) until
    /// [`Spool::scan`] and [`Spool::probe`] succeed.
    pub fn open(dir: &Path, max_bytes: u64) -> Arc<Spool> {
        let spool = Arc::new(Spool {
            dir: dir.to_owned(),
            max_bytes,
            ledger: Mutex::new(Ledger::default()),
            trouble: Mutex::new(None),
            #[cfg(test)]
            disk_full_at: std::sync::atomic::AtomicU64::new(u64::MAX),
            #[cfg(test)]
            writes_fail: std::sync::atomic::AtomicBool::new(false),
            #[cfg(test)]
            unreadable: Mutex::new(Vec::new()),
        });
        match spool.scan() {
            Ok(()) => {
                spool.probe();
            }
            Err(e) => spool.set_trouble(format!(
                "cannot read the spool directory {}: {e}",
                dir.display()
            )),
        }
        spool
    }

    /// Reads the directory into the ledger, replacing it: only while no
    /// recording is being written (at open, or while the spool could not
    /// be read and so refused every recording). An entry
    /// that cannot be looked at is skipped and logged, never a failure.
    pub fn scan(&self) -> std::io::Result<()> {
        std::fs::create_dir_all(&self.dir)?;
        let mut ledger = Ledger::default();
        for e in std::fs::read_dir(&self.dir)? {
            let looked = e.and_then(|e| {
                let meta = e.metadata()?;
                Ok((e, meta))
            });
            let (e, meta) = match looked {
                Ok(found) => found,
                Err(err) => {
                    tracing::error!(spool = %self.dir.display(), error = %err, "cannot look at an entry of the spool; it is left alone");
                    continue;
                }
            };
            if !meta.is_file() {
                continue;
            }
            let name = e.file_name().to_string_lossy().into_owned();
            if name.ends_with(TEMP_SUFFIX) {
                match std::fs::remove_file(e.path()) {
                    Ok(()) => continue,
                    // Kept, and counted: it is on the disk.
                    Err(err) => {
                        tracing::warn!(file = %name, error = %err, "cannot remove a half-written temporary file from the spool")
                    }
                }
            }
            let since = meta.modified().unwrap_or_else(|_| SystemTime::now());
            ledger.set(&name, meta.len(), since);
        }
        ledger.scanned = true;
        *self.ledger() = ledger;
        Ok(())
    }

    /// Whether the directory has been read into the ledger.
    pub fn scanned(&self) -> bool {
        self.ledger().scanned
    }

    /// Whether the spool takes writes: a file of [`PROBE_BYTES`] written,
    /// synced and removed. Clears the spool's trouble when it does, sets
    /// it when it does not.
    pub fn probe(&self) -> bool {
        let path = self.path(PROBE);
        let written = (|| {
            #[cfg(test)]
            self.test_write_fault()?;
            let mut f = File::create(&path)?;
            f.write_all(&vec![0; PROBE_BYTES])?;
            f.sync_all()
        })();
        let _ = std::fs::remove_file(&path);
        match written {
            Ok(()) => {
                self.clear_trouble();
                true
            }
            Err(e) => {
                self.set_trouble(format!("cannot write to the spool: {e}"));
                false
            }
        }
    }

    /// Why new recordings must be refused now, if they must: the spool's
    /// trouble, or its limit reached.
    pub fn refusal(&self) -> Option<String> {
        if let Some(why) = self.trouble() {
            return Some(why);
        }
        let bytes = self.bytes();
        (bytes >= self.max_bytes).then(|| {
            format!(
                "the spool holds {bytes} bytes, its limit is {}",
                self.max_bytes
            )
        })
    }

    /// Why the spool cannot take writes now (not its limit), if it cannot.
    pub fn trouble(&self) -> Option<String> {
        self.trouble
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn set_trouble(&self, why: String) {
        let mut t = self.trouble.lock().unwrap_or_else(|p| p.into_inner());
        if t.is_none() {
            tracing::error!(spool = %self.dir.display(), reason = %why, "the spool cannot take new recordings; they are refused until it can (calls are still relayed)");
        }
        *t = Some(why);
    }

    fn clear_trouble(&self) {
        let mut t = self.trouble.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(why) = t.take() {
            tracing::info!(spool = %self.dir.display(), was = %why, "the spool takes new recordings again");
        }
    }

    /// A write failed: unless it only found the name taken, the disk may be
    /// full or refuse writes, so new recordings wait for a good probe.
    fn failed_write(&self, what: &str, e: &std::io::Error) {
        if e.kind() != std::io::ErrorKind::AlreadyExists {
            self.set_trouble(format!("writing {what} failed: {e}"));
        }
    }

    #[cfg(test)]
    fn test_write_fault(&self) -> std::io::Result<()> {
        if self.writes_fail.load(std::sync::atomic::Ordering::Relaxed) {
            return Err(std::io::Error::from_raw_os_error(28));
        }
        Ok(())
    }

    fn ledger(&self) -> MutexGuard<'_, Ledger> {
        // The ledger's updates cannot panic halfway (plain arithmetic on
        // figures that are each other's sums), so a poisoned lock still
        // holds consistent figures.
        self.ledger.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The path of a spool file.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// Bytes held now.
    pub fn bytes(&self) -> u64 {
        self.ledger().bytes
    }

    /// Whether the limit is reached (see [`Spool::refusal`] for every
    /// reason new recordings are refused).
    pub fn full(&self) -> bool {
        self.bytes() >= self.max_bytes
    }

    /// Whether a file is in the spool.
    pub fn contains(&self, name: &str) -> bool {
        self.ledger().files.contains_key(name)
    }

    /// Names of the files whose name ends in `suffix`, sorted.
    pub fn names_ending(&self, suffix: &str) -> Vec<String> {
        self.ledger()
            .files
            .keys()
            .filter(|n| n.ends_with(suffix))
            .cloned()
            .collect()
    }

    /// Figures for metrics.
    pub fn usage(&self, now: SystemTime) -> Usage {
        // Before the ledger is locked: the refusal reads it too.
        let accepting = self.refusal().is_none();
        let l = self.ledger();
        let mp3s = l.files.iter().filter(|(n, _)| n.ends_with(".mp3"));
        let oldest = mp3s.clone().map(|(_, e)| e.since).min();
        Usage {
            bytes: l.bytes,
            recordings: mp3s.count() as u64,
            oldest_age_seconds: oldest
                .and_then(|o| now.duration_since(o).ok())
                .map_or(0.0, |d| d.as_secs_f64()),
            accepting,
            quarantined_files: l
                .files
                .keys()
                .filter(|n| n.ends_with(QUARANTINE_SUFFIX))
                .count() as u64,
        }
    }

    /// Creates a new file to append to; fails if one of that name exists.
    pub fn create(self: &Arc<Self>, name: &str) -> std::io::Result<SpoolFile> {
        #[cfg(test)]
        self.test_write_fault()
            .inspect_err(|e| self.failed_write(name, e))?;
        let file = OpenOptions::new()
            .create_new(true)
            .write(true)
            .open(self.path(name))
            .inspect_err(|e| self.failed_write(name, e))?;
        self.ledger().set(name, 0, SystemTime::now());
        Ok(SpoolFile {
            spool: self.clone(),
            name: name.to_owned(),
            file,
            len: 0,
            failed: None,
        })
    }

    /// Writes a whole file so that it is either there with all of `data` or
    /// not changed at all: a temporary file, synced, renamed over the name,
    /// and the directory synced.
    pub fn write_atomic(&self, name: &str, data: &[u8]) -> std::io::Result<()> {
        let temp = self.path(&format!("{name}{TEMP_SUFFIX}"));
        let written = (|| {
            #[cfg(test)]
            self.test_write_fault()?;
            let mut f = File::create(&temp)?;
            f.write_all(data)?;
            f.sync_all()?;
            std::fs::rename(&temp, self.path(name))?;
            File::open(&self.dir)?.sync_all()
        })();
        match written {
            Ok(()) => {
                self.ledger()
                    .set(name, data.len() as u64, SystemTime::now());
                Ok(())
            }
            Err(e) => {
                // Nothing of the temporary file may stay behind uncounted.
                let _ = std::fs::remove_file(&temp);
                self.failed_write(name, &e);
                Err(e)
            }
        }
    }

    /// Reads a whole file.
    pub fn read(&self, name: &str) -> std::io::Result<Vec<u8>> {
        #[cfg(test)]
        self.test_read_fault(name)?;
        std::fs::read(self.path(name))
    }

    /// Whether a file can be read: opened, and its first byte read.
    pub fn check_readable(&self, name: &str) -> std::io::Result<()> {
        use std::io::Read;
        #[cfg(test)]
        self.test_read_fault(name)?;
        File::open(self.path(name))?.read(&mut [0u8; 1]).map(|_| ())
    }

    #[cfg(test)]
    fn test_read_fault(&self, name: &str) -> std::io::Result<()> {
        let unreadable = self.unreadable.lock().unwrap();
        if unreadable.iter().any(|n| n == name) {
            return Err(std::io::Error::from(std::io::ErrorKind::PermissionDenied));
        }
        Ok(())
    }

    /// Sets a file aside: renamed with [`QUARANTINE_SUFFIX`] in the spool,
    /// where it stays (counted in the spool's bytes) until an operator
    /// takes it away. Returns the new name.
    pub fn quarantine(&self, name: &str) -> std::io::Result<String> {
        let to = format!("{name}{QUARANTINE_SUFFIX}");
        std::fs::rename(self.path(name), self.path(&to))?;
        let mut l = self.ledger();
        let entry = l.files.get(name).copied();
        l.forget(name);
        // A file of that name (set aside before) is replaced by the rename.
        l.forget(&to);
        if let Some(e) = entry {
            l.set(&to, e.bytes, e.since);
        }
        Ok(to)
    }

    /// Removes a file. A file that is already gone leaves the ledger too.
    pub fn remove(&self, name: &str) -> std::io::Result<()> {
        match std::fs::remove_file(self.path(name)) {
            Ok(()) => {
                self.ledger().forget(name);
                Ok(())
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                self.ledger().forget(name);
                Ok(())
            }
            Err(e) => Err(e),
        }
    }
}

/// A spool file being appended to (a recording's MP3 as the call goes).
#[derive(Debug)]
pub struct SpoolFile {
    spool: Arc<Spool>,
    name: String,
    file: File,
    len: u64,
    failed: Option<String>,
}

impl SpoolFile {
    /// The file's name in the spool.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Bytes appended so far (all of them on disk, in order).
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether nothing was appended yet.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Why appending stopped (a write failed: disk full, I/O error), if it did.
    pub fn failed(&self) -> Option<&str> {
        self.failed.as_deref()
    }

    /// Appends `data` whole, or nothing of it: a write that fails halfway
    /// (the disk is full) is cut back to the length before it, so the file
    /// holds exactly the bytes appended before, and every later append is
    /// refused with the same error.
    pub fn append(&mut self, data: &[u8]) -> std::io::Result<()> {
        if let Some(why) = &self.failed {
            return Err(std::io::Error::other(why.clone()));
        }
        if data.is_empty() {
            return Ok(());
        }
        match self.write(data) {
            Ok(()) => {
                self.len += data.len() as u64;
                self.spool.ledger().grow(&self.name, data.len() as u64);
                Ok(())
            }
            Err(e) => {
                self.spool.failed_write(&self.name, &e);
                self.failed = Some(e.to_string());
                // The part that did reach the file is cut off again; if even
                // that fails the ledger takes the file's real length.
                let kept = match self.file.set_len(self.len) {
                    Ok(()) => self.len,
                    Err(_) => self.file.metadata().map_or(self.len, |m| m.len()),
                };
                self.spool.ledger().shrink_to(&self.name, kept);
                Err(e)
            }
        }
    }

    #[cfg(not(test))]
    fn write(&mut self, data: &[u8]) -> std::io::Result<()> {
        self.file.write_all(data)
    }

    /// As a full disk does: what fits is written, then the write fails.
    #[cfg(test)]
    fn write(&mut self, data: &[u8]) -> std::io::Result<()> {
        let at = self
            .spool
            .disk_full_at
            .load(std::sync::atomic::Ordering::Relaxed);
        let room = at.saturating_sub(self.len) as usize;
        if data.len() <= room {
            return self.file.write_all(data);
        }
        self.file.write_all(&data[..room])?;
        Err(std::io::Error::from_raw_os_error(28))
    }

    /// Writes `data` over the start of the file (a header whose place was
    /// kept); the file's length does not change.
    pub fn overwrite_start(&mut self, data: &[u8]) -> std::io::Result<()> {
        use std::os::unix::fs::FileExt;
        if data.len() as u64 > self.len {
            return Err(std::io::Error::other("header longer than the file"));
        }
        self.file.write_all_at(data, 0)
    }

    /// Flushes the file's data to the disk.
    pub fn sync(&self) -> std::io::Result<()> {
        self.file.sync_data()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!(
            "earshot-spool-{name}-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    /// The directory's apparent size, as `du -sb` counts it (files only).
    fn on_disk(d: &Path) -> u64 {
        std::fs::read_dir(d)
            .unwrap()
            .flatten()
            .map(|e| e.metadata().unwrap().len())
            .sum()
    }

    #[test]
    fn every_path_keeps_the_ledger_equal_to_the_disk() {
        let d = dir("paths");
        let spool = Spool::open(&d, 1 << 20);
        let check = |what: &str| assert_eq!(spool.bytes(), on_disk(&d), "after {what}");
        let mut f = spool.create("a.mp3").unwrap();
        check("create");
        f.append(&[1; 1000]).unwrap();
        f.append(&[]).unwrap();
        f.append(&[2; 24]).unwrap();
        check("append");
        spool.write_atomic("a.start.json", b"{}").unwrap();
        check("a small atomic write");
        spool.write_atomic("a.json", &[b' '; 700]).unwrap();
        spool.write_atomic("a.json", &[b' '; 300]).unwrap();
        check("an atomic write replacing a file");
        assert!(spool.create("a.mp3").is_err(), "names are never reused");
        check("a refused create");
        spool.remove("a.start.json").unwrap();
        spool.remove("a.mp3").unwrap();
        spool.remove("a.mp3").unwrap();
        check("removes, one of a file already gone");
        assert_eq!(spool.bytes(), 300);
        spool.remove("a.json").unwrap();
        assert_eq!(spool.bytes(), 0);
        check("everything removed");
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn what_a_crash_left_counts_and_half_written_temporaries_go() {
        let d = dir("reopen");
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join("x.mp3"), [0u8; 5000]).unwrap();
        std::fs::write(d.join("x.start.json"), [0u8; 100]).unwrap();
        std::fs::write(d.join("x.json.tmp"), [0u8; 77]).unwrap();
        std::fs::write(d.join("ballast.bin"), [0u8; 1000]).unwrap();
        let spool = Spool::open(&d, 6000);
        assert_eq!(spool.bytes(), 6100);
        assert_eq!(spool.bytes(), on_disk(&d));
        assert!(!d.join("x.json.tmp").exists());
        assert!(spool.full(), "at the limit: new recordings are refused");
        assert_eq!(spool.names_ending(".mp3"), ["x.mp3"]);
        let u = spool.usage(SystemTime::now());
        assert_eq!((u.bytes, u.recordings), (6100, 1));
        spool.remove("x.mp3").unwrap();
        assert!(!spool.full());
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn a_file_set_aside_keeps_its_bytes_counted_and_is_no_recording() {
        let d = dir("quarantine");
        let spool = Spool::open(&d, 1 << 20);
        let mut f = spool.create("q.mp3").unwrap();
        f.append(&[1; 300]).unwrap();
        spool.write_atomic("q.json", b"{}").unwrap();
        assert_eq!(spool.quarantine("q.mp3").unwrap(), "q.mp3.quarantined");
        spool.quarantine("q.json").unwrap();
        assert_eq!(spool.bytes(), on_disk(&d));
        assert_eq!(spool.bytes(), 302);
        let u = spool.usage(SystemTime::now());
        assert_eq!((u.recordings, u.quarantined_files), (0, 2));
        assert!(spool.names_ending(".mp3").is_empty());
        // Found again at the next start, still set aside.
        drop(f);
        let again = Spool::open(&d, 1 << 20);
        assert_eq!(again.usage(SystemTime::now()).quarantined_files, 2);
        assert_eq!(again.bytes(), 302);
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn a_spool_that_cannot_be_read_or_written_refuses_and_says_why_until_it_can() {
        let d = dir("trouble");
        std::fs::write(&d, b"a file where the directory should be").unwrap();
        let spool = Spool::open(&d, 1 << 20);
        assert!(!spool.scanned());
        let why = spool.refusal().unwrap();
        assert!(why.starts_with("cannot read the spool directory"), "{why}");
        assert!(!spool.usage(SystemTime::now()).accepting);
        std::fs::remove_file(&d).unwrap();
        spool.scan().unwrap();
        assert!(spool.refusal().is_some(), "only a probe clears it");
        assert!(spool.probe());
        assert_eq!(spool.refusal(), None);
        // A write that fails for want of room marks it again; the probe
        // finds the room and leaves nothing behind.
        spool
            .writes_fail
            .store(true, std::sync::atomic::Ordering::Relaxed);
        assert!(spool.write_atomic("x.json", b"{}").is_err());
        assert!(spool.refusal().unwrap().contains("x.json"));
        assert!(spool.create("y.mp3").is_err());
        assert!(!spool.probe());
        spool
            .writes_fail
            .store(false, std::sync::atomic::Ordering::Relaxed);
        assert!(spool.probe());
        assert_eq!(spool.refusal(), None);
        assert_eq!(on_disk(&d), 0);
        // Its limit reached is a refusal too.
        let small = Spool::open(&d, 10);
        small.write_atomic("z.json", &[0; 10]).unwrap();
        assert!(small.refusal().unwrap().contains("limit"));
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn a_failed_append_keeps_exactly_the_bytes_before_it() {
        let d = dir("fail");
        let spool = Spool::open(&d, 1 << 20);
        let mut f = spool.create("b.mp3").unwrap();
        f.append(&[7; 100]).unwrap();
        // A file opened read-only fails every write, as a full disk fails some.
        f.file = File::open(spool.path("b.mp3")).unwrap();
        assert!(f.append(&[8; 50]).is_err());
        assert!(f.failed().is_some());
        assert!(f.append(&[9; 10]).is_err(), "refused after a failure");
        assert_eq!(f.len(), 100);
        assert_eq!(std::fs::read(spool.path("b.mp3")).unwrap(), [7; 100]);
        assert_eq!(spool.bytes(), on_disk(&d));
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn concurrent_writers_and_removers_agree_with_the_disk() {
        let d = dir("threads");
        let spool = Spool::open(&d, u64::MAX);
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let spool = spool.clone();
                std::thread::spawn(move || {
                    for i in 0..50 {
                        let name = format!("{t}-{i}.mp3");
                        let mut f = spool.create(&name).unwrap();
                        for n in 0..(i % 7) {
                            f.append(&vec![0; 10 + n * 3]).unwrap();
                        }
                        spool
                            .write_atomic(&format!("{t}-{i}.json"), &vec![1; i])
                            .unwrap();
                        if i % 3 != 0 {
                            spool.remove(&name).unwrap();
                            spool.remove(&format!("{t}-{i}.json")).unwrap();
                        }
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(spool.bytes(), on_disk(&d));
        assert_eq!(spool.usage(SystemTime::now()).recordings, 4 * 17);
        std::fs::remove_dir_all(&d).unwrap();
    }
}
