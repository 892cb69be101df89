//! Output files that cannot lose a run's results: [`OutFile`] proves a
//! target writable before any work by creating the temporary file its
//! atomic write will use, and at the end renames that file over the target.
//!
//! A reader never sees half a file, a failed write leaves an older file as
//! it was, and the temporary file is removed whatever happens: on drop, and
//! by [`remove_pending`] when a second Ctrl-C ends the process at once.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use anyhow::Context;
use concur::sync;

use crate::Usage;

/// Temporary files not yet renamed or removed, for an exit that skips drops.
static PENDING: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());

/// A file to be written at the end of a run, already proven writable.
#[derive(Debug)]
pub(crate) struct OutFile {
    path: PathBuf,
    tmp: PathBuf,
    file: File,
}

impl OutFile {
    /// Creates the temporary file beside `path` that [`OutFile::commit`]
    /// will rename over it. Any reason it cannot be written (no such
    /// directory, no permission, a read-only file system, `path` a
    /// directory) is a usage error naming `flag` and the path, before any
    /// work is done.
    pub fn create(flag: &str, path: &Path) -> Result<Self, Usage> {
        let refuse = |why: &dyn std::fmt::Display| Usage(format!("{flag}: cannot write '{}': {why}", path.display()));
        if path.is_dir() {
            return Err(Usage(format!("{flag}: '{}' is a directory", path.display())));
        }
        let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
        if !dir.is_dir() {
            return Err(refuse(&format_args!("no directory '{}'", dir.display())));
        }
        let name = path.file_name().ok_or_else(|| refuse(&"not a file name"))?.to_string_lossy().into_owned();
        // The full name, so that a name the system refuses is refused here.
        let tmp = path.with_file_name(format!(".{name}.{}.tmp", std::process::id()));
        let file = File::options().write(true).create_new(true).open(&tmp).map_err(|e| refuse(&e))?;
        sync::lock(&PENDING).push(tmp.clone());
        Ok(OutFile { path: path.to_path_buf(), tmp, file })
    }

    /// Writes `bytes` to the temporary file, flushes it to disk and renames
    /// it over the target.
    pub fn commit(mut self, bytes: &[u8]) -> anyhow::Result<()> {
        self.file
            .write_all(bytes)
            .and_then(|()| self.file.sync_all())
            .and_then(|()| std::fs::rename(&self.tmp, &self.path))
            .with_context(|| format!("cannot write {}", self.path.display()))
        // Drop removes the temporary file if the rename did not happen.
    }

    /// As [`OutFile::commit`], for a file too big to hold: `write`
    /// streams it into the temporary file.
    pub fn commit_with(self, write: impl FnOnce(&mut dyn Write) -> anyhow::Result<()>) -> anyhow::Result<()> {
        let mut w = std::io::BufWriter::new(&self.file);
        write(&mut w)?;
        w.flush().with_context(|| format!("cannot write {}", self.path.display()))?;
        drop(w);
        self.commit(&[])
    }
}

impl Drop for OutFile {
    fn drop(&mut self) {
        // After a successful rename there is nothing left to remove.
        let _ = std::fs::remove_file(&self.tmp);
        sync::lock(&PENDING).retain(|p| p != &self.tmp);
    }
}

/// Removes every temporary file not yet committed: for an exit that will
/// not run destructors.
pub(crate) fn remove_pending() {
    for p in sync::lock(&PENDING).drain(..) {
        let _ = std::fs::remove_file(p);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The pending list is global: these tests take turns with it.
    static SERIAL: Mutex<()> = Mutex::new(());

    fn tmp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("rates-output-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("a temporary directory");
        dir
    }

    fn entries(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(dir)
            .expect("readable")
            .map(|e| e.expect("an entry").file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn commit_replaces_the_target_and_leaves_nothing_else() {
        let _turn = sync::lock(&SERIAL);
        let dir = tmp_dir("commit");
        let path = dir.join("out.csv");
        std::fs::write(&path, "old").expect("written");
        let out = OutFile::create("--out", &path).expect("writable");
        assert_eq!(entries(&dir).len(), 2, "the temporary file exists from the start");
        out.commit(b"new").expect("committed");
        assert_eq!(std::fs::read_to_string(&path).expect("read"), "new");
        assert_eq!(entries(&dir), ["out.csv"]);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn dropping_without_commit_keeps_the_old_file() {
        let _turn = sync::lock(&SERIAL);
        let dir = tmp_dir("drop");
        let path = dir.join("out.csv");
        std::fs::write(&path, "old").expect("written");
        drop(OutFile::create("--out", &path).expect("writable"));
        assert_eq!(std::fs::read_to_string(&path).expect("read"), "old");
        assert_eq!(entries(&dir), ["out.csv"]);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn unwritable_targets_are_refused_by_name() {
        let _turn = sync::lock(&SERIAL);
        let dir = tmp_dir("refuse");
        let e = OutFile::create("--out", &dir.join("no/such/x.csv")).expect_err("no directory");
        assert!(e.0.starts_with("--out: cannot write '") && e.0.contains("no directory '"), "{e}");
        // A path the system refuses although its directory exists.
        let e = OutFile::create("--out", Path::new("/dev/null/x.csv")).expect_err("not a directory");
        assert!(e.0.starts_with("--out: cannot write '/dev/null/x.csv'"), "{e}");
        let long = dir.join("x".repeat(300));
        let e = OutFile::create("--out", &long).expect_err("too long a name");
        assert!(e.0.starts_with("--out: cannot write '"), "{e}");
        let e = OutFile::create("--plot", &dir).expect_err("a directory");
        assert!(e.0.contains("is a directory"), "{e}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn pending_files_are_removed_on_demand() {
        let _turn = sync::lock(&SERIAL);
        let dir = tmp_dir("pending");
        let out = OutFile::create("--out", &dir.join("x.csv")).expect("writable");
        remove_pending();
        assert!(entries(&dir).is_empty());
        drop(out);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
