//! Every cross rate of the embedded dataset — every day, every ordered pair
//! of the 33 supported codes — against Python's own `decimal`, computed as
//! vatcomply's handler computes it (`decimal_cross_rates.py` beside this
//! file). Exhaustive, because the cases where binary division goes wrong
//! are about 1 in 26,000 and a sample would miss them.

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use rates_core::{Currency, Dataset, SUPPORTED, is_supported};

/// Python takes about 10 s on a loaded two-core machine; beyond this it is stuck.
const PYTHON_LIMIT: Duration = Duration::from_secs(120);

/// Runs the script over the embedded zip and returns what it printed.
fn python_rates() -> String {
    let dir = env!("CARGO_MANIFEST_DIR");
    let codes: Vec<&str> = SUPPORTED.iter().map(Currency::as_str).collect();
    let mut child = Command::new("python3")
        .arg(format!("{dir}/tests/decimal_cross_rates.py"))
        .arg(format!("{dir}/../../data/eurofxref-hist.zip"))
        .arg(codes.join(","))
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("python3 runs (it is needed to check the cross rates)");
    let mut stdout = child.stdout.take().expect("piped stdout");
    // Read on a thread so that a full pipe cannot stall the child while we wait.
    let reader = std::thread::spawn(move || {
        let mut text = String::new();
        stdout.read_to_string(&mut text).map(|_| text)
    });
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for python3") {
            break status;
        }
        if started.elapsed() > PYTHON_LIMIT {
            let _ = child.kill();
            let _ = child.wait();
            panic!("python3 took more than {PYTHON_LIMIT:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "python3 failed: {status}");
    reader.join().expect("reader thread").expect("python3's output is UTF-8")
}

#[test]
fn every_cross_rate_matches_pythons_decimal() {
    let python = python_rates();
    let ds = Dataset::embedded();
    let mut lines = python.lines();
    let (mut days, mut compared, mut differ, mut first) = (0, 0usize, 0usize, Vec::new());
    while let Some(date) = lines.next() {
        let day = rates_core::parse_date(date).unwrap_or_else(|e| panic!("python printed {date:?}: {e}"));
        days += 1;
        for base in SUPPORTED {
            let row = lines.next().unwrap_or_else(|| panic!("{date}: python's output ends early"));
            let ours = ds.rates_in_order(base, &[], Some(day), is_supported);
            if row == "-" {
                assert!(ours.is_err(), "{date} {base}: python has no rate for the base, we answer {ours:?}");
                continue;
            }
            let (answered, ours) = ours.unwrap_or_else(|e| panic!("{date} {base}: {e}"));
            assert_eq!(answered, day, "{date}: a day of the file answers itself");
            let fields: Vec<&str> = row.split(' ').collect();
            assert_eq!(fields.len(), SUPPORTED.len(), "{date} {base}: python printed {row:?}");
            let mut listed = 0;
            for (symbol, field) in SUPPORTED.iter().zip(fields) {
                let mine = ours.iter().find(|(c, _)| c == symbol).map(|&(_, v)| v);
                // float() of the decimal string: what vatcomply's answer holds.
                let theirs = (field != "-").then(|| field.parse::<f64>().expect("python printed a number"));
                listed += usize::from(theirs.is_some());
                if mine != theirs {
                    differ += 1;
                    if first.len() < 20 {
                        first.push(format!("{date} {base}->{symbol}: python {field}, ours {mine:?}"));
                    }
                }
                compared += 1;
            }
            assert_eq!(ours.len(), listed, "{date} {base}: ours lists {ours:?}");
        }
    }
    assert_eq!(days, ds.days().len(), "python printed every day of the file");
    assert_eq!(differ, 0, "{differ} of {compared} rates differ, first:\n{}", first.join("\n"));
    // Every day × every ordered pair, less the bases without a rate.
    assert!(compared > 6_700_000, "only {compared} compared");
}
