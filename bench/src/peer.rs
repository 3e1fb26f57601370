//! What the peer servers share: command line, runtime and accept loop, so that
//! they differ only in the library under test.

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use clap::Parser;
use tokio::net::{TcpListener, TcpStream};

/// Command line of every `peer-*-echo` binary.
#[derive(Debug, Parser)]
pub struct PeerArgs {
    /// Address to listen on, e.g. 127.0.0.1:9001.
    #[arg(long)]
    pub listen: SocketAddr,
    /// Runtime worker threads. The default, 1, uses tokio's current_thread runtime:
    /// the driver pins each server to a single core, where a multi-thread runtime
    /// would only add cross-thread wake-ups.
    #[arg(long, default_value_t = 1)]
    pub threads: usize,
}

/// Parses the peer command line, then accepts connections forever, running
/// `handle` on its own task for each one.
pub fn run<F, Fut>(name: &str, handle: F) -> anyhow::Result<()>
where
    F: Fn(TcpStream) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    serve(name, &PeerArgs::parse(), async { Ok(handle) })
}

/// Like [`run`], for a peer with more options than [`PeerArgs`]: `setup` runs on the
/// runtime first (e.g. connects to Redis) and gives the connection handler.
pub fn serve<S, F, Fut>(name: &str, args: &PeerArgs, setup: S) -> anyhow::Result<()>
where
    S: Future<Output = anyhow::Result<F>>,
    F: Fn(TcpStream) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let runtime = if args.threads <= 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(args.threads)
            .enable_all()
            .build()?
    };
    runtime.block_on(async {
        let handle = setup.await?;
        let listener = TcpListener::bind(args.listen).await?;
        eprintln!("{name}: listening on {}", listener.local_addr()?);
        accept_loop(listener, handle).await
    })
}

async fn accept_loop<F, Fut>(listener: TcpListener, handle: F) -> anyhow::Result<()>
where
    F: Fn(TcpStream) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                // Every server under test gets TCP_NODELAY: with Nagle on, pipelined
                // echoes would wait for delayed ACKs and we'd measure timers, not code.
                let _ = stream.set_nodelay(true);
                tokio::spawn(handle(stream));
            }
            Err(e) => {
                // EMFILE and friends: back off instead of spinning on the error.
                eprintln!("accept: {e}");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
}
