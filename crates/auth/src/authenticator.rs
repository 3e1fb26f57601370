//! The one object a transport talks to: built from [`AuthConfig`], it finds credentials,
//! verifies them, issues tickets, checks origins and authorizes actions.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::{SystemTime, UNIX_EPOCH};

use http::{HeaderMap, Uri};

use crate::config::{AuthConfig, SourcesConfig};
use crate::credential::{self, Credential, CredentialSource};
use crate::error::{AuthError, ConfigError, Denied};
use crate::identity::Identity;
use crate::jwt::JwtVerifier;
use crate::origin::{OriginDecision, OriginPolicy};
use crate::permission::{Action, Permissions};
use crate::proxy::{ConnectInfo, ConnectProxy};
use crate::ticket::{MemoryTicketStore, TicketError, TicketStore};

/// Authentication and authorization for every transport. Share it (`Arc<Authenticator>`);
/// every method takes `&self`.
pub struct Authenticator {
    sources: SourcesConfig,
    cookie_name: String,
    anonymous: bool,
    jwt: Option<JwtVerifier>,
    proxy: Option<ConnectProxy>,
    tickets: Arc<dyn TicketStore>,
    ticket_ttl: std::time::Duration,
    origins: OriginPolicy,
    permissions: Permissions,
}

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authenticator")
            .field("sources", &self.sources)
            .field("anonymous", &self.anonymous)
            .field("jwt", &self.jwt.is_some())
            .field("proxy", &self.proxy.is_some())
            .finish_non_exhaustive()
    }
}

impl Authenticator {
    /// Builds everything from `config`: reads PEM files, compiles origins and rules. Fails on
    /// anything unusable, so a bad setting stops startup rather than a connection. Tickets live
    /// in a [`MemoryTicketStore`]; see [`with_ticket_store`](Self::with_ticket_store).
    pub fn new(config: &AuthConfig) -> Result<Authenticator, ConfigError> {
        let jwt = if config.jwt.has_keys() || !config.jwt.algorithms.is_empty() {
            Some(JwtVerifier::new(&config.jwt)?)
        } else {
            None
        };
        let proxy = config
            .connect_proxy
            .as_ref()
            .map(ConnectProxy::new)
            .transpose()?;
        let anonymous = config.anonymous_allowed();
        Ok(Authenticator {
            sources: config.sources,
            cookie_name: config.cookie_name.clone(),
            anonymous,
            jwt,
            proxy,
            tickets: Arc::new(MemoryTicketStore::new(config.tickets.max_outstanding)),
            ticket_ttl: config.tickets.ttl,
            origins: OriginPolicy::new(&config.allowed_origins)?,
            permissions: Permissions::new(&config.permissions, anonymous),
        })
    }

    /// Replaces the ticket store (a shared one for a cluster).
    pub fn with_ticket_store(mut self, store: Arc<dyn TicketStore>) -> Authenticator {
        self.tickets = store;
        self
    }

    /// Whether requests without a credential are accepted as anonymous.
    pub fn anonymous_allowed(&self) -> bool {
        self.anonymous
    }

    /// Whether anything can verify a credential (JWT keys or a connect proxy).
    pub fn has_verifier(&self) -> bool {
        self.jwt.is_some() || self.proxy.is_some()
    }

    /// The enabled credential sources (the session asks `first_message` to decide whether to
    /// wait for `auth {token}`).
    pub fn sources(&self) -> &SourcesConfig {
        &self.sources
    }

    /// The JWT verifier, if configured.
    pub fn jwt(&self) -> Option<&JwtVerifier> {
        self.jwt.as_ref()
    }

    /// The credential in a request, from the enabled sources (see [`credential::extract`]).
    pub fn extract(&self, headers: &HeaderMap, uri: &Uri) -> Option<Credential> {
        credential::extract(headers, uri, &self.sources, &self.cookie_name)
    }

    /// `Origin` against the allowlist; same-origin and origin-less requests pass.
    pub fn check_origin(&self, headers: &HeaderMap) -> OriginDecision {
        let header =
            |name: http::header::HeaderName| headers.get(name).and_then(|v| v.to_str().ok());
        self.origins
            .check(header(http::header::ORIGIN), header(http::header::HOST))
    }

    /// The origin check for a request authenticated by a cookie (which the browser attaches
    /// by itself, whatever page makes the request): `*` in the allowlist does not count; see
    /// [`OriginPolicy::check_ambient`]. Call it once [`Authenticator::extract`] said the
    /// credential is a cookie.
    pub fn check_cookie_origin(&self, headers: &HeaderMap) -> OriginDecision {
        let header =
            |name: http::header::HeaderName| headers.get(name).and_then(|v| v.to_str().ok());
        self.origins
            .check_ambient(header(http::header::ORIGIN), header(http::header::HOST))
    }

    /// Who `credential` belongs to.
    ///
    /// Routing: a ticket is redeemed (once); a token that looks like a JWT (three dot-separated
    /// parts) goes to the JWT verifier when one is configured, anything else (or everything, with
    /// no JWT keys) to the connect proxy. A JWT that fails verification is not retried at the
    /// proxy. Cancel safe.
    pub async fn authenticate(
        &self,
        credential: &Credential,
        info: &ConnectInfo,
    ) -> Result<Identity, AuthError> {
        self.authenticate_at(credential, info, unix_now()).await
    }

    /// [`authenticate`](Self::authenticate) with an explicit clock (unix seconds).
    pub async fn authenticate_at(
        &self,
        credential: &Credential,
        info: &ConnectInfo,
        now: u64,
    ) -> Result<Identity, AuthError> {
        let enabled = match credential.source() {
            CredentialSource::Header => self.sources.header,
            CredentialSource::Query => self.sources.query,
            CredentialSource::Ticket => self.sources.ticket,
            CredentialSource::Cookie => self.sources.cookie,
            CredentialSource::FirstMessage => self.sources.first_message,
            CredentialSource::Refresh => true,
        };
        if !enabled {
            return Err(AuthError::NotAccepted(credential.source().as_str()));
        }
        if credential.source() == CredentialSource::Ticket {
            let identity = self
                .tickets
                .redeem(credential.secret())
                .await
                .map_err(|e| AuthError::BackendUnavailable(e.to_string()))?
                .ok_or(AuthError::BadTicket)?;
            if identity.connection_expires_at().is_some_and(|at| at <= now) {
                return Err(AuthError::Expired);
            }
            return Ok(identity);
        }
        let looks_like_jwt = credential.secret().split('.').count() == 3;
        match (&self.jwt, &self.proxy) {
            (Some(jwt), _) if looks_like_jwt => jwt.verify(credential.secret(), now).await,
            (_, Some(proxy)) => proxy.authenticate(credential, info, now).await,
            (Some(jwt), None) => jwt.verify(credential.secret(), now).await,
            (None, None) => Err(AuthError::NotAccepted("no verifier configured")),
        }
    }

    /// Extracts and authenticates in one step, for HTTP endpoints and handshakes: `Ok(None)` is
    /// an anonymous caller (no credential, anonymous access on); no credential with anonymous
    /// access off is [`AuthError::Missing`]. A credential that is present but bad is always an
    /// error, even when anonymous access is on (a client should learn its token is bad).
    pub async fn authenticate_request(
        &self,
        headers: &HeaderMap,
        uri: &Uri,
        info: &ConnectInfo,
    ) -> Result<Option<Identity>, AuthError> {
        match self.extract(headers, uri) {
            Some(credential) => self.authenticate(&credential, info).await.map(Some),
            None if self.anonymous => Ok(None),
            None => Err(AuthError::Missing),
        }
    }

    /// Verifies `refresh {token}` for a connection authenticated as `current`: the new token
    /// must be valid and name the same user. Returns the new identity (its expiries replace the
    /// old ones).
    pub async fn refresh(
        &self,
        current: &Identity,
        token: &str,
        info: &ConnectInfo,
    ) -> Result<Identity, AuthError> {
        let fresh = self
            .authenticate(&Credential::new(token, CredentialSource::Refresh), info)
            .await?;
        if fresh.user_id() != current.user_id() {
            return Err(AuthError::SubjectChanged);
        }
        Ok(fresh)
    }

    /// [`authenticate`](Self::authenticate) for callers that cannot await (the sans-IO session
    /// core): the result if it is ready at once (a JWT checked against configured secrets or PEM
    /// keys, a cached JWKS key: no waiting), otherwise `None`, and `later` gets it when it comes
    /// (a JWKS fetch, the connect proxy), called from a task spawned on the current tokio runtime.
    /// `later` is called only when this returned `None`.
    ///
    /// Without a tokio runtime a verification that would have to wait is not started:
    /// `Some(Err(AuthError::BackendUnavailable))`. (Connect proxy and JWKS URL verifications need
    /// a runtime to make their request in the first place: call this from within one.)
    pub fn authenticate_now_or_later(
        self: &Arc<Self>,
        credential: Credential,
        info: ConnectInfo,
        later: impl FnOnce(Result<Identity, AuthError>) + Send + 'static,
    ) -> Option<Result<Identity, AuthError>> {
        let this = Arc::clone(self);
        now_or_spawn(
            Box::pin(async move { this.authenticate(&credential, &info).await }),
            later,
        )
    }

    /// [`refresh`](Self::refresh) for callers that cannot await: as
    /// [`authenticate_now_or_later`](Self::authenticate_now_or_later).
    pub fn refresh_now_or_later(
        self: &Arc<Self>,
        current: Arc<Identity>,
        token: String,
        info: ConnectInfo,
        later: impl FnOnce(Result<Identity, AuthError>) + Send + 'static,
    ) -> Option<Result<Identity, AuthError>> {
        let this = Arc::clone(self);
        now_or_spawn(
            Box::pin(async move { this.refresh(&current, &token, &info).await }),
            later,
        )
    }

    /// A one-time ticket for `identity`, valid for the configured TTL (`POST /api/ticket`).
    pub async fn issue_ticket(&self, identity: Identity) -> Result<String, TicketError> {
        self.tickets.issue(identity, self.ticket_ttl).await
    }

    /// Whether `who` (`None`: anonymous) may do `action` in `room`. Called for every message,
    /// not only at join. The backend API key has all rights and does not come here.
    pub fn authorize(
        &self,
        who: Option<&Identity>,
        action: Action,
        room: &str,
    ) -> Result<(), Denied> {
        self.permissions.check(who, action, room)
    }
}

type AuthFuture = Pin<Box<dyn Future<Output = Result<Identity, AuthError>> + Send>>;

/// Polls `future` once; ready → its output; pending → spawned on the current runtime, its
/// output handed to `later`.
fn now_or_spawn(
    mut future: AuthFuture,
    later: impl FnOnce(Result<Identity, AuthError>) + Send + 'static,
) -> Option<Result<Identity, AuthError>> {
    // The first poll registers a no-op waker wherever it waits; the spawned task's polls
    // register its own (every poll must), so nothing is lost.
    let mut cx = Context::from_waker(Waker::noop());
    if let Poll::Ready(result) = future.as_mut().poll(&mut cx) {
        return Some(result);
    }
    match tokio::runtime::Handle::try_current() {
        Ok(runtime) => {
            runtime.spawn(async move { later(future.await) });
            None
        }
        Err(_) => Some(Err(AuthError::BackendUnavailable(
            "no async runtime to wait for the verification on".into(),
        ))),
    }
}

/// The wall clock in unix seconds (0 before 1970, which no token can be valid at anyway).
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
