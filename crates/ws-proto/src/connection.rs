//! The WebSocket connection state machine: frames in, events out; messages in, frames out.
//!
//! Call order (sans-IO, like wsproto / quinn-proto):
//! 1. append bytes read from the socket to a `BytesMut` and call [`Connection::handle_input`]
//!    until it returns `Ok(None)` (it consumes what it decoded);
//! 2. send with [`Connection::send`], [`Connection::send_ping`], [`Connection::close`] or
//!    [`Connection::send_prepared`];
//! 3. write out [`Connection::output`] (advance it by what the socket took);
//! 4. once [`Connection::is_closed`] is true and the output is flushed, shut the socket down.
//!
//! A protocol error is returned once from `handle_input`; the Close frame with the matching
//! code is already queued, and every later call decodes nothing.

use bytes::{Buf, Bytes, BytesMut};

use crate::mask::MaskKeys;
use crate::output::Output;

use crate::close::{CloseCode, CloseFrame, ClosePayloadError};
use crate::config::Config;
use crate::deflate::{DeflateConfig, DeflateParams, Deflater, Inflater};
use crate::error::ProtocolError;
use crate::header::FrameHeader;
use crate::mask::apply_mask;
use crate::message::{Event, MessageKind};
use crate::opcode::OpCode;

/// The longest text frame [`Connection::is_only_heartbeats_with`] may count as a heartbeat.
pub const MAX_TEXT_HEARTBEAT: usize = 16;
use crate::prepared::PreparedMessage;
use crate::role::Role;
use crate::utf8::Utf8Validator;

/// Where the close handshake stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CloseState {
    /// Messages flow both ways.
    Open,
    /// We sent Close and wait for the peer's.
    CloseSent,
    /// Both Close frames exchanged, or the connection failed: nothing more to decode or send.
    Closed,
}

/// A frame whose header has been read and whose payload is still arriving.
#[derive(Debug, Clone, Copy)]
struct FrameInProgress {
    header: FrameHeader,
    /// Payload bytes at the front of the input already unmasked (and UTF-8 checked).
    checked: usize,
    /// Whether this frame carries text that must be checked as it arrives.
    text: bool,
}

/// A fragmented or compressed message being assembled.
#[derive(Debug)]
struct MessageInProgress {
    kind: MessageKind,
    compressed: bool,
    data: Vec<u8>,
    utf8: Utf8Validator,
    /// Compressed bytes received so far (bounded separately from the inflated size).
    wire_len: usize,
}

/// permessage-deflate state of one connection.
#[derive(Debug)]
struct Deflate {
    params: DeflateParams,
    inflater: Inflater,
    deflater: Deflater,
    threshold: usize,
    level: u32,
}

/// One WebSocket connection, in either role. See the module docs for the call order.
#[derive(Debug)]
pub struct Connection {
    role: Role,
    max_message_size: usize,
    deflate: Option<Box<Deflate>>,
    frame: Option<FrameInProgress>,
    message: Option<MessageInProgress>,
    state: CloseState,
    close_received: bool,
    /// The code of the close handshake: the first Close frame, ours or the peer's (1005 for
    /// a Close without a code).
    close_code: Option<u16>,
    /// Data messages queued so far (for metrics).
    messages_sent: u64,
    out: Output,
    /// The client's masking keys (`None` for a server: one pointer in every idle server
    /// connection).
    mask_keys: Option<Box<MaskKeys>>,
}

/// A [`Connection`] between messages with nothing to write, in its smallest form: what a
/// parked connection holds (40 bytes instead of 184: no frame or message in progress, no
/// output queue). [`IdleConnection::into_active`] gives the full connection back.
#[derive(Debug)]
pub struct IdleConnection {
    role: Role,
    state: CloseState,
    close_received: bool,
    close_code: Option<u16>,
    max_message_size: usize,
    messages_sent: u64,
    deflate: Option<Box<Deflate>>,
    mask_keys: Option<Box<MaskKeys>>,
}

impl IdleConnection {
    /// The connection, ready for input and output.
    pub fn into_active(self) -> Connection {
        let IdleConnection {
            role,
            state,
            close_received,
            close_code,
            max_message_size,
            messages_sent,
            deflate,
            mask_keys,
        } = self;
        Connection {
            role,
            max_message_size,
            deflate,
            frame: None,
            message: None,
            state,
            close_received,
            close_code,
            messages_sent,
            out: Output::default(),
            mask_keys,
        }
    }

    /// See [`Connection::close_code`].
    pub fn close_code(&self) -> Option<u16> {
        self.close_code
    }

    /// See [`Connection::messages_sent`].
    pub fn messages_sent(&self) -> u64 {
        self.messages_sent
    }
}

impl Connection {
    /// A server-side connection after a successful handshake.
    pub fn server(config: &Config) -> Connection {
        Connection::new(Role::Server, config)
    }

    /// A client-side connection: frames are masked with keys from the OS's CSPRNG.
    pub fn client(config: &Config) -> Connection {
        Connection::new(Role::Client, config)
    }

    fn new(role: Role, config: &Config) -> Connection {
        Connection {
            role,
            max_message_size: config.max_message_size,
            deflate: None,
            frame: None,
            message: None,
            state: CloseState::Open,
            close_received: false,
            close_code: None,
            messages_sent: 0,
            out: Output::default(),
            mask_keys: (role == Role::Client).then(Box::default),
        }
    }

    /// Enable permessage-deflate with the parameters agreed in the handshake. `config` gives
    /// the local policy for the threshold and the compression level.
    pub fn with_deflate(mut self, params: DeflateParams, config: &DeflateConfig) -> Connection {
        // Our compressor's window and context rules are the ones the *peer* will decode with.
        let (bits, keep) = match self.role {
            Role::Server => (
                params.server_max_window_bits,
                !params.server_no_context_takeover,
            ),
            Role::Client => (
                params.client_max_window_bits,
                !params.client_no_context_takeover,
            ),
        };
        self.deflate = Some(Box::new(Deflate {
            params,
            inflater: Inflater::default(),
            deflater: Deflater::new(bits.max(9), config.level, keep),
            threshold: config.compression_threshold,
            level: config.level,
        }));
        self
    }

    /// Our role.
    pub fn role(&self) -> Role {
        self.role
    }

    /// The agreed permessage-deflate parameters, if compression is on.
    pub fn deflate_params(&self) -> Option<&DeflateParams> {
        self.deflate.as_ref().map(|d| &d.params)
    }

    /// The code of the closing handshake, once one started: the code of the first Close
    /// frame sent or received (1005 when the peer's Close had no code).
    pub fn close_code(&self) -> Option<u16> {
        self.close_code
    }

    /// Data messages (text and binary) queued for sending so far.
    pub fn messages_sent(&self) -> u64 {
        self.messages_sent
    }

    /// True once no more frames will be decoded or sent: the close handshake completed or the
    /// connection failed. Flush [`Connection::output`], then close the socket.
    pub fn is_closed(&self) -> bool {
        self.state == CloseState::Closed
    }

    /// True while application messages may be sent.
    pub fn is_open(&self) -> bool {
        self.state == CloseState::Open
    }

    /// Whether a partial frame or message is buffered (the connection is not idle).
    pub fn is_mid_message(&self) -> bool {
        self.frame.is_some() || self.message.is_some()
    }

    /// Whether `buf` is nothing but one or more complete, valid Ping or Pong frames: the
    /// connection is open, no frame or message is in progress, and each frame is final,
    /// without RSV bits, masked as the role requires, with at most 125 bytes of payload.
    ///
    /// Decoding such bytes with [`Connection::handle_input`] yields only `Ping`/`Pong` events
    /// (the Pongs that answer the Pings are queued): a caller holding an idle connection
    /// without its application can let the codec handle them. An empty `buf` is not "only
    /// heartbeats".
    pub fn is_only_heartbeats(&self, buf: &[u8]) -> bool {
        self.is_only_heartbeats_with(buf, |_| false)
    }

    /// [`Connection::is_only_heartbeats`], where a text frame also counts as a heartbeat when
    /// it is final, uncompressed, at most [`MAX_TEXT_HEARTBEAT`] bytes, and `is_text_heartbeat`
    /// accepts its (unmasked) payload: an application protocol's own heartbeat, such as
    /// Engine.IO's pong `3`. Decoding such bytes yields `Message` events for those frames.
    pub fn is_only_heartbeats_with(
        &self,
        buf: &[u8],
        is_text_heartbeat: impl Fn(&[u8]) -> bool,
    ) -> bool {
        if self.state != CloseState::Open || self.is_mid_message() || buf.is_empty() {
            return false;
        }
        let mut rest = buf;
        while !rest.is_empty() {
            let Ok(Some((header, header_len))) = FrameHeader::parse(rest) else {
                return false;
            };
            let frame_len = header_len + header.payload_len as usize;
            let well_masked = header.mask.is_some() == self.role.expects_masked_input();
            if !well_masked || header.rsv1 || rest.len() < frame_len {
                return false;
            }
            let heartbeat = match header.opcode {
                // `parse` already refused long or fragmented control frames.
                OpCode::Ping | OpCode::Pong => true,
                OpCode::Text if header.fin && header.payload_len <= MAX_TEXT_HEARTBEAT as u64 => {
                    let mut payload = [0u8; MAX_TEXT_HEARTBEAT];
                    let payload = &mut payload[..header.payload_len as usize];
                    payload.copy_from_slice(&rest[header_len..frame_len]);
                    if let Some(key) = header.mask {
                        apply_mask(payload, key, 0);
                    }
                    is_text_heartbeat(payload)
                }
                _ => false,
            };
            if !heartbeat {
                return false;
            }
            rest = &rest[frame_len..];
        }
        true
    }

    /// The connection in its idle form, when no frame or message is in progress and nothing
    /// waits to be written; otherwise the connection itself, unchanged.
    #[allow(clippy::result_large_err)] // the `Err` is the connection handed back, not an error
    pub fn into_idle(self) -> Result<IdleConnection, Connection> {
        if self.is_mid_message() || !self.out.is_empty() {
            return Err(self);
        }
        let Connection {
            role,
            max_message_size,
            deflate,
            state,
            close_received,
            close_code,
            messages_sent,
            mask_keys,
            ..
        } = self;
        Ok(IdleConnection {
            role,
            state,
            close_received,
            close_code,
            max_message_size,
            messages_sent,
            deflate,
            mask_keys,
        })
    }

    /// Bytes waiting to be written to the socket. Advance it by the number of bytes written.
    pub fn output(&mut self) -> &mut Output {
        &mut self.out
    }

    /// Release the output buffer's memory if it is empty (call before the connection idles).
    pub fn release_idle_buffers(&mut self) {
        self.out.release_if_empty();
    }

    /// Decode the next event from the front of `input`, consuming the bytes it used.
    ///
    /// `Ok(None)`: need more input. On `Err`, the Close frame with the error's code is queued
    /// and the connection is closed: flush the output and close the socket.
    pub fn handle_input(&mut self, input: &mut BytesMut) -> Result<Option<Event>, ProtocolError> {
        if self.state == CloseState::Closed {
            input.clear();
            return Ok(None);
        }
        match self.decode(input) {
            Ok(event) => Ok(event),
            Err(e) => {
                self.fail(e);
                input.clear();
                Err(e)
            }
        }
    }

    fn fail(&mut self, e: ProtocolError) {
        if self.state == CloseState::Open {
            self.write_close(&CloseFrame::new(e.close_code(), &e.to_string()));
        }
        self.state = CloseState::Closed;
        self.frame = None;
        self.message = None;
    }

    fn decode(&mut self, input: &mut BytesMut) -> Result<Option<Event>, ProtocolError> {
        loop {
            let frame = match self.frame {
                Some(f) => f,
                None => match FrameHeader::parse(input)? {
                    None => return Ok(None),
                    Some((header, len)) => {
                        let text = self.check_header(&header)?;
                        input.advance(len);
                        let f = FrameInProgress {
                            header,
                            checked: 0,
                            text,
                        };
                        self.frame = Some(f);
                        f
                    }
                },
            };
            // `check_header` bounded payload_len by the message limit, which fits in usize.
            let len = frame.header.payload_len as usize;
            if input.len() < len {
                self.check_partial_text(input)?;
                return Ok(None);
            }
            self.frame = None;
            let mut payload = input.split_to(len);
            if let Some(key) = frame.header.mask {
                apply_mask(&mut payload[frame.checked..], key, frame.checked);
            }
            if let Some(event) = self.handle_frame(frame, payload)? {
                return Ok(Some(event));
            }
        }
    }

    /// Rules that depend on the connection: masking, RSV1, fragmentation order, size limit.
    /// Returns whether the payload is plain text to be UTF-8 checked as it arrives.
    fn check_header(&self, h: &FrameHeader) -> Result<bool, ProtocolError> {
        match (self.role.expects_masked_input(), h.mask.is_some()) {
            (true, false) => return Err(ProtocolError::UnmaskedFrame),
            (false, true) => return Err(ProtocolError::MaskedFrame),
            _ => {}
        }
        if h.opcode.is_control() {
            if h.rsv1 {
                return Err(ProtocolError::ReservedBits);
            }
            return Ok(false);
        }
        let (kind, compressed, so_far) = match (h.opcode, &self.message) {
            (OpCode::Continuation, None) => return Err(ProtocolError::UnexpectedContinuation),
            (OpCode::Continuation, Some(m)) => {
                // RSV1 marks only the first frame of a compressed message (RFC 7692 §6.1).
                if h.rsv1 {
                    return Err(ProtocolError::ReservedBits);
                }
                let so_far = if m.compressed {
                    m.wire_len
                } else {
                    m.data.len()
                };
                (m.kind, m.compressed, so_far)
            }
            (_, Some(_)) => return Err(ProtocolError::ExpectedContinuation),
            (opcode, None) => {
                if h.rsv1 && self.deflate.is_none() {
                    return Err(ProtocolError::ReservedBits);
                }
                let kind = if opcode == OpCode::Text {
                    MessageKind::Text
                } else {
                    MessageKind::Binary
                };
                (kind, h.rsv1, 0)
            }
        };
        // Compressed data is bounded too, with slack for incompressible input (deflate adds
        // 5 bytes per 64 KiB stored block); the inflated size is checked while inflating.
        let limit = if compressed {
            self.max_message_size + self.max_message_size / 1024 + 64
        } else {
            self.max_message_size
        };
        if (so_far as u64).saturating_add(h.payload_len) > limit as u64 {
            return Err(ProtocolError::MessageTooBig {
                limit: self.max_message_size,
            });
        }
        Ok(kind == MessageKind::Text && !compressed)
    }

    /// Unmask and UTF-8-check the part of a text frame received so far, so that invalid text
    /// fails the connection before the rest of the frame arrives (Autobahn 6.4.3/6.4.4).
    fn check_partial_text(&mut self, input: &mut BytesMut) -> Result<(), ProtocolError> {
        let Some(frame) = self.frame.as_mut() else {
            return Ok(());
        };
        if !frame.text || input.len() <= frame.checked {
            return Ok(());
        }
        let new = &mut input[frame.checked..];
        if let Some(key) = frame.header.mask {
            apply_mask(new, key, frame.checked);
        }
        // The first frame of a text message starts the message here, so that the validator's
        // state carries over to the rest of the frame and to later fragments.
        let message = self.message.get_or_insert_with(|| MessageInProgress {
            kind: MessageKind::Text,
            compressed: false,
            data: Vec::new(),
            utf8: Utf8Validator::new(),
            wire_len: 0,
        });
        message
            .utf8
            .feed(new)
            .map_err(|_| ProtocolError::InvalidUtf8)?;
        frame.checked = input.len();
        Ok(())
    }

    fn handle_frame(
        &mut self,
        frame: FrameInProgress,
        payload: BytesMut,
    ) -> Result<Option<Event>, ProtocolError> {
        let h = frame.header;
        match h.opcode {
            OpCode::Ping => {
                let payload = payload.freeze();
                if self.state == CloseState::Open {
                    self.write_frame(OpCode::Pong, false, &payload);
                }
                Ok(Some(Event::Ping(payload)))
            }
            OpCode::Pong => Ok(Some(Event::Pong(payload.freeze()))),
            OpCode::Close => self.handle_close(&payload).map(Some),
            OpCode::Text | OpCode::Binary | OpCode::Continuation => {
                self.handle_data(frame, payload)
            }
        }
    }

    fn handle_close(&mut self, payload: &[u8]) -> Result<Event, ProtocolError> {
        let frame = CloseFrame::parse(payload).map_err(|e| match e {
            ClosePayloadError::Truncated => ProtocolError::TruncatedClosePayload,
            ClosePayloadError::InvalidCode(c) => ProtocolError::InvalidCloseCode(c),
            ClosePayloadError::InvalidUtf8 => ProtocolError::InvalidUtf8,
        })?;
        self.close_received = true;
        self.close_code
            .get_or_insert(frame.as_ref().map_or(1005, |f| f.code.as_u16()));
        if self.state == CloseState::Open {
            // Echo the peer's code (RFC 6455 §5.5.1); an empty close is answered with an
            // empty close.
            match &frame {
                Some(f) => self.write_close(&CloseFrame::new(f.code, "")),
                None => self.write_frame(OpCode::Close, false, &[]),
            }
        }
        self.state = CloseState::Closed;
        self.message = None;
        Ok(Event::Close(frame))
    }

    fn handle_data(
        &mut self,
        frame: FrameInProgress,
        payload: BytesMut,
    ) -> Result<Option<Event>, ProtocolError> {
        let h = frame.header;
        // Fast path: a whole message in one plain frame is handed out without copying.
        let whole_plain = h.fin && !h.rsv1 && h.opcode != OpCode::Continuation;
        if whole_plain && self.message.as_ref().is_none_or(|m| m.data.is_empty()) {
            let validator = self.message.take().map(|m| m.utf8);
            let payload = payload.freeze();
            if h.opcode == OpCode::Text {
                let mut v = validator.unwrap_or_default();
                v.feed(&payload[frame.checked..])
                    .and_then(|()| v.finish())
                    .map_err(|_| ProtocolError::InvalidUtf8)?;
                return Ok(self.deliver(Event::Text(payload)));
            }
            return Ok(self.deliver(Event::Binary(payload)));
        }

        let message = match self.message.as_mut() {
            Some(m) => m,
            None => self.message.insert(MessageInProgress {
                kind: if h.opcode == OpCode::Text {
                    MessageKind::Text
                } else {
                    MessageKind::Binary
                },
                compressed: h.rsv1,
                data: Vec::new(),
                utf8: Utf8Validator::new(),
                wire_len: 0,
            }),
        };
        if h.rsv1 {
            message.compressed = true;
        }
        let limit = self.max_message_size;
        if message.compressed {
            message.wire_len += payload.len();
            let deflate = self.deflate.as_mut().ok_or(ProtocolError::ReservedBits)?;
            let start = message.data.len();
            deflate
                .inflater
                .inflate(&payload, &mut message.data, limit)?;
            if h.fin {
                let keep = match self.role {
                    Role::Server => !deflate.params.client_no_context_takeover,
                    Role::Client => !deflate.params.server_no_context_takeover,
                };
                deflate
                    .inflater
                    .finish_message(&mut message.data, limit, keep)?;
            }
            if message.kind == MessageKind::Text {
                message
                    .utf8
                    .feed(&message.data[start..])
                    .map_err(|_| ProtocolError::InvalidUtf8)?;
            }
        } else {
            if message.kind == MessageKind::Text {
                message
                    .utf8
                    .feed(&payload[frame.checked..])
                    .map_err(|_| ProtocolError::InvalidUtf8)?;
            }
            message.data.extend_from_slice(&payload);
        }
        if !h.fin {
            return Ok(None);
        }
        let mut message = self
            .message
            .take()
            .ok_or(ProtocolError::UnexpectedContinuation)?;
        let data = Bytes::from(std::mem::take(&mut message.data));
        Ok(self.deliver(match message.kind {
            MessageKind::Text => {
                message
                    .utf8
                    .finish()
                    .map_err(|_| ProtocolError::InvalidUtf8)?;
                Event::Text(data)
            }
            MessageKind::Binary => Event::Binary(data),
        }))
    }

    /// Data that arrives after we sent Close is read (to find the peer's Close) but dropped.
    fn deliver(&self, event: Event) -> Option<Event> {
        (self.state == CloseState::Open).then_some(event)
    }

    /// Queue a data message, compressed when permessage-deflate is on and the message is at
    /// least the threshold. Ignored once the close handshake started.
    pub fn send(&mut self, kind: MessageKind, payload: &[u8]) {
        if self.state != CloseState::Open {
            return;
        }
        let opcode = kind.into();
        self.messages_sent += 1;
        if let Some(d) = self.deflate.as_mut() {
            if payload.len() >= d.threshold {
                let mut z = Vec::new();
                if d.deflater.compress(payload, &mut z) {
                    self.write_frame(opcode, true, &z);
                    return;
                }
            }
        }
        self.write_frame(opcode, false, payload);
    }

    /// Like [`Connection::send`], but a large uncompressed payload is queued by reference
    /// (written with vectored I/O, not copied). Server role only; otherwise it copies.
    pub fn send_bytes(&mut self, kind: MessageKind, payload: Bytes) {
        let compress = self
            .deflate
            .as_ref()
            .is_some_and(|d| payload.len() >= d.threshold);
        if self.role == Role::Client || compress || self.state != CloseState::Open {
            return self.send(kind, &payload);
        }
        self.messages_sent += 1;
        let header = FrameHeader::server(kind.into(), false, payload.len());
        // Written in place: no allocation per frame.
        header.encode(self.out.tail_mut());
        self.out.grew(header.encoded_len());
        self.out.push_bytes(payload);
    }

    /// Queue a pre-encoded broadcast frame (server role). Picks the compressed encoding when
    /// this connection can decode it. Returns the number of bytes queued.
    pub fn send_prepared(&mut self, message: &PreparedMessage) -> usize {
        if self.state != CloseState::Open {
            return 0;
        }
        self.messages_sent += 1;
        let bytes = self.prepared_frame(message);
        let len = bytes.len();
        // Small frames are copied into the coalescing buffer without touching the shared
        // reference count (an atomic every recipient on every core would contend on); large
        // ones are queued by reference.
        self.out.push_shared(bytes);
        len
    }

    /// The encoding of `message` this connection should receive (server role): the shared
    /// compressed frame when its parameters allow, else the shared plain frame.
    pub fn prepared_frame<'m>(&self, message: &'m PreparedMessage) -> &'m Bytes {
        match self.deflate.as_deref() {
            Some(d) if d.params.server_no_context_takeover => message.frame_for(Some((
                d.params.server_max_window_bits,
                d.level,
                d.threshold,
            ))),
            _ => message.frame_for(None),
        }
    }

    /// Queue a Ping (payload cut to 125 bytes).
    pub fn send_ping(&mut self, payload: &[u8]) {
        if self.state != CloseState::Closed {
            self.write_frame(OpCode::Ping, false, &payload[..payload.len().min(125)]);
        }
    }

    /// Queue a Pong (payload cut to 125 bytes).
    pub fn send_pong(&mut self, payload: &[u8]) {
        if self.state != CloseState::Closed {
            self.write_frame(OpCode::Pong, false, &payload[..payload.len().min(125)]);
        }
    }

    /// Start the close handshake. No-op if it already started.
    pub fn close(&mut self, code: CloseCode, reason: &str) {
        if self.state == CloseState::Open {
            self.write_close(&CloseFrame::new(code, reason));
            self.state = CloseState::CloseSent;
            self.message = None;
        }
    }

    fn write_close(&mut self, frame: &CloseFrame) {
        self.close_code.get_or_insert(frame.code.as_u16());
        let mut payload = Vec::with_capacity(2 + frame.reason.len());
        frame.encode_payload(&mut payload);
        self.write_frame(OpCode::Close, false, &payload);
    }

    fn write_frame(&mut self, opcode: OpCode, compressed: bool, payload: &[u8]) {
        let mask = match self.role {
            Role::Server => None,
            Role::Client => Some(self.next_mask()),
        };
        let header = FrameHeader {
            fin: true,
            rsv1: compressed,
            opcode,
            mask,
            payload_len: payload.len() as u64,
        };
        // Written in place: no allocation per frame.
        let head_len = header.encoded_len();
        let tail = self.out.tail_mut();
        tail.reserve(head_len + payload.len());
        header.encode(tail);
        let start = tail.len();
        tail.extend_from_slice(payload);
        if let Some(key) = mask {
            apply_mask(&mut tail[start..], key, 0);
        }
        self.out.grew(head_len + payload.len());
    }

    fn next_mask(&mut self) -> [u8; 4] {
        self.mask_keys.get_or_insert_with(Box::default).next_key()
    }
}

#[cfg(test)]
mod tests;
