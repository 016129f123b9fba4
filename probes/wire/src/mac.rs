//! Ethernet MAC addresses, printed the way `ip link` prints them: lower case, colon separated.

use std::fmt;
use std::str::FromStr;

#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MacAddr(pub [u8; 6]);

impl MacAddr {
    pub const BROADCAST: MacAddr = MacAddr([0xff; 6]);
    pub const ZERO: MacAddr = MacAddr([0; 6]);

    /// The first three octets: the IEEE organisationally unique identifier.
    pub fn oui(&self) -> [u8; 3] {
        [self.0[0], self.0[1], self.0[2]]
    }

    /// The U/L bit (0x02 of the first octet): set on addresses a host or hypervisor made up
    /// (veth pairs, VMs, keepalived), which no vendor owns.
    pub fn is_locally_administered(&self) -> bool {
        self.0[0] & 0x02 != 0
    }

    pub fn from_slice(bytes: &[u8]) -> Option<MacAddr> {
        bytes.get(..6)?.try_into().ok().map(MacAddr)
    }
}

impl fmt::Display for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = self.0;
        write!(f, "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}", b[0], b[1], b[2], b[3], b[4], b[5])
    }
}

impl fmt::Debug for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

#[derive(Debug, PartialEq, Eq)]
pub struct ParseMacError;

impl fmt::Display for ParseMacError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("expected six hex octets like 02:42:c0:a8:00:02")
    }
}

impl FromStr for MacAddr {
    type Err = ParseMacError;

    /// Accepts `aa:bb:cc:dd:ee:ff` and `aa-bb-cc-dd-ee-ff`, any case.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut out = [0u8; 6];
        let mut parts = s.split([':', '-']);
        for byte in out.iter_mut() {
            let part = parts.next().ok_or(ParseMacError)?;
            if part.len() != 2 {
                return Err(ParseMacError);
            }
            *byte = u8::from_str_radix(part, 16).map_err(|_| ParseMacError)?;
        }
        if parts.next().is_some() {
            return Err(ParseMacError);
        }
        Ok(MacAddr(out))
    }
}

impl serde::Serialize for MacAddr {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prints_lower_case_with_colons() {
        let mac = MacAddr([0x00, 0x00, 0x5E, 0x00, 0x53, 0xAB]);
        assert_eq!(mac.to_string(), "00:00:5e:00:53:ab");
        assert_eq!(serde_json::to_string(&mac).unwrap(), "\"00:00:5e:00:53:ab\"");
    }

    #[test]
    fn parses_both_separators_and_rejects_junk() {
        let want = MacAddr([0x02, 0x42, 0xc0, 0xa8, 0x00, 0x02]);
        assert_eq!("02:42:C0:a8:00:02".parse(), Ok(want));
        assert_eq!("02-42-c0-a8-00-02".parse(), Ok(want));
        for bad in ["", "02:42:c0:a8:00", "02:42:c0:a8:00:02:03", "0g:42:c0:a8:00:02", "2:42:c0:a8:00:002"] {
            assert_eq!(bad.parse::<MacAddr>(), Err(ParseMacError), "{bad}");
        }
    }

    #[test]
    fn locally_administered_bit() {
        assert!(MacAddr([0x02, 0, 0, 0, 0, 1]).is_locally_administered());
        assert!(!MacAddr([0x00, 0x00, 0x5e, 0, 0x53, 1]).is_locally_administered());
    }
}
