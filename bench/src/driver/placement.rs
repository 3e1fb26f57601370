//! Where and how the processes under measurement run: each pinned to its own CPU
//! with `taskset`, and at a raised priority with `nice` so that other work on a
//! shared machine (builds, fuzzers) takes less time away from them.

use std::path::Path;
use std::process::{Command, Stdio};

use crate::procfs;

/// Niceness for servers and loadgen: CFS then gives them about 10× the CPU
/// share of a normal process on the same core.
const NICE: i32 = -10;

/// CPUs and priority for servers and loadgen.
pub struct Placement {
    server: Option<usize>,
    loadgen: Option<usize>,
    nice: Option<i32>,
}

impl Placement {
    /// Checks that taskset can pin to both CPUs and whether we may raise priority
    /// (root, or CAP_SYS_NICE); falls back, with a note, to what works.
    pub fn check(
        server: usize,
        loadgen: usize,
        renice: bool,
        notes: &mut Vec<String>,
    ) -> Placement {
        let pins = |cpu: usize| {
            Command::new("taskset")
                .args(["-c", &cpu.to_string(), "true"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        };
        let mut placement = Placement {
            server: Some(server),
            loadgen: Some(loadgen),
            nice: None,
        };
        if !(pins(server) && pins(loadgen)) {
            let msg =
                format!("could not pin to CPUs {server} and {loadgen} with taskset; ran unpinned");
            eprintln!("warning: {msg}");
            notes.push(msg);
            placement.server = None;
            placement.loadgen = None;
        } else if server == loadgen {
            notes.push("server and loadgen shared one CPU: the numbers are not comparable".into());
        }
        if renice {
            // `nice` runs the command even when it may not lower the niceness, so
            // ask the inner `nice` what it got.
            let got = Command::new("nice")
                .args(["-n", &NICE.to_string(), "nice"])
                .stderr(Stdio::null())
                .output()
                .ok()
                .and_then(|o| String::from_utf8(o.stdout).ok());
            if got.as_deref().map(str::trim) == Some(NICE.to_string().as_str()) {
                placement.nice = Some(NICE);
            } else {
                notes.push("could not raise priority (needs root): ran at normal priority".into());
            }
        }
        placement
    }

    /// The command that starts a server binary.
    pub fn server(&self, program: &Path) -> Command {
        self.command(self.server, program)
    }

    /// The command that starts loadgen.
    pub fn loadgen(&self, program: &Path) -> Command {
        self.command(self.loadgen, program)
    }

    /// `nice -n N taskset -c CPU program`, minus what is off. Both exec the next
    /// program, so the child's PID is the program's own.
    fn command(&self, cpu: Option<usize>, program: &Path) -> Command {
        let mut words: Vec<String> = Vec::new();
        if let Some(nice) = self.nice {
            words.extend(["nice".into(), "-n".into(), nice.to_string()]);
        }
        if let Some(cpu) = cpu {
            words.extend(["taskset".into(), "-c".into(), cpu.to_string()]);
        }
        let mut cmd;
        if let Some((first, rest)) = words.split_first() {
            cmd = Command::new(first);
            cmd.args(rest).arg(program);
        } else {
            cmd = Command::new(program);
        }
        cmd
    }

    /// The pinned CPUs (none when pinning is unavailable).
    pub fn cpus(&self) -> Vec<usize> {
        self.server.into_iter().chain(self.loadgen).collect()
    }

    /// Busy/total ticks of the server's and loadgen's CPUs, if pinned.
    pub fn core_ticks(&self) -> Option<((u64, u64), (u64, u64))> {
        Some((
            procfs::cpu_ticks(self.server?)?,
            procfs::cpu_ticks(self.loadgen?)?,
        ))
    }

    /// For the report header.
    pub fn describe(&self) -> String {
        let pinning = match (self.server, self.loadgen) {
            (Some(s), Some(l)) => format!("servers on CPU {s}, loadgen on CPU {l} (`taskset -c`)"),
            _ => "not pinned (taskset failed)".into(),
        };
        match self.nice {
            Some(n) => format!("{pinning}, both at `nice -n {n}`"),
            None => format!("{pinning}, normal priority"),
        }
    }
}
