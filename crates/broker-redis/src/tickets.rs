//! [`RedisTickets`]: one-time connection tickets shared by every node, so a ticket issued by
//! one node (`POST /api/ticket`) is accepted by whichever node the client's connection
//! lands on — exactly once: issue is `SET NX PX` (the ticket lives its TTL), redemption is
//! `GETDEL` (atomic: two nodes redeeming the same ticket at once, one gets it).

use std::time::Duration;

use crate::is_short_token;
use crate::Conn;
use switchboard_auth::{new_ticket, BoxFuture, Identity, TicketError, TicketStore};

fn key(ticket: &str) -> String {
    format!("sb:ticket:{ticket}")
}

/// Tickets in Redis (see the module docs).
#[derive(Clone)]
pub struct RedisTickets {
    conn: Conn,
    timeout: Duration,
}

impl std::fmt::Debug for RedisTickets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisTickets").finish_non_exhaustive()
    }
}

impl RedisTickets {
    pub(crate) fn new(conn: Conn, timeout: Duration) -> RedisTickets {
        RedisTickets { conn, timeout }
    }

    async fn query<T: redis::FromRedisValue>(&self, cmd: redis::Cmd) -> Result<T, TicketError> {
        let mut conn = self.conn.clone();
        match tokio::time::timeout(self.timeout, cmd.query_async(&mut conn)).await {
            Ok(Ok(answer)) => Ok(answer),
            Ok(Err(e)) => Err(TicketError::Unavailable(e.to_string())),
            Err(_) => Err(TicketError::Unavailable("no answer in time".to_owned())),
        }
    }
}

impl TicketStore for RedisTickets {
    fn issue(
        &self,
        identity: Identity,
        ttl: Duration,
    ) -> BoxFuture<'_, Result<String, TicketError>> {
        Box::pin(async move {
            let json = serde_json::to_string(&identity)
                .map_err(|e| TicketError::Unavailable(e.to_string()))?;
            loop {
                let ticket = new_ticket()?;
                let mut cmd = redis::cmd("SET");
                cmd.arg(key(&ticket))
                    .arg(&json)
                    .arg("NX")
                    .arg("PX")
                    .arg(ttl.as_millis().max(1).to_string());
                let stored: Option<String> = self.query(cmd).await?;
                // A collision of 256 random bits would need another draw; never a reuse.
                if stored.is_some() {
                    return Ok(ticket);
                }
            }
        })
    }

    fn redeem<'a>(
        &'a self,
        ticket: &'a str,
    ) -> BoxFuture<'a, Result<Option<Identity>, TicketError>> {
        Box::pin(async move {
            if !is_short_token(ticket) {
                return Ok(None);
            }
            let mut cmd = redis::cmd("GETDEL");
            cmd.arg(key(ticket));
            let json: Option<String> = self.query(cmd).await?;
            Ok(json.and_then(|j| serde_json::from_str(&j).ok()))
        })
    }
}
