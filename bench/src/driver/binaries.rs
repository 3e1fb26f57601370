//! Finds (and unless `--no-build`, builds) the binaries: loadgen, the peers, and
//! switchboard from the root workspace. A server whose binary is missing is
//! reported, not fatal: its column just says `failed`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::Context;

use super::args::Args;
use super::cargo;
use super::servers::{Kind, Server};

/// Paths of the binaries to run.
pub struct Binaries {
    /// The load generator.
    pub loadgen: PathBuf,
    /// Server binaries by server name.
    pub servers: HashMap<&'static str, PathBuf>,
    /// Servers without a binary, and why.
    pub broken: HashMap<&'static str, String>,
}

impl Binaries {
    /// Builds what is needed and returns the paths.
    pub fn get(
        args: &Args,
        bench_dir: &Path,
        root: &Path,
        logs: &Path,
        servers: &[Server],
    ) -> anyhow::Result<Binaries> {
        let ours = || -> Result<PathBuf, String> {
            if let Some(bin) = &args.switchboard_bin {
                return existing(bin.clone());
            }
            if args.no_build {
                return existing(root.join("target").join("release").join("switchboard"));
            }
            let log = logs.join("build-switchboard.log");
            eprintln!("building switchboard (log: {})", log.display());
            let built = cargo::build(&root.join("Cargo.toml"), &["-p", "switchboard"], Some(&log))?;
            built
                .get("switchboard")
                .cloned()
                .ok_or_else(|| "the build produced no `switchboard` binary".into())
        };
        let bench_bins: HashMap<String, PathBuf> = if args.no_build {
            let dir = std::env::current_exe()?
                .parent()
                .context("no directory for the current executable")?
                .to_path_buf();
            [
                "loadgen",
                "peer-tcp-echo",
                "peer-tungstenite-echo",
                "peer-fastwebsockets-echo",
            ]
            .into_iter()
            .map(|name| (name.to_string(), dir.join(name)))
            .collect()
        } else {
            eprintln!("building the bench binaries");
            cargo::build(&bench_dir.join("Cargo.toml"), &["--bins"], None)
                .map_err(|e| anyhow::anyhow!("building bench binaries: {e}"))?
        };
        let loadgen = bench_bins
            .get("loadgen")
            .cloned()
            .context("loadgen was not built")?;
        let mut bins = Binaries {
            loadgen,
            servers: HashMap::new(),
            broken: HashMap::new(),
        };
        for server in servers {
            let bin = match server.kind {
                Kind::Switchboard => ours(),
                Kind::Peer(name) => bench_bins
                    .get(name)
                    .cloned()
                    .ok_or_else(|| format!("{name} was not built")),
            };
            match bin.and_then(existing) {
                Ok(bin) => {
                    bins.servers.insert(server.name, bin);
                }
                Err(reason) => {
                    eprintln!("warning: {}: {reason}", server.name);
                    bins.broken.insert(server.name, reason);
                }
            }
        }
        Ok(bins)
    }
}

fn existing(path: PathBuf) -> Result<PathBuf, String> {
    if path.is_file() {
        Ok(path)
    } else {
        Err(format!("no binary at {}", path.display()))
    }
}
