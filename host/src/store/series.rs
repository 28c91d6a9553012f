//! Series identity: a metric name and its labels. Shared by the writer, queries and exposition.

use serde::Serialize;
use std::collections::BTreeMap;
use std::fmt;

/// A series' labels, sorted by key. Canonical JSON (sorted keys) is how they are stored.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct Labels(BTreeMap<String, String>);

impl Labels {
    pub fn new() -> Labels {
        Labels::default()
    }

    /// These labels plus `key=value` (replacing an existing `key`).
    pub fn with(mut self, key: &str, value: impl Into<String>) -> Labels {
        self.0.insert(key.to_string(), value.into());
        self
    }

    pub fn insert(&mut self, key: impl Into<String>, value: impl Into<String>) {
        self.0.insert(key.into(), value.into());
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(String::as_str)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether every `key=value` in `matchers` is among these labels.
    pub fn matches(&self, matchers: &[(String, String)]) -> bool {
        matchers.iter().all(|(k, v)| self.get(k) == Some(v.as_str()))
    }

    pub(crate) fn to_json(&self) -> String {
        serde_json::to_string(&self.0).expect("strings serialise")
    }

    pub(crate) fn from_json(text: &str) -> Labels {
        Labels(serde_json::from_str(text).unwrap_or_default())
    }
}

impl FromIterator<(String, String)> for Labels {
    fn from_iter<I: IntoIterator<Item = (String, String)>>(iter: I) -> Labels {
        Labels(iter.into_iter().collect())
    }
}

impl fmt::Display for Labels {
    /// `{k="v", …}`, or nothing for no labels.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            return Ok(());
        }
        f.write_str("{")?;
        for (i, (k, v)) in self.0.iter().enumerate() {
            let comma = if i == 0 { "" } else { ", " };
            write!(f, "{comma}{k}={v:?}")?;
        }
        f.write_str("}")
    }
}

/// A metric series.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct SeriesKey {
    pub name: String,
    pub labels: Labels,
}

impl SeriesKey {
    pub fn new(name: impl Into<String>, labels: Labels) -> SeriesKey {
        SeriesKey { name: name.into(), labels }
    }
}

impl fmt::Display for SeriesKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{}", self.name, self.labels)
    }
}

/// One measurement of one series.
#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    pub key: SeriesKey,
    /// Milliseconds since the Unix epoch.
    pub t_ms: i64,
    pub value: f64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_canonical_whatever_the_insertion_order() {
        let a = Labels::new().with("b", "2").with("a", "1");
        let b = Labels::new().with("a", "1").with("b", "2");
        assert_eq!(a, b);
        assert_eq!(a.to_json(), r#"{"a":"1","b":"2"}"#);
        assert_eq!(Labels::from_json(&a.to_json()), a);
        assert_eq!(a.to_string(), r#"{a="1", b="2"}"#);
        assert!(a.matches(&[("a".into(), "1".into())]));
        assert!(!a.matches(&[("a".into(), "2".into())]));
    }
}
