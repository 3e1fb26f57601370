//! Command-line flags, one per key of [`KEYS`], generated for clap. Values are kept as the
//! strings the user typed: they are parsed with the same rules as the file's and the
//! environment's, so a bad value is reported the same way (naming the key and the flag).

use clap::parser::ValueSource;
use clap::{Arg, ArgAction, ArgMatches, Args, Command, FromArgMatches};
use toml::Value;

use super::keys::{Arity, Key, KEYS};
use super::layers::{Layer, Source};

/// `--no-X` switches: (flag, key path, help). Each sets its key to `false` and conflicts with
/// the key's own flag. `--no-deflate` is kept for scripts written before `--deflate=false`.
const NEGATIONS: &[(&str, &str, &str)] = &[
    (
        "no-deflate",
        "deflate",
        "Disable permessage-deflate (same as --deflate=false)",
    ),
    (
        "no-socketio",
        "socketio.enabled",
        "Do not serve Socket.IO (same as --socketio=false)",
    ),
];

/// The settings flags the user gave.
#[derive(Debug, Clone, Default)]
pub(crate) struct Flags {
    given: Vec<(&'static Key, String, Vec<String>)>,
}

impl Flags {
    /// The flag layer.
    pub(crate) fn layer(&self) -> Layer {
        let mut layer = Layer::default();
        for (key, flag, values) in &self.given {
            let value = match key.arity {
                Arity::Many => Value::Array(values.iter().cloned().map(Value::String).collect()),
                Arity::One | Arity::Switch => {
                    Value::String(values.last().cloned().unwrap_or_default())
                }
            };
            layer.set(key.path, value, Source::Flag(format!("--{flag}")));
        }
        layer
    }
}

impl Args for Flags {
    fn augment_args(mut cmd: Command) -> Command {
        for key in KEYS {
            let arg = Arg::new(key.path)
                .long(key.flag)
                .value_name(key.value_name)
                .help(key.help)
                .value_parser(clap::builder::ValueParser::string());
            let arg = match key.arity {
                Arity::One => arg.action(ArgAction::Set),
                Arity::Many => arg.action(ArgAction::Append),
                Arity::Switch => arg
                    .action(ArgAction::Set)
                    .num_args(0..=1)
                    .require_equals(true)
                    .default_missing_value("true"),
            };
            cmd = cmd.arg(arg);
        }
        for (flag, path, help) in NEGATIONS {
            cmd = cmd.arg(
                Arg::new(*flag)
                    .long(*flag)
                    .action(ArgAction::SetTrue)
                    .conflicts_with(*path)
                    .help(*help),
            );
        }
        cmd
    }

    fn augment_args_for_update(cmd: Command) -> Command {
        Self::augment_args(cmd)
    }
}

impl FromArgMatches for Flags {
    fn from_arg_matches(matches: &ArgMatches) -> Result<Self, clap::Error> {
        let mut flags = Flags::default();
        flags.update_from_arg_matches(matches)?;
        Ok(flags)
    }

    fn update_from_arg_matches(&mut self, matches: &ArgMatches) -> Result<(), clap::Error> {
        for key in KEYS {
            if matches.value_source(key.path) != Some(ValueSource::CommandLine) {
                continue;
            }
            let values: Vec<String> = matches
                .get_many::<String>(key.path)
                .map(|values| values.cloned().collect())
                .unwrap_or_default();
            self.given.push((key, key.flag.to_owned(), values));
        }
        for (flag, path, _) in NEGATIONS {
            if matches.get_flag(flag) {
                if let Some(key) = KEYS.iter().find(|k| k.path == *path) {
                    self.given
                        .push((key, (*flag).to_owned(), vec!["false".to_owned()]));
                }
            }
        }
        Ok(())
    }
}
