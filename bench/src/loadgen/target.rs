//! Where and how to connect: the server address, the upgrade path, raw or
//! WebSocket, and source-address spreading.

use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU32, Ordering};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

use super::handshake::{self, Rng};

/// Number of loopback source addresses client sockets cycle through: 127.0.0.1..=250.
const SOURCE_ADDRESSES: u32 = 250;

/// What `loadgen` connects to.
#[derive(Debug, Clone)]
pub struct Target {
    /// The server's address.
    pub addr: SocketAddr,
    /// Request path of the WebSocket upgrade.
    pub path: String,
    /// Plain TCP: no handshake, no framing.
    pub raw: bool,
    /// Bind client sockets to 127.0.0.x before connecting (loopback targets only).
    pub spread: bool,
}

impl Target {
    /// `raw` (no upgrade, no framing) or `ws`, as reported in results.
    pub fn mode(&self) -> &'static str {
        if self.raw {
            "raw"
        } else {
            "ws"
        }
    }

    /// Opens a TCP connection with TCP_NODELAY. Sockets are spread over 127.0.0.x
    /// source addresses so that TIME_WAIT from earlier runs (and scenarios opening
    /// tens of thousands of connections) never exhausts one address's ephemeral ports.
    pub async fn connect(&self) -> io::Result<TcpStream> {
        static NEXT_SOURCE: AtomicU32 = AtomicU32::new(0);
        let socket = if self.addr.is_ipv4() {
            TcpSocket::new_v4()?
        } else {
            TcpSocket::new_v6()?
        };
        if self.spread && self.addr.ip().is_loopback() && self.addr.is_ipv4() {
            let x = NEXT_SOURCE.fetch_add(1, Ordering::Relaxed) % SOURCE_ADDRESSES + 1;
            let source = Ipv4Addr::new(127, 0, 0, x as u8);
            socket.bind(SocketAddr::new(IpAddr::V4(source), 0))?;
        }
        let stream = socket.connect(self.addr).await?;
        stream.set_nodelay(true)?;
        Ok(stream)
    }

    /// Connects and upgrades. Returns the stream and any bytes the server sent
    /// after its 101 response.
    ///
    /// In raw mode the "upgrade" is a one-byte echo: it proves the server accepted
    /// and served the connection. Without it, connects complete in the kernel alone,
    /// run ahead of a busy server's accept loop and overflow its accept queue.
    pub async fn open(&self) -> io::Result<(TcpStream, Vec<u8>)> {
        let mut stream = self.connect().await?;
        if self.raw {
            stream.write_all(b"x").await?;
            let mut byte = [0u8; 1];
            stream.read_exact(&mut byte).await?;
            return Ok((stream, Vec::new()));
        }
        let rest = handshake::upgrade(&mut stream, self.addr, &self.path, &mut Rng::new()).await?;
        Ok((stream, rest))
    }
}
