//! Server discovery: where to send a request for a server name, exactly as the spec's "Resolving
//! server names" says (IP literal, explicit port, `/.well-known/matrix/server`, SRV
//! `_matrix-fed._tcp` then `_matrix._tcp`, port 8448).
//!
//! The network lookups sit behind [`Lookup`], so that the decisions are tested without a network.
//! Well-known answers are cached (their `Cache-Control`, 24 h by default, between 5 min and 48 h;
//! invalid answers 1 h; no answer 2 min, doubling with each failure up to 1 h); DNS answers are
//! cached by the resolver.

use std::{
    collections::HashMap,
    future::Future,
    pin::Pin,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use ruma::{OwnedServerName, ServerName};

use crate::service::locks::KeyedLocks;

/// The port when neither the server name, its delegation nor SRV gives one.
pub const DEFAULT_PORT: u16 = 8448;

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// The network lookups discovery needs.
pub trait Lookup: Send + Sync {
    /// `GET https://{hostname}/.well-known/matrix/server`.
    fn well_known<'a>(&'a self, hostname: &'a str) -> BoxFuture<'a, WellKnown>;
    /// The SRV record to use for `name` (such as `_matrix-fed._tcp.example.org`): lowest priority,
    /// then highest weight. `None` when there is none.
    fn srv<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Option<SrvTarget>>;
}

/// An SRV record's answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SrvTarget {
    /// The host to connect to (without the trailing dot).
    pub host: String,
    pub port: u16,
}

/// The outcome of a `.well-known/matrix/server` request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WellKnown {
    /// A 200 with a valid `m.server`, and how long the answer may be cached (from `Cache-Control`).
    Delegated { server: OwnedServerName, cache_for: Option<Duration> },
    /// An answer that is no delegation: not 200, not JSON, no valid `m.server`.
    Invalid,
    /// No answer: DNS, connection, TLS or timeout failure.
    Unreachable,
}

/// Where and how to send requests for one server name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Destination {
    /// The host in the request URL: the name the certificate must be valid for and the SNI sent (a
    /// hostname, or an IP literal, IPv6 in brackets).
    pub host: String,
    pub port: u16,
    /// The `Host` header.
    pub host_header: String,
    /// A host named by an SRV record whose addresses to connect to instead of `host`'s (the
    /// certificate must still be valid for `host`).
    pub connect_to: Option<String>,
}

impl Destination {
    fn new(host: &str, port: u16, host_header: &str) -> Self {
        Self { host: host.to_owned(), port, host_header: host_header.to_owned(), connect_to: None }
    }

    /// `https://host:port`, the base of request URLs.
    pub fn base_url(&self) -> String {
        format!("https://{}:{}", self.host, self.port)
    }
}

const WELL_KNOWN_DEFAULT_CACHE: Duration = Duration::from_secs(24 * 3600);
const WELL_KNOWN_MIN_CACHE: Duration = Duration::from_secs(5 * 60);
const WELL_KNOWN_MAX_CACHE: Duration = Duration::from_secs(48 * 3600);
const WELL_KNOWN_INVALID_CACHE: Duration = Duration::from_secs(3600);
const WELL_KNOWN_DOWN_CACHE: Duration = Duration::from_secs(120);
/// How long an SRV delegation's connect-to host stays in the resolver's table without use.
const OVERRIDE_LIFETIME: Duration = Duration::from_secs(3600);

struct CachedWellKnown {
    delegated: Option<OwnedServerName>,
    expires: Instant,
    /// Consecutive failures to get an answer, for the back-off.
    failures: u32,
}

/// Hosts whose addresses are those of another host (SRV targets), shared with the client's DNS
/// resolver. Keyed by host name alone, because that is all a resolver is asked: two server names
/// that put the same host in their URLs with different SRV targets (rare) share the later one.
#[derive(Default)]
pub struct ConnectOverrides {
    map: Mutex<HashMap<String, (String, Instant)>>,
}

impl ConnectOverrides {
    fn set(&self, host: &str, target: &str) {
        let mut map = self.map.lock().expect("overrides");
        map.retain(|_, (_, expires)| *expires > Instant::now());
        map.insert(host.to_ascii_lowercase(), (target.to_owned(), Instant::now() + OVERRIDE_LIFETIME));
    }

    /// The host whose addresses to use for `host`, if an SRV record named one.
    pub fn target(&self, host: &str) -> Option<String> {
        let map = self.map.lock().expect("overrides");
        map.get(&host.to_ascii_lowercase()).filter(|(_, expires)| *expires > Instant::now()).map(|(t, _)| t.clone())
    }
}

/// Resolves server names, with the well-known cache.
pub struct Discovery {
    lookup: Arc<dyn Lookup>,
    well_known: Mutex<HashMap<String, CachedWellKnown>>,
    /// One well-known request per host at a time; the others wait for its answer.
    fetching: KeyedLocks<String>,
    overrides: Arc<ConnectOverrides>,
}

impl Discovery {
    pub fn new(lookup: Arc<dyn Lookup>, overrides: Arc<ConnectOverrides>) -> Self {
        Self { lookup, well_known: Mutex::default(), fetching: KeyedLocks::default(), overrides }
    }

    /// Where requests for `server` go. Never fails: without any delegation the answer is the
    /// host on port 8448, and connecting there is what fails.
    pub async fn resolve(&self, server: &ServerName) -> Destination {
        let host = server.host();
        // 1. An IP literal, with its port or 8448; Host is the server name.
        if server.is_ip_literal() {
            return Destination::new(host, server.port().unwrap_or(DEFAULT_PORT), server.as_str());
        }
        // 2. A hostname with an explicit port.
        if let Some(port) = server.port() {
            return Destination::new(host, port, server.as_str());
        }
        // 3. Delegation through .well-known.
        if let Some(delegated) = self.well_known(host).await {
            let delegated_host = delegated.host();
            // 3.1 and 3.2: an IP literal or an explicit port; Host is the delegated name as written.
            if delegated.is_ip_literal() || delegated.port().is_some() {
                return Destination::new(delegated_host, delegated.port().unwrap_or(DEFAULT_PORT), delegated.as_str());
            }
            // 3.3 to 3.5: SRV records of the delegated host, or its port 8448.
            return self.srv_or_default(delegated_host).await;
        }
        // 4 to 6: SRV records of the host itself, or its port 8448.
        self.srv_or_default(host).await
    }

    /// Forgets the cached well-known answer of `server` (after it changed, or to retry at once).
    pub fn forget(&self, server: &ServerName) {
        self.well_known.lock().expect("well-known cache").remove(server.host());
    }

    async fn srv_or_default(&self, host: &str) -> Destination {
        for service in ["_matrix-fed._tcp", "_matrix._tcp"] {
            if let Some(target) = self.lookup.srv(&format!("{service}.{host}")).await {
                let mut destination = Destination::new(host, target.port, host);
                if !target.host.eq_ignore_ascii_case(host) {
                    self.overrides.set(host, &target.host);
                    destination.connect_to = Some(target.host);
                }
                return destination;
            }
        }
        Destination::new(host, DEFAULT_PORT, host)
    }

    /// The delegated server name of `host`, from the cache or a request.
    async fn well_known(&self, host: &str) -> Option<OwnedServerName> {
        if let Some(cached) = self.cached_well_known(host) {
            return cached;
        }
        let _one_at_a_time = self.fetching.lock(&host.to_owned()).await;
        if let Some(cached) = self.cached_well_known(host) {
            return cached;
        }
        let answer = self.lookup.well_known(host).await;
        let mut cache = self.well_known.lock().expect("well-known cache");
        let failures = cache.get(host).map_or(0, |c| c.failures);
        let (delegated, cache_for, failures) = match answer {
            WellKnown::Delegated { server, cache_for } => (
                Some(server),
                cache_for.unwrap_or(WELL_KNOWN_DEFAULT_CACHE).clamp(WELL_KNOWN_MIN_CACHE, WELL_KNOWN_MAX_CACHE),
                0,
            ),
            WellKnown::Invalid => (None, WELL_KNOWN_INVALID_CACHE, 0),
            WellKnown::Unreachable => {
                (None, (WELL_KNOWN_DOWN_CACHE * 2u32.pow(failures.min(5))).min(WELL_KNOWN_INVALID_CACHE), failures + 1)
            }
        };
        cache.insert(
            host.to_owned(),
            CachedWellKnown { delegated: delegated.clone(), expires: Instant::now() + cache_for, failures },
        );
        delegated
    }

    fn cached_well_known(&self, host: &str) -> Option<Option<OwnedServerName>> {
        let cache = self.well_known.lock().expect("well-known cache");
        cache.get(host).filter(|c| c.expires > Instant::now()).map(|c| c.delegated.clone())
    }
}

/// The cache lifetime a `Cache-Control` header asks for: `max-age`, or zero for `no-store` and
/// `no-cache` (raised to the minimum by the caller).
pub fn cache_control_lifetime(header: &str) -> Option<Duration> {
    let mut lifetime = None;
    for directive in header.split(',').map(|d| d.trim().to_ascii_lowercase()) {
        if directive == "no-store" || directive == "no-cache" {
            return Some(Duration::ZERO);
        }
        if let Some(seconds) = directive.strip_prefix("max-age=") {
            lifetime = seconds.trim_matches('"').parse::<u64>().ok().map(Duration::from_secs);
        }
    }
    lifetime
}

/// Reads the body of a well-known answer: `{"m.server": "host[:port]"}` with a valid server name.
pub fn parse_well_known(body: &[u8]) -> Option<OwnedServerName> {
    let value: serde_json::Value = serde_json::from_slice(body).ok()?;
    let server = value.get("m.server")?.as_str()?;
    OwnedServerName::try_from(server).ok()
}

#[cfg(test)]
mod tests {
    use std::{
        collections::HashMap,
        sync::{Arc, Mutex},
        time::Duration,
    };

    use ruma::{OwnedServerName, server_name};

    use super::*;

    /// Answers from tables, and counts the well-known requests.
    #[derive(Default)]
    struct FakeLookup {
        well_known: HashMap<String, WellKnown>,
        srv: HashMap<String, SrvTarget>,
        well_known_requests: Mutex<Vec<String>>,
    }

    impl FakeLookup {
        fn delegate(mut self, host: &str, to: &str) -> Self {
            let server = OwnedServerName::try_from(to).unwrap();
            self.well_known.insert(host.into(), WellKnown::Delegated { server, cache_for: None });
            self
        }

        fn srv(mut self, name: &str, target: &str, port: u16) -> Self {
            self.srv.insert(name.into(), SrvTarget { host: target.into(), port });
            self
        }

        fn well_known_answer(mut self, host: &str, answer: WellKnown) -> Self {
            self.well_known.insert(host.into(), answer);
            self
        }
    }

    impl Lookup for FakeLookup {
        fn well_known<'a>(&'a self, hostname: &'a str) -> BoxFuture<'a, WellKnown> {
            self.well_known_requests.lock().unwrap().push(hostname.to_owned());
            let answer = self.well_known.get(hostname).cloned().unwrap_or(WellKnown::Unreachable);
            Box::pin(async move { answer })
        }

        fn srv<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Option<SrvTarget>> {
            let answer = self.srv.get(name).cloned();
            Box::pin(async move { answer })
        }
    }

    fn discovery(lookup: FakeLookup) -> (Discovery, Arc<FakeLookup>, Arc<ConnectOverrides>) {
        let lookup = Arc::new(lookup);
        let overrides = Arc::new(ConnectOverrides::default());
        (Discovery::new(lookup.clone(), overrides.clone()), lookup, overrides)
    }

    fn dest(host: &str, port: u16, header: &str, connect_to: Option<&str>) -> Destination {
        Destination { host: host.into(), port, host_header: header.into(), connect_to: connect_to.map(str::to_owned) }
    }

    #[tokio::test]
    async fn step_1_ip_literals_use_their_port_or_8448_and_never_look_anything_up() {
        let (discovery, lookup, _) = discovery(FakeLookup::default());
        assert_eq!(discovery.resolve(server_name!("1.2.3.4")).await, dest("1.2.3.4", 8448, "1.2.3.4", None));
        assert_eq!(discovery.resolve(server_name!("1.2.3.4:8000")).await, dest("1.2.3.4", 8000, "1.2.3.4:8000", None));
        assert_eq!(discovery.resolve(server_name!("[::1]")).await, dest("[::1]", 8448, "[::1]", None));
        assert_eq!(discovery.resolve(server_name!("[2001:db8::1]:443")).await, {
            dest("[2001:db8::1]", 443, "[2001:db8::1]:443", None)
        });
        assert_eq!(discovery.resolve(server_name!("[::1]")).await.base_url(), "https://[::1]:8448");
        assert!(lookup.well_known_requests.lock().unwrap().is_empty());
    }

    #[tokio::test]
    async fn step_2_an_explicit_port_skips_well_known() {
        let (discovery, lookup, _) = discovery(FakeLookup::default().delegate("example.org", "other.example:1"));
        let got = discovery.resolve(server_name!("example.org:8449")).await;
        assert_eq!(got, dest("example.org", 8449, "example.org:8449", None));
        assert!(lookup.well_known_requests.lock().unwrap().is_empty());
    }

    #[tokio::test]
    async fn step_3_1_delegation_to_an_ip_literal() {
        let lookup = FakeLookup::default()
            .delegate("a.example", "10.1.2.3")
            .delegate("b.example", "10.1.2.3:9000")
            .delegate("c.example", "[fd00::1]:443");
        let (discovery, _, _) = discovery(lookup);
        assert_eq!(discovery.resolve(server_name!("a.example")).await, dest("10.1.2.3", 8448, "10.1.2.3", None));
        assert_eq!(discovery.resolve(server_name!("b.example")).await, dest("10.1.2.3", 9000, "10.1.2.3:9000", None));
        assert_eq!(discovery.resolve(server_name!("c.example")).await, dest("[fd00::1]", 443, "[fd00::1]:443", None));
    }

    #[tokio::test]
    async fn step_3_2_delegation_with_a_port_uses_no_srv() {
        let lookup = FakeLookup::default().delegate("example.org", "matrix.example.org:443").srv(
            "_matrix-fed._tcp.matrix.example.org",
            "elsewhere.example",
            1,
        );
        let (discovery, _, _) = discovery(lookup);
        let got = discovery.resolve(server_name!("example.org")).await;
        assert_eq!(got, dest("matrix.example.org", 443, "matrix.example.org:443", None));
    }

    #[tokio::test]
    async fn step_3_3_delegation_without_a_port_looks_up_matrix_fed_srv_of_the_delegated_host() {
        let lookup = FakeLookup::default()
            .delegate("example.org", "matrix.example.org")
            .srv("_matrix-fed._tcp.matrix.example.org", "fed1.example.net", 8500)
            .srv("_matrix._tcp.matrix.example.org", "old.example.net", 8600)
            .srv("_matrix-fed._tcp.example.org", "wrong.example.net", 1);
        let (discovery, _, overrides) = discovery(lookup);
        let got = discovery.resolve(server_name!("example.org")).await;
        // The certificate and Host are the delegated host's; the addresses are the target's.
        assert_eq!(got, dest("matrix.example.org", 8500, "matrix.example.org", Some("fed1.example.net")));
        assert_eq!(overrides.target("matrix.example.org").as_deref(), Some("fed1.example.net"));
        assert_eq!(overrides.target("MATRIX.example.org").as_deref(), Some("fed1.example.net"));
        assert_eq!(overrides.target("example.org"), None);
    }

    #[tokio::test]
    async fn step_3_4_then_the_deprecated_matrix_srv() {
        let lookup = FakeLookup::default().delegate("example.org", "matrix.example.org").srv(
            "_matrix._tcp.matrix.example.org",
            "old.example.net",
            8600,
        );
        let (discovery, _, _) = discovery(lookup);
        let got = discovery.resolve(server_name!("example.org")).await;
        assert_eq!(got, dest("matrix.example.org", 8600, "matrix.example.org", Some("old.example.net")));
    }

    #[tokio::test]
    async fn step_3_5_then_the_delegated_host_on_8448() {
        let lookup = FakeLookup::default().delegate("example.org", "matrix.example.org").srv(
            "_matrix-fed._tcp.example.org",
            "wrong.example.net",
            1,
        );
        let (discovery, _, _) = discovery(lookup);
        let got = discovery.resolve(server_name!("example.org")).await;
        assert_eq!(got, dest("matrix.example.org", 8448, "matrix.example.org", None));
    }

    #[tokio::test]
    async fn step_4_without_delegation_matrix_fed_srv_of_the_host() {
        let lookup = FakeLookup::default()
            .well_known_answer("example.org", WellKnown::Invalid)
            .srv("_matrix-fed._tcp.example.org", "fed.example.org", 8448)
            .srv("_matrix._tcp.example.org", "old.example.org", 8449);
        let (discovery, _, _) = discovery(lookup);
        let got = discovery.resolve(server_name!("example.org")).await;
        assert_eq!(got, dest("example.org", 8448, "example.org", Some("fed.example.org")));
    }

    #[tokio::test]
    async fn step_5_then_the_deprecated_matrix_srv_of_the_host() {
        let lookup = FakeLookup::default().srv("_matrix._tcp.example.org", "old.example.org", 8449);
        let (discovery, _, _) = discovery(lookup);
        let got = discovery.resolve(server_name!("example.org")).await;
        assert_eq!(got, dest("example.org", 8449, "example.org", Some("old.example.org")));
    }

    #[tokio::test]
    async fn step_6_then_the_host_on_8448() {
        let (discovery, _, _) = discovery(FakeLookup::default());
        assert_eq!(
            discovery.resolve(server_name!("example.org")).await,
            dest("example.org", 8448, "example.org", None)
        );
    }

    #[tokio::test]
    async fn an_srv_record_naming_the_host_itself_needs_no_override() {
        let lookup = FakeLookup::default().srv("_matrix-fed._tcp.example.org", "example.org", 443);
        let (discovery, _, overrides) = discovery(lookup);
        assert_eq!(discovery.resolve(server_name!("example.org")).await, dest("example.org", 443, "example.org", None));
        assert_eq!(overrides.target("example.org"), None);
    }

    #[tokio::test]
    async fn well_known_answers_and_failures_are_cached() {
        let lookup = FakeLookup::default()
            .delegate("good.example", "matrix.good.example:443")
            .well_known_answer("bad.example", WellKnown::Invalid);
        let (discovery, lookup, _) = discovery(lookup);
        for _ in 0..3 {
            discovery.resolve(server_name!("good.example")).await;
            discovery.resolve(server_name!("bad.example")).await;
            discovery.resolve(server_name!("down.example")).await;
        }
        let mut requests = lookup.well_known_requests.lock().unwrap().clone();
        requests.sort();
        assert_eq!(requests, ["bad.example", "down.example", "good.example"]);
        discovery.forget(server_name!("good.example"));
        discovery.resolve(server_name!("good.example")).await;
        assert_eq!(lookup.well_known_requests.lock().unwrap().len(), 4);
    }

    #[tokio::test]
    async fn concurrent_resolutions_share_one_well_known_request() {
        let (discovery, lookup, _) = discovery(FakeLookup::default().delegate("example.org", "m.example.org:1"));
        let discovery = Arc::new(discovery);
        let tasks: Vec<_> = (0..8)
            .map(|_| {
                let discovery = discovery.clone();
                tokio::spawn(async move { discovery.resolve(server_name!("example.org")).await })
            })
            .collect();
        for task in tasks {
            assert_eq!(task.await.unwrap().host, "m.example.org");
        }
        assert_eq!(lookup.well_known_requests.lock().unwrap().len(), 1);
    }

    #[test]
    fn cache_control_and_well_known_bodies() {
        assert_eq!(cache_control_lifetime("max-age=3600"), Some(Duration::from_secs(3600)));
        assert_eq!(cache_control_lifetime("public, max-age=60, must-revalidate"), Some(Duration::from_secs(60)));
        assert_eq!(cache_control_lifetime("no-store"), Some(Duration::ZERO));
        assert_eq!(cache_control_lifetime("public"), None);
        assert_eq!(parse_well_known(br#"{"m.server": "matrix.example.org:443"}"#).unwrap(), "matrix.example.org:443");
        assert_eq!(parse_well_known(br#"{"m.server": "[::1]"}"#).unwrap(), "[::1]");
        assert_eq!(parse_well_known(br#"{"m.server": "https://matrix.example.org"}"#), None);
        assert_eq!(parse_well_known(br#"{"m.server": 5}"#), None);
        assert_eq!(parse_well_known(b"<html>"), None);
        assert_eq!(parse_well_known(b"{}"), None);
    }
}
