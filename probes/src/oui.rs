//! MAC vendor names from the IEEE OUI registry that Debian's `ieee-data` package installs. The
//! registry is optional: without it every vendor is `None`.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};

use crate::wire::MacAddr;

/// Where distributions keep the IEEE's oui.txt.
const REGISTRY_PATHS: &[&str] = &["/usr/share/ieee-data/oui.txt", "/usr/share/misc/oui.txt"];

/// Vendor names for the universally administered addresses among `macs`, keyed by OUI. One pass
/// over the registry file; OUIs it does not list are absent.
pub fn vendors(macs: &[MacAddr]) -> HashMap<[u8; 3], String> {
    let mut wanted: Vec<[u8; 3]> =
        macs.iter().filter(|m| !m.is_locally_administered()).map(MacAddr::oui).collect();
    wanted.sort_unstable();
    wanted.dedup();
    let mut found = HashMap::new();
    if wanted.is_empty() {
        return found;
    }
    let Some(file) = REGISTRY_PATHS.iter().find_map(|p| std::fs::File::open(p).ok()) else {
        return found;
    };
    for line in BufReader::new(file).split(b'\n').map_while(Result::ok) {
        let line = String::from_utf8_lossy(&line);
        if let Some((oui, vendor)) = parse_line(&line) {
            if wanted.binary_search(&oui).is_ok() {
                found.insert(oui, vendor.to_string());
                if found.len() == wanted.len() {
                    break;
                }
            }
        }
    }
    found
}

/// One registry line: `00-00-5E   (hex)\t\tICANN, IANA Department`.
fn parse_line(line: &str) -> Option<([u8; 3], &str)> {
    let (prefix, rest) = line.split_once("(hex)")?;
    let mut octets = prefix.trim().split('-').map(|h| u8::from_str_radix(h, 16).ok());
    let oui = [octets.next()??, octets.next()??, octets.next()??];
    if octets.next().is_some() {
        return None;
    }
    let vendor = rest.trim();
    (!vendor.is_empty()).then_some((oui, vendor))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_registry_lines() {
        assert_eq!(
            parse_line("00-00-5E   (hex)\t\tICANN, IANA Department"),
            Some(([0x00, 0x00, 0x5e], "ICANN, IANA Department"))
        );
        assert_eq!(parse_line("00005E     (base 16)\t\tICANN, IANA Department"), None);
        assert_eq!(parse_line("\t\t\t\t12025 Waterfront Drive"), None);
        assert_eq!(parse_line("ZZ-00-5E   (hex)\t\tX"), None);
        assert_eq!(parse_line("00-00-5E-01   (hex)\t\tX"), None);
    }

    #[test]
    fn locally_administered_addresses_have_no_vendor() {
        assert!(vendors(&[MacAddr([0x02, 0, 0, 0, 0, 1])]).is_empty());
    }
}
