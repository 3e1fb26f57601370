//! The Node.js peers (`node-socketio`): their scripts and npm dependencies live in
//! bench/node, with a package.json pinning exact versions and a package-lock.json. Before a
//! Node peer runs, `npm ci` installs the locked dependencies there when node_modules is
//! missing or older than the lock file. Without `node` or `npm` on PATH the peer cannot run:
//! that is an error printed at once and the peer's cells say `failed` with the reason.

use std::fs::File;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

/// Longest `npm ci` may take.
const INSTALL_TIMEOUT: Duration = Duration::from_secs(10 * 60);

/// bench/node: the Node peers' scripts, package.json and package-lock.json.
pub fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("node")
}

/// Makes the Node peers runnable: finds `node`, runs `npm ci` in bench/node if its
/// dependencies are not installed (log in `logs/npm-ci.log`). Returns the `node` binary.
pub fn prepare(logs: &Path) -> Result<PathBuf, String> {
    let node = find_on_path("node").ok_or(
        "`node` not found on PATH: the Node peers need Node.js (18 or later) with npm; \
         install them (e.g. Debian's `nodejs` and `npm` packages)",
    )?;
    let dir = dir();
    if installed(&dir) {
        return Ok(node);
    }
    let npm = find_on_path("npm").ok_or(format!(
        "`npm` not found on PATH: cannot install the Node peers' dependencies (`npm ci` in {}); \
         install npm (e.g. Debian's `npm` package)",
        dir.display()
    ))?;
    let log = logs.join("npm-ci.log");
    eprintln!(
        "installing the Node peers' dependencies: npm ci in {} (log: {})",
        dir.display(),
        log.display()
    );
    let out = File::create(&log).map_err(|e| format!("{}: {e}", log.display()))?;
    let err = out.try_clone().map_err(|e| e.to_string())?;
    let mut child = Command::new(npm)
        .args(["ci", "--no-audit", "--no-fund"])
        .current_dir(&dir)
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .spawn()
        .map_err(|e| format!("cannot run npm: {e}"))?;
    let deadline = Instant::now() + INSTALL_TIMEOUT;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(100)),
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!(
                    "npm ci timed out after {INSTALL_TIMEOUT:?}, see {}",
                    log.display()
                ));
            }
            Err(e) => return Err(e.to_string()),
        }
    };
    if !status.success() || !installed(&dir) {
        return Err(format!(
            "npm ci failed in {} ({status}), see {}",
            dir.display(),
            log.display()
        ));
    }
    Ok(node)
}

/// Whether `npm ci` ran since the lock file last changed: npm writes
/// node_modules/.package-lock.json, and socket.io must be there.
fn installed(dir: &Path) -> bool {
    let modified =
        |p: PathBuf| -> Option<SystemTime> { std::fs::metadata(p).ok()?.modified().ok() };
    let lock = modified(dir.join("package-lock.json"));
    let hidden = modified(dir.join("node_modules").join(".package-lock.json"));
    let socketio = dir
        .join("node_modules")
        .join("socket.io")
        .join("package.json");
    match (lock, hidden) {
        (Some(lock), Some(hidden)) => hidden >= lock && socketio.is_file(),
        _ => false,
    }
}

/// The first executable file called `name` in a PATH directory.
fn find_on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| {
            std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
}

/// `socket.io <version> on node <version>` for the report header, from the installed
/// package and `node --version`; `None` when either is unknown.
pub fn versions() -> Option<String> {
    let package = std::fs::read_to_string(
        dir()
            .join("node_modules")
            .join("socket.io")
            .join("package.json"),
    )
    .ok()?;
    let socketio = serde_json::from_str::<serde_json::Value>(&package).ok()?["version"]
        .as_str()?
        .to_string();
    let node = Command::new(find_on_path("node")?)
        .arg("--version")
        .stderr(Stdio::null())
        .output()
        .ok()?;
    let node = String::from_utf8(node.stdout).ok()?;
    Some(format!("socket.io {socketio} on node {}", node.trim()))
}
