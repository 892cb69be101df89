use std::collections::BTreeMap;
use std::sync::Arc;

use std::path::Path;
use std::time::SystemTime;

use rusqlite::OpenFlags;

use super::open::{immutable_uri, read_only_flags};
use super::*;

const API: &str = "http://api.test";

fn c(s: &str) -> Currency {
    s.parse().expect("currency code")
}

fn d(s: &str) -> NaiveDate {
    crate::parse_date(s).expect("date")
}

fn answer(base: &str, day: &str, rates: &[(&str, f64)]) -> Rates {
    Rates { date: d(day), base: c(base), rates: rates.iter().map(|&(s, v)| (c(s), v)).collect() }
}

/// Unix seconds at midnight UTC starting `day`.
fn midnight(day: &str) -> i64 {
    d(day).and_time(NaiveTime::MIN).and_utc().timestamp()
}

fn store() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().expect("temporary folder");
    let store = Store::open(dir.path()).expect("store opens");
    (dir, store)
}

fn query<'a>(base: &str, symbols: &'a [Currency], days: &'a [NaiveDate]) -> Query<'a> {
    Query { api: API, base: c(base), symbols, days }
}

const HOUR: Duration = Duration::from_secs(3600);

#[test]
fn answers_come_back_exactly_and_holidays_are_remembered() {
    let (_dir, mut s) = store();
    let syms = [c("EUR"), c("PLN")];
    // Awkward values: they must come back bit for bit.
    let a = answer("USD", "2020-12-23", &[("EUR", 0.820_345), ("PLN", 3.7 + 1e-15)]);
    let b = answer("USD", "2020-12-24", &[("EUR", 1.0 / 3.0), ("PLN", 3.694_112)]);
    let closed = Entry::Closed { base: c("USD"), day: d("2020-12-25"), answered: d("2020-12-24") };
    let at = midnight("2021-06-01");
    s.put(API, &syms, &[Entry::Answer(a.clone()), Entry::Answer(b.clone()), closed], at).expect("stored");

    let days = [d("2020-12-23"), d("2020-12-24"), d("2020-12-25"), d("2020-12-28")];
    let got = s.lookup(&query("USD", &syms, &days), at + 10, HOUR).expect("read");
    assert_eq!(got, [Stored::Rates(a), Stored::Rates(b), Stored::Closed(d("2020-12-24")), Stored::Missing]);
    // Another API, another base: nothing.
    let other = Query { api: "http://other.test", ..query("USD", &syms, &days) };
    assert!(s.lookup(&other, at, HOUR).expect("read").iter().all(|x| *x == Stored::Missing));
    assert!(s.lookup(&query("EUR", &syms, &days), at, HOUR).expect("read").iter().all(|x| *x == Stored::Missing));
}

#[test]
fn a_later_run_reuses_the_symbols_that_overlap() {
    let (_dir, mut s) = store();
    let asked = [c("EUR"), c("PLN")];
    let a = answer("USD", "2019-03-01", &[("EUR", 0.88), ("PLN", 3.8)]);
    s.put(API, &asked, &[Entry::Answer(a)], midnight("2020-01-01")).expect("stored");
    let days = [d("2019-03-01")];
    let now = midnight("2020-01-01");
    // A subset: served, with only the symbols asked.
    let eur = [c("EUR")];
    let want = Stored::Rates(answer("USD", "2019-03-01", &[("EUR", 0.88)]));
    assert_eq!(s.lookup(&query("USD", &eur, &days), now, HOUR).expect("read"), [want]);
    // The base itself needs no stored rate.
    let with_base = [c("USD"), c("EUR")];
    assert!(matches!(s.lookup(&query("USD", &with_base, &days), now, HOUR).expect("read")[0], Stored::Rates(_)));
    // A symbol never asked: the day must be asked again.
    let more = [c("EUR"), c("NOK")];
    assert_eq!(s.lookup(&query("USD", &more, &days), now, HOUR).expect("read"), [Stored::Missing]);
}

#[test]
fn a_symbol_the_api_did_not_have_is_remembered_as_absent() {
    let (_dir, mut s) = store();
    let asked = [c("EUR"), c("RUB")];
    let a = answer("USD", "2023-03-01", &[("EUR", 0.94)]);
    let now = midnight("2024-01-01");
    s.put(API, &asked, &[Entry::Answer(a.clone())], now).expect("stored");
    let days = [d("2023-03-01")];
    assert_eq!(s.lookup(&query("USD", &asked, &days), now, HOUR).expect("read"), [Stored::Rates(a)]);
}

#[test]
fn the_past_is_final_and_the_latest_day_is_refreshed_after_max_age() {
    let (_dir, mut s) = store();
    let syms = [c("EUR")];
    let day = "2024-05-06";
    // Fetched the same day: it may not be published yet, or corrected.
    let fetched = midnight(day) + 17 * 3600;
    assert!(!settled(d(day), fetched));
    let a = answer("USD", day, &[("EUR", 0.93)]);
    let holiday = Entry::Closed { base: c("USD"), day: d("2024-05-07"), answered: d(day) };
    s.put(API, &syms, &[Entry::Answer(a.clone()), holiday], fetched).expect("stored");
    let days = [d(day), d("2024-05-07")];
    let q = query("USD", &syms, &days);
    let fresh = [Stored::Rates(a.clone()), Stored::Closed(d(day))];
    assert_eq!(s.lookup(&q, fetched + 3599, HOUR).expect("read"), fresh);
    assert_eq!(s.lookup(&q, fetched + 3600, HOUR).expect("read"), [Stored::Missing, Stored::Missing]);
    assert_eq!(s.lookup(&q, fetched + 60, Duration::ZERO).expect("read"), [Stored::Missing, Stored::Missing]);

    // Fetched again a full day after both days ended: final, at any age.
    let later = midnight("2024-05-09");
    assert!(settled(d("2024-05-07"), later) && !settled(d("2024-05-07"), later - 1));
    let published = answer("USD", "2024-05-07", &[("EUR", 0.92)]);
    s.put(API, &syms, &[Entry::Answer(a.clone()), Entry::Answer(published.clone())], later).expect("stored");
    // The day once closed has rates of its own now.
    let years = later + 10 * 365 * 86_400;
    assert_eq!(s.lookup(&q, years, Duration::ZERO).expect("read"), [Stored::Rates(a), Stored::Rates(published)]);
}

#[test]
fn a_writer_stores_what_many_threads_hand_it() {
    let (dir, s) = store();
    let syms = [c("EUR")];
    let writer = s.writer(API, &syms).expect("writer starts");
    let days: Vec<NaiveDate> = d("2001-01-01").iter_days().take(2000).collect();
    let days = Arc::new(days);
    std::thread::scope(|scope| {
        for t in 0..8 {
            let (sink, days) = (writer.sink(), Arc::clone(&days));
            scope.spawn(move || {
                for (i, &day) in days.iter().enumerate().filter(|(i, _)| i % 8 == t) {
                    let rates: BTreeMap<Currency, f64> = [(c("EUR"), i as f64)].into();
                    sink.answer(&Rates { date: day, base: c("USD"), rates });
                }
            });
        }
    });
    let written = writer.finish();
    assert!(written.error.is_none(), "{:?}", written.error);
    assert_eq!((written.stored, written.lost), (2000, 0));
    let s = Store::open(dir.path()).expect("reopens");
    let got = s.lookup(&query("USD", &syms, &days), unix_now(), HOUR).expect("read");
    for (i, g) in got.iter().enumerate() {
        assert!(matches!(g, Stored::Rates(r) if r.get(c("EUR")) == Some(i as f64)), "{i}: {g:?}");
    }
}

#[test]
fn two_stores_on_one_file_write_at_once_without_losing_an_answer() {
    let dir = tempfile::tempdir().expect("temporary folder");
    let syms = [c("EUR")];
    let days: Vec<NaiveDate> = d("2001-01-01").iter_days().take(3000).collect();
    std::thread::scope(|scope| {
        for t in 0..4 {
            let (dir, days) = (dir.path(), &days);
            scope.spawn(move || {
                let mut s = Store::open(dir).expect("opens");
                // Small transactions, overlapping days: the most contention.
                for chunk in days.chunks(10).skip(t).step_by(2) {
                    let entries: Vec<Entry> = chunk
                        .iter()
                        .map(|&day| Entry::Answer(Rates { date: day, base: c("USD"), rates: [(c("EUR"), 1.5)].into() }))
                        .collect();
                    s.put(API, &syms, &entries, unix_now()).expect("no 'database is locked'");
                }
            });
        }
    });
    let s = Store::open(dir.path()).expect("reopens");
    let got = s.lookup(&query("USD", &syms, &days), unix_now(), HOUR).expect("read");
    assert!(got.iter().all(|g| matches!(g, Stored::Rates(_))));
}

#[test]
fn summary_and_clear() {
    let (_dir, mut s) = store();
    assert_eq!(s.summary().expect("read"), []);
    let syms = [c("EUR"), c("PLN")];
    let entries = [
        Entry::Answer(answer("USD", "2020-01-02", &[("EUR", 0.9), ("PLN", 3.8)])),
        Entry::Answer(answer("USD", "2020-01-03", &[("EUR", 0.9), ("PLN", 3.8)])),
    ];
    s.put(API, &syms, &entries, unix_now()).expect("stored");
    let want = Summary {
        api: API.into(),
        base: "USD".into(),
        first: "2020-01-02".into(),
        last: "2020-01-03".into(),
        days: 2,
        symbols: vec!["EUR".into(), "PLN".into()],
    };
    assert_eq!(s.summary().expect("read"), [want]);
    assert!(s.size() > 0);
    assert_eq!(s.clear().expect("cleared"), 4);
    assert_eq!(s.summary().expect("read"), []);
}

#[test]
fn a_store_of_a_newer_schema_is_refused_not_damaged() {
    let (dir, s) = store();
    s.conn.pragma_update(None, "user_version", SCHEMA_VERSION + 1).expect("set");
    drop(s);
    let e = Store::open(dir.path()).expect_err("newer schema");
    assert!(matches!(e.kind, StoreErrorKind::Newer(v) if v == SCHEMA_VERSION + 1), "{e}");
    assert!(e.to_string().contains(FILE_NAME), "{e}");
    assert!(Store::open_existing(&dir.path().join("none")).expect("no error").is_none());
    assert!(!dir.path().join("none").exists(), "open_existing makes nothing");
}

#[test]
fn an_apis_codes_are_kept_per_api_replaced_and_cleared() {
    let (dir, s) = store();
    assert_eq!(s.currencies(API).expect("read"), None);
    let codes = [c("EUR"), c("USD"), c("XAU")];
    s.put_currencies(API, &codes, 1000).expect("stored");
    assert_eq!(s.currencies(API).expect("read"), Some((codes.to_vec(), 1000)));
    assert_eq!(s.currencies("http://other.test").expect("read"), None);
    s.put_currencies(API, &codes[..1], 2000).expect("replaced");
    assert_eq!(s.currencies(API).expect("read"), Some((vec![c("EUR")], 2000)));
    // Kept across opens, and something this program did not write is unusable.
    drop(s);
    let mut s = Store::open(dir.path()).expect("reopens");
    assert_eq!(s.currencies(API).expect("read"), Some((vec![c("EUR")], 2000)));
    s.conn.execute("UPDATE currencies SET codes = 'EUR,DOLLAR'", []).expect("spoiled");
    assert_eq!(s.currencies(API).expect("read"), None);
    assert_eq!(s.clear().expect("cleared"), 1);
    assert_eq!(s.currencies(API).expect("read"), None);
}

#[test]
fn a_store_made_before_the_currencies_table_gains_it_on_open() {
    let (dir, s) = store();
    s.conn.execute_batch("DROP TABLE currencies").expect("dropped");
    drop(s);
    let s = Store::open(dir.path()).expect("reopens");
    s.put_currencies(API, &[c("EUR")], 1).expect("the table is back");
    let version: i64 = s.conn.query_row("PRAGMA user_version", [], |r| r.get(0)).expect("read");
    assert_eq!(version, SCHEMA_VERSION);
}

/// The store file's bytes and modification time: what a reader must not change.
fn snapshot(path: &Path) -> (Vec<u8>, SystemTime) {
    let bytes = std::fs::read(path).expect("store file read");
    let modified = std::fs::metadata(path).and_then(|m| m.modified()).expect("modification time");
    (bytes, modified)
}

/// A store in `dir` with one answer and the codes of [`API`], closed (its
/// log folded into the file, as the last process to close it leaves it).
fn filled(dir: &Path) -> Rates {
    let mut s = Store::open(dir).expect("store opens");
    let a = answer("USD", "2020-12-23", &[("EUR", 0.82)]);
    s.put(API, &[c("EUR")], &[Entry::Answer(a.clone())], midnight("2021-01-01")).expect("stored");
    s.put_currencies(API, &[c("EUR"), c("USD")], 1000).expect("stored");
    a
}

/// Reads and tries every write on `s`, which must be read-only: what it
/// holds comes back and every write is refused as such.
fn read_but_not_written(s: &mut Store, a: &Rates) {
    assert!(s.read_only().is_some(), "{s:?}");
    let days = [a.date];
    let syms = [c("EUR")];
    let got = s.lookup(&query("USD", &syms, &days), midnight("2021-01-02"), HOUR).expect("read");
    assert_eq!(got, [Stored::Rates(a.clone())]);
    assert_eq!(s.summary().expect("read").len(), 1);
    assert_eq!(s.currencies(API).expect("read"), Some((vec![c("EUR"), c("USD")], 1000)));
    let refused = |e: StoreError| assert!(matches!(e.kind, StoreErrorKind::ReadOnly(_)), "{e}");
    let b = answer("USD", "2020-12-24", &[("EUR", 0.83)]);
    refused(s.put(API, &syms, &[Entry::Answer(b)], unix_now()).expect_err("read-only"));
    refused(s.put_currencies(API, &syms, 2000).expect_err("read-only"));
    refused(s.clear().expect_err("read-only"));
}

#[test]
fn a_store_opened_to_read_reads_everything_and_changes_nothing() {
    let dir = tempfile::tempdir().expect("temporary folder");
    let a = filled(dir.path());
    let file = dir.path().join(FILE_NAME);
    let before = snapshot(&file);
    let mut s = Store::open_read_only(dir.path()).expect("opens").expect("exists");
    read_but_not_written(&mut s, &a);
    drop(s);
    assert!(snapshot(&file) == before, "the file changed");
    // Still a store that can be written, and nothing of the refused writes is in it.
    let s = Store::open(dir.path()).expect("opens");
    assert!(s.read_only().is_none());
    assert_eq!(s.summary().expect("read")[0].days, 1);

    // Nothing there: nothing made.
    let none = dir.path().join("none").join("deeper");
    assert!(Store::open_read_only(&none).expect("no error").is_none());
    assert!(!dir.path().join("none").exists());
}

#[test]
fn a_store_opened_to_read_lacking_tables_reads_as_empty_and_gains_none() {
    // An empty file is an empty database.
    let dir = tempfile::tempdir().expect("temporary folder");
    std::fs::write(dir.path().join(FILE_NAME), b"").expect("written");
    let s = Store::open_read_only(dir.path()).expect("opens").expect("exists");
    assert_eq!(s.summary().expect("read"), []);
    assert_eq!(s.currencies(API).expect("read"), None);
    let (syms, days) = ([c("EUR")], [d("2020-01-02")]);
    assert_eq!(s.lookup(&query("USD", &syms, &days), unix_now(), HOUR).expect("read"), [Stored::Missing]);
    drop(s);
    assert_eq!(std::fs::metadata(dir.path().join(FILE_NAME)).expect("file").len(), 0, "made nothing");

    // A store from before the currencies table: read, and not migrated.
    let (dir, s) = store();
    s.conn.execute_batch("DROP TABLE currencies").expect("dropped");
    drop(s);
    let s = Store::open_read_only(dir.path()).expect("opens").expect("exists");
    assert_eq!(s.currencies(API).expect("read"), None);
    assert_eq!(s.summary().expect("read"), []);
    drop(s);
    let conn = Connection::open(dir.path().join(FILE_NAME)).expect("opens");
    let tables: i64 =
        conn.query_row("SELECT COUNT(*) FROM sqlite_master WHERE name = 'currencies'", [], |r| r.get(0)).expect("read");
    assert_eq!(tables, 0, "no migration");
}

#[test]
fn an_immutable_snapshot_is_read_whatever_its_path_holds() {
    let dir = tempfile::tempdir().expect("temporary folder");
    // Characters a URI gives meaning to, and others it escapes.
    let inner = dir.path().join("a b%20?x=1#c&é;");
    let a = filled(&inner);
    let path = inner.join(FILE_NAME);
    let uri = immutable_uri(&path).expect("a URI");
    let conn = Connection::open_with_flags(&uri, read_only_flags() | OpenFlags::SQLITE_OPEN_URI).expect("opens");
    let rate: f64 = conn.query_row("SELECT rate FROM rates WHERE day = '2020-12-23'", [], |r| r.get(0)).expect(&uri);
    assert_eq!(Some(rate), a.get(c("EUR")));
    // A relative path too.
    let uri = immutable_uri(Path::new("some dir/rates.sqlite3")).expect("a URI");
    assert_eq!(uri, "file:some%20dir/rates.sqlite3?immutable=1");
}

#[test]
fn unusable_places_are_named_with_why() {
    let dir = tempfile::tempdir().expect("temporary folder");
    type Open = fn(&Path) -> Result<(), StoreError>;
    let opens: [(&str, Open); 3] = [
        ("open", |d| Store::open(d).map(drop)),
        ("open_existing", |d| Store::open_existing(d).map(drop)),
        ("open_read_only", |d| Store::open_read_only(d).map(drop)),
    ];
    // A file where the folder is, or one of the folders it is in.
    let file = dir.path().join("file");
    std::fs::write(&file, b"").expect("written");
    for place in [file.clone(), file.join("below")] {
        for (name, open) in opens {
            let e = open(&place).expect_err(name);
            assert!(matches!(&e.kind, StoreErrorKind::NotAFolder(p) if *p == file), "{name}: {e}");
            assert!(e.to_string().contains(&format!("{} is not a folder", file.display())), "{e}");
        }
    }
    // A folder where the file is.
    let folder = dir.path().join("folder");
    std::fs::create_dir_all(folder.join(FILE_NAME)).expect("made");
    for (name, open) in opens {
        let e = open(&folder).expect_err(name);
        assert!(matches!(e.kind, StoreErrorKind::NotAFile), "{name}: {e}");
    }
    // A file that is not a database: refused, and left as it was.
    let junk = dir.path().join("junk");
    std::fs::create_dir(&junk).expect("made");
    let text = b"not a database, but a file long enough to have a header of a hundred bytes, which SQLite reads first";
    std::fs::write(junk.join(FILE_NAME), text).expect("written");
    for (name, open) in opens {
        let e = open(&junk).expect_err(name);
        assert!(matches!(e.kind, StoreErrorKind::Damaged(_)), "{name}: {e}");
        assert!(e.to_string().contains(&junk.join(FILE_NAME).display().to_string()), "{e}");
    }
    assert_eq!(std::fs::read(junk.join(FILE_NAME)).expect("read"), text);
}

/// Whether permissions stop this process writing (not root's): a file
/// made read-only is tried.
fn permissions_bind() -> bool {
    let file = tempfile::NamedTempFile::new().expect("temporary file");
    let mut perms = std::fs::metadata(file.path()).expect("metadata").permissions();
    perms.set_readonly(true);
    std::fs::set_permissions(file.path(), perms).expect("made read-only");
    std::fs::OpenOptions::new().write(true).open(file.path()).is_err()
}

/// Set in the process [`a_store_that_cannot_be_written_is_opened_to_read`]
/// runs as another user: the store to test.
const CHILD_STORE: &str = "RATES_STORE_TEST_READ_ONLY";

#[cfg(unix)]
#[test]
fn a_store_that_cannot_be_written_is_opened_to_read() {
    use std::os::unix::fs::PermissionsExt;
    use std::os::unix::process::CommandExt;
    let answer = || answer("USD", "2020-12-23", &[("EUR", 0.82)]);
    // The second half, in the process below.
    if let Some(dir) = std::env::var_os(CHILD_STORE) {
        let dir = Path::new(&dir);
        let file = dir.join(FILE_NAME);
        let before = snapshot(&file);
        let mut s = Store::open(dir).expect("opens, to read");
        let why = s.read_only().unwrap_or_default().to_string();
        read_but_not_written(&mut s, &answer());
        drop(s);
        // Opening to read and write changed nothing either.
        assert!(snapshot(&file) == before, "the file changed");
        assert_eq!(Store::open_existing(dir).expect("opens").and_then(|s| s.read_only().map(str::to_owned)), Some(why));
        // A folder that cannot be written holding no store: none can be made.
        let e = Store::open(&dir.join("sub")).expect_err("nothing can be made");
        assert!(matches!(e.kind, StoreErrorKind::Io(_)), "{e}");
        return;
    }
    let root = tempfile::tempdir().expect("temporary folder");
    let dir = root.path().join("store");
    assert_eq!(filled(&dir), answer());
    let mode = |p: &Path, m: u32| std::fs::set_permissions(p, std::fs::Permissions::from_mode(m)).expect("chmod");
    mode(root.path(), 0o755);
    mode(&dir, 0o555);
    mode(&dir.join(FILE_NAME), 0o444);
    // A copy another user can run: the build's folder may sit where only
    // its owner can enter (a home folder).
    let exe = root.path().join("store-test");
    std::fs::copy(std::env::current_exe().expect("this test"), &exe).expect("a copy of this test");
    mode(&exe, 0o755);
    let mut child = std::process::Command::new(&exe);
    child.args(["--exact", "store::tests::a_store_that_cannot_be_written_is_opened_to_read", "--test-threads=1"]);
    child.env(CHILD_STORE, &dir);
    // Root writes whatever the permissions say: the test runs as nobody.
    if !permissions_bind() {
        child.uid(65534).gid(65534);
    }
    let out = child.output().expect("the test runs again");
    mode(&dir, 0o755);
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success() && said.contains("1 passed"), "{said}{}", String::from_utf8_lossy(&out.stderr));
}
