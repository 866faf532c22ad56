//! Rate limits: token buckets keyed by what is limited (a client address, an account).

use std::{collections::HashMap, sync::Mutex, time::Instant};

use crate::{
    config::{Rate, RateLimitsConfig},
    error::{Error, ErrorKind, Result},
};

/// What a bucket limits.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Limit {
    Login,
    FailedLogin,
    Registration,
    AvailabilityCheck,
    Message,
    Join,
    Invite,
    MediaUpload,
}

/// Buckets above this count trigger a sweep of the full ones (which carry no information).
const SWEEP_AT: usize = 100_000;

struct Bucket {
    tokens: f64,
    updated: Instant,
    rate: Rate,
}

pub struct RateLimits {
    enabled: bool,
    rates: HashMap<Limit, Rate>,
    /// How many times a user's rate one client address gets (many users may share one).
    address_multiplier: f64,
    buckets: Mutex<HashMap<(Limit, String), Bucket>>,
}

impl RateLimits {
    pub fn new(config: &RateLimitsConfig) -> Self {
        Self {
            enabled: config.enabled,
            rates: HashMap::from([
                (Limit::Login, config.login),
                (Limit::FailedLogin, config.failed_login),
                (Limit::Registration, config.registration),
                (Limit::AvailabilityCheck, config.availability_checks),
                (Limit::Message, config.messages),
                (Limit::Join, config.joins),
                (Limit::Invite, config.invites),
                (Limit::MediaUpload, config.media_uploads),
            ]),
            address_multiplier: config.address_multiplier,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// A user's action, limited per account and per client address (at `address_multiplier`
    /// times the rate and burst), so many accounts from one address cannot multiply the rate.
    /// Keys cannot collide: user IDs start with `@`, addresses never do.
    pub fn check_user(&self, limit: Limit, user: &ruma::UserId, address: &str) -> Result<()> {
        if !self.enabled {
            return Ok(());
        }
        let rate = self.rates[&limit];
        let by_address = Rate {
            per_second: rate.per_second * self.address_multiplier,
            burst: (f64::from(rate.burst) * self.address_multiplier).ceil() as u32,
        };
        // The address is peeked first so that a refusal takes no token of the user's.
        if !address.is_empty() {
            self.take(limit, address, by_address, true)?;
        }
        self.take(limit, user.as_str(), rate, false)?;
        if !address.is_empty() {
            self.take(limit, address, by_address, false)?;
        }
        Ok(())
    }

    /// Takes one token from the bucket of `key`, or says how long to wait for one.
    pub fn check(&self, limit: Limit, key: &str) -> Result<()> {
        self.take_one(limit, key, false)
    }

    /// Whether a token is there, without taking it (to refuse early what would fail anyway).
    pub fn peek(&self, limit: Limit, key: &str) -> Result<()> {
        self.take_one(limit, key, true)
    }

    fn take_one(&self, limit: Limit, key: &str, peek_only: bool) -> Result<()> {
        if !self.enabled {
            return Ok(());
        }
        self.take(limit, key, self.rates[&limit], peek_only)
    }

    fn take(&self, limit: Limit, key: &str, rate: Rate, peek_only: bool) -> Result<()> {
        let now = Instant::now();
        let mut buckets = self.buckets.lock().expect("rate limit lock");
        if buckets.len() >= SWEEP_AT {
            buckets.retain(|_, bucket| {
                let rate = bucket.rate;
                bucket.tokens + now.duration_since(bucket.updated).as_secs_f64() * rate.per_second
                    < f64::from(rate.burst)
            });
        }
        let bucket = buckets.entry((limit, key.to_owned())).or_insert(Bucket {
            tokens: f64::from(rate.burst),
            updated: now,
            rate,
        });
        let refill = now.duration_since(bucket.updated).as_secs_f64() * rate.per_second;
        bucket.tokens = (bucket.tokens + refill).min(f64::from(rate.burst));
        bucket.updated = now;
        if bucket.tokens >= 1.0 {
            if !peek_only {
                bucket.tokens -= 1.0;
            }
            return Ok(());
        }
        let wait_ms = ((1.0 - bucket.tokens) / rate.per_second * 1000.0).ceil() as u64;
        Err(Error::new(ErrorKind::LimitExceeded { retry_after_ms: wait_ms }, "Too many requests; try again later"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bucket_allows_its_burst_then_refuses_with_a_wait() {
        let config =
            RateLimitsConfig { enabled: true, login: Rate { per_second: 1.0, burst: 3 }, ..Default::default() };
        let limits = RateLimits::new(&config);
        for _ in 0..3 {
            limits.check(Limit::Login, "1.2.3.4").unwrap();
        }
        let err = limits.check(Limit::Login, "1.2.3.4").unwrap_err();
        match err.kind() {
            Some(ErrorKind::LimitExceeded { retry_after_ms }) => assert!((1..=1000).contains(retry_after_ms)),
            other => panic!("expected M_LIMIT_EXCEEDED, got {other:?}"),
        }
        limits.check(Limit::Login, "5.6.7.8").unwrap();
        assert!(limits.peek(Limit::Login, "5.6.7.8").is_ok());
    }

    #[test]
    fn a_user_action_is_limited_per_account_and_per_address() {
        let config = RateLimitsConfig {
            enabled: true,
            messages: Rate { per_second: 0.001, burst: 2 },
            address_multiplier: 2.0,
            ..Default::default()
        };
        let limits = RateLimits::new(&config);
        let (alice, bob, carol) = (ruma::user_id!("@alice:x"), ruma::user_id!("@bob:x"), ruma::user_id!("@carol:x"));
        // Per account: two, then refused, whatever the address.
        limits.check_user(Limit::Message, alice, "10.0.0.1").unwrap();
        limits.check_user(Limit::Message, alice, "10.0.0.2").unwrap();
        assert!(limits.check_user(Limit::Message, alice, "10.0.0.3").is_err());
        // Per address: twice the burst (four) across accounts; alice's refusal took none.
        limits.check_user(Limit::Message, bob, "10.0.0.1").unwrap();
        limits.check_user(Limit::Message, bob, "10.0.0.1").unwrap();
        limits.check_user(Limit::Message, carol, "10.0.0.1").unwrap();
        let err = limits.check_user(Limit::Message, carol, "10.0.0.1").unwrap_err();
        assert!(matches!(err.kind(), Some(ErrorKind::LimitExceeded { .. })));
        // Refused by its address, carol kept her token: from elsewhere she still may.
        limits.check_user(Limit::Message, carol, "10.0.0.9").unwrap();
    }

    #[test]
    fn disabled_limits_never_refuse() {
        let limits = RateLimits::new(&RateLimitsConfig { enabled: false, ..Default::default() });
        for _ in 0..1000 {
            limits.check(Limit::Registration, "x").unwrap();
        }
    }
}
