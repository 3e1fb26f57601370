//! Builds the binaries with cargo and finds them through cargo's JSON messages,
//! so a custom target directory or `CARGO_TARGET_DIR` just works.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Longest a build may take (a cold build of the root workspace on 2 cores fits).
const BUILD_TIMEOUT: Duration = Duration::from_secs(20 * 60);

/// `cargo build --release --manifest-path MANIFEST EXTRA...`; returns the built
/// executables by target name. Cargo's diagnostics go to `log` if given, else to
/// our stderr.
pub fn build(
    manifest: &Path,
    extra: &[&str],
    log: Option<&Path>,
) -> Result<HashMap<String, PathBuf>, String> {
    // The cargo that runs us (`cargo run` sets CARGO), so toolchains match.
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let stderr = match log {
        Some(log) => Stdio::from(File::create(log).map_err(|e| format!("{}: {e}", log.display()))?),
        None => Stdio::inherit(),
    };
    let mut child = Command::new(cargo)
        .args([
            "build",
            "--release",
            "--message-format=json-render-diagnostics",
        ])
        .arg("--manifest-path")
        .arg(manifest)
        .args(extra)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(stderr)
        .spawn()
        .map_err(|e| format!("cannot run cargo: {e}"))?;
    let stdout = child.stdout.take().ok_or("no stdout")?;
    let reader = std::thread::spawn(move || {
        let mut executables = HashMap::new();
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let Ok(msg) = serde_json::from_str::<serde_json::Value>(&line) else {
                continue;
            };
            if msg["reason"] == "compiler-artifact" {
                if let (Some(name), Some(exe)) =
                    (msg["target"]["name"].as_str(), msg["executable"].as_str())
                {
                    executables.insert(name.to_string(), PathBuf::from(exe));
                }
            }
        }
        executables
    });
    let deadline = Instant::now() + BUILD_TIMEOUT;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(100)),
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("build timed out after {BUILD_TIMEOUT:?}"));
            }
            Err(e) => return Err(e.to_string()),
        }
    };
    let executables = reader.join().map_err(|_| "cargo output reader panicked")?;
    if status.success() {
        Ok(executables)
    } else {
        Err(match log {
            Some(log) => format!("build failed, see {}", log.display()),
            None => "build failed".to_string(),
        })
    }
}
