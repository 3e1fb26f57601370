//! Runs one `loadgen` process to completion under a deadline, reading its JSON
//! lines as they come so that a `hold` event can be answered (sample the server,
//! then close loadgen's stdin to release it).

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::time::{Duration, Instant};

use crate::report::{Event, RunResult};

/// What a finished loadgen run gives back.
pub struct Finished {
    /// The result it printed, with the hold sampler's metrics merged in.
    pub result: RunResult,
    /// Wall-clock seconds the process ran.
    pub seconds: f64,
}

/// Runs `cmd` (stderr to `log`) for at most `deadline`. `on_hold` is called when
/// loadgen announces a hold, `on_mark` at each of its marks (label, messages published);
/// the metrics they return are merged into the result.
pub fn run(
    mut cmd: Command,
    deadline: Duration,
    log: &Path,
    mut on_hold: impl FnMut(u64) -> BTreeMap<String, f64>,
    mut on_mark: impl FnMut(&str, u64) -> BTreeMap<String, f64>,
) -> Result<Finished, String> {
    let log_file = File::create(log).map_err(|e| format!("{}: {e}", log.display()))?;
    let started = Instant::now();
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(log_file)
        .spawn()
        .map_err(|e| format!("cannot start loadgen: {e}"))?;
    let stdout = child.stdout.take().ok_or("no stdout")?;
    // A thread turns the blocking line reader into a channel we can wait on with
    // a timeout; it ends when loadgen closes stdout.
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            if line.is_err() || tx.send(line.unwrap_or_default()).is_err() {
                break;
            }
        }
    });

    let mut result = None;
    let mut sampled = BTreeMap::new();
    loop {
        let left = deadline.saturating_sub(started.elapsed());
        match rx.recv_timeout(left) {
            Ok(line) => match serde_json::from_str::<Event>(&line) {
                Ok(Event::Hold { connections }) => {
                    sampled.extend(on_hold(connections));
                    // EOF on stdin ends the hold.
                    drop(child.stdin.take());
                }
                Ok(Event::Mark {
                    label,
                    published,
                    wait,
                }) => {
                    sampled.extend(on_mark(&label, published));
                    if wait {
                        // The line that releases it; if it is gone, so is the pipe.
                        if let Some(stdin) = child.stdin.as_mut() {
                            let _ = stdin.write_all(b"\n").and_then(|()| stdin.flush());
                        }
                    }
                }
                Ok(Event::Result(r)) => result = Some(r),
                Err(_) => {} // not ours; stdout is reserved for events anyway
            },
            Err(RecvTimeoutError::Disconnected) => break,
            Err(RecvTimeoutError::Timeout) => {
                kill(&mut child);
                return Err(format!("loadgen timed out after {deadline:?}"));
            }
        }
    }
    let status = wait(&mut child, deadline.saturating_sub(started.elapsed()))?;
    let seconds = started.elapsed().as_secs_f64();
    match result {
        Some(mut result) if status.success() => {
            result.metrics.extend(sampled);
            Ok(Finished { result, seconds })
        }
        _ => Err(format!(
            "loadgen failed ({status}): {}",
            last_line(log).unwrap_or_else(|| "no message".into())
        )),
    }
}

/// Waits for exit, killing the process if it outlives `left`.
fn wait(child: &mut Child, left: Duration) -> Result<std::process::ExitStatus, String> {
    let until = Instant::now() + left;
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Ok(status),
            Ok(None) if Instant::now() < until => std::thread::sleep(Duration::from_millis(10)),
            Ok(None) => {
                kill(child);
                return Err("loadgen did not exit in time".into());
            }
            Err(e) => return Err(e.to_string()),
        }
    }
}

fn kill(child: &mut Child) {
    let _ = child.kill();
    let _ = child.wait();
}

/// The last non-empty line of a log, for error messages.
pub fn last_line(log: &Path) -> Option<String> {
    let text = std::fs::read_to_string(log).ok()?;
    text.lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .map(str::to_string)
}
