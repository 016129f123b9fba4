//! MAC vendor names from the IEEE OUI registry that Debian's `ieee-data` package installs. The
//! registry is optional: without it every vendor is `None`.

use std::collections::HashMap;
use std::sync::OnceLock;

use crate::wire::MacAddr;

/// Where distributions keep the IEEE's oui.txt.
const REGISTRY_PATHS: &[&str] = &["/usr/share/ieee-data/oui.txt", "/usr/share/misc/oui.txt"];

/// Vendor names for the universally administered addresses among `macs`, keyed by OUI; OUIs the
/// registry does not list are absent.
pub fn vendors(macs: &[MacAddr]) -> HashMap<[u8; 3], String> {
    let wanted = macs.iter().filter(|m| !m.is_locally_administered()).map(MacAddr::oui);
    let mut found = HashMap::new();
    for oui in wanted {
        if found.contains_key(&oui) {
            continue;
        }
        if let Some(vendor) = registry().vendor(oui) {
            found.insert(oui, vendor.to_string());
        }
    }
    found
}

/// The registry, read once per process on the first lookup (about 35,000 entries, 1.5 MiB): a
/// pass over its 5 MiB for every lookup cost 20 ms each, which the capture-file fuzzer, looking
/// up random MACs, spent nearly all its time in.
fn registry() -> &'static Registry {
    static REGISTRY: OnceLock<Registry> = OnceLock::new();
    REGISTRY.get_or_init(|| {
        REGISTRY_PATHS
            .iter()
            .find_map(|p| std::fs::read(p).ok())
            .map(|t| Registry::parse(&t))
            .unwrap_or_default()
    })
}

/// OUIs and vendor names, sorted by OUI; the names one string, each entry its range.
#[derive(Default)]
struct Registry {
    entries: Vec<([u8; 3], u32, u32)>,
    names: String,
}

impl Registry {
    fn parse(text: &[u8]) -> Registry {
        let mut registry = Registry::default();
        let finder = memchr::memmem::Finder::new(b"(hex)");
        for line in text.split(|&b| b == b'\n') {
            if finder.find(line).is_none() {
                continue;
            }
            let line = String::from_utf8_lossy(line);
            if let Some((oui, vendor)) = parse_line(&line) {
                let start = registry.names.len() as u32;
                registry.names.push_str(vendor);
                registry.entries.push((oui, start, registry.names.len() as u32));
            }
        }
        registry.entries.sort_by_key(|e| e.0);
        registry.entries.dedup_by_key(|e| e.0);
        registry.names.shrink_to_fit();
        registry.entries.shrink_to_fit();
        registry
    }

    fn vendor(&self, oui: [u8; 3]) -> Option<&str> {
        let at = self.entries.binary_search_by_key(&oui, |e| e.0).ok()?;
        let (_, start, end) = self.entries[at];
        Some(&self.names[start as usize..end as usize])
    }
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
    fn the_registry_is_looked_up_by_oui_first_entry_kept() {
        let text =
            b"OUI/MA-L\n\n00-00-5E   (hex)\t\tICANN, IANA Department\n00005E     (base 16)\t\tICANN\n\n\
                     00-00-0C   (hex)\t\tCisco Systems, Inc\n00-00-0C   (hex)\t\tA second entry\n";
        let registry = Registry::parse(text);
        assert_eq!(registry.vendor([0, 0, 0x5e]), Some("ICANN, IANA Department"));
        assert_eq!(registry.vendor([0, 0, 0x0c]), Some("Cisco Systems, Inc"));
        assert_eq!(registry.vendor([0, 0, 0x0d]), None);
    }

    #[test]
    fn locally_administered_addresses_have_no_vendor() {
        assert!(vendors(&[MacAddr([0x02, 0, 0, 0, 0, 1])]).is_empty());
    }
}
