//! Configuration: a TOML file plus `MYELIN_*` environment overrides, validated once at start.
//!
//! Every setting is listed, with its environment variable, in `docs/configuration.md`; the example
//! file `config/myelin.toml` comments each one. Nested keys map to variables with `__`:
//! `database.path` is `MYELIN_DATABASE__PATH`.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use ruma::{OwnedServerName, RoomVersionId};
use serde::Deserialize;

/// The whole configuration. Unknown keys are refused, so a typo is an error and not a silent default.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The domain in user IDs (`@alice:server_name`); it can never change once users exist.
    pub server_name: OwnedServerName,
    /// The URL clients use to reach the client API, as advertised in `/.well-known/matrix/client`.
    #[serde(default)]
    pub public_baseurl: Option<String>,
    #[serde(default)]
    pub listen: ListenConfig,
    #[serde(default)]
    pub tls: TlsConfig,
    #[serde(default)]
    pub database: DatabaseConfig,
    #[serde(default)]
    pub registration: RegistrationConfig,
    #[serde(default)]
    pub auth: AuthConfig,
    #[serde(default)]
    pub limits: LimitsConfig,
    #[serde(default)]
    pub rate_limits: RateLimitsConfig,
    #[serde(default)]
    pub rooms: RoomsConfig,
    #[serde(default)]
    pub presence: PresenceConfig,
    #[serde(default)]
    pub well_known: WellKnownConfig,
    #[serde(default)]
    pub federation: FederationConfig,
    #[serde(default)]
    pub log: LogConfig,
    #[serde(default)]
    pub media: MediaConfig,
    #[serde(default)]
    pub web_client: WebClientConfig,
    #[serde(default)]
    pub app_services: AppServicesConfig,
    /// `MYELIN_*` variables that name no setting (scripts use some, such as `MYELIN_BIN`); they
    /// are ignored and reported at start.
    #[serde(skip)]
    pub ignored_variables: Vec<String>,
}

/// The top-level keys of [`Config`]. A variable `MYELIN_X` or `MYELIN_X__Y` whose `x` is not one
/// of them is not meant for the server; one whose `x` is, but names no setting, is a typo and an
/// error. A test checks this list against the struct.
const TOP_LEVEL_KEYS: [&str; 18] = [
    "server_name",
    "public_baseurl",
    "listen",
    "tls",
    "database",
    "registration",
    "auth",
    "limits",
    "rate_limits",
    "rooms",
    "presence",
    "well_known",
    "federation",
    "log",
    "media",
    "web_client",
    "app_services",
    "ignored_variables",
];

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ListenConfig {
    /// Plain-HTTP client API (and admin API). Put a TLS-terminating proxy in front in production.
    pub client: SocketAddr,
    /// TLS federation API; `None` turns federation listening off.
    pub federation: Option<SocketAddr>,
}

impl Default for ListenConfig {
    fn default() -> Self {
        Self { client: SocketAddr::from(([127, 0, 0, 1], 8008)), federation: None }
    }
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TlsConfig {
    /// PEM certificate chain for the federation listener.
    pub cert: Option<PathBuf>,
    /// PEM private key for the federation listener.
    pub key: Option<PathBuf>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DatabaseConfig {
    /// Directory of the RocksDB database; created on first start.
    pub path: PathBuf,
    /// Size of the shared block cache, in MiB.
    pub cache_mb: usize,
    /// Memory for writes not yet flushed to disk (RocksDB memtables), across all columns, in MiB.
    pub write_buffer_mb: usize,
}

impl Default for DatabaseConfig {
    fn default() -> Self {
        Self { path: PathBuf::from("./data"), cache_mb: 128, write_buffer_mb: 4 }
    }
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RegistrationConfig {
    /// Whether anyone may create an account through `/register`.
    pub enabled: bool,
    /// Require one of `tokens` (the `m.login.registration_token` stage).
    pub token_required: bool,
    /// Registration tokens accepted when `token_required` is on (a list, or one comma-separated string).
    #[serde(deserialize_with = "list_or_comma_separated")]
    pub tokens: Vec<String>,
    /// Secret for Synapse-compatible shared-secret registration (`/_synapse/admin/v1/register`).
    pub shared_secret: Option<String>,
    /// Allow guest accounts (`/register?kind=guest`).
    pub allow_guests: bool,
    /// Rooms (aliases or IDs) every new account joins; `#name` alone means `#name:server_name`.
    #[serde(deserialize_with = "list_or_comma_separated")]
    pub auto_join_rooms: Vec<String>,
    /// Create a missing local auto-join alias's room (public, with that alias) on first use.
    pub autocreate_auto_join_rooms: bool,
}

impl Default for RegistrationConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            token_required: false,
            tokens: Vec::new(),
            shared_secret: None,
            allow_guests: false,
            auto_join_rooms: Vec::new(),
            autocreate_auto_join_rooms: true,
        }
    }
}

impl RegistrationConfig {
    /// The auto-join rooms as aliases or room IDs, a bare `#name` completed with our server name.
    /// `validate` has checked that each parses.
    pub fn auto_join_targets(&self, server_name: &ruma::ServerName) -> Vec<ruma::OwnedRoomOrAliasId> {
        self.auto_join_rooms.iter().filter_map(|room| auto_join_target(room, server_name)).collect()
    }
}

fn auto_join_target(room: &str, server_name: &ruma::ServerName) -> Option<ruma::OwnedRoomOrAliasId> {
    let full =
        if room.starts_with('#') && !room.contains(':') { format!("{room}:{server_name}") } else { room.to_owned() };
    ruma::OwnedRoomOrAliasId::try_from(full).ok()
}

/// The built-in web client served at `/`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WebClientConfig {
    /// Serve it; off, `/` is a 404 like any unknown path.
    pub enabled: bool,
}

impl Default for WebClientConfig {
    fn default() -> Self {
        Self { enabled: true }
    }
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// Lifetime of access tokens given to clients that support refresh tokens, in seconds.
    pub refreshable_access_token_lifetime_secs: u64,
    /// How long an unfinished user-interactive authentication session lives, in seconds.
    pub uia_session_lifetime_secs: u64,
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self { refreshable_access_token_lifetime_secs: 300, uia_session_lifetime_secs: 900 }
    }
}

impl AuthConfig {
    pub fn access_token_lifetime(&self) -> Duration {
        Duration::from_secs(self.refreshable_access_token_lifetime_secs)
    }

    pub fn uia_session_lifetime(&self) -> Duration {
        Duration::from_secs(self.uia_session_lifetime_secs)
    }
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Largest request body accepted, in bytes.
    pub max_request_size: usize,
    /// Seconds that in-flight requests get to finish after SIGTERM/SIGINT.
    pub shutdown_grace_secs: u64,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self { max_request_size: 1024 * 1024, shutdown_grace_secs: 8 }
    }
}

/// A token bucket: `per_second` refills, up to `burst` requests at once.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Rate {
    pub per_second: f64,
    pub burst: u32,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RateLimitsConfig {
    /// Turn every rate limit off (test suites and benchmarks do).
    pub enabled: bool,
    /// Login attempts per client IP address.
    pub login: Rate,
    /// Failed login attempts per account.
    pub failed_login: Rate,
    /// Registrations per client IP address.
    pub registration: Rate,
    /// Username-availability and registration-token checks per client IP address.
    pub availability_checks: Rate,
    /// Events sent per user: messages, state changes and redactions.
    pub messages: Rate,
    /// Joins and knocks per user.
    pub joins: Rate,
    /// Invites sent per user.
    pub invites: Rate,
    /// Media uploads per user (`/upload`, `/create`).
    pub media_uploads: Rate,
    /// Messages, joins, invites and uploads are limited per client address too, at this many
    /// times the per-user rate and burst (users behind one NAT share an address).
    pub address_multiplier: f64,
}

impl Default for RateLimitsConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            login: Rate { per_second: 0.5, burst: 10 },
            failed_login: Rate { per_second: 0.1, burst: 5 },
            registration: Rate { per_second: 0.2, burst: 5 },
            availability_checks: Rate { per_second: 1.0, burst: 20 },
            messages: Rate { per_second: 1.0, burst: 20 },
            joins: Rate { per_second: 0.1, burst: 10 },
            invites: Rate { per_second: 0.02, burst: 10 },
            media_uploads: Rate { per_second: 1.0, burst: 20 },
            address_multiplier: 10.0,
        }
    }
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RoomsConfig {
    /// Room version of newly created rooms.
    pub default_version: RoomVersionId,
    /// Memory for parsed events kept for reads (syncs, history), in MiB.
    pub event_cache_mb: u64,
}

impl Default for RoomsConfig {
    fn default() -> Self {
        Self { default_version: RoomVersionId::V12, event_cache_mb: 4 }
    }
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PresenceConfig {
    /// Track and share presence (online, unavailable, offline). Off, everyone looks offline.
    pub enabled: bool,
    /// Seconds without activity (sending, typing, reading) after which an online user is unavailable.
    pub idle_after_secs: u64,
    /// Seconds without any open sync after which a user is offline.
    pub offline_after_secs: u64,
}

impl Default for PresenceConfig {
    fn default() -> Self {
        Self { enabled: true, idle_after_secs: 300, offline_after_secs: 30 }
    }
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WellKnownConfig {
    /// `m.server` in `/.well-known/matrix/server` (delegation, `host:port`).
    pub server: Option<String>,
}

/// Talking to other homeservers: our published keys, the keys of others, outbound requests.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FederationConfig {
    /// How long others may cache our signing keys (`valid_until_ts` of `/_matrix/key/v2/server`).
    pub key_validity_secs: u64,
    /// Notary servers asked for a server's keys when the server itself does not answer.
    #[serde(deserialize_with = "list_or_comma_separated")]
    pub trusted_key_servers: Vec<String>,
    /// Time limit of each outbound federation request, in seconds.
    pub request_timeout_secs: u64,
    /// An extra certificate authority (PEM) trusted for outbound federation, besides the system's.
    pub tls_ca_file: Option<PathBuf>,
    /// Accept any certificate from other servers. For tests only: it lets anyone impersonate them.
    pub tls_insecure_skip_verify: bool,
    /// Address ranges outbound requests never connect to (CIDR, or single addresses).
    #[serde(deserialize_with = "list_or_comma_separated")]
    pub ip_range_denylist: Vec<String>,
    /// Exceptions to the deny list, e.g. `127.0.0.1` for federation tests on one machine.
    #[serde(deserialize_with = "list_or_comma_separated")]
    pub ip_range_allowlist: Vec<String>,
    /// A transaction another server did not accept is retried after this many milliseconds, then
    /// after twice as long each time, up to `retry_max_secs`.
    pub retry_min_ms: u64,
    /// The longest wait between two tries of a transaction, in seconds.
    pub retry_max_secs: u64,
    /// After failing this long, a destination's queues are trimmed at each failed try (the latest
    /// event of each room and the newest EDUs stay), so they stay bounded while it is down.
    pub catch_up_after_secs: u64,
    /// Authenticated requests of one other server handled at once; more wait their turn.
    pub max_concurrent_requests_per_origin: usize,
    /// Requests of one other server waiting for a turn; beyond them, `429 M_LIMIT_EXCEEDED`.
    pub max_queued_requests_per_origin: usize,
}

/// Addresses that are not on the public internet, as in Synapse's `ip_range_blacklist` (plus
/// "this network" and the unspecified IPv6 address): an outbound request must not be a way to
/// reach the server's own network.
pub const DEFAULT_IP_RANGE_DENYLIST: [&str; 21] = [
    "0.0.0.0/8",
    "127.0.0.0/8",
    "10.0.0.0/8",
    "172.16.0.0/12",
    "192.168.0.0/16",
    "100.64.0.0/10",
    "192.0.0.0/24",
    "169.254.0.0/16",
    "192.88.99.0/24",
    "198.18.0.0/15",
    "192.0.2.0/24",
    "198.51.100.0/24",
    "203.0.113.0/24",
    "224.0.0.0/4",
    "::/128",
    "::1/128",
    "fe80::/10",
    "fc00::/7",
    "2001:db8::/32",
    "ff00::/8",
    "fec0::/10",
];

impl Default for FederationConfig {
    fn default() -> Self {
        Self {
            key_validity_secs: 7 * 24 * 3600,
            trusted_key_servers: Vec::new(),
            request_timeout_secs: 60,
            tls_ca_file: None,
            tls_insecure_skip_verify: false,
            ip_range_denylist: DEFAULT_IP_RANGE_DENYLIST.iter().map(|s| s.to_string()).collect(),
            ip_range_allowlist: Vec::new(),
            retry_min_ms: 5_000,
            retry_max_secs: 3_600,
            catch_up_after_secs: 3_600,
            max_concurrent_requests_per_origin: 3,
            max_queued_requests_per_origin: 50,
        }
    }
}

impl FederationConfig {
    pub fn request_timeout(&self) -> Duration {
        Duration::from_secs(self.request_timeout_secs)
    }

    /// The first and the longest wait before retrying a transaction.
    pub fn retry_bounds(&self) -> (Duration, Duration) {
        (Duration::from_millis(self.retry_min_ms), Duration::from_secs(self.retry_max_secs))
    }
}

/// Parses an address range: CIDR (`10.0.0.0/8`, `fc00::/7`) or a single address (`127.0.0.1`).
pub fn parse_ip_range(text: &str) -> Option<ipnet::IpNet> {
    text.parse::<ipnet::IpNet>().ok().or_else(|| text.parse::<std::net::IpAddr>().ok().map(ipnet::IpNet::from))
}

#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// A tracing filter: `info`, or per module such as `myelin=debug,info`.
    pub level: String,
    pub format: LogFormat,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self { level: "info".to_owned(), format: LogFormat::Text }
    }
}

/// Application services (bridges, bots): their registration files.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AppServicesConfig {
    /// Registration files (YAML, as Synapse's `app_service_config_files`), read at start.
    #[serde(deserialize_with = "list_or_comma_separated")]
    pub registration_files: Vec<String>,
}

/// The media repository: uploads, downloads, thumbnails.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MediaConfig {
    /// Directory of uploaded files and thumbnails; `None` is `<database.path>/media`.
    pub path: Option<PathBuf>,
    /// Largest upload accepted, in bytes (Synapse's default is 50 MiB too). Also the largest
    /// remote file fetched.
    pub max_upload_bytes: u64,
    /// Images with more pixels than this are not decoded for thumbnails (a decoded pixel takes
    /// up to 16 bytes of memory).
    pub max_thumbnail_pixels: u64,
}

impl Default for MediaConfig {
    fn default() -> Self {
        Self { path: None, max_upload_bytes: 50 * 1024 * 1024, max_thumbnail_pixels: 32 * 1024 * 1024 }
    }
}

impl Config {
    /// Where media files live.
    pub fn media_path(&self) -> PathBuf {
        self.media.path.clone().unwrap_or_else(|| self.database.path.join("media"))
    }
}

/// A configuration problem, worded to be printed as one line.
#[derive(Debug)]
pub struct ConfigError(pub String);

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// The room versions this server understands.
pub const SUPPORTED_ROOM_VERSIONS: [RoomVersionId; 12] = [
    RoomVersionId::V1,
    RoomVersionId::V2,
    RoomVersionId::V3,
    RoomVersionId::V4,
    RoomVersionId::V5,
    RoomVersionId::V6,
    RoomVersionId::V7,
    RoomVersionId::V8,
    RoomVersionId::V9,
    RoomVersionId::V10,
    RoomVersionId::V11,
    RoomVersionId::V12,
];

impl Config {
    /// Reads the optional file, applies `MYELIN_*` variables from `env`, and validates the result.
    pub fn load(
        file: Option<&std::path::Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, ConfigError> {
        let mut builder = config::Config::builder();
        if let Some(path) = file {
            if !path.is_file() {
                return Err(ConfigError(format!(
                    "configuration file {} does not exist or is not a file",
                    path.display()
                )));
            }
            builder = builder.add_source(config::File::from(path).format(config::FileFormat::Toml));
        }
        let (env, ignored): (config::Map<String, String>, config::Map<String, String>) =
            env.into_iter().filter(|(k, _)| k.starts_with("MYELIN_")).partition(|(k, _)| names_a_setting(k));
        builder = builder.add_source(
            config::Environment::with_prefix("MYELIN").prefix_separator("_").separator("__").source(Some(env)),
        );
        let mut config: Config =
            builder.build().and_then(|c| c.try_deserialize()).map_err(|e| ConfigError(describe(e)))?;
        config.validate()?;
        config.ignored_variables = ignored.into_keys().collect();
        config.ignored_variables.sort();
        Ok(config)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let fail = |key: &str, problem: &str| Err(ConfigError(format!("`{key}`: {problem}")));
        if let Some(url) = &self.public_baseurl
            && !(url.starts_with("http://") || url.starts_with("https://"))
        {
            return fail("public_baseurl", "must be an http:// or https:// URL");
        }
        if self.tls.cert.is_some() != self.tls.key.is_some() {
            return fail("tls", "set both `tls.cert` and `tls.key`, or neither");
        }
        if self.listen.federation.is_some() && self.tls.cert.is_none() {
            return fail("listen.federation", "the federation listener needs `tls.cert` and `tls.key`");
        }
        for (key, path) in [("tls.cert", &self.tls.cert), ("tls.key", &self.tls.key)] {
            if let Some(path) = path
                && !path.is_file()
            {
                return fail(key, &format!("{} does not exist or is not a file", path.display()));
            }
        }
        if self.database.cache_mb == 0 {
            return fail("database.cache_mb", "must be at least 1");
        }
        if self.database.write_buffer_mb < 2 {
            return fail("database.write_buffer_mb", "must be at least 2");
        }
        if self.rooms.event_cache_mb == 0 {
            return fail("rooms.event_cache_mb", "must be at least 1");
        }
        let reg = &self.registration;
        if reg.token_required && reg.tokens.is_empty() {
            return fail("registration.tokens", "`token_required` is on but no token is configured");
        }
        if reg.tokens.iter().any(|t| !is_valid_registration_token(t)) {
            return fail("registration.tokens", "tokens are 1 to 64 characters of A-Z, a-z, 0-9, '.', '_', '~' or '-'");
        }
        if reg.shared_secret.as_deref() == Some("") {
            return fail("registration.shared_secret", "must not be empty (leave it out to turn it off)");
        }
        if let Some(bad) = reg.auto_join_rooms.iter().find(|r| auto_join_target(r, &self.server_name).is_none()) {
            return fail("registration.auto_join_rooms", &format!("`{bad}` is not a room alias or room ID"));
        }
        if self.limits.max_request_size < 1024 {
            return fail("limits.max_request_size", "must be at least 1024 bytes");
        }
        if self.auth.refreshable_access_token_lifetime_secs == 0 {
            return fail("auth.refreshable_access_token_lifetime_secs", "must be at least 1");
        }
        let rl = &self.rate_limits;
        for (key, rate) in [("login", rl.login), ("failed_login", rl.failed_login), ("registration", rl.registration)] {
            if !(rate.per_second > 0.0 && rate.per_second.is_finite()) || rate.burst == 0 {
                return fail(
                    &format!("rate_limits.{key}"),
                    "`per_second` must be a positive number and `burst` at least 1",
                );
            }
        }
        if !(rl.address_multiplier >= 1.0 && rl.address_multiplier.is_finite()) {
            return fail("rate_limits.address_multiplier", "must be a number of at least 1");
        }
        if !SUPPORTED_ROOM_VERSIONS.contains(&self.rooms.default_version) {
            return fail("rooms.default_version", "must be a room version from 1 to 12");
        }
        if self.presence.idle_after_secs == 0 || self.presence.offline_after_secs == 0 {
            return fail("presence", "idle_after_secs and offline_after_secs must be at least 1");
        }
        if let Some(server) = &self.well_known.server
            && server.contains('/')
        {
            return fail("well_known.server", "must be `host` or `host:port`, not a URL");
        }
        let fed = &self.federation;
        if fed.key_validity_secs < 3600 {
            // The spec asks servers not to publish keys that expire within the hour.
            return fail("federation.key_validity_secs", "must be at least 3600");
        }
        if fed.max_concurrent_requests_per_origin == 0 {
            return fail("federation.max_concurrent_requests_per_origin", "must be at least 1");
        }
        if fed.request_timeout_secs == 0 {
            return fail("federation.request_timeout_secs", "must be at least 1");
        }
        if fed.retry_min_ms == 0 || fed.retry_max_secs == 0 || fed.retry_min_ms > fed.retry_max_secs * 1000 {
            return fail("federation.retry_min_ms", "must be at least 1, and no more than retry_max_secs (at least 1)");
        }
        for server in &fed.trusted_key_servers {
            if <&ruma::ServerName>::try_from(server.as_str()).is_err() {
                return fail("federation.trusted_key_servers", &format!("`{server}` is not a server name"));
            }
        }
        if let Some(path) = &fed.tls_ca_file
            && !path.is_file()
        {
            return fail("federation.tls_ca_file", &format!("{} does not exist or is not a file", path.display()));
        }
        for (key, list) in [
            ("federation.ip_range_denylist", &fed.ip_range_denylist),
            ("federation.ip_range_allowlist", &fed.ip_range_allowlist),
        ] {
            if let Some(bad) = list.iter().find(|range| parse_ip_range(range).is_none()) {
                return fail(key, &format!("`{bad}` is not an address or CIDR range"));
            }
        }
        if self.media.max_upload_bytes == 0 {
            return fail("media.max_upload_bytes", "must be at least 1");
        }
        if self.media.max_thumbnail_pixels == 0 {
            return fail("media.max_thumbnail_pixels", "must be at least 1");
        }
        if let Some(missing) = self.app_services.registration_files.iter().find(|f| !std::path::Path::new(f).is_file())
        {
            return fail("app_services.registration_files", &format!("{missing} does not exist or is not a file"));
        }
        if tracing_subscriber::EnvFilter::try_new(&self.log.level).is_err() {
            return fail("log.level", "not a valid filter (try `info` or `myelin=debug,info`)");
        }
        Ok(())
    }

    /// The client API base URL: configured, or the server name over HTTPS as Synapse assumes.
    pub fn client_base_url(&self) -> String {
        let url = self.public_baseurl.clone().unwrap_or_else(|| format!("https://{}", self.server_name));
        if url.ends_with('/') { url } else { format!("{url}/") }
    }
}

/// Whether a `MYELIN_*` variable is meant for the configuration (see [`TOP_LEVEL_KEYS`]).
fn names_a_setting(variable: &str) -> bool {
    let key = variable["MYELIN_".len()..].to_lowercase();
    let top = key.split("__").next().unwrap_or_default();
    top != "ignored_variables" && TOP_LEVEL_KEYS.contains(&top)
}

/// Registration tokens use the opaque identifier grammar, at most 64 characters.
pub fn is_valid_registration_token(token: &str) -> bool {
    (1..=64).contains(&token.len())
        && token.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'~' | b'-'))
}

/// Accepts a TOML list or, as environment variables can only carry strings, "a,b,c".
fn list_or_comma_separated<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum ListOrString {
        List(Vec<String>),
        String(String),
    }
    Ok(match ListOrString::deserialize(d)? {
        ListOrString::List(list) => list,
        ListOrString::String(s) => s.split(',').map(str::trim).filter(|t| !t.is_empty()).map(str::to_owned).collect(),
    })
}

/// Turns the `config` crate's error into one line that names the key.
fn describe(error: config::ConfigError) -> String {
    let text = error.to_string();
    // serde's "missing field `x`" does not say that `x` is a configuration key.
    if let Some(rest) = text.strip_prefix("missing field ") {
        return format!("{rest}: required but not set");
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn environment_overrides_nested_keys() {
        let config = Config::load(
            None,
            env(&[
                ("MYELIN_SERVER_NAME", "example.org"),
                ("MYELIN_DATABASE__PATH", "/tmp/x"),
                ("MYELIN_LISTEN__CLIENT", "127.0.0.1:9000"),
                ("MYELIN_REGISTRATION__ENABLED", "true"),
                ("MYELIN_REGISTRATION__SHARED_SECRET", "12345"),
                ("MYELIN_REGISTRATION__TOKENS", "abc,def"),
                ("UNRELATED", "1"),
            ]),
        )
        .unwrap();
        assert_eq!(config.server_name.as_str(), "example.org");
        assert_eq!(config.database.path, PathBuf::from("/tmp/x"));
        assert_eq!(config.listen.client.port(), 9000);
        assert!(config.registration.enabled);
        assert_eq!(config.registration.shared_secret.as_deref(), Some("12345"));
        assert_eq!(config.registration.tokens, ["abc", "def"]);
    }

    #[test]
    fn variables_for_other_tools_are_ignored_but_typos_are_not() {
        let config = Config::load(
            None,
            env(&[("MYELIN_SERVER_NAME", "example.org"), ("MYELIN_BIN", "/x"), ("MYELIN_CACHE", "/y")]),
        )
        .unwrap();
        assert_eq!(config.ignored_variables, ["MYELIN_BIN", "MYELIN_CACHE"]);
        let err =
            Config::load(None, env(&[("MYELIN_SERVER_NAME", "a.b"), ("MYELIN_DATABASE__PAHT", "/x")])).unwrap_err().0;
        assert!(err.contains("paht"), "{err}");
    }

    #[test]
    fn the_list_of_top_level_keys_matches_the_struct() {
        // serde lists the expected fields when it meets an unknown one.
        let text = toml_error("bogus_key_for_the_test = 1\nserver_name = \"a.b\"\n");
        let expected: Vec<&str> = text.split('`').skip(3).step_by(2).collect();
        let mut listed: Vec<&str> = TOP_LEVEL_KEYS.iter().copied().filter(|k| *k != "ignored_variables").collect();
        let mut expected = expected;
        listed.sort_unstable();
        expected.sort_unstable();
        assert_eq!(listed, expected, "{text}");
    }

    fn toml_error(toml: &str) -> String {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(&path, toml).unwrap();
        Config::load(Some(&path), Vec::new()).unwrap_err().0
    }

    #[test]
    fn federation_settings_have_safe_defaults_and_are_checked() {
        let config = Config::load(None, env(&[("MYELIN_SERVER_NAME", "a.b")])).unwrap();
        let fed = &config.federation;
        assert_eq!(fed.key_validity_secs, 7 * 24 * 3600);
        assert!(fed.trusted_key_servers.is_empty());
        assert!(!fed.tls_insecure_skip_verify);
        assert!(fed.ip_range_denylist.iter().any(|r| r == "127.0.0.0/8"));
        assert!(fed.ip_range_allowlist.is_empty());
        assert_eq!(fed.retry_bounds(), (Duration::from_secs(5), Duration::from_secs(3600)));
        let config = Config::load(
            None,
            env(&[
                ("MYELIN_SERVER_NAME", "a.b"),
                ("MYELIN_FEDERATION__IP_RANGE_ALLOWLIST", "127.0.0.1, ::1"),
                ("MYELIN_FEDERATION__TRUSTED_KEY_SERVERS", "matrix.org,notary.example:8448"),
                ("MYELIN_FEDERATION__IP_RANGE_DENYLIST", ""),
            ]),
        )
        .unwrap();
        assert_eq!(config.federation.ip_range_allowlist, ["127.0.0.1", "::1"]);
        assert_eq!(config.federation.trusted_key_servers, ["matrix.org", "notary.example:8448"]);
        assert!(config.federation.ip_range_denylist.is_empty());
        for (key, value) in [
            ("MYELIN_FEDERATION__IP_RANGE_DENYLIST", "10.0.0.0/33"),
            ("MYELIN_FEDERATION__IP_RANGE_ALLOWLIST", "localhost"),
            ("MYELIN_FEDERATION__TRUSTED_KEY_SERVERS", "not a name"),
            ("MYELIN_FEDERATION__KEY_VALIDITY_SECS", "60"),
            ("MYELIN_FEDERATION__TLS_CA_FILE", "/does/not/exist.pem"),
            ("MYELIN_FEDERATION__RETRY_MIN_MS", "0"),
            ("MYELIN_FEDERATION__RETRY_MIN_MS", "7200000"),
        ] {
            let err = Config::load(None, env(&[("MYELIN_SERVER_NAME", "a.b"), (key, value)])).unwrap_err().0;
            assert!(err.contains("federation."), "{key}: {err}");
        }
    }

    #[test]
    fn errors_name_the_key() {
        let err = Config::load(None, env(&[])).unwrap_err().0;
        assert!(err.contains("server_name"), "{err}");
        let err = Config::load(None, env(&[("MYELIN_SERVER_NAME", "a.b"), ("MYELIN_LISTEN__CLIENT", "nonsense")]))
            .unwrap_err()
            .0;
        assert!(err.contains("listen.client"), "{err}");
        let err =
            Config::load(None, env(&[("MYELIN_SERVER_NAME", "a.b"), ("MYELIN_REGISTRATION__TOKEN_REQUIRED", "true")]))
                .unwrap_err()
                .0;
        assert!(err.contains("registration.tokens"), "{err}");
    }
}
