//! The house rules a reader relies on, checked over the whole workspace:
//! no Rust file under `crates/` (tests, examples and benches included) is
//! longer than [`MAX_LINES`], so that every file can be read in one
//! sitting; and no source or doc file names a tracker number, which means
//! nothing to a reader of a clone: code and docs say what and why.

use std::path::{Path, PathBuf};

/// The most lines a Rust file may have.
const MAX_LINES: usize = 600;

/// The workspace's root: two levels above this crate.
fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Every file under `dir` whose name ends with one of `extensions`,
/// skipping build output (`target`) and hidden folders.
fn files(dir: &Path, extensions: &[&str]) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(dir) = pending.pop() {
        let entries = std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()));
        for entry in entries {
            let path = entry.unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display())).path();
            let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default();
            if path.is_dir() {
                if name != "target" && !name.starts_with('.') {
                    pending.push(path);
                }
            } else if extensions.iter().any(|ext| name.ends_with(&format!(".{ext}"))) {
                found.push(path);
            }
        }
    }
    found.sort();
    found
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

/// The file's path from the workspace's root, for messages.
fn shown(path: &Path) -> String {
    let root = root().canonicalize().unwrap_or_else(|_| root());
    let path = path.canonicalize().unwrap_or_else(|_| path.to_path_buf());
    path.strip_prefix(&root).unwrap_or(&path).display().to_string()
}

/// Whether `line` names a tracker number: the word "issue" then a number
/// (a hash before it or not), or a hash and a number standing as a word
/// of its own. Colours (`#222222`), character
/// references (`&#39;`) and raw strings (`r#"`) are not references.
fn names_a_tracker_number(line: &str) -> bool {
    let lower = line.to_lowercase();
    let bytes = lower.as_bytes();
    let digits_at = |i: usize| bytes[i.min(bytes.len())..].iter().take_while(|b| b.is_ascii_digit()).count();
    // The word, an optional plural, spaces and hash, then digits.
    for (at, _) in lower.match_indices("issue") {
        let mut i = at + "issue".len();
        if bytes.get(i) == Some(&b's') {
            i += 1;
        }
        while bytes.get(i) == Some(&b' ') {
            i += 1;
        }
        if bytes.get(i) == Some(&b'#') {
            i += 1;
        }
        if digits_at(i) > 0 {
            return true;
        }
    }
    // "#13" as a word: after a space, a bracket or the line's start, one
    // to five digits, then no letter, digit or underscore.
    for (at, _) in lower.match_indices('#') {
        let before = at.checked_sub(1).map(|i| bytes[i]);
        if !matches!(before, None | Some(b' ' | b'(' | b'[' | b'\t')) {
            continue;
        }
        let n = digits_at(at + 1);
        let after = bytes.get(at + 1 + n);
        if (1..=5).contains(&n) && !after.is_some_and(|b| b.is_ascii_alphanumeric() || *b == b'_') {
            return true;
        }
    }
    false
}

#[test]
fn no_rust_file_is_longer_than_the_limit() {
    let long: Vec<String> = files(&root().join("crates"), &["rs"])
        .iter()
        .filter_map(|path| {
            let lines = read(path).lines().count();
            (lines > MAX_LINES).then(|| format!("{} ({lines} lines)", shown(path)))
        })
        .collect();
    assert!(long.is_empty(), "longer than {MAX_LINES} lines, split along their seams:\n{}", long.join("\n"));
}

#[test]
fn no_source_or_doc_file_names_a_tracker_number() {
    let root = root();
    let mut checked = files(&root.join("crates"), &["rs", "md", "toml"]);
    checked.extend(files(&root.join("docs"), &["md"]));
    // The root's own docs and manifest, not its folders again.
    let top = std::fs::read_dir(&root).unwrap_or_else(|e| panic!("cannot list the workspace: {e}"));
    checked.extend(
        top.filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.is_file() && p.extension().is_some_and(|x| x == "md" || x == "toml")),
    );
    assert!(checked.iter().any(|p| p.ends_with("README.md")), "the README is checked");
    let mut found = Vec::new();
    for path in &checked {
        for (i, line) in read(path).lines().enumerate() {
            if names_a_tracker_number(line) {
                found.push(format!("{}:{}: {}", shown(path), i + 1, line.trim()));
            }
        }
    }
    assert!(found.is_empty(), "tracker numbers mean nothing to a reader; say what and why:\n{}", found.join("\n"));
}

#[test]
fn tracker_numbers_are_told_from_colours_and_references() {
    // Written in pieces, so that this file does not name one itself.
    let (issue, hash) = ("issue", "#");
    for line in
        [format!("see {issue} 13"), format!("({issue}s {hash}4, 5)"), format!("fixes {hash}7"), format!("{hash}12")]
    {
        assert!(names_a_tracker_number(&line), "{line}");
    }
    for line in ["stroke=\"#222222\"", "&#39;", "r#\"raw\"#", "#[test]", "# 1. heading", "#compdef rates", "a#1"] {
        assert!(!names_a_tracker_number(line), "{line}");
    }
}
