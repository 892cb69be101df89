//! The conventions of a command-line tool: completions and a man page
//! generated from the same definitions as `--help`, examples and exit codes
//! in every subcommand's `--help`, every option the README and the docs
//! name present in the `--help` of its subcommand, and a schema version in
//! `bench --json`.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeSet;

use common::run;

/// The subcommands a user types.
const SUBCOMMANDS: [&str; 9] = ["fetch", "serve", "history", "bench", "cache", "worker", "queue", "completions", "man"];

/// The `--help` of `rates sub` (`None`: of `rates` itself).
fn help(sub: Option<&str>) -> String {
    help_of(&sub.into_iter().collect::<Vec<_>>())
}

/// The `--help` of `rates WORDS`.
fn help_of(words: &[&str]) -> String {
    let args: Vec<&str> = words.iter().copied().chain(["--help"]).collect();
    let (code, out, err) = run(&args);
    assert_eq!(code, 0, "{args:?}: {err}");
    out
}

#[test]
fn completions_are_generated_for_every_shell() {
    for (shell, mark) in [
        ("bash", "complete -F _rates"),
        ("zsh", "#compdef rates"),
        ("fish", "complete -c rates"),
        ("elvish", "edit:completion:arg-completer[rates]"),
        ("powershell", "Register-ArgumentCompleter"),
    ] {
        let (code, out, err) = run(&["completions", shell]);
        assert_eq!(code, 0, "{shell}: {err}");
        assert!(out.contains(mark), "{shell}: {out}");
        // Options of subcommands and the global flags are completed.
        for opt in ["sim-fail-rate", "verbose", "max-connections"] {
            assert!(out.contains(opt), "{shell} lacks {opt}");
        }
    }
    let (code, _, err) = run(&["completions", "tcsh"]);
    assert_eq!(code, 2, "{err}");
}

#[test]
fn the_man_page_is_generated() {
    let (code, out, err) = run(&["man"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains(".TH rates 1"), "{out}");
    for section in [".SH NAME", ".SH SYNOPSIS", ".SH OPTIONS", ".SH SUBCOMMANDS"] {
        assert!(out.contains(section), "{section} in {out}");
    }
    assert!(out.contains("Exit codes:"), "{out}");
    assert!(out.contains("\\-\\-verbose"), "{out}");

    let dir = std::env::temp_dir().join(format!("rates-man-{}", std::process::id()));
    let (code, _, err) = run(&["man", "--dir", dir.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    for sub in ["fetch", "serve", "history", "bench"] {
        let page = std::fs::read_to_string(dir.join(format!("rates-{sub}.1"))).expect("a page per subcommand");
        assert!(page.contains(&format!(".TH rates-{sub} 1")), "{page}");
        assert!(page.contains("Examples:"), "{sub}: {page}");
    }
    assert!(dir.join("rates.1").is_file());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn every_subcommand_help_has_examples_and_exit_codes() {
    for sub in SUBCOMMANDS {
        let h = help(Some(sub));
        let examples = h.split("Examples:\n").nth(1).unwrap_or_else(|| panic!("{sub}: no examples in {h}"));
        let lines = examples.lines().take_while(|l| l.starts_with("  rates ")).count();
        assert!((2..=4).contains(&lines), "{sub}: {lines} examples in {h}");
        if !matches!(sub, "completions" | "man") {
            assert!(h.contains("Exit codes:\n  0    "), "{sub}: {h}");
        }
    }
    assert!(help(None).contains("Exit codes:"));
}

#[test]
fn every_example_in_the_help_parses() {
    // An example that no longer parses is worse than none: each is run up
    // to clap's parsing (`--help` appended, so nothing else runs).
    for sub in SUBCOMMANDS {
        let h = help(Some(sub));
        let examples = h.split("Examples:\n").nth(1).unwrap();
        for line in examples.lines().take_while(|l| l.starts_with("  rates ")) {
            let cmd = line.split(" #").next().unwrap().split('|').next().unwrap().split('>').next().unwrap();
            let mut args: Vec<&str> = cmd.split_whitespace().skip(1).collect();
            args.push("--help");
            let (code, _, err) = run(&args);
            assert_eq!(code, 0, "{line}: {err}");
        }
    }
}

/// The long options a text names: `--name` (a trailing `-`, as in
/// `--sim-*`, is kept and matches as a prefix).
fn long_options(text: &str) -> Vec<String> {
    let bytes = text.as_bytes();
    let mut found = Vec::new();
    let mut i = 0;
    while let Some(at) = text[i..].find("--") {
        let start = i + at;
        let before_ok = start == 0 || !(bytes[start - 1].is_ascii_alphanumeric() || bytes[start - 1] == b'-');
        let mut end = start + 2;
        while end < bytes.len()
            && (bytes[end].is_ascii_lowercase() || bytes[end].is_ascii_digit() || bytes[end] == b'-')
        {
            end += 1;
        }
        if before_ok && end > start + 2 && bytes[start + 2].is_ascii_lowercase() {
            found.push(text[start..end].to_string());
        }
        i = end.max(start + 2);
    }
    found
}

/// Whether `help` offers `option` (or, for a prefix ending in `-`, an
/// option starting with it).
fn offers(help: &str, option: &str) -> bool {
    if option.ends_with('-') {
        return long_options(help).iter().any(|o| o.starts_with(option));
    }
    long_options(help).iter().any(|o| o == option)
}

/// The documents a user reads, from the workspace's root: every option
/// they name must be one `rates` takes.
const DOCS: [&str; 4] = ["README.md", "docs/GUIDE.md", "docs/ARCHITECTURE.md", "docs/BENCHMARKS.md"];

/// Checks the options `doc` (named `name`) names against `helps` and `top`
/// and returns those it checked.
fn options_of_doc(name: &str, doc: &str, helps: &[(&str, String)], top: &str) -> BTreeSet<String> {
    let mut checked = BTreeSet::new();

    // A command line: `rates [global flags] SUB --options ...`, up to a
    // comment or a pipe; its options must be in SUB's help.
    for line in doc.lines() {
        let Some(at) = line.find("rates ") else { continue };
        if at > 0 && !line[..at].ends_with([' ', '`', '(']) {
            continue;
        }
        let cmd = line[at..].split(" #").next().unwrap().split('|').next().unwrap();
        let mut words = cmd.split_whitespace().skip(1).skip_while(|w| w.starts_with('-'));
        let Some(sub) = words.next().map(|w| w.trim_matches('`')) else { continue };
        let Some((_, sub_help)) = helps.iter().find(|(s, _)| *s == sub) else { continue };
        // `rates queue status`, `rates cache info`: the options are the action's.
        let nested;
        let sub_help = match (sub, words.next().map(|w| w.trim_matches('`'))) {
            ("queue" | "cache", Some(action)) if !action.starts_with('-') => {
                nested = help_of(&[sub, action]);
                &nested
            }
            _ => sub_help,
        };
        for opt in long_options(cmd) {
            assert!(offers(sub_help, &opt), "{name} line {line:?}: `rates {sub} --help` has no {opt}");
            checked.insert(opt);
        }
    }
    // Any other option the prose names must exist somewhere (the lines
    // that run `cargo` or `redis-server` name those programs' options).
    let prose: String =
        doc.lines().filter(|l| !l.contains("cargo ") && !l.contains("redis-server ")).collect::<Vec<_>>().join("\n");
    for opt in long_options(&prose) {
        let known = offers(top, &opt) || helps.iter().any(|(_, h)| offers(h, &opt));
        assert!(known, "{name} names {opt}, which no `rates` command takes");
        checked.insert(opt);
    }
    checked
}

#[test]
fn every_option_in_the_docs_is_in_the_help_of_its_subcommand() {
    let helps: Vec<(&str, String)> = SUBCOMMANDS.iter().map(|s| (*s, help(Some(s)))).collect();
    let top = help(None);
    let mut checked = BTreeSet::new();
    for name in DOCS {
        let doc = std::fs::read_to_string(format!("{}/../../{name}", env!("CARGO_MANIFEST_DIR"))).unwrap();
        let of_doc = options_of_doc(name, &doc, &helps, &top);
        assert!(!of_doc.is_empty(), "{name} names no option: is it parsed?");
        checked.extend(of_doc);
    }
    assert!(checked.len() > 20, "only {checked:?}: are the docs parsed?");
    for opt in ["--sim-fail-rate", "--rate-limit", "--plot", "--sim-"] {
        assert!(checked.contains(opt), "{opt} not found in the docs: {checked:?}");
    }
}

#[test]
fn bench_json_has_a_schema_version() {
    let (code, out, err) =
        run(&["bench", "--json", "--models", "sync", "--requests", "2", "--repeat", "1", "--sim-latency", "1ms"]);
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["schema"], 1, "{v}");
    assert!(out.trim_start().starts_with("{\n  \"schema\": 1,"), "the version comes first: {out}");
}
