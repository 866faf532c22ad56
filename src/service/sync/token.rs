//! Sync tokens: where a client is in the durable stream and in the ephemeral one.
//!
//! `s{position}_{serial}[_{to_device}]`. The position is the storage stream position (events,
//! account data, receipts, to-device); the serial counts in-memory changes (typing, presence).
//! Serials start from the clock at process start, so they keep increasing across restarts and old
//! tokens stay valid. The optional third part says how far to-device messages were delivered when
//! there were more than one sync carries.

use std::fmt;

use crate::error::{Error, Result};

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SyncToken {
    pub position: u64,
    pub serial: u64,
    pub to_device: Option<u64>,
}

impl SyncToken {
    pub fn new(position: u64, serial: u64) -> Self {
        Self { position, serial, to_device: None }
    }

    pub fn parse(token: &str) -> Result<Self> {
        let invalid = || Error::invalid_param(format!("Invalid sync token {token}"));
        let mut parts = token.strip_prefix('s').ok_or_else(invalid)?.split('_');
        let mut number = |required: bool| -> Result<Option<u64>> {
            match parts.next() {
                Some(part) => part.parse().map(Some).map_err(|_| invalid()),
                None if required => Err(invalid()),
                None => Ok(None),
            }
        };
        let position = number(true)?.expect("required");
        let serial = number(false)?.unwrap_or(0);
        let to_device = number(false)?;
        if parts.next().is_some() {
            return Err(invalid());
        }
        Ok(Self { position, serial, to_device })
    }

    /// How far to-device messages were delivered.
    pub fn to_device_position(&self) -> u64 {
        self.to_device.unwrap_or(self.position)
    }
}

impl fmt::Display for SyncToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "s{}_{}", self.position, self.serial)?;
        if let Some(to_device) = self.to_device {
            write!(f, "_{to_device}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::SyncToken;

    #[test]
    fn tokens_round_trip_and_bad_ones_are_refused() {
        let token = SyncToken::new(42, 1_700_000_000_000_001);
        assert_eq!(SyncToken::parse(&token.to_string()).unwrap(), token);
        let cut = SyncToken { to_device: Some(40), ..token };
        assert_eq!(SyncToken::parse(&cut.to_string()).unwrap(), cut);
        assert_eq!(SyncToken::parse("s7").unwrap(), SyncToken::new(7, 0));
        for bad in ["", "7", "sx_1", "s1_y", "t1_2", "s1_2_3_4"] {
            assert!(SyncToken::parse(bad).is_err(), "{bad}");
        }
    }
}
