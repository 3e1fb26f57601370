//! The raw Engine.IO echo of `--echo` (`/engine.io/`): every message packet comes back as
//! it came, text as text and binary as binary (conformance runs with any Engine.IO client).

use switchboard_engineio_proto::Message;

use super::app::{App, Out};

/// Echoes every message.
#[derive(Debug, Default)]
pub(crate) struct EngineEcho;

impl App for EngineEcho {
    fn on_message(&mut self, message: Message, out: &mut Out<'_>) {
        out.send(message);
    }
}
