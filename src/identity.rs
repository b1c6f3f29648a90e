//! A component's name and every form it takes elsewhere, in one place: the name in the config,
//! its containers' names (`TABLE-NAME-INSTANCE`), and its nftables objects (`backend_X`,
//! `component_X`, where X encodes the characters nft refuses in identifiers).

/// A component as handoff names it in one table (one installation).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Identity<'a> {
    pub table: &'a str,
    pub name: &'a str,
}

impl<'a> Identity<'a> {
    pub fn new(table: &'a str, name: &'a str) -> Self {
        Identity { table, name }
    }

    /// The name of the container with `instance` id.
    pub fn container_name(&self, instance: &str) -> String {
        format!("{}-{}-{instance}", self.table, self.name)
    }

    /// The component's backend map: external port -> backend address . port.
    pub fn backend_map(&self) -> String {
        backend_map(self.name)
    }

    /// The component's chain: the rule that carries its traffic.
    pub fn chain(&self) -> String {
        format!("component_{}", object_suffix(self.name))
    }
}

/// The backend map of component `name`.
pub fn backend_map(name: &str) -> String {
    format!("backend_{}", object_suffix(name))
}

/// The IPv6 backend map of component `name`.
pub fn backend6_map(name: &str) -> String {
    format!("backend6_{}", object_suffix(name))
}

/// The canary map of component `name`: where its canary's share of new connections goes.
pub fn canary_map(name: &str) -> String {
    format!("canary_{}", object_suffix(name))
}

/// The component whose backend map is `map` (the inverse of [`backend_map`], any generation
/// of it); `None` for any other object.
pub fn component_of_map(map: &str) -> Option<String> {
    decode_suffix(split_generation(map).0.strip_prefix("backend_")?)
}

/// The component whose IPv6 backend map is `map` (the inverse of [`backend6_map`]).
pub fn component_of_backend6_map(map: &str) -> Option<String> {
    decode_suffix(split_generation(map).0.strip_prefix("backend6_")?)
}

/// The component whose chain is `chain` (the inverse of [`Identity::chain`]).
pub fn component_of_chain(chain: &str) -> Option<String> {
    decode_suffix(chain.strip_prefix("component_")?)
}

/// A map's name without its generation, and the generation (`backend_web_g7`: 7; a plain
/// `backend_web`: 0; see `kernel/netfilter/generations.rs`). Unambiguous: an encoded name
/// never holds `_g` (an `_` is always followed by `_`, `h` or `d`), so a name that decodes
/// as it is has no generation suffix.
pub fn split_generation(map: &str) -> (&str, u32) {
    let generation = map.rsplit_once("_g").and_then(|(base, n)| {
        let n: u32 = n
            .parse()
            .ok()
            .filter(|_| n.bytes().all(|b| b.is_ascii_digit()))?;
        let (_, suffix) = base.split_once('_')?;
        decode_suffix(suffix).map(|_| (base, n))
    });
    generation.unwrap_or((map, 0))
}

/// The component whose canary map is `map` (the inverse of [`canary_map`]).
pub fn component_of_canary_map(map: &str) -> Option<String> {
    decode_suffix(map.strip_prefix("canary_")?)
}

/// The inverse of [`object_suffix`]; `None` for a malformed one.
fn decode_suffix(encoded: &str) -> Option<String> {
    let mut name = String::with_capacity(encoded.len());
    let mut chars = encoded.chars();
    while let Some(c) = chars.next() {
        if c != '_' {
            name.push(c);
            continue;
        }
        name.push(match chars.next()? {
            '_' => '_',
            'h' => '-',
            'd' => '.',
            _ => return None,
        });
    }
    Some(name)
}

/// A component's name as it appears in nftables object names. Component names may contain
/// `-` and `.`, which nft does not accept in identifiers, so they are encoded injectively:
/// `_` -> `__`, `-` -> `_h`, `.` -> `_d`.
fn object_suffix(component: &str) -> String {
    let mut out = String::with_capacity(component.len() + 4);
    for c in component.chars() {
        match c {
            '_' => out.push_str("__"),
            '-' => out.push_str("_h"),
            '.' => out.push_str("_d"),
            other => out.push(other),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_encoding_of_a_name_comes_from_here() {
        let web = Identity::new("handoff", "my-web.v2_x");
        assert_eq!(
            web.container_name("0123abcd4567"),
            "handoff-my-web.v2_x-0123abcd4567"
        );
        assert_eq!(web.backend_map(), "backend_my_hweb_dv2__x");
        assert_eq!(web.chain(), "component_my_hweb_dv2__x");
    }

    #[test]
    fn object_names_are_injective_and_decode_back() {
        assert_ne!(backend_map("a-b"), backend_map("a_hb"));
        for name in ["web", "my-web.v2_x", "a_hb", "a-b", "x__"] {
            assert_eq!(component_of_map(&backend_map(name)).as_deref(), Some(name));
        }
        assert_eq!(component_of_map("dispatch"), None);
        assert_eq!(component_of_map(&backend6_map("web")), None);
        assert_eq!(
            component_of_backend6_map(&backend6_map("a_hb")).as_deref(),
            Some("a_hb")
        );
        assert_eq!(component_of_map("backend_bad_q"), None);
    }

    #[test]
    fn a_generation_suffix_is_told_apart_from_a_name_that_ends_like_one() {
        assert_eq!(split_generation("backend_web_g12"), ("backend_web", 12));
        assert_eq!(split_generation("backend_web"), ("backend_web", 0));
        // The component "x_g1": its map is backend_x__g1, generation 0.
        assert_eq!(split_generation(&backend_map("x_g1")), ("backend_x__g1", 0));
        assert_eq!(component_of_map("backend_x__g1").as_deref(), Some("x_g1"));
        assert_eq!(
            component_of_map("backend_x__g1_g3").as_deref(),
            Some("x_g1")
        );
        assert_eq!(split_generation("backend_web_g+1"), ("backend_web_g+1", 0));
        assert_eq!(
            component_of_backend6_map("backend6_my_hweb_g2").as_deref(),
            Some("my-web")
        );
        assert_eq!(
            component_of_chain("component_my_hweb").as_deref(),
            Some("my-web")
        );
        assert_eq!(component_of_chain("prerouting"), None);
    }
}
