//! The example extensions in other languages (examples/): each is built
//! with its documented command and run with `hightower run` against a
//! fresh store.
//!
//! - examples/python: componentize-py (PyPI, pinned in requirements.txt),
//!   `wasi:keyvalue@0.2.0-draft2`;
//! - examples/javascript: componentize-js (npm, pinned in package-lock.json),
//!   `hightower:kv`.
//!
//! The test installs its tools itself, once, into `target/tmp/polyglot/`
//! (a venv and a node_modules; reinstalled when the pinned versions
//! change). A built component is kept there too, keyed by a digest of
//! everything it is built from (sources, pinned tools, `wit/`), and so is
//! its compiled form: an unchanged example is neither rebuilt nor
//! recompiled. Cold (first run, or CI) it downloads the tools and builds
//! both examples; delete `target/tmp/polyglot` to start over.
//!
//! Needs `python3` (with `venv`) and `npm` on the PATH and the package
//! registries; `HIGHTOWER_SKIP_POLYGLOT=1` skips it (saying so) where they
//! are not available.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use sha2::{Digest, Sha256};

const HIGHTOWER: &str = env!("CARGO_BIN_EXE_hightower");

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .unwrap()
        .to_path_buf()
}

fn cache() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).join("polyglot")
}

fn skipped() -> bool {
    if std::env::var_os("HIGHTOWER_SKIP_POLYGLOT").is_some() {
        eprintln!("HIGHTOWER_SKIP_POLYGLOT is set: the polyglot examples are NOT tested");
        return true;
    }
    false
}

/// Runs a tool; panics with its output if it fails.
fn tool(command: &mut Command) -> Output {
    let shown = format!("{command:?}");
    let out = command
        .output()
        .unwrap_or_else(|err| panic!("could not run {shown}: {err}"));
    assert!(
        out.status.success(),
        "{shown} failed ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Hex SHA-256 of the files (whole directories included, sorted) and extra text.
fn digest(paths: &[PathBuf], extra: &str) -> String {
    fn add(hasher: &mut Sha256, path: &Path) {
        if path.is_dir() {
            let mut entries: Vec<_> = fs::read_dir(path)
                .unwrap()
                .map(|e| e.unwrap().path())
                .collect();
            entries.sort();
            for entry in entries {
                add(hasher, &entry);
            }
        } else {
            hasher.update(path.to_string_lossy().as_bytes());
            hasher.update(fs::read(path).unwrap());
        }
    }
    let mut hasher = Sha256::new();
    for path in paths {
        add(&mut hasher, path);
    }
    hasher.update(extra.as_bytes());
    hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Installs into `dir` unless its marker says it holds `wanted` already.
fn install(dir: &Path, wanted: &str, steps: impl FnOnce(&Path)) {
    let marker = dir.join(".installed");
    if fs::read_to_string(&marker).ok().as_deref() == Some(wanted) {
        return;
    }
    let _ = fs::remove_dir_all(dir);
    fs::create_dir_all(dir).unwrap();
    steps(dir);
    fs::write(&marker, wanted).unwrap();
}

/// The component built from `inputs` by `build` (which writes the path it
/// is given), reused while the inputs are unchanged.
fn built(name: &str, inputs: &[PathBuf], tools: &str, build: impl FnOnce(&Path)) -> PathBuf {
    let mut inputs = inputs.to_vec();
    inputs.push(repo().join("wit"));
    let key = digest(&inputs, tools);
    let dir = cache().join("build").join(name);
    let wasm = dir.join(format!("{}.wasm", &key[..16]));
    if !wasm.exists() {
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        let partial = dir.join("partial.wasm");
        build(&partial);
        fs::rename(&partial, &wasm).unwrap();
    }
    wasm
}

/// A fresh data directory for one example, whose compiled-component cache
/// (`<data_dir>/wasm-cache/`, validated on load) starts with what the last
/// run of this example compiled.
struct Store {
    _tmp: tempfile::TempDir,
    dir: PathBuf,
    compiled: PathBuf,
}

impl Store {
    fn new(example: &str) -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("data");
        let wasm_cache = dir.join("wasm-cache");
        // Private, as the engine makes a data directory: opening one that
        // others can read logs a warning on stderr, which the runs check.
        std::os::unix::fs::DirBuilderExt::mode(fs::DirBuilder::new().recursive(true), 0o700)
            .create(&wasm_cache)
            .unwrap();
        let compiled = cache().join("compiled").join(example);
        if let Ok(entries) = fs::read_dir(&compiled) {
            for entry in entries {
                let entry = entry.unwrap();
                fs::copy(entry.path(), wasm_cache.join(entry.file_name())).unwrap();
            }
        }
        Store {
            _tmp: tmp,
            dir,
            compiled,
        }
    }

    /// Keeps what this store has compiled (only this example) for the
    /// next run, in place of what was kept before.
    fn keep_compiled(&self) {
        let _ = fs::remove_dir_all(&self.compiled);
        fs::create_dir_all(&self.compiled).unwrap();
        for entry in fs::read_dir(self.dir.join("wasm-cache")).unwrap() {
            let entry = entry.unwrap();
            if entry.file_name().to_string_lossy().ends_with(".cwasm") {
                fs::copy(entry.path(), self.compiled.join(entry.file_name())).unwrap();
            }
        }
    }

    fn hightower(&self, args: &[&str]) -> (i32, String, String) {
        let out = Command::new(HIGHTOWER)
            .arg("--data-dir")
            .arg(&self.dir)
            .args(args)
            .env_remove("HIGHTOWER_LOG")
            .output()
            .expect("run hightower");
        (
            out.status.code().expect("exited"),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// `hightower run COMPONENT --namespace app/ ARGS...`.
    fn run(&self, wasm: &Path, args: &[&str]) -> (i32, String, String) {
        let mut all = vec!["run", wasm.to_str().unwrap(), "--namespace", "app/"];
        all.extend_from_slice(args);
        self.hightower(&all)
    }

    fn get(&self, key: &str) -> Option<String> {
        match self.hightower(&["get", key]) {
            (0, value, _) => Some(value),
            (1, _, _) => None,
            (code, _, stderr) => panic!("get {key}: exit {code}: {stderr}"),
        }
    }
}

/// examples/python: componentize-py, `wasi:keyvalue@0.2.0-draft2`.
#[test]
fn python_example_builds_and_runs() {
    if skipped() {
        return;
    }
    let example = repo().join("examples/python");
    let requirements = example.join("requirements.txt");
    let wanted = fs::read_to_string(&requirements).unwrap();
    let venv = cache().join("python");
    install(&venv, &wanted, |dir| {
        tool(Command::new("python3").args(["-m", "venv"]).arg(dir));
        tool(
            Command::new(dir.join("bin/pip"))
                .args(["install", "--quiet", "--disable-pip-version-check", "-r"])
                .arg(&requirements),
        );
    });
    // The build command of examples/python/README.md.
    let wasm = built("python", &[example.join("app.py")], &wanted, |out| {
        tool(
            Command::new(venv.join("bin/componentize-py"))
                .current_dir(&example)
                .args([
                    "-d",
                    "../../wit",
                    "-w",
                    "hightower:kv/keyvalue-draft2-command",
                ])
                .args(["componentize", "app", "-o"])
                .arg(out),
        );
    });

    let store = Store::new("python");
    let tally = |args: &[&str]| store.run(&wasm, args);
    assert_eq!(tally(&["add", "apples"]), (0, "1\n".into(), String::new()));
    store.keep_compiled();
    assert_eq!(tally(&["add", "apples", "4"]).1, "5\n");
    assert_eq!(tally(&["add", "pears", "-2"]).1, "-2\n");
    assert_eq!(
        tally(&["show"]),
        (0, "apples 5\npears -2\n".into(), String::new())
    );
    assert_eq!(tally(&["reset", "apples"]).1, "5\n");
    // Counters are ASCII decimal, in the namespace, for anyone to read.
    assert_eq!(store.get("app/tally/apples").as_deref(), Some("0"));
    assert_eq!(store.get("app/tally/pears").as_deref(), Some("-2"));
    // A value that is not a number: increment fails cleanly, writes nothing.
    assert_eq!(store.hightower(&["put", "app/tally/word", "abc"]).0, 0);
    let (code, stdout, stderr) = tally(&["add", "word"]);
    assert_eq!((code, stdout.as_str()), (1, ""));
    assert!(stderr.contains("is not a number"), "{stderr}");
    assert_eq!(store.get("app/tally/word").as_deref(), Some("abc"));
    let (code, _, stderr) = tally(&["reset", "nope"]);
    assert_eq!(code, 1);
    assert_eq!(stderr, "tally: nope: no such counter\n");
    // drop is one atomic delete-many.
    assert_eq!(tally(&["drop", "apples", "word"]).0, 0);
    assert_eq!(tally(&["show"]).1, "pears -2\n");
}

/// examples/javascript: componentize-js, `hightower:kv`.
#[test]
fn javascript_example_builds_and_runs() {
    if skipped() {
        return;
    }
    let example = repo().join("examples/javascript");
    let manifest = example.join("package.json");
    let lock = example.join("package-lock.json");
    let wanted = digest(&[manifest.clone(), lock.clone()], "");
    let node = cache().join("node");
    install(&node, &wanted, |dir| {
        fs::copy(&manifest, dir.join("package.json")).unwrap();
        fs::copy(&lock, dir.join("package-lock.json")).unwrap();
        tool(Command::new("npm").current_dir(dir).args([
            "ci",
            "--no-audit",
            "--no-fund",
            "--loglevel=error",
        ]));
    });
    // The build command of examples/javascript/README.md (`npm run build`).
    let wasm = built("javascript", &[example.join("app.js")], &wanted, |out| {
        tool(
            Command::new(node.join("node_modules/.bin/componentize-js"))
                .current_dir(&example)
                .args(["app.js", "--wit", "../../wit"])
                .args(["--world-name", "hightower:kv/command"])
                .args(["--disable", "http", "fetch-event", "--out"])
                .arg(out),
        );
    });

    let store = Store::new("javascript");
    let notes = |args: &[&str]| store.run(&wasm, args);
    assert_eq!(
        notes(&["add", "buy", "milk"]),
        (0, "1\n".into(), String::new())
    );
    store.keep_compiled();
    assert_eq!(notes(&["add", "call bob"]).1, "2\n");
    assert_eq!(
        notes(&["list"]),
        (0, "1: buy milk\n2: call bob\n".into(), String::new())
    );
    assert_eq!(notes(&["done", "1"]).0, 0);
    assert_eq!(notes(&["list"]).1, "2: call bob\n");
    let (code, _, stderr) = notes(&["done", "7"]);
    assert_eq!((code, stderr.as_str()), (1, "notes: no note 7\n"));
    let (code, _, stderr) = notes(&["frobnicate"]);
    assert_eq!(code, 1);
    assert!(stderr.starts_with("usage: notes"), "{stderr}");
    // Written through the namespace, seen natively.
    assert_eq!(store.get("app/next").as_deref(), Some("3"));
    assert_eq!(
        store.get("app/notes/0000000002").as_deref(),
        Some("call bob")
    );
    assert_eq!(store.get("app/notes/0000000001"), None);
}
