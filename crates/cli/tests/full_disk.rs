//! A file system that fills up: publishing, signing and checkpointing on a small tmpfs end
//! with one clear error, leave no partial version or signature visible, and the run resumes
//! from its last whole checkpoint once there is room again.
//!
//! The tmpfs is mounted in a mount namespace of the test's own (`unshare --mount
//! --map-root-user`), held open by a sleeping process, and reached from outside through
//! that process's `/proc/PID/root`: nothing is mounted on the machine itself.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

use crate::common::{RETRAIN, Sandbox, mnist_spec, quick_digits_spec};
use crate::resume::{final_weights, first_checkpointed_run};

/// A tmpfs of a fixed size in a mount namespace of its own.
struct SmallDisk {
    holder: Child,
    root: PathBuf,
}

impl SmallDisk {
    /// Mounts a tmpfs of `mib` MiB at `at` (an empty folder) in a new mount namespace.
    fn mount(at: &Path, mib: u64) -> SmallDisk {
        std::fs::create_dir_all(at).unwrap();
        let mut holder = Command::new("unshare")
            .args(["--mount", "--map-root-user", "sh", "-c"])
            .arg(format!(
                "mount -t tmpfs -o size={mib}m tmpfs \"$0\" && echo mounted && exec sleep 3600"
            ))
            .arg(at)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("unshare (util-linux) runs");
        let mut line = String::new();
        BufReader::new(holder.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        if line.trim() != "mounted" {
            let out = holder.wait_with_output().unwrap();
            panic!(
                "these tests need a mount namespace with a tmpfs (unshare --mount \
                 --map-root-user): {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let root = PathBuf::from(format!("/proc/{}/root", holder.id()))
            .join(at.strip_prefix("/").unwrap());
        SmallDisk { holder, root }
    }

    /// The mounted folder, as this process reaches it.
    fn path(&self) -> &Path {
        &self.root
    }

    /// Fills the disk with a filler file, then gives back `leave` bytes of it.
    fn fill(&self, leave: u64) {
        let path = self.root.join("filler");
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .unwrap();
        let chunk = vec![0u8; 1 << 16];
        loop {
            match file.write(&chunk) {
                Ok(0) => break,
                Ok(_) => {}
                Err(e) if e.raw_os_error() == Some(28) => break,
                Err(e) => panic!("filling {}: {e}", path.display()),
            }
        }
        let len = file.metadata().unwrap().len();
        file.set_len(len.saturating_sub(leave)).unwrap();
    }

    /// Removes the filler: the disk has room again.
    fn empty(&self) {
        std::fs::remove_file(self.root.join("filler")).unwrap();
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = self.holder.kill();
        let _ = self.holder.wait();
    }
}

/// What a failed command printed on stderr, after checking that it failed cleanly (an
/// exit code, no signal: no abort, no panic).
fn failed(out: &Output, what: &str) -> String {
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success(), "{what} succeeded on a full disk");
    assert!(out.status.code().is_some(), "{what} was killed: {err}");
    assert!(!err.contains("panicked"), "{what} panicked: {err}");
    err
}

/// The one message a full disk gives: the path, the cause and the fix.
fn assert_says_disk_full(stderr: &str, under: &Path) {
    let errors: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(errors.len(), 1, "one message: {stderr}");
    let err = errors[0];
    assert!(err.contains("No space left on device"), "{err}");
    assert!(
        err.contains(&under.display().to_string()),
        "names no path: {err}"
    );
    assert!(err.contains("free space"), "gives no fix: {err}");
}

/// Hidden leftovers (staging folders, temp files) anywhere under `dir`.
fn leftovers(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let path = e.unwrap().path();
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            if name.contains(".tmp") || name.starts_with(".staging") {
                found.push(path.clone());
            }
            if path.is_dir() {
                todo.push(path);
            }
        }
    }
    found
}

#[test]
fn publishing_and_signing_on_a_full_disk_leave_the_registry_as_it_was() {
    let sb = Sandbox::new();
    sb.write("spec.toml", quick_digits_spec(&sb, 0.0));
    sb.ok(&["registry", "keygen", "key.pem"]);
    let disk = SmallDisk::mount(&sb.path().join("disk"), 16);
    let registry = disk.path().join("registry");
    let registry_arg = registry.to_str().unwrap();
    let with_registry = |args: &[&str]| {
        let mut all = vec!["--registry", registry_arg];
        all.extend_from_slice(args);
        sb.run(&all)
    };
    let ok = |args: &[&str]| {
        let out = with_registry(args);
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    ok(&["run", "--no-serve", "spec.toml", "--threads", "1"]);
    let listed = ok(&["registry", "list"]);
    let version_dir = registry.join("digits/1");
    let before: Vec<(String, Vec<u8>)> = files(&version_dir);

    // Room for the first files of a version, not for its weights.
    disk.fill(8 << 10);
    let out = with_registry(RETRAIN);
    assert_says_disk_full(&failed(&out, "publish"), &registry);
    assert_eq!(
        ok(&["registry", "list"]),
        listed,
        "no partial version is listed"
    );
    assert_eq!(leftovers(&registry), Vec::<PathBuf>::new());

    // No room for a signature: the version stays unsigned and whole.
    disk.fill(0);
    let out = with_registry(&["registry", "sign", "digits@1", "--key", "key.pem"]);
    assert_says_disk_full(&failed(&out, "sign"), &version_dir);
    assert_eq!(
        files(&version_dir),
        before,
        "the version's files are untouched"
    );
    assert_eq!(leftovers(&registry), Vec::<PathBuf>::new());
    assert!(ok(&["registry", "list"]).contains("unsigned"));
    let out = with_registry(&["registry", "verify", "digits@1", "--key", "key.pem.pub"]);
    assert!(failed(&out, "verify").contains("is not signed"));

    // With room again, both work, and the failed publish used no version number.
    disk.empty();
    let published = ok(RETRAIN);
    assert!(published.contains("digits version 2"), "{published}");
    ok(&["registry", "sign", "digits@1", "--key", "key.pem"]);
    ok(&["registry", "verify", "digits@1", "--key", "key.pem.pub"]);
}

/// Every file of a folder with its bytes, by name.
fn files(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut out: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let path = e.unwrap().path();
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            (name, std::fs::read(&path).unwrap())
        })
        .collect();
    out.sort();
    out
}

#[test]
fn a_run_that_fills_the_disk_resumes_from_its_last_whole_checkpoint() {
    let sb = Sandbox::new();
    let spec = mnist_spec(
        "full",
        "{ flatten = {} }, { dense = { units = 64 } }, { relu = {} }, { dense = { units = 10 } }",
        3000,
        200,
        "epochs = 4\nbatch_size = 16\noptimizer = { kind = \"adamw\", lr = 1e-3 }\n\
         checkpoint = { every_steps = 20, every_epochs = 1, keep = 2 }\nlog_every_steps = 10",
    );
    sb.write("spec.toml", &spec);
    sb.ok(&["train", "spec.toml", "--threads", "1", "--runs", "straight"]);
    let straight = sb.path().join("straight").join(&sb.entries("straight")[0]);

    let disk = SmallDisk::mount(&sb.path().join("disk"), 32);
    let runs = disk.path().join("runs");
    let runs_arg = runs.to_str().unwrap().to_string();
    let child = sb
        .command(&["train", "spec.toml", "--threads", "1", "--runs", &runs_arg])
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    // The disk fills once the first checkpoint is whole.
    let run = first_checkpointed_run(&runs);
    disk.fill(0);
    let out = child.wait_with_output().unwrap();
    assert_says_disk_full(&failed(&out, "train"), &run);

    // What is left is whole checkpoints only; with room again the run resumes and ends as
    // the run that never stopped did.
    assert_eq!(leftovers(&run), Vec::<PathBuf>::new());
    disk.empty();
    let run_id = run.file_name().unwrap().to_str().unwrap();
    let resumed = sb.ok(&[
        "train",
        "spec.toml",
        "--threads",
        "1",
        "--runs",
        &runs_arg,
        "--resume",
        run_id,
    ]);
    assert!(resumed.contains(run_id), "{resumed}");
    assert_eq!(final_weights(&run), final_weights(&straight));
    assert_eq!(
        std::fs::read_to_string(run.join("metrics.jsonl")).unwrap(),
        std::fs::read_to_string(straight.join("metrics.jsonl")).unwrap()
    );
}
