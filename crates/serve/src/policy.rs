//! Which versions of a model are served: Triton's version policies.

use std::collections::BTreeSet;
use std::str::FromStr;

/// A model's version policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VersionPolicy {
    /// The newest N versions that load.
    Latest(usize),
    /// Every version in the registry.
    All,
    /// Exactly these versions.
    Specific(BTreeSet<u64>),
}

impl Default for VersionPolicy {
    fn default() -> Self {
        VersionPolicy::Latest(1)
    }
}

impl FromStr for VersionPolicy {
    type Err = String;

    /// `latest:N`, `all` or `specific:V[,V…]`.
    fn from_str(text: &str) -> Result<VersionPolicy, String> {
        let fix = "use latest:N, all or specific:1,3";
        match text.split_once(':') {
            None if text == "all" => Ok(VersionPolicy::All),
            Some(("latest", n)) => match n.parse() {
                Ok(0) | Err(_) => Err(format!(
                    "{text:?}: latest needs a count of 1 or more — {fix}"
                )),
                Ok(n) => Ok(VersionPolicy::Latest(n)),
            },
            Some(("specific", list)) => list
                .split(',')
                .map(|v| v.trim().parse::<u64>().ok().filter(|&v| v > 0))
                .collect::<Option<BTreeSet<u64>>>()
                .map(VersionPolicy::Specific)
                .ok_or_else(|| format!("{text:?}: specific needs version numbers ≥ 1 — {fix}")),
            _ => Err(format!("{text:?} is not a version policy — {fix}")),
        }
    }
}

impl std::fmt::Display for VersionPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            VersionPolicy::Latest(n) => write!(f, "latest:{n}"),
            VersionPolicy::All => write!(f, "all"),
            VersionPolicy::Specific(v) => {
                let list: Vec<String> = v.iter().map(u64::to_string).collect();
                write!(f, "specific:{}", list.join(","))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policies_parse_and_print_back() {
        for text in ["latest:1", "latest:3", "all", "specific:1,3"] {
            assert_eq!(text.parse::<VersionPolicy>().unwrap().to_string(), text);
        }
        assert_eq!(
            "specific:3, 1".parse::<VersionPolicy>().unwrap(),
            VersionPolicy::Specific([1, 3].into())
        );
        for bad in [
            "latest:0",
            "latest:x",
            "specific:",
            "specific:0",
            "newest",
            "all:2",
        ] {
            let err = bad.parse::<VersionPolicy>().unwrap_err();
            assert!(err.contains("use latest:N, all or specific:1,3"), "{err}");
        }
    }
}
