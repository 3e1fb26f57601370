//! Where Redis is: one server (`redis://…`) or a Redis Cluster (`redis+cluster://…`), and
//! the command connection to it. Everything above this module sends commands through
//! [`Conn`] without knowing which; what does differ in a cluster is said where it matters:
//! pipelines are split per hash slot (`writer.rs`), rooms fan out over sharded pub/sub
//! (`SPUBLISH`/`SSUBSCRIBE`, `fanout.rs`), and keys that are used together share a hash tag.

use std::time::Duration;

use redis::aio::{ConnectionLike, ConnectionManager};
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, Pipeline, RedisFuture, Value};

use crate::Error;

/// The scheme of a cluster's URL: `redis+cluster://[user:password@]host:port[,host:port…]`.
pub const CLUSTER_SCHEME: &str = "redis+cluster://";

/// Where Redis is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// One server (`redis://…`, as the `redis` crate reads it).
    Single(String),
    /// A cluster, reached first through these nodes (`redis://host:port` each, with the
    /// credentials of the cluster URL); the others are found from them.
    Cluster(Vec<String>),
}

impl Target {
    /// Read a broker URL: `redis://…` or `redis+cluster://[user:password@]h1:p1,h2:p2…`.
    /// A cluster has one database, so a path other than `/` or `/0` is refused.
    pub fn parse(url: &str) -> Result<Target, String> {
        let Some(rest) = url.strip_prefix(CLUSTER_SCHEME) else {
            return Ok(Target::Single(url.to_owned()));
        };
        let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
        let (authority, tail) = rest.split_at(end);
        if !matches!(tail, "" | "/" | "/0") {
            return Err("a Redis Cluster has only database 0: leave the path out".into());
        }
        let (credentials, hosts) = match authority.rsplit_once('@') {
            Some((credentials, hosts)) => (format!("{credentials}@"), hosts),
            None => (String::new(), authority),
        };
        let seeds: Vec<String> = hosts
            .split(',')
            .map(str::trim)
            .filter(|h| !h.is_empty())
            .map(|host| format!("redis://{credentials}{host}"))
            .collect();
        if seeds.is_empty() || hosts.split(',').any(|h| h.trim().starts_with(':')) {
            return Err("names no host: expected redis+cluster://host:port[,host:port…]".into());
        }
        Ok(Target::Cluster(seeds))
    }

    /// A cluster (sharded pub/sub, per-slot pipelines).
    pub fn is_cluster(&self) -> bool {
        matches!(self, Target::Cluster(_))
    }

    /// A cluster client with these timeouts, and a push sender when given (pub/sub over
    /// RESP3: without one, the cluster connection cannot subscribe).
    pub(crate) fn cluster_client(
        seeds: &[String],
        timeout: Duration,
        pushes: Option<tokio::sync::mpsc::UnboundedSender<redis::PushInfo>>,
    ) -> Result<redis::cluster::ClusterClient, Error> {
        let mut builder = redis::cluster::ClusterClientBuilder::new(seeds.to_vec())
            .connection_timeout(timeout)
            .response_timeout(timeout)
            // MOVED/ASK and a node's restart are retried inside the client, but never past
            // the caller's own bound (`broker.timeout`).
            .overall_response_timeout(Some(timeout))
            .retries(3)
            .min_retry_wait(10)
            .max_retry_wait(200);
        if let Some(pushes) = pushes {
            builder = builder
                .use_protocol(redis::ProtocolVersion::RESP3)
                .push_sender(pushes);
        }
        Ok(builder.build()?)
    }

    /// Open the command connection (it reconnects by itself).
    pub(crate) async fn connect(&self, timeout: Duration) -> Result<Conn, Error> {
        match self {
            Target::Single(url) => {
                let client = redis::Client::open(url.as_str())?;
                // The callers bound every operation with their own timeout
                // (`broker.timeout`); the manager's default response timeout (500 ms)
                // would cut them short, answering "unavailable" for a write that still
                // lands.
                let manager = redis::aio::ConnectionManagerConfig::new()
                    .set_response_timeout(Some(timeout))
                    .set_connection_timeout(Some(timeout));
                Ok(Conn::Single(
                    ConnectionManager::new_with_config(client, manager).await?,
                ))
            }
            Target::Cluster(seeds) => {
                let client = Self::cluster_client(seeds, timeout, None)?;
                Ok(Conn::Cluster(client.get_async_connection().await?))
            }
        }
    }
}

/// A command connection to a single Redis or to a cluster (multiplexed, reconnecting by
/// itself; cheap to clone).
#[derive(Clone)]
pub enum Conn {
    /// One server.
    Single(ConnectionManager),
    /// A cluster: each command goes to the node that owns its key's slot.
    Cluster(ClusterConnection),
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Conn::Single(c) => c.req_packed_command(cmd),
            Conn::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Conn::Single(c) => c.req_packed_commands(pipeline, offset, count),
            Conn::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::Single(c) => c.get_db(),
            Conn::Cluster(c) => c.get_db(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_urls_name_their_seed_nodes() {
        assert_eq!(
            Target::parse("redis://127.0.0.1:6379/2"),
            Ok(Target::Single("redis://127.0.0.1:6379/2".into()))
        );
        assert_eq!(
            Target::parse("redis+cluster://127.0.0.1:7001,127.0.0.1:7002"),
            Ok(Target::Cluster(vec![
                "redis://127.0.0.1:7001".into(),
                "redis://127.0.0.1:7002".into()
            ]))
        );
        assert_eq!(
            Target::parse("redis+cluster://app:pw@a:1, b:2/0"),
            Ok(Target::Cluster(vec![
                "redis://app:pw@a:1".into(),
                "redis://app:pw@b:2".into()
            ]))
        );
        for bad in [
            "redis+cluster://",
            "redis+cluster://a:1/3",
            "redis+cluster://:7001",
            "redis+cluster://pw@",
        ] {
            assert!(Target::parse(bad).is_err(), "{bad}");
        }
    }
}
