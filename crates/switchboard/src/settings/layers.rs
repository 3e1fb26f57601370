//! The configuration layers: a TOML file, `SWITCHBOARD_*` environment variables and
//! command-line flags. Each produces a `toml::Table` of the keys it sets, with the origin of
//! every value; [`Merged`] lays them over each other (later wins; tables merge key by key,
//! arrays and scalars are replaced whole).

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fmt;
use std::path::{Path, PathBuf};

use toml::{Table, Value};

use super::keys::{self, ENV_API_KEY, ENV_CONFIG, ENV_IGNORED, ENV_JWT_SECRET, ENV_RUST_LOG};
use super::ConfigError;

/// Where a value came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Source {
    /// The configuration file.
    File(PathBuf),
    /// An environment variable.
    Env(String),
    /// A command-line flag (with its dashes).
    Flag(String),
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::File(path) => write!(f, "{}", path.display()),
            Source::Env(var) => f.write_str(var),
            Source::Flag(flag) => f.write_str(flag),
        }
    }
}

/// The keys one layer sets.
#[derive(Debug, Default)]
pub(crate) struct Layer {
    table: Table,
    /// Origin of each leaf, by dotted path.
    origins: BTreeMap<String, Source>,
}

impl Layer {
    /// Set the value at a dotted path (`tls.cert`), creating sections as needed.
    pub(crate) fn set(&mut self, path: &str, value: Value, source: Source) {
        let mut table = &mut self.table;
        let mut segments = path.split('.').peekable();
        while let Some(segment) = segments.next() {
            if segments.peek().is_none() {
                table.insert(segment.to_owned(), value);
                break;
            }
            let entry = table
                .entry(segment.to_owned())
                .or_insert_with(|| Value::Table(Table::new()));
            if !entry.is_table() {
                *entry = Value::Table(Table::new());
            }
            let Value::Table(next) = entry else {
                unreachable!("made a table just above")
            };
            table = next;
        }
        self.origins.insert(path.to_owned(), source);
    }
}

/// The layers merged so far.
#[derive(Debug, Default)]
pub(crate) struct Merged {
    pub(crate) table: Table,
    origins: BTreeMap<String, Source>,
}

impl Merged {
    /// Lay `layer` over what is there.
    pub(crate) fn apply(&mut self, layer: Layer) {
        for path in layer.origins.keys() {
            // A replaced value's old origins (of it or of anything under it) no longer hold.
            let nested = |p: &String| {
                p == path
                    || p.starts_with(&format!("{path}."))
                    || p.starts_with(&format!("{path}["))
            };
            self.origins.retain(|p, _| !nested(p));
        }
        merge(&mut self.table, layer.table);
        self.origins.extend(layer.origins);
    }

    /// Where the value at `path` came from (`history.rooms[0].max_age` finds the origin of
    /// `history.rooms`); `None` for a default.
    pub(crate) fn origin(&self, path: &str) -> Option<&Source> {
        let mut candidate = path;
        loop {
            if let Some(source) = self.origins.get(candidate) {
                return Some(source);
            }
            candidate = &candidate[..candidate.rfind(['.', '['])?];
        }
    }
}

fn merge(base: &mut Table, over: Table) {
    for (key, value) in over {
        match (base.get_mut(&key), value) {
            (Some(Value::Table(base)), Value::Table(over)) => merge(base, over),
            (_, value) => {
                base.insert(key, value);
            }
        }
    }
}

/// The file layer.
pub(crate) fn file_layer(path: &Path) -> Result<Layer, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
        key: None,
        message: format!("cannot read {}: {e}", path.display()),
        source: None,
    })?;
    let table: Table = toml::from_str(&text).map_err(|e| ConfigError {
        key: None,
        message: format!("{}: {}", path.display(), e.to_string().trim_end()),
        source: None,
    })?;
    let mut origins = BTreeMap::new();
    leaf_paths(&table, "", &mut |p| {
        origins.insert(p, Source::File(path.to_owned()));
    });
    Ok(Layer { table, origins })
}

fn leaf_paths(table: &Table, prefix: &str, out: &mut impl FnMut(String)) {
    for (key, value) in table {
        let path = if prefix.is_empty() {
            key.clone()
        } else {
            format!("{prefix}.{key}")
        };
        match value {
            Value::Table(t) => leaf_paths(t, &path, out),
            _ => out(path),
        }
    }
}

/// What the environment says: its layer, and the file named by `SWITCHBOARD_CONFIG`.
#[derive(Debug, Default)]
pub(crate) struct EnvLayer {
    pub(crate) layer: Layer,
    pub(crate) config_file: Option<PathBuf>,
}

/// The environment layer: `SWITCHBOARD_FOO_BAR` sets `foo_bar`, `SWITCHBOARD_TLS__CERT` sets
/// `tls.cert` (`__` separates a section). Values stay strings; the settings' types parse them.
/// Unknown names become unknown keys, which the settings reject naming the variable.
pub(crate) fn env_layer<I, K, V>(vars: I) -> Result<EnvLayer, ConfigError>
where
    I: IntoIterator<Item = (K, V)>,
    K: Into<OsString>,
    V: Into<OsString>,
{
    let mut env = EnvLayer::default();
    let mut rust_log = None;
    // Singular aliases of list keys: (variable, key, value).
    let mut aliases: Vec<(&'static str, &'static str, String)> = Vec::new();
    for (name, value) in vars {
        let name = name.into();
        let Some(name) = name.to_str() else { continue };
        if !name.starts_with("SWITCHBOARD_") && name != ENV_RUST_LOG {
            continue;
        }
        if ENV_IGNORED.contains(&name) {
            continue;
        }
        let value = value.into().into_string().map_err(|_| ConfigError {
            key: None,
            message: format!("{name}: not valid UTF-8"),
            source: None,
        })?;
        let source = Source::Env(name.to_owned());
        match name {
            ENV_RUST_LOG => rust_log = Some(value),
            ENV_CONFIG => env.config_file = Some(PathBuf::from(value)),
            // One key or secret, taken whole (it may contain a comma).
            ENV_API_KEY => aliases.push((ENV_API_KEY, "api_keys", value)),
            ENV_JWT_SECRET => aliases.push((ENV_JWT_SECRET, "auth.jwt.secrets", value)),
            _ => {
                let path = name["SWITCHBOARD_".len()..]
                    .to_lowercase()
                    .replace("__", ".");
                env.layer.set(&path, Value::String(value), source);
            }
        }
    }
    if let Some(filter) = rust_log {
        if !env.layer.origins.contains_key("log_level") {
            env.layer.set(
                "log_level",
                Value::String(filter),
                Source::Env(ENV_RUST_LOG.to_owned()),
            );
        }
    }
    for (variable, path, value) in aliases {
        let plural = keys::find(path).map(|k| k.env()).unwrap_or_default();
        if env.layer.origins.contains_key(path) {
            return Err(ConfigError {
                key: Some(path.to_owned()),
                message: format!("set either {variable} or {plural}, not both"),
                source: Some(Source::Env(variable.to_owned())),
            });
        }
        env.layer.set(
            path,
            Value::Array(vec![Value::String(value)]),
            Source::Env(variable.to_owned()),
        );
    }
    Ok(env)
}
