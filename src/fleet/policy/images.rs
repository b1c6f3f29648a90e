//! Image repository names, the rule of `images`: a repository read as Docker reads it (its
//! registry, Docker Hub's implied `docker.io/library/`), so that no spelling of a name can pass
//! a pattern that Docker would pull from somewhere else.

use std::fmt;

use serde::Deserialize;

/// An image repository as Docker resolves it: registry host (with its port) and path, Docker
/// Hub's implicit `docker.io` and `library/` filled in, so `nginx` is `docker.io/library/nginx`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct ImageRef {
    registry: String,
    path: Vec<String>,
}

impl ImageRef {
    /// Docker's reference grammar for a repository without tag or digest; `None` for anything
    /// else, so nothing Docker would read differently can pass.
    pub(super) fn parse(text: &str) -> Option<ImageRef> {
        let mut image = ImageRef::parse_unqualified(text)?;
        if image.registry == "docker.io" && image.path.len() == 1 {
            image.path.insert(0, "library".to_string());
        }
        Some(image)
    }

    /// Without Docker Hub's implicit `library/`: what a `PREFIX/*` pattern's prefix means.
    fn parse_unqualified(text: &str) -> Option<ImageRef> {
        // Docker's rule (splitDockerDomain): the first part names a registry when it has a
        // `.` or `:`, is `localhost`, or has upper case letters.
        let (registry, path) = match text.split_once('/') {
            Some((first, rest))
                if first.contains(['.', ':'])
                    || first == "localhost"
                    || first.chars().any(|c| c.is_ascii_uppercase()) =>
            {
                (first, rest)
            }
            _ => ("docker.io", text),
        };
        let registry = registry.to_ascii_lowercase();
        let registry = match registry.as_str() {
            "index.docker.io" => "docker.io".to_string(),
            _ => registry,
        };
        if !valid_registry(&registry) {
            return None;
        }
        let path: Vec<String> = path.split('/').map(str::to_string).collect();
        path.iter()
            .all(|p| valid_path_component(p))
            .then_some(ImageRef { registry, path })
    }
}

/// `host[:port]`, the host's labels of letters, digits and inner `-` (no IPv6 literal).
fn valid_registry(registry: &str) -> bool {
    let (host, port) = match registry.split_once(':') {
        Some((host, port)) => (host, Some(port)),
        None => (registry, None),
    };
    let label = |l: &str| {
        !l.is_empty()
            && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    host.split('.').all(label)
        && port
            .is_none_or(|p| !p.is_empty() && p.len() <= 5 && p.bytes().all(|b| b.is_ascii_digit()))
}

/// `[a-z0-9]+` joined by `.`, `_`, `__` or any run of `-`.
fn valid_path_component(part: &str) -> bool {
    let bytes = part.as_bytes();
    let alnum = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    if bytes.is_empty() || !alnum(bytes[0]) || !alnum(bytes[bytes.len() - 1]) {
        return false;
    }
    let mut i = 0;
    while i < bytes.len() {
        if alnum(bytes[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < bytes.len() && !alnum(bytes[i]) {
            i += 1;
        }
        let separator = &part[start..i];
        if !(separator == "."
            || separator == "_"
            || separator == "__"
            || separator.bytes().all(|b| b == b'-'))
        {
            return false;
        }
    }
    true
}

/// An `images` entry: one repository, or `PREFIX/*` for every repository under `PREFIX`
/// (`registry.example.com/*`: everything on that registry).
#[derive(Debug, Clone, Deserialize)]
#[serde(try_from = "String")]
pub(super) struct ImagePattern {
    text: String,
    image: ImageRef,
    /// `PREFIX/*`: `image` is the prefix, and a match must be longer than it.
    prefix: bool,
}

impl ImagePattern {
    pub(super) fn matches(&self, image: &ImageRef) -> bool {
        match self.prefix {
            false => *image == self.image,
            true => {
                image.registry == self.image.registry
                    && image.path.len() > self.image.path.len()
                    && image.path.starts_with(&self.image.path)
            }
        }
    }
}

impl TryFrom<String> for ImagePattern {
    type Error = String;

    fn try_from(text: String) -> Result<Self, String> {
        let invalid = || {
            format!(
                "{text:?} is not an image repository (registry.example.com/web) or a prefix \
                 pattern (registry.example.com/team/*)"
            )
        };
        let (image, prefix) = match text.strip_suffix("/*") {
            // Parsed with a component after it, so that `registry.example.com/*` still names
            // a registry rather than a Docker Hub image.
            Some(prefix) => {
                let mut image = ImageRef::parse_unqualified(&format!("{prefix}/x"))
                    .filter(|_| !prefix.contains('*'))
                    .ok_or_else(invalid)?;
                image.path.pop();
                (image, true)
            }
            None => (ImageRef::parse(&text).ok_or_else(invalid)?, false),
        };
        Ok(ImagePattern {
            text,
            image,
            prefix,
        })
    }
}

impl fmt::Display for ImagePattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}
