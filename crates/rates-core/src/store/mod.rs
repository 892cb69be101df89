/*!
A local store of the answers of an external rates API, in SQLite: what
makes a long `history` resumable, a repeated one free of requests, and one
without a network possible.

Answers are kept per API, base, business day and symbol, so a later run
that asks for other symbols reuses the ones that overlap. A weekday the API
answered with an earlier business day (a holiday, or a day not yet
published) is kept too, so it is not asked again. The past never changes:
an answer fetched at least a full day after its day ended is final; a more
recent one (about the latest day, which may be published later or
corrected) is reused only while younger than the caller's maximum age.

The file is `rates.sqlite3` in the store's folder, in WAL mode with a busy
timeout, so several processes may read and write it at once; a write that
still finds the database busy is retried. Its schema, for anyone who wants
to query it (`sqlite3`, pandas, DuckDB):

```sql
CREATE TABLE rates (
    api        TEXT    NOT NULL,  -- the API's base URL, e.g. https://api.vatcomply.com
    base       TEXT    NOT NULL,  -- e.g. USD
    day        TEXT    NOT NULL,  -- YYYY-MM-DD: the business day the rate is from
    symbol     TEXT    NOT NULL,  -- e.g. EUR
    rate       REAL,              -- units of symbol for one base; NULL: the API had none that day
    fetched_at INTEGER NOT NULL,  -- when it was fetched, in Unix seconds
    PRIMARY KEY (api, base, day, symbol)
) WITHOUT ROWID;
CREATE TABLE closed_days (
    api        TEXT    NOT NULL,
    base       TEXT    NOT NULL,
    day        TEXT    NOT NULL,  -- a weekday asked for, with no rates of its own
    answered   TEXT    NOT NULL,  -- the earlier business day the API answered with
    fetched_at INTEGER NOT NULL,
    PRIMARY KEY (api, base, day)
) WITHOUT ROWID;
CREATE TABLE currencies (
    api        TEXT    NOT NULL PRIMARY KEY,
    codes      TEXT    NOT NULL,  -- the codes its /currencies listed, comma-separated, e.g. EUR,USD,JPY
    fetched_at INTEGER NOT NULL
) WITHOUT ROWID;
```

The `currencies` table is optional under this schema version: opening a
store that lacks it makes it, and a program that does not know it leaves
it alone.

Answers arrive on many threads at once; a [`Writer`] gathers them on one
thread of its own and writes what arrives within a tenth of a second in one
transaction.

# A store that cannot be written

A store may be read where it cannot be written: a file or a folder without
write permission, a read-only file system, a copy shared with others.
[`Store::open_read_only`] opens an existing store only to read it, and
changes nothing, not even its schema: the tables a store lacks (one made
before the `currencies` table, or an empty file) read as empty. It is what
commands that only read use (`history --offline`, `rates cache info`).
[`Store::open`], for a run that may write, opens the same way when the
store exists but cannot be written, and [`Store::read_only`] says why; its
writes then fail with [`StoreErrorKind::ReadOnly`] and touch nothing.

A store in WAL mode is read through a shared-memory file beside it, which
a folder that cannot be written cannot hold. Such a store with no log left
beside it (every write checkpointed, as the last process to close it
leaves it) is the file alone, and is read as an immutable snapshot: no
locks and no log, so a process that could write it anyway (root) while
it is read is not seen. A store whose log remains cannot be read so, and
says why.

What a run does with a store it cannot write is its own choice. `rates
history` warns once, on stderr, that the answers it fetches now are not
kept, and still prints them all: the store only spares requests, and a run
that failed instead would lose the answers the store could give. A
`history` whose days are all stored writes nothing, and notices nothing.
A store that cannot be used at all (a file where its folder should be, a
folder that cannot be read, or a folder that cannot be written holding no
store, a file that is not a database) is an error naming the file and why:
`history` and `rates cache` stop with it before any request (exit code 2),
and `fetch`, which keeps only the codes the API accepts there, goes on
without it.
*/

mod open;
mod writer;

#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use chrono::{NaiveDate, NaiveTime};
use rusqlite::{Connection, ErrorCode, TransactionBehavior, params, params_from_iter};

use open::retrying;
pub use writer::{Sink, Writer, Written};

use crate::{Currency, Rates};

/// The store's file in its folder (with `-wal` and `-shm` beside it).
pub const FILE_NAME: &str = "rates.sqlite3";

/// The schema this code reads and writes, kept in `PRAGMA user_version`.
pub const SCHEMA_VERSION: i64 = 1;

/// A store that could not be opened, read or written.
#[derive(Debug, thiserror::Error)]
#[error("store {}: {kind}", path.display())]
pub struct StoreError {
    /// The store's file.
    pub path: PathBuf,
    /// What went wrong.
    pub kind: StoreErrorKind,
}

/// What went wrong with a store.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreErrorKind {
    /// Its folder could not be made.
    #[error("cannot make its folder: {0}")]
    Io(#[from] std::io::Error),
    /// Something other than a folder is where its folder should be.
    #[error("{} is not a folder", .0.display())]
    NotAFolder(PathBuf),
    /// Its file, or its folder, could not be looked at or read.
    #[error("cannot read it: {0}")]
    Unreadable(std::io::Error),
    /// There is no store, and its file could not be made.
    #[error("cannot make it: {0}")]
    Uncreatable(std::io::Error),
    /// Something other than a file is where its file should be.
    #[error("not a file")]
    NotAFile,
    /// The file is not an SQLite database, or a damaged one.
    #[error("not a database, or a damaged one ({0}): move it away to start a new store")]
    Damaged(rusqlite::Error),
    /// Open only to read (the reason), and asked to write.
    #[error("read-only ({0})")]
    ReadOnly(String),
    /// SQLite refused.
    #[error("{0}")]
    Sqlite(rusqlite::Error),
    /// Written by a newer program, whose schema this one does not know.
    #[error("schema version {0} is newer than this program's ({SCHEMA_VERSION}): use another store")]
    Newer(i64),
    /// A value that this program did not write.
    #[error("bad value in the store: {0}")]
    Bad(String),
}

impl From<rusqlite::Error> for StoreErrorKind {
    fn from(e: rusqlite::Error) -> Self {
        match e.sqlite_error_code() {
            Some(ErrorCode::NotADatabase | ErrorCode::DatabaseCorrupt) => StoreErrorKind::Damaged(e),
            _ => StoreErrorKind::Sqlite(e),
        }
    }
}

/// What one `history` asks of the store: a base's rates for some symbols
/// on some days (in date order).
#[derive(Debug, Clone, Copy)]
pub struct Query<'a> {
    /// The API's base URL, as the answers were stored under.
    pub api: &'a str,
    /// The base currency.
    pub base: Currency,
    /// The symbols every answer must have.
    pub symbols: &'a [Currency],
    /// The days asked for, in date order.
    pub days: &'a [NaiveDate],
}

/// What the store knows of one day asked for.
#[derive(Debug, Clone, PartialEq)]
pub enum Stored {
    /// The day's rates (every symbol asked; those the API had none for are
    /// absent, as in its answer).
    Rates(Rates),
    /// Not a business day: the API answered with this earlier day.
    Closed(NaiveDate),
    /// Not stored, or stored too long ago to trust: to be asked.
    Missing,
}

/// One thing to store.
#[derive(Debug, Clone, PartialEq)]
pub enum Entry {
    /// An answer of the API.
    Answer(Rates),
    /// `day` was asked for and the API answered with an earlier day.
    Closed {
        /// The base asked for.
        base: Currency,
        /// The day asked for.
        day: NaiveDate,
        /// The day the answer was for.
        answered: NaiveDate,
    },
}

/// What the store holds for one API and base, for `rates cache info`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    /// The API's base URL.
    pub api: String,
    /// The base currency.
    pub base: String,
    /// The first and last business day stored.
    pub first: String,
    /// See `first`.
    pub last: String,
    /// Business days stored.
    pub days: u64,
    /// Symbols stored, sorted.
    pub symbols: Vec<String>,
}

/// A store of answers, open.
pub struct Store {
    conn: Connection,
    path: PathBuf,
    /// Open only to read: why.
    read_only: Option<String>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("path", &self.path).finish_non_exhaustive()
    }
}

/// Now, in Unix seconds, as `fetched_at` counts.
pub fn unix_now() -> i64 {
    SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64)
}

impl Store {
    /// The store's file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn err(&self, kind: impl Into<StoreErrorKind>) -> StoreError {
        StoreError { path: self.path.clone(), kind: kind.into() }
    }

    /// An error if this store is open only to read.
    fn writable(&self) -> Result<(), StoreError> {
        match &self.read_only {
            Some(why) => Err(self.err(StoreErrorKind::ReadOnly(why.clone()))),
            None => Ok(()),
        }
    }

    /// What the store knows of each day of `q` (in the same order), at
    /// `now` (Unix seconds): answers fetched at least a full day after
    /// their day are final, more recent ones count while younger than
    /// `max_age`.
    pub fn lookup(&self, q: &Query<'_>, now: i64, max_age: Duration) -> Result<Vec<Stored>, StoreError> {
        self.lookup_inner(q, now, max_age).map_err(|e| self.err(e))
    }

    fn lookup_inner(&self, q: &Query<'_>, now: i64, max_age: Duration) -> Result<Vec<Stored>, StoreErrorKind> {
        let wanted: Vec<Currency> = q.symbols.iter().copied().filter(|s| *s != q.base).collect();
        let (Some(from), Some(to)) = (q.days.iter().min(), q.days.iter().max()) else {
            return Ok(Vec::new());
        };
        if wanted.is_empty() {
            // Only the base itself: nothing stored says which days are
            // business days.
            return Ok(vec![Stored::Missing; q.days.len()]);
        }
        let usable = |day: NaiveDate, fetched_at: i64| {
            settled(day, fetched_at) || now.saturating_sub(fetched_at) < max_age.as_secs() as i64
        };
        let (from, to, base) = (from.to_string(), to.to_string(), q.base.as_str());

        // Each day's rates of the wanted symbols, and its oldest fetch.
        let placeholders: Vec<String> = (0..wanted.len()).map(|i| format!("?{}", i + 5)).collect();
        let sql = format!(
            "SELECT day, symbol, rate, fetched_at FROM rates \
             WHERE api = ?1 AND base = ?2 AND day BETWEEN ?3 AND ?4 AND symbol IN ({})",
            placeholders.join(",")
        );
        let mut stmt = self.conn.prepare(&sql)?;
        let head = [q.api, base, &from, &to];
        let args = head.into_iter().chain(wanted.iter().map(Currency::as_str));
        let mut rows = stmt.query(params_from_iter(args))?;
        let mut days: BTreeMap<NaiveDate, (BTreeMap<Currency, f64>, usize, i64)> = BTreeMap::new();
        while let Some(row) = rows.next()? {
            let day = parse_day(row.get_ref(0)?.as_str().map_err(rusqlite::Error::from)?)?;
            let symbol: Currency = row
                .get_ref(1)?
                .as_str()
                .map_err(rusqlite::Error::from)?
                .parse()
                .map_err(|e: crate::InvalidCurrency| StoreErrorKind::Bad(e.to_string()))?;
            let rate: Option<f64> = row.get(2)?;
            let fetched_at: i64 = row.get(3)?;
            let entry = days.entry(day).or_insert_with(|| (BTreeMap::new(), 0, i64::MAX));
            if let Some(v) = rate {
                entry.0.insert(symbol, v);
            }
            entry.1 += 1;
            entry.2 = entry.2.min(fetched_at);
        }

        let mut closed: BTreeMap<NaiveDate, (NaiveDate, i64)> = BTreeMap::new();
        let mut stmt = self.conn.prepare_cached(
            "SELECT day, answered, fetched_at FROM closed_days WHERE api = ?1 AND base = ?2 AND day BETWEEN ?3 AND ?4",
        )?;
        let mut rows = stmt.query(params![q.api, base, from, to])?;
        while let Some(row) = rows.next()? {
            let day = parse_day(row.get_ref(0)?.as_str().map_err(rusqlite::Error::from)?)?;
            let answered = parse_day(row.get_ref(1)?.as_str().map_err(rusqlite::Error::from)?)?;
            closed.insert(day, (answered, row.get(2)?));
        }

        Ok(q.days
            .iter()
            .map(|&day| match (days.remove(&day), closed.get(&day)) {
                (Some((rates, n, at)), _) if n == wanted.len() && usable(day, at) => {
                    Stored::Rates(Rates { date: day, base: q.base, rates })
                }
                (_, Some(&(answered, at))) if usable(day, at) => Stored::Closed(answered),
                _ => Stored::Missing,
            })
            .collect())
    }

    /// Stores `entries` of the API `api` in one transaction, as fetched at
    /// `at` (Unix seconds). `symbols` are those asked for: an answer
    /// without one of them is stored as having none (NULL), so that day
    /// is not asked again for it.
    pub fn put(&mut self, api: &str, symbols: &[Currency], entries: &[Entry], at: i64) -> Result<(), StoreError> {
        self.writable()?;
        let conn = &mut self.conn;
        let written = retrying(|| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            {
                let mut rate = tx.prepare_cached(
                    "INSERT INTO rates (api, base, day, symbol, rate, fetched_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6) \
                     ON CONFLICT (api, base, day, symbol) DO UPDATE SET rate = excluded.rate, fetched_at = excluded.fetched_at",
                )?;
                let mut close = tx.prepare_cached(
                    "INSERT INTO closed_days (api, base, day, answered, fetched_at) VALUES (?1, ?2, ?3, ?4, ?5) \
                     ON CONFLICT (api, base, day) DO UPDATE SET answered = excluded.answered, fetched_at = excluded.fetched_at",
                )?;
                for entry in entries {
                    match entry {
                        Entry::Answer(r) => {
                            let (base, day) = (r.base.as_str(), r.date.to_string());
                            for (s, v) in &r.rates {
                                rate.execute(params![api, base, day, s.as_str(), v, at])?;
                            }
                            for s in symbols.iter().filter(|s| **s != r.base && !r.rates.contains_key(s)) {
                                rate.execute(params![api, base, day, s.as_str(), None::<f64>, at])?;
                            }
                        }
                        Entry::Closed { base, day, answered } => {
                            close.execute(params![api, base.as_str(), day.to_string(), answered.to_string(), at])?;
                        }
                    }
                }
                // A day once answered with an earlier one (not yet published
                // then) that now has rates of its own is not closed: one
                // statement per base of the batch, not one per answer.
                let mut span: BTreeMap<Currency, (NaiveDate, NaiveDate)> = BTreeMap::new();
                for e in entries {
                    if let Entry::Answer(r) = e {
                        let s = span.entry(r.base).or_insert((r.date, r.date));
                        *s = (s.0.min(r.date), s.1.max(r.date));
                    }
                }
                let mut reopen = tx.prepare_cached(
                    "DELETE FROM closed_days WHERE api = ?1 AND base = ?2 AND day BETWEEN ?3 AND ?4 AND EXISTS \
                     (SELECT 1 FROM rates r WHERE r.api = ?1 AND r.base = ?2 AND r.day = closed_days.day)",
                )?;
                for (base, (from, to)) in span {
                    reopen.execute(params![api, base.as_str(), from.to_string(), to.to_string()])?;
                }
            }
            tx.commit()
        });
        written.map_err(|e| self.err(e))
    }

    /// The codes `api`'s `/currencies` listed, and when they were fetched
    /// (Unix seconds), if stored. Codes that are not three letters (not
    /// written by this program) make the entry unusable: `None`.
    pub fn currencies(&self, api: &str) -> Result<Option<(Vec<Currency>, i64)>, StoreError> {
        let read = || {
            let mut stmt = self.conn.prepare_cached("SELECT codes, fetched_at FROM currencies WHERE api = ?1")?;
            let mut rows = stmt.query(params![api])?;
            match rows.next()? {
                Some(row) => Ok(Some((row.get::<_, String>(0)?, row.get::<_, i64>(1)?))),
                None => Ok(None),
            }
        };
        let Some((codes, at)) = read().map_err(|e: rusqlite::Error| self.err(e))? else {
            return Ok(None);
        };
        let codes: Result<Vec<Currency>, _> = codes.split(',').map(str::parse).collect();
        Ok(codes.ok().filter(|c| !c.is_empty()).map(|c| (c, at)))
    }

    /// Stores the codes `api`'s `/currencies` listed, fetched at `at` (Unix
    /// seconds), in place of any stored before.
    pub fn put_currencies(&self, api: &str, codes: &[Currency], at: i64) -> Result<(), StoreError> {
        self.writable()?;
        let codes: Vec<&str> = codes.iter().map(Currency::as_str).collect();
        let codes = codes.join(",");
        retrying(|| {
            self.conn.execute(
                "INSERT INTO currencies (api, codes, fetched_at) VALUES (?1, ?2, ?3) \
                 ON CONFLICT (api) DO UPDATE SET codes = excluded.codes, fetched_at = excluded.fetched_at",
                params![api, codes, at],
            )
        })
        .map(drop)
        .map_err(|e| self.err(e))
    }

    /// What the store holds, per API and base.
    pub fn summary(&self) -> Result<Vec<Summary>, StoreError> {
        let read = || -> rusqlite::Result<Vec<Summary>> {
            let mut stmt = self.conn.prepare(
                "SELECT api, base, MIN(day), MAX(day), COUNT(DISTINCT day), GROUP_CONCAT(DISTINCT symbol) \
                 FROM rates GROUP BY api, base ORDER BY api, base",
            )?;
            let rows = stmt.query_map([], |r| {
                let symbols: String = r.get(5)?;
                let mut symbols: Vec<String> = symbols.split(',').map(str::to_owned).collect();
                symbols.sort();
                Ok(Summary {
                    api: r.get(0)?,
                    base: r.get(1)?,
                    first: r.get(2)?,
                    last: r.get(3)?,
                    days: r.get::<_, i64>(4)?.max(0) as u64,
                    symbols,
                })
            })?;
            rows.collect()
        };
        read().map_err(|e| self.err(e))
    }

    /// The bytes the store takes on disk (its file and write-ahead log).
    pub fn size(&self) -> u64 {
        let len = |suffix: &str| {
            let mut p = self.path.clone().into_os_string();
            p.push(suffix);
            std::fs::metadata(p).map_or(0, |m| m.len())
        };
        len("") + len("-wal") + len("-shm")
    }

    /// Forgets every answer and gives the space back; returns how many
    /// rows there were. Safe while other processes use the store: they
    /// simply find it empty.
    pub fn clear(&mut self) -> Result<u64, StoreError> {
        self.writable()?;
        let conn = &mut self.conn;
        let removed = retrying(|| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let n = tx.execute("DELETE FROM rates", [])?
                + tx.execute("DELETE FROM closed_days", [])?
                + tx.execute("DELETE FROM currencies", [])?;
            tx.commit()?;
            Ok(n as u64)
        })
        .map_err(|e| self.err(e))?;
        // Shrinking is a nicety: another process reading at this moment
        // makes it wait or fail, and the rows are gone either way.
        let _ = self.conn.execute_batch("VACUUM; PRAGMA wal_checkpoint(TRUNCATE);");
        Ok(removed)
    }
}

/// An answer for `day` fetched at `fetched_at` (Unix seconds) is final
/// when it was fetched at least a full day after `day` ended (UTC): by
/// then the day is published, and published rates do not change.
pub fn settled(day: NaiveDate, fetched_at: i64) -> bool {
    let final_from = day.checked_add_days(chrono::Days::new(2)).unwrap_or(day).and_time(NaiveTime::MIN).and_utc();
    fetched_at >= final_from.timestamp()
}

fn parse_day(s: &str) -> Result<NaiveDate, StoreErrorKind> {
    crate::parse_date(s).map_err(|e| StoreErrorKind::Bad(e.to_string()))
}
