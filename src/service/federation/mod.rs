//! Federation: talking to other homeservers.
//!
//! - [`discovery`]: where a server name's requests go (the spec's server name resolution).
//! - [`client`]: outbound requests, X-Matrix signed, over verified TLS, never to denied addresses.
//! - [`keys`]: other servers' signing keys (fetched, checked, stored) and our notary answers.
//! - [`ip_ranges`]: the address deny list.
//! - [`acl`]: server ACLs of rooms (`Services::check_server_acl`).
//! - [`sender`]: the outbound queues per destination and their transactions.
//! - [`edus`]: what local typing, presence, receipts, to-device messages and device changes send.
//!
//! Inbound X-Matrix verification is in the API layer (`api::federation::auth`), over [`keys`].

pub mod acl;
pub mod backfill;
pub mod client;
pub mod devices;
pub mod discovery;
pub mod edus;
pub mod inbound;
pub mod ip_ranges;
pub mod keys;
pub mod membership;
pub mod origin_limits;
pub mod sender;
pub mod transactions;

use std::{sync::Arc, time::Duration};

use ruma::OwnedServerName;

use crate::{config::Config, error::Result, service::keys::ServerKeys, storage::Storage};

/// The federation services, built once with the others.
pub struct Federation {
    pub discovery: Arc<discovery::Discovery>,
    pub client: Arc<client::FederationClient>,
    pub keys: Arc<keys::RemoteKeys>,
    /// The outbound queues: PDUs and EDUs for each destination, sent in transactions.
    pub sender: Arc<sender::Sender>,
    /// The cap on concurrent inbound requests per origin.
    pub origin_limits: origin_limits::OriginLimits,
}

impl Federation {
    pub fn new(config: &Config, storage: Arc<Storage>, own: Arc<ServerKeys>) -> Result<Self> {
        let fed = &config.federation;
        let (discovery, client) = client::build(fed, config.server_name.clone(), own.clone())?;
        let client = Arc::new(client);
        let notaries = fed
            .trusted_key_servers
            .iter()
            .filter_map(|name| OwnedServerName::try_from(name.as_str()).ok())
            .filter(|name| *name != config.server_name)
            .collect();
        let (min, max) = fed.retry_bounds();
        let sender = Arc::new(sender::Sender::new(
            storage.clone(),
            client.clone(),
            config.server_name.clone(),
            sender::Backoff { min, max, catch_up_after: std::time::Duration::from_secs(fed.catch_up_after_secs) },
        ));
        let keys = Arc::new(keys::RemoteKeys::new(
            storage,
            client.clone(),
            own,
            config.server_name.clone(),
            notaries,
            Duration::from_secs(fed.key_validity_secs),
        ));
        let origin_limits = origin_limits::OriginLimits::new(
            fed.max_concurrent_requests_per_origin,
            fed.max_queued_requests_per_origin,
        );
        Ok(Self { discovery, client, keys, sender, origin_limits })
    }
}
