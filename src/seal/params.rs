//! The query part of a `--seal` value: `name=value` pairs, each allowed
//! name at most once, unknown names refused (a secret passed as `pin=` or
//! `token=` must not be silently ignored: it belongs in a file).

use std::collections::BTreeMap;

/// A seal value's parameters.
pub(crate) struct Params(BTreeMap<String, String>);

impl Params {
    /// Parses `query` (`a=1&b=2`, percent-decoded), allowing only `allowed`.
    pub(crate) fn parse(query: &str, allowed: &[&str]) -> Result<Self, String> {
        let mut map = BTreeMap::new();
        for (name, value) in form_urlencoded::parse(query.as_bytes()) {
            if !allowed.contains(&name.as_ref()) {
                return Err(format!(
                    "unknown parameter {name:?} (known: {}); secrets come from files or the \
                     environment, never from the seal's value",
                    allowed.join(", ")
                ));
            }
            if map.insert(name.to_string(), value.to_string()).is_some() {
                return Err(format!("parameter {name:?} is given more than once"));
            }
        }
        Ok(Self(map))
    }

    /// A parameter that must be there and not empty.
    pub(crate) fn required(&mut self, name: &str) -> Result<String, String> {
        self.optional(name)
            .ok_or_else(|| format!("missing {name}=… in the seal's value"))
    }

    /// A parameter that may be absent (empty counts as absent).
    pub(crate) fn optional(&mut self, name: &str) -> Option<String> {
        self.0.remove(name).filter(|v| !v.is_empty())
    }
}
