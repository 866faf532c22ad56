//! Outbound federation requests: resolved by [`Discovery`], signed with X-Matrix, over verified
//! TLS, with a time limit on every request, and never to an address in the deny list.
//!
//! The deny list is applied inside the DNS resolver that reqwest uses ([`GuardedResolver`]), so it
//! judges the addresses actually connected to, not a name checked before and resolved again
//! later. IP-literal hosts never reach a resolver, so they are checked before sending (and on
//! redirects, which only the well-known fetch follows).

use std::{
    any::TypeId,
    net::{IpAddr, SocketAddr},
    sync::Arc,
    time::Duration,
};

use hickory_resolver::{TokioResolver, proto::rr::RData};
use reqwest::{
    Method,
    dns::{Addrs, Name, Resolve, Resolving},
    header::{AUTHORIZATION, CONTENT_TYPE, HOST, HeaderValue},
};
use ruma::{
    OwnedServerName, ServerName,
    api::{
        IncomingResponseExt, OutgoingRequest,
        federation::authentication::{ServerSignatures, XMatrix, XMatrixSigningInput},
        path_builder::SinglePath,
    },
};
use serde_json::Value;

use super::{
    discovery::{BoxFuture, ConnectOverrides, Discovery, Lookup, SrvTarget, WellKnown, cache_control_lifetime},
    ip_ranges::IpRanges,
};
use crate::{
    config::FederationConfig,
    error::{Error, ErrorKind, RemoteError, Result},
    service::keys::ServerKeys,
};

/// The largest response body read from another server (a `send_join` of a big room is tens of MB).
const MAX_RESPONSE_BYTES: usize = 256 * 1024 * 1024;
/// The largest `.well-known/matrix/server` body read.
const MAX_WELL_KNOWN_BYTES: usize = 64 * 1024;
const WELL_KNOWN_TIMEOUT: Duration = Duration::from_secs(10);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// A DNS resolver for reqwest: the system's (through hickory), following SRV targets recorded by
/// discovery, and dropping every address in a denied range.
pub struct GuardedResolver {
    dns: TokioResolver,
    ranges: Arc<IpRanges>,
    /// `None` for the well-known client, whose requests go to the host itself.
    overrides: Option<Arc<ConnectOverrides>>,
}

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let host = self.overrides.as_ref().and_then(|o| o.target(name.as_str())).unwrap_or(name.as_str().to_owned());
        let (dns, ranges) = (self.dns.clone(), self.ranges.clone());
        Box::pin(async move {
            let found = dns.lookup_ip(host.as_str()).await?;
            let all: Vec<IpAddr> = found.iter().collect();
            let allowed: Vec<SocketAddr> =
                all.iter().filter(|ip| ranges.is_allowed(**ip)).map(|ip| SocketAddr::new(*ip, 0)).collect();
            if allowed.is_empty() {
                tracing::info!(%host, addresses = ?all, "refusing to connect: every address is in a denied range");
                return Err(format!("every address of {host} is in a denied range").into());
            }
            Ok(Box::new(allowed.into_iter()) as Addrs)
        })
    }
}

/// The system DNS resolver, or (without a readable `/etc/resolv.conf`) hickory's defaults.
fn system_dns() -> Result<TokioResolver> {
    match TokioResolver::builder_tokio() {
        Ok(builder) => builder.build(),
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the system's DNS configuration; using defaults");
            TokioResolver::builder_with_config(
                hickory_resolver::config::ResolverConfig::default(),
                hickory_resolver::net::runtime::TokioRuntimeProvider::default(),
            )
            .build()
        }
    }
    .map_err(|e| Error::internal(format!("DNS resolver: {e}")))
}

/// A reqwest client with the configured TLS trust and the guarded resolver.
fn http_client(
    config: &FederationConfig,
    resolver: GuardedResolver,
    timeout: Duration,
    redirects: reqwest::redirect::Policy,
) -> Result<reqwest::Client> {
    let mut builder = reqwest::Client::builder()
        .dns_resolver(resolver)
        .timeout(timeout)
        .connect_timeout(CONNECT_TIMEOUT.min(timeout))
        .redirect(redirects)
        .no_proxy()
        .user_agent(concat!("Myelin/", env!("CARGO_PKG_VERSION")));
    if let Some(path) = &config.tls_ca_file {
        let pem = std::fs::read(path).map_err(|e| Error::internal(format!("reading {}: {e}", path.display())))?;
        let certificates = reqwest::Certificate::from_pem_bundle(&pem)
            .map_err(|e| Error::internal(format!("{} is not a PEM certificate: {e}", path.display())))?;
        builder = builder.tls_certs_merge(certificates);
    }
    if config.tls_insecure_skip_verify {
        builder = builder.tls_danger_accept_invalid_certs(true);
    }
    builder.build().map_err(|e| Error::internal(format!("federation HTTP client: {e}")))
}

/// An HTTP client for URLs that users choose (push gateways), so that no user can make the server
/// reach its own network: the federation deny list applies to the addresses a name resolves to
/// and, through `allows`, to a URL whose host is an IP literal (reqwest resolves no literal);
/// redirects are not followed.
pub struct GuardedClient {
    pub http: reqwest::Client,
    ranges: Arc<IpRanges>,
}

impl GuardedClient {
    pub fn new(config: &FederationConfig) -> Result<Self> {
        let ranges = Arc::new(IpRanges::from_config(config)?);
        let resolver = GuardedResolver { dns: system_dns()?, ranges: ranges.clone(), overrides: None };
        let http = http_client(config, resolver, config.request_timeout(), reqwest::redirect::Policy::none())?;
        Ok(Self { http, ranges })
    }

    /// Whether the URL may be requested: false when its host is an IP literal in a denied range
    /// (a name is checked when it is resolved).
    pub fn allows(&self, url: &reqwest::Url) -> bool {
        url.host_str().and_then(ip_literal).is_none_or(|ip| self.ranges.is_allowed(ip))
    }
}

/// The host of a URL or server name as an IP address, if it is one (IPv6 in brackets or not).
fn ip_literal(host: &str) -> Option<IpAddr> {
    host.trim_start_matches('[').trim_end_matches(']').parse().ok()
}

/// The real lookups: SRV records through hickory, well-known over HTTPS (deny list applied).
pub struct NetworkLookup {
    dns: TokioResolver,
    http: reqwest::Client,
}

impl NetworkLookup {
    async fn fetch_well_known(&self, hostname: &str) -> WellKnown {
        let url = format!("https://{hostname}/.well-known/matrix/server");
        let response = match self.http.get(&url).send().await {
            Ok(response) => response,
            Err(e) => {
                tracing::debug!(%hostname, error = %e, "no well-known answer");
                return WellKnown::Unreachable;
            }
        };
        if response.status() != reqwest::StatusCode::OK {
            return WellKnown::Invalid;
        }
        let cache_for = response
            .headers()
            .get(reqwest::header::CACHE_CONTROL)
            .and_then(|v| v.to_str().ok())
            .and_then(cache_control_lifetime);
        match read_limited(response, MAX_WELL_KNOWN_BYTES).await {
            Ok(body) => match super::discovery::parse_well_known(&body) {
                Some(server) => WellKnown::Delegated { server, cache_for },
                None => WellKnown::Invalid,
            },
            Err(_) => WellKnown::Unreachable,
        }
    }

    async fn lookup_srv(&self, name: &str) -> Option<SrvTarget> {
        // Fully qualified, so that no search domain is appended.
        let lookup = match self.dns.srv_lookup(format!("{name}.")).await {
            Ok(lookup) => lookup,
            Err(e) => {
                if !e.is_no_records_found() {
                    tracing::debug!(%name, error = %e, "SRV lookup failed");
                }
                return None;
            }
        };
        let mut records: Vec<_> = lookup
            .answers()
            .iter()
            .filter_map(|record| match &record.data {
                RData::SRV(srv) => Some(srv.clone()),
                _ => None,
            })
            .collect();
        // Lowest priority first, then the heaviest; a target of "." means "no service here".
        records.sort_by_key(|srv| (srv.priority, std::cmp::Reverse(srv.weight)));
        let srv = records.into_iter().next()?;
        let host = srv.target.to_utf8();
        let host = host.trim_end_matches('.');
        (!host.is_empty()).then(|| SrvTarget { host: host.to_owned(), port: srv.port })
    }
}

impl Lookup for NetworkLookup {
    fn well_known<'a>(&'a self, hostname: &'a str) -> BoxFuture<'a, WellKnown> {
        Box::pin(self.fetch_well_known(hostname))
    }

    fn srv<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Option<SrvTarget>> {
        Box::pin(self.lookup_srv(name))
    }
}

/// Why a response body could not be read.
#[derive(Debug, thiserror::Error)]
enum ReadError {
    #[error("response larger than the limit")]
    TooLarge,
    #[error("{0}")]
    Failed(String),
}

/// Reads a response body, refusing one larger than `limit`.
async fn read_limited(mut response: reqwest::Response, limit: usize) -> std::result::Result<Vec<u8>, ReadError> {
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(|e| ReadError::Failed(e.to_string()))? {
        if body.len() + chunk.len() > limit {
            return Err(ReadError::TooLarge);
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// Builds discovery over the network and the federation client that uses it.
pub fn build(
    config: &FederationConfig,
    server_name: OwnedServerName,
    keys: Arc<ServerKeys>,
) -> Result<(Arc<Discovery>, FederationClient)> {
    let ranges = Arc::new(IpRanges::from_config(config)?);
    let dns = system_dns()?;
    let overrides = Arc::new(ConnectOverrides::default());
    let redirect_ranges = ranges.clone();
    // Redirects of the well-known request: at most 5, and not to a denied IP literal.
    let redirects = reqwest::redirect::Policy::custom(move |attempt| {
        if attempt.previous().len() >= 5 {
            return attempt.error("too many redirects");
        }
        match attempt.url().host_str().and_then(ip_literal) {
            Some(ip) if !redirect_ranges.is_allowed(ip) => attempt.error("redirect to a denied address"),
            _ => attempt.follow(),
        }
    });
    let well_known_http = http_client(
        config,
        GuardedResolver { dns: dns.clone(), ranges: ranges.clone(), overrides: None },
        WELL_KNOWN_TIMEOUT.min(config.request_timeout()),
        redirects,
    )?;
    let http = http_client(
        config,
        GuardedResolver { dns: dns.clone(), ranges: ranges.clone(), overrides: Some(overrides.clone()) },
        config.request_timeout(),
        reqwest::redirect::Policy::none(),
    )?;
    if config.tls_insecure_skip_verify {
        tracing::warn!(
            "federation.tls_insecure_skip_verify is ON: other servers' certificates are not checked, so anyone on \
             the network can impersonate them. Use it for tests only."
        );
    }
    let discovery = Arc::new(Discovery::new(Arc::new(NetworkLookup { dns, http: well_known_http }), overrides));
    Ok((discovery.clone(), FederationClient { http, discovery, ranges, keys, server_name }))
}

/// Sends requests to other homeservers.
pub struct FederationClient {
    http: reqwest::Client,
    discovery: Arc<Discovery>,
    ranges: Arc<IpRanges>,
    keys: Arc<ServerKeys>,
    server_name: OwnedServerName,
}

/// Whether to add an X-Matrix `Authorization` header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Signing {
    Signed,
    /// For the key endpoints, which need no authentication.
    Unsigned,
}

impl FederationClient {
    /// Our server name: the origin of every request.
    pub fn server_name(&self) -> &ServerName {
        &self.server_name
    }

    /// Sends a ruma federation request and parses the answer; the request is signed when the
    /// endpoint asks for X-Matrix authentication. An error answer is [`Error::Remote`] with the
    /// status and errcode.
    pub async fn send<R>(&self, destination: &ServerName, request: R) -> Result<R::IncomingResponse>
    where
        R: OutgoingRequest<PathBuilder = SinglePath>,
        R::Authentication: 'static,
    {
        let target = self.discovery.resolve(destination).await;
        let request = request
            .try_into_http_request_inner(&target.base_url(), ())
            .map_err(|e| Error::internal(format!("building a request to {destination}: {e}")))?;
        let (parts, body) = request.into_parts();
        let content_type = ruma::api::OutgoingBody::content_type(&body);
        let body = ruma::api::OutgoingBody::try_into_buf::<Vec<u8>>(body).map_err(|e| {
            Error::internal(format!(
                "serializing a request to {destination}: {}",
                Into::<ruma::api::error::IntoHttpError>::into(e)
            ))
        })?;
        let mut request = http::Request::from_parts(parts, body);
        if let Some(content_type) = content_type
            && !request.body().is_empty()
        {
            request.headers_mut().insert(CONTENT_TYPE, content_type);
        }
        let signing = if TypeId::of::<R::Authentication>() == TypeId::of::<ServerSignatures>() {
            Signing::Signed
        } else {
            Signing::Unsigned
        };
        let response = self.execute(destination, &target, request, signing).await?;
        let (parts, body) = response.into_parts();
        R::IncomingResponse::try_from_http_response(http::Response::from_parts(parts, body.as_ref()))
            .map_err(|e| remote_error(destination, e.to_string(), None, &body))
    }

    /// Sends a JSON request to `path_and_query` (starting with `/_matrix/`) and returns the JSON
    /// answer. For endpoints ruma has no types for, or where the raw signed JSON matters.
    pub async fn request_json(
        &self,
        destination: &ServerName,
        method: Method,
        path_and_query: &str,
        body: Option<&Value>,
        signing: Signing,
    ) -> Result<Value> {
        let target = self.discovery.resolve(destination).await;
        let body = body.map(|b| serde_json::to_vec(b).expect("JSON values serialize")).unwrap_or_default();
        let mut request = http::Request::builder()
            .method(method)
            .uri(format!("{}{path_and_query}", target.base_url()))
            .body(body)
            .map_err(|e| Error::internal(format!("bad request to {destination}: {e}")))?;
        if !request.body().is_empty() {
            request.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        }
        let response = self.execute(destination, &target, request, signing).await?;
        let status = response.status();
        let body = response.into_body();
        if !status.is_success() {
            return Err(remote_error(destination, format!("status {status}"), Some(status.as_u16()), &body));
        }
        serde_json::from_slice(&body)
            .map_err(|e| remote_error(destination, format!("answer is not JSON: {e}"), Some(status.as_u16()), &[]))
    }

    /// Sends a GET to `path_and_query` and returns the answer's headers and raw body, at most
    /// `limit` bytes (media). An error answer is [`Error::Remote`].
    pub async fn get_bytes(
        &self,
        destination: &ServerName,
        path_and_query: &str,
        signing: Signing,
        limit: usize,
    ) -> Result<(http::HeaderMap, Vec<u8>)> {
        let target = self.discovery.resolve(destination).await;
        let request = http::Request::builder()
            .method(Method::GET)
            .uri(format!("{}{path_and_query}", target.base_url()))
            .body(Vec::new())
            .map_err(|e| Error::internal(format!("bad request to {destination}: {e}")))?;
        let response = self.send_raw(destination, &target, request, signing).await?;
        let status = response.status();
        let headers = response.headers().clone();
        // Error answers are small JSON; only a success may be as large as `limit`.
        let body = read_limited(response, if status.is_success() { limit } else { 64 * 1024 }).await;
        let body = match body {
            Ok(body) => body,
            Err(ReadError::TooLarge) if status.is_success() => {
                return Err(Error::new(
                    ErrorKind::RemoteTooLarge,
                    format!("{destination} answered with more than {limit} bytes"),
                ));
            }
            Err(e) => return Err(Error::unreachable(destination, e.to_string())),
        };
        if !status.is_success() {
            return Err(remote_error(destination, format!("status {status}"), Some(status.as_u16()), &body));
        }
        Ok((headers, body))
    }

    /// Adds the X-Matrix `Authorization` header: our signature over the method, the URI's path and
    /// query, origin, destination and the JSON body.
    pub fn sign(&self, destination: &ServerName, request: &mut http::Request<Vec<u8>>) -> Result<()> {
        let input = XMatrixSigningInput::new(self.server_name.clone(), destination.to_owned(), self.keys.ed25519());
        let authorization = XMatrix::sign_http_request(request, input)
            .map_err(|e| Error::internal(format!("signing a request to {destination}: {e}")))?;
        request.headers_mut().insert(AUTHORIZATION, HeaderValue::from(&authorization));
        Ok(())
    }

    /// Signs (if asked), sends and reads the answer, whatever its status.
    async fn execute(
        &self,
        destination: &ServerName,
        target: &super::discovery::Destination,
        request: http::Request<Vec<u8>>,
        signing: Signing,
    ) -> Result<http::Response<Vec<u8>>> {
        let response = self.send_raw(destination, target, request, signing).await?;
        let status = response.status();
        let headers = response.headers().clone();
        let body = read_limited(response, MAX_RESPONSE_BYTES)
            .await
            .map_err(|e| Error::unreachable(destination, e.to_string()))?;
        let mut answer = http::Response::new(body);
        *answer.status_mut() = status;
        *answer.headers_mut() = headers;
        Ok(answer)
    }

    /// Signs (if asked) and sends; the answer's body is not read yet.
    async fn send_raw(
        &self,
        destination: &ServerName,
        target: &super::discovery::Destination,
        mut request: http::Request<Vec<u8>>,
        signing: Signing,
    ) -> Result<reqwest::Response> {
        if let Some(ip) = ip_literal(&target.host)
            && !self.ranges.is_allowed(ip)
        {
            return Err(Error::unreachable(destination, format!("{ip} is in a denied address range")));
        }
        if signing == Signing::Signed {
            self.sign(destination, &mut request)?;
        }
        let host = HeaderValue::from_str(&target.host_header)
            .map_err(|_| Error::internal(format!("bad Host header for {destination}")))?;
        request.headers_mut().insert(HOST, host);
        let request = reqwest::Request::try_from(request)
            .map_err(|e| Error::internal(format!("bad request to {destination}: {e}")))?;
        let path = request.url().path().to_owned();
        self.http.execute(request).await.map_err(|e| {
            tracing::debug!(%destination, %path, error = %describe(&e), "federation request failed");
            Error::unreachable(destination, describe(&e))
        })
    }
}

/// A reqwest error with its causes (the interesting part, such as a certificate problem, is
/// often two levels down).
fn describe(error: &reqwest::Error) -> String {
    let mut text = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// An error answer, with the Matrix errcode and message if the body has them.
fn remote_error(destination: &ServerName, fallback: String, status: Option<u16>, body: &[u8]) -> Error {
    let parsed: Option<Value> = serde_json::from_slice(body).ok();
    let field = |name: &str| parsed.as_ref().and_then(|v| v.get(name)).and_then(Value::as_str).map(str::to_owned);
    Error::Remote(Box::new(RemoteError {
        destination: destination.to_string(),
        status,
        errcode: field("errcode"),
        message: field("error").unwrap_or(fallback),
    }))
}
