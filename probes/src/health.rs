//! One verdict type shared by every report: is it healthy, is something wrong, or could the probe
//! not tell? Each probe keeps its own specific verdicts (kebab-case enums in its report) and maps
//! them to a [`Health`]; the binary turns that into the exit code in one place.

use serde::Serialize;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Health {
    /// The probe ran and found nothing wrong (exit 0).
    Ok,
    /// Part of the probe could not run, so no verdict can be given for it (exit 3).
    CouldNotRun,
    /// The probe ran and found a fault (exit 1).
    Fault,
}

impl Health {
    /// The one rule for combining verdicts, used by every report: a fault found anywhere wins
    /// (what could not be checked does not hide what was found), then could-not-run, then ok.
    /// The order of the variants is this ranking.
    pub fn worst(items: impl IntoIterator<Item = Health>) -> Health {
        items.into_iter().max().unwrap_or(Health::Ok)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn worst_wins() {
        assert_eq!(Health::worst([]), Health::Ok);
        assert_eq!(Health::worst([Health::Ok, Health::Fault, Health::Ok]), Health::Fault);
        assert_eq!(Health::worst([Health::Fault, Health::CouldNotRun]), Health::Fault, "a found fault wins");
        assert_eq!(Health::worst([Health::Ok, Health::CouldNotRun]), Health::CouldNotRun);
        assert_eq!(serde_json::to_string(&Health::CouldNotRun).unwrap(), "\"could-not-run\"");
    }
}
