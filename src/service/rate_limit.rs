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
}

pub struct RateLimits {
    enabled: bool,
    rates: HashMap<Limit, Rate>,
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
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes one token from the bucket of `key`, or says how long to wait for one.
    pub fn check(&self, limit: Limit, key: &str) -> Result<()> {
        self.take(limit, key, false)
    }

    /// Whether a token is there, without taking it (to refuse early what would fail anyway).
    pub fn peek(&self, limit: Limit, key: &str) -> Result<()> {
        self.take(limit, key, true)
    }

    fn take(&self, limit: Limit, key: &str, peek_only: bool) -> Result<()> {
        if !self.enabled {
            return Ok(());
        }
        let rate = self.rates[&limit];
        let now = Instant::now();
        let mut buckets = self.buckets.lock().expect("rate limit lock");
        if buckets.len() >= SWEEP_AT {
            buckets.retain(|(limit, _), bucket| {
                let rate = self.rates[limit];
                bucket.tokens + now.duration_since(bucket.updated).as_secs_f64() * rate.per_second
                    < f64::from(rate.burst)
            });
        }
        let bucket =
            buckets.entry((limit, key.to_owned())).or_insert(Bucket { tokens: f64::from(rate.burst), updated: now });
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
    fn disabled_limits_never_refuse() {
        let limits = RateLimits::new(&RateLimitsConfig { enabled: false, ..Default::default() });
        for _ in 0..1000 {
            limits.check(Limit::Registration, "x").unwrap();
        }
    }
}
