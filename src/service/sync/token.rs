//! Sync tokens: where a client is in the durable stream and in the ephemeral one.
//!
//! `s{position}_{serial}`. The position is the storage stream position (events, account data,
//! receipts, to-device); the serial counts in-memory changes (typing, presence). Serials start
//! from the clock at process start, so they keep increasing across restarts and old tokens stay
//! valid.

use std::fmt;

use crate::error::{Error, Result};

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SyncToken {
    pub position: u64,
    pub serial: u64,
}

impl SyncToken {
    pub fn parse(token: &str) -> Result<Self> {
        let invalid = || Error::invalid_param(format!("Invalid sync token {token}"));
        let rest = token.strip_prefix('s').ok_or_else(invalid)?;
        let (position, serial) = rest.split_once('_').unwrap_or((rest, "0"));
        Ok(Self { position: position.parse().map_err(|_| invalid())?, serial: serial.parse().map_err(|_| invalid())? })
    }
}

impl fmt::Display for SyncToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "s{}_{}", self.position, self.serial)
    }
}

#[cfg(test)]
mod tests {
    use super::SyncToken;

    #[test]
    fn tokens_round_trip_and_bad_ones_are_refused() {
        let token = SyncToken { position: 42, serial: 1_700_000_000_000_001 };
        assert_eq!(SyncToken::parse(&token.to_string()).unwrap(), token);
        assert_eq!(SyncToken::parse("s7").unwrap(), SyncToken { position: 7, serial: 0 });
        for bad in ["", "7", "sx_1", "s1_y", "t1_2"] {
            assert!(SyncToken::parse(bad).is_err(), "{bad}");
        }
    }
}
