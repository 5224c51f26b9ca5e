//! The files of a store are private: the data directory is created 0700,
//! every file in it and every snapshot file 0600, whatever the umask of
//! the process (the store holds every value and the auth service's
//! password hashes). Runs the real `hightower` binary with umask 000.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_hightower");

fn mode_of(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

/// `hightower --data-dir DATA ARGS...` under umask 000.
fn run_with_open_umask(data: &Path, args: &[&str]) {
    let mut command = Command::new("/bin/sh");
    command
        .arg("-c")
        .arg("umask 000 && exec \"$@\"")
        .arg("sh")
        .arg(BIN)
        .arg("--data-dir")
        .arg(data)
        .args(args)
        .env("HIGHTOWER_LOG", "warn");
    let out = command.output().unwrap();
    assert!(
        out.status.success(),
        "{args:?}: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn a_store_and_its_snapshot_are_private_whatever_the_umask() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("parent/data");
    run_with_open_umask(&data, &["put", "k", "v"]);
    let snapshot = tmp.path().join("backup.snap");
    run_with_open_umask(&data, &["snapshot", "create", snapshot.to_str().unwrap()]);
    let restored = tmp.path().join("restored");
    run_with_open_umask(
        &restored,
        &["snapshot", "restore", snapshot.to_str().unwrap()],
    );

    assert_eq!(mode_of(&data), 0o700);
    assert_eq!(mode_of(&tmp.path().join("parent")), 0o700);
    assert_eq!(mode_of(&restored), 0o700);
    assert_eq!(mode_of(&snapshot), 0o600, "snapshot file");
    for dir in [&data, &restored] {
        let mut files = 0;
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            assert_eq!(mode_of(&path), 0o600, "{}", path.display());
            files += 1;
        }
        assert!(files >= 2, "a lock file and a segment in {}", dir.display());
    }
}
