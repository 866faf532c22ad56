//! The address ranges outbound federation may not connect to: a server name is chosen by whoever
//! sends us an event or an invite, so without this anyone could make us probe our own network.

use std::net::IpAddr;

use ipnet::IpNet;

use crate::{
    config::{FederationConfig, parse_ip_range},
    error::{Error, Result},
};

/// The deny list with its exceptions.
#[derive(Clone, Debug, Default)]
pub struct IpRanges {
    deny: Vec<IpNet>,
    allow: Vec<IpNet>,
}

impl IpRanges {
    pub fn new(deny: Vec<IpNet>, allow: Vec<IpNet>) -> Self {
        Self { deny, allow }
    }

    /// The ranges of the configuration (validated at load).
    pub fn from_config(config: &FederationConfig) -> Result<Self> {
        let parse = |list: &[String]| {
            list.iter()
                .map(|range| parse_ip_range(range).ok_or_else(|| Error::internal(format!("bad address range {range}"))))
                .collect::<Result<Vec<_>>>()
        };
        Ok(Self::new(parse(&config.ip_range_denylist)?, parse(&config.ip_range_allowlist)?))
    }

    /// Whether we may connect to `address`. An IPv4 address written as IPv6 (`::ffff:a.b.c.d`) is
    /// judged as the IPv4 address it is, so that the mapped form cannot slip past a v4 range.
    pub fn is_allowed(&self, address: IpAddr) -> bool {
        let address = address.to_canonical();
        let within = |ranges: &[IpNet]| ranges.iter().any(|range| range.contains(&address));
        within(&self.allow) || !within(&self.deny)
    }
}

#[cfg(test)]
mod tests {
    use std::net::IpAddr;

    use super::IpRanges;
    use crate::config::{FederationConfig, parse_ip_range};

    fn ranges(allow: &[&str]) -> IpRanges {
        let config = FederationConfig {
            ip_range_allowlist: allow.iter().map(|s| s.to_string()).collect(),
            ..FederationConfig::default()
        };
        IpRanges::from_config(&config).unwrap()
    }

    fn allowed(ranges: &IpRanges, address: &str) -> bool {
        ranges.is_allowed(address.parse::<IpAddr>().unwrap())
    }

    #[test]
    fn private_loopback_link_local_cgnat_and_ula_are_denied_by_default() {
        let ranges = ranges(&[]);
        for denied in [
            "127.0.0.1",
            "127.8.9.10",
            "10.1.2.3",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "224.0.0.1",
            "::1",
            "::",
            "fe80::1",
            "fd12:3456::1",
            "fc00::1",
            "ff02::1",
        ] {
            assert!(!allowed(&ranges, denied), "{denied} should be denied");
        }
        for public in ["8.8.8.8", "1.1.1.1", "172.32.0.1", "100.128.0.1", "2a00:1450::1", "2001:4860::8888"] {
            assert!(allowed(&ranges, public), "{public} should be allowed");
        }
    }

    #[test]
    fn ipv4_mapped_ipv6_addresses_are_judged_as_ipv4() {
        let ranges = ranges(&[]);
        assert!(!allowed(&ranges, "::ffff:127.0.0.1"));
        assert!(!allowed(&ranges, "::ffff:10.0.0.1"));
        assert!(!allowed(&ranges, "::ffff:192.168.0.1"));
        assert!(allowed(&ranges, "::ffff:8.8.8.8"));
        // Allowing the v4 address allows its mapped form too.
        let loopback = self::ranges(&["127.0.0.1"]);
        assert!(allowed(&loopback, "::ffff:127.0.0.1"));
    }

    #[test]
    fn the_allow_list_makes_exceptions() {
        let ranges = ranges(&["127.0.0.1", "fd00::/8"]);
        assert!(allowed(&ranges, "127.0.0.1"));
        assert!(!allowed(&ranges, "127.0.0.2"));
        assert!(allowed(&ranges, "fd00::5"));
        assert!(!allowed(&ranges, "fc00::5"));
        assert!(!allowed(&ranges, "10.0.0.1"));
    }

    #[test]
    fn an_empty_deny_list_allows_everything() {
        let ranges = IpRanges::new(Vec::new(), Vec::new());
        assert!(allowed(&ranges, "127.0.0.1"));
        assert!(allowed(&ranges, "::1"));
        assert_eq!(parse_ip_range("10.0.0.0/8"), Some("10.0.0.0/8".parse().unwrap()));
        assert_eq!(parse_ip_range("::1"), Some("::1/128".parse().unwrap()));
        assert_eq!(parse_ip_range("nonsense"), None);
    }
}
