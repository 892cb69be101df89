//! Opening a store: making its folder, file and tables, opening it only to
//! read when it cannot be written (and saying why), and retrying what
//! another process holds busy.

use std::path::Path;
use std::time::Duration;

use rusqlite::{Connection, ErrorCode, OpenFlags};

use super::*;

pub(super) const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS rates (
    api        TEXT    NOT NULL,
    base       TEXT    NOT NULL,
    day        TEXT    NOT NULL,
    symbol     TEXT    NOT NULL,
    rate       REAL,
    fetched_at INTEGER NOT NULL,
    PRIMARY KEY (api, base, day, symbol)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS closed_days (
    api        TEXT    NOT NULL,
    base       TEXT    NOT NULL,
    day        TEXT    NOT NULL,
    answered   TEXT    NOT NULL,
    fetched_at INTEGER NOT NULL,
    PRIMARY KEY (api, base, day)
) WITHOUT ROWID;
";

/// Added under the same [`SCHEMA_VERSION`]: made by every open that finds
/// it missing, ignored by programs that predate it.
pub(super) const CURRENCIES_SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS currencies (
    api        TEXT    NOT NULL PRIMARY KEY,
    codes      TEXT    NOT NULL,
    fetched_at INTEGER NOT NULL
) WITHOUT ROWID;
";

/// Every table this program reads, and the statements that make it.
pub(super) const TABLES: [(&str, &str); 3] =
    [("rates", SCHEMA), ("closed_days", SCHEMA), ("currencies", CURRENCIES_SCHEMA)];

/// How long one statement waits for another process's lock.
pub(super) const BUSY_TIMEOUT: Duration = Duration::from_secs(5);
/// Whole transactions retried when the wait was not enough: with the busy
/// timeout, a minute of another process's writing at most.
pub(super) const BUSY_RETRIES: u32 = 12;

impl Store {
    /// Opens the store in the folder `dir`, making the folder and the file
    /// if they do not exist. A store that exists but cannot be written is
    /// opened to be read ([`Store::read_only`] says why); a folder with no
    /// store where none can be made is an error.
    pub fn open(dir: &Path) -> Result<Store, StoreError> {
        let path = dir.join(FILE_NAME);
        let fail = |kind| StoreError { path: path.clone(), kind };
        let exists = locate(dir, &path).map_err(fail)?;
        if !exists {
            std::fs::create_dir_all(dir).map_err(|e| fail(StoreErrorKind::Io(e)))?;
            // Made here rather than by SQLite, whose refusal says only
            // "unable to open": the system's says why. An empty file is an
            // empty database.
            match std::fs::OpenOptions::new().write(true).create_new(true).open(&path) {
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(fail(StoreErrorKind::Uncreatable(e))),
            }
        }
        match Self::connect(&path) {
            Ok(conn) => Ok(Store { conn, path, read_only: None }),
            Err(e) if needs_write(&e) => {
                // The file or its folder cannot be written: read it as it
                // is. If even that fails, its reason is the better one (a
                // file that is not a store, say).
                let conn = Self::connect_read_only(&path).map_err(fail)?;
                let why = why_read_only(&path);
                Ok(Store { conn, path, read_only: Some(why) })
            }
            Err(e) => Err(fail(e)),
        }
    }

    /// Opens the store in `dir` if its file exists, without making it,
    /// to read and write it as [`Store::open`] does.
    pub fn open_existing(dir: &Path) -> Result<Option<Store>, StoreError> {
        let path = dir.join(FILE_NAME);
        match locate(dir, &path) {
            Ok(true) => Self::open(dir).map(Some),
            Ok(false) => Ok(None),
            Err(kind) => Err(StoreError { path, kind }),
        }
    }

    /// Opens the store in `dir` only to read it, if its file exists: makes
    /// nothing, and changes nothing in the file, whoever may write it.
    /// Tables the store lacks read as empty.
    pub fn open_read_only(dir: &Path) -> Result<Option<Store>, StoreError> {
        let path = dir.join(FILE_NAME);
        let opened = locate(dir, &path).and_then(|exists| match exists {
            true => Self::connect_read_only(&path).map(Some),
            false => Ok(None),
        });
        match opened {
            Ok(conn) => Ok(conn.map(|conn| Store { conn, path, read_only: Some("opened only to read".into()) })),
            Err(kind) => Err(StoreError { path, kind }),
        }
    }

    /// Why this store cannot be written, if it cannot: its writes fail
    /// with [`StoreErrorKind::ReadOnly`].
    pub fn read_only(&self) -> Option<&str> {
        self.read_only.as_deref()
    }

    pub(super) fn connect(path: &Path) -> Result<Connection, StoreErrorKind> {
        let mut conn =
            Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX)?;
        // SQLite opens a file it may not write to be read, silently.
        if conn.is_readonly(rusqlite::MAIN_DB)? {
            return Err(StoreErrorKind::ReadOnly("the file is not writable".into()));
        }
        conn.busy_timeout(BUSY_TIMEOUT)?;
        // WAL: readers never block the writer, nor the writer the readers;
        // NORMAL sync is safe in WAL mode (a power cut may lose the last
        // commits, never corrupt the file).
        retrying(|| conn.pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get::<_, String>(0)))?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        let version = retrying(|| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let version: i64 = tx.query_row("PRAGMA user_version", [], |r| r.get(0))?;
            if version == 0 {
                tx.execute_batch(SCHEMA)?;
                tx.pragma_update(None, "user_version", SCHEMA_VERSION)?;
            }
            if version <= SCHEMA_VERSION {
                tx.execute_batch(CURRENCIES_SCHEMA)?;
            }
            tx.commit()?;
            Ok(version)
        })?;
        if version > SCHEMA_VERSION {
            return Err(StoreErrorKind::Newer(version));
        }
        Ok(conn)
    }

    /// A connection that reads `path` and cannot write it: no schema is
    /// made or changed, and a table the store lacks is shadowed by an
    /// empty one of the connection's own (its temporary schema).
    pub(super) fn connect_read_only(path: &Path) -> Result<Connection, StoreErrorKind> {
        let version =
            |conn: &Connection| retrying(|| conn.query_row("PRAGMA user_version", [], |r| r.get::<_, i64>(0)));
        let plain = Connection::open_with_flags(path, read_only_flags()).and_then(|conn| {
            conn.busy_timeout(BUSY_TIMEOUT)?;
            version(&conn).map(|v| (conn, v))
        });
        let (conn, version) = match plain {
            Ok(opened) => opened,
            // In WAL mode, reading takes the shared-memory file beside the
            // store, which a folder that cannot be written cannot hold.
            // With no log beside it, the file is the whole store.
            Err(e) if needs_write_sqlite(&e) && !has_log(path) => {
                let Some(uri) = immutable_uri(path) else { return Err(e.into()) };
                let conn = Connection::open_with_flags(uri, read_only_flags() | OpenFlags::SQLITE_OPEN_URI)?;
                let v = version(&conn)?;
                (conn, v)
            }
            Err(e) if needs_write_sqlite(&e) => {
                return Err(StoreErrorKind::ReadOnly(format!(
                    "{e}: its write-ahead log cannot be read where its folder cannot be written; open it once where \
                     it can be, to fold the log into the file"
                )));
            }
            Err(e) => return Err(e.into()),
        };
        if version > SCHEMA_VERSION {
            return Err(StoreErrorKind::Newer(version));
        }
        // Kept in memory: a read-only store may have no writable place
        // for a temporary file either.
        conn.pragma_update(None, "temp_store", "MEMORY")?;
        for (table, ddl) in TABLES {
            let known: bool = conn.query_row(
                "SELECT EXISTS (SELECT 1 FROM main.sqlite_master WHERE type = 'table' AND name = ?1)",
                [table],
                |r| r.get(0),
            )?;
            if !known {
                // Only the missing table of the statements that make it.
                let head = format!("CREATE TABLE IF NOT EXISTS {table} (");
                for stmt in ddl.split(';').filter(|s| s.contains(&head)) {
                    conn.execute_batch(&stmt.replace("CREATE TABLE", "CREATE TEMP TABLE"))?;
                }
            }
        }
        Ok(conn)
    }
}

/// Whether the store at `path` (in `dir`) exists, or why it cannot be
/// looked at: a file where its folder should be, a folder where its file
/// should be, or a folder that cannot be read.
pub(super) fn locate(dir: &Path, path: &Path) -> Result<bool, StoreErrorKind> {
    // The folder, or one it is in, that is something else.
    let not_a_folder = || {
        let file = dir.ancestors().find(|a| std::fs::metadata(a).is_ok_and(|m| !m.is_dir()));
        file.map(|f| StoreErrorKind::NotAFolder(f.to_path_buf()))
    };
    match std::fs::metadata(path) {
        Ok(m) if m.is_dir() => Err(StoreErrorKind::NotAFile),
        Ok(_) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => match std::fs::metadata(dir) {
            Ok(m) if m.is_dir() => Ok(false),
            Ok(_) => Err(StoreErrorKind::NotAFolder(dir.to_path_buf())),
            // Neither the folder (nor some folders it is in): nothing stored.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(not_a_folder().unwrap_or(StoreErrorKind::Unreadable(e))),
        },
        Err(e) => Err(not_a_folder().unwrap_or(StoreErrorKind::Unreadable(e))),
    }
}

pub(super) fn read_only_flags() -> OpenFlags {
    OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX
}

/// Whether opening to write failed for want of permission to write.
pub(super) fn needs_write(e: &StoreErrorKind) -> bool {
    match e {
        StoreErrorKind::ReadOnly(_) => true,
        StoreErrorKind::Sqlite(e) => needs_write_sqlite(e),
        _ => false,
    }
}

pub(super) fn needs_write_sqlite(e: &rusqlite::Error) -> bool {
    matches!(e.sqlite_error_code(), Some(ErrorCode::ReadOnly | ErrorCode::CannotOpen))
}

/// Why the existing store at `path` could not be opened to write, as far
/// as the system tells: its file, else its folder.
pub(super) fn why_read_only(path: &Path) -> String {
    match std::fs::OpenOptions::new().write(true).open(path) {
        Err(e) => format!("the file is not writable: {e}"),
        Ok(_) => "its folder is not writable".into(),
    }
}

/// Whether a write-ahead log with something in it is beside the store.
pub(super) fn has_log(path: &Path) -> bool {
    let mut log = path.as_os_str().to_owned();
    log.push("-wal");
    std::fs::metadata(log).is_ok_and(|m| m.len() > 0)
}

/// `path` as an SQLite URI that opens it as an immutable file: no locks,
/// no shared memory, no log.
#[cfg(unix)]
pub(super) fn immutable_uri(path: &Path) -> Option<String> {
    use std::fmt::Write as _;
    use std::os::unix::ffi::OsStrExt;
    let bytes = path.as_os_str().as_bytes();
    // An absolute path after an empty authority: `file:///...`.
    let mut uri = String::from(if bytes.first() == Some(&b'/') { "file://" } else { "file:" });
    for &b in bytes {
        if b.is_ascii_alphanumeric() || b"/-._~".contains(&b) {
            uri.push(char::from(b));
        } else {
            let _ = write!(uri, "%{b:02X}");
        }
    }
    uri.push_str("?immutable=1");
    Some(uri)
}

#[cfg(not(unix))]
pub(super) fn immutable_uri(_path: &Path) -> Option<String> {
    None
}

pub(super) fn is_busy(e: &rusqlite::Error) -> bool {
    matches!(e.sqlite_error_code(), Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked))
}

/// Runs `f` again while another process holds the database longer than
/// the busy timeout, waiting longer each time, then gives its last error.
pub(super) fn retrying<T>(mut f: impl FnMut() -> rusqlite::Result<T>) -> rusqlite::Result<T> {
    let mut wait = Duration::from_millis(10);
    for _ in 0..BUSY_RETRIES {
        match f() {
            Err(e) if is_busy(&e) => {
                std::thread::sleep(wait);
                wait = (wait * 2).min(Duration::from_millis(500));
            }
            done => return done,
        }
    }
    f()
}
