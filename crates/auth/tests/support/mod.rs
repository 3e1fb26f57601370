//! Test helpers: key files, signing, and a loopback HTTP server whose answers a test controls.

#![allow(dead_code, unreachable_pub, clippy::unwrap_used)]

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{json, Map, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

pub fn key_path(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/keys")
        .join(name)
}

pub fn read_key(name: &str) -> Vec<u8> {
    std::fs::read(key_path(name)).unwrap()
}

pub fn now() -> u64 {
    switchboard_auth::unix_now()
}

/// Claims for `sub` valid for an hour, plus `extra`.
pub fn claims(sub: &str, extra: Value) -> Map<String, Value> {
    let mut map = Map::new();
    map.insert("sub".into(), sub.into());
    map.insert("exp".into(), (now() + 3600).into());
    if let Value::Object(extra) = extra {
        map.extend(extra);
    }
    map
}

/// The private key (or secret) that signs `alg` in these tests.
pub fn encoding_key(alg: Algorithm) -> EncodingKey {
    match alg {
        Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512 => {
            EncodingKey::from_secret(b"test-secret")
        }
        Algorithm::ES256 => EncodingKey::from_ec_pem(&read_key("ec256.key")).unwrap(),
        Algorithm::ES384 => EncodingKey::from_ec_pem(&read_key("ec384.key")).unwrap(),
        Algorithm::EdDSA => EncodingKey::from_ed_pem(&read_key("ed25519.key")).unwrap(),
        _ => EncodingKey::from_rsa_pem(&read_key("rsa.key")).unwrap(),
    }
}

pub fn sign(alg: Algorithm, kid: Option<&str>, claims: &Map<String, Value>) -> String {
    sign_with(alg, kid, claims, &encoding_key(alg))
}

pub fn sign_with(
    alg: Algorithm,
    kid: Option<&str>,
    claims: &Map<String, Value>,
    key: &EncodingKey,
) -> String {
    let mut header = Header::new(alg);
    header.kid = kid.map(str::to_owned);
    jsonwebtoken::encode(&header, claims, key).unwrap()
}

/// A JWKS document holding the named `tests/keys/*.jwk.json` keys.
pub fn jwks(names: &[&str]) -> String {
    let keys: Vec<Value> = names
        .iter()
        .map(|n| serde_json::from_slice(&read_key(&format!("{n}.jwk.json"))).unwrap())
        .collect();
    json!({ "keys": keys }).to_string()
}

/// What the loopback server answers.
#[derive(Clone, Debug)]
pub struct Reply {
    pub status: u16,
    pub body: String,
    pub delay: Duration,
}

impl Reply {
    pub fn ok(body: impl Into<String>) -> Reply {
        Reply {
            status: 200,
            body: body.into(),
            delay: Duration::ZERO,
        }
    }
    pub fn status(status: u16) -> Reply {
        Reply {
            status,
            body: "{}".into(),
            delay: Duration::ZERO,
        }
    }
}

/// A real HTTP/1.1 server on 127.0.0.1 answering every request with the current `reply`.
pub struct Loopback {
    pub url: String,
    pub reply: Arc<Mutex<Reply>>,
    hits: Arc<AtomicUsize>,
    bodies: Arc<Mutex<Vec<String>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Loopback {
    pub async fn start(path: &str, reply: Reply) -> Loopback {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}{path}", listener.local_addr().unwrap());
        let reply = Arc::new(Mutex::new(reply));
        let hits = Arc::new(AtomicUsize::new(0));
        let bodies = Arc::new(Mutex::new(Vec::new()));
        let (r, h, b) = (Arc::clone(&reply), Arc::clone(&hits), Arc::clone(&bodies));
        let task = tokio::spawn(async move {
            loop {
                let Ok((mut stream, _)) = listener.accept().await else {
                    return;
                };
                let (r, h, b) = (Arc::clone(&r), Arc::clone(&h), Arc::clone(&b));
                tokio::spawn(async move {
                    let Some(body) = read_request(&mut stream).await else {
                        return;
                    };
                    h.fetch_add(1, Ordering::SeqCst);
                    b.lock().unwrap().push(body);
                    let reply = r.lock().unwrap().clone();
                    tokio::time::sleep(reply.delay).await;
                    let response = format!(
                        "HTTP/1.1 {} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{}",
                        reply.status,
                        reply.body.len(),
                        reply.body
                    );
                    let _ = stream.write_all(response.as_bytes()).await;
                    let _ = stream.shutdown().await;
                });
            }
        });
        Loopback {
            url,
            reply,
            hits,
            bodies,
            task,
        }
    }

    pub fn set(&self, reply: Reply) {
        *self.reply.lock().unwrap() = reply;
    }

    pub fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }

    pub fn bodies(&self) -> Vec<String> {
        self.bodies.lock().unwrap().clone()
    }
}

impl Drop for Loopback {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Reads one request; returns its body.
async fn read_request(stream: &mut tokio::net::TcpStream) -> Option<String> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let header_end = loop {
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
    };
    let head = String::from_utf8_lossy(&buf[..header_end]).to_ascii_lowercase();
    let length: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    while buf.len() < header_end + length {
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    Some(String::from_utf8_lossy(&buf[header_end..]).into_owned())
}
