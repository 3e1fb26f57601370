//! Finds (and unless `--no-build`, builds) the binaries: loadgen, the peers, and
//! switchboard from the root workspace; for the Node peers, `node` (after `npm ci` in
//! bench/node if needed). A server whose binary is missing is
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
    /// Server binaries by binary name (`switchboard` or the peer's).
    pub servers: HashMap<&'static str, PathBuf>,
    /// Binaries that are missing, and why.
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
                "peer-fastwebsockets-broadcast",
                "peer-socketioxide-broadcast",
                "peer-socketioxide-redis-broadcast",
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
        let mut ours = Some(ours);
        for endpoint in servers.iter().flat_map(Server::endpoints) {
            let name = endpoint.kind.bin();
            if bins.servers.contains_key(name) || bins.broken.contains_key(name) {
                continue;
            }
            let bin = match endpoint.kind {
                Kind::Switchboard { .. } => match ours.take() {
                    Some(build) => build(),
                    None => continue,
                },
                Kind::Peer(name) => bench_bins
                    .get(name)
                    .cloned()
                    .ok_or_else(|| format!("{name} was not built")),
                Kind::Node { .. } => super::node::prepare(logs),
            };
            match bin.and_then(existing) {
                Ok(bin) => {
                    bins.servers.insert(name, bin);
                }
                Err(reason) => {
                    // A Node peer that cannot run is an error of the setup, not a warning.
                    let level = match endpoint.kind {
                        Kind::Node { .. } => "error",
                        _ => "warning",
                    };
                    eprintln!("{level}: {name}: {reason}");
                    bins.broken.insert(name, reason);
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
