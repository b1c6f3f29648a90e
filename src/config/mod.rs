//! The gantry-compatible JSON configuration: schema, defaults and validation.
//!
//! Every field gantry accepts is accepted here with gantry's meaning and defaults, so a gantry
//! `production.json` works unchanged. Unlike gantry, an unknown or misspelt field is an error
//! (handoff runs as root: a typo must not silently drop a port or a check). Syntax and type
//! errors name the JSON path, line and column; semantic errors name the path and the value.

pub mod limits;
mod schema;
mod validate;

pub use schema::*;

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::Result;

use crate::error::Failure;
use validate::{resolve_links, validate};

/// The default config location when neither `-c` nor `$HANDOFF_CONFIG` names one.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/handoff/handoff.json";

/// Which file to read: `-c`, else `$HANDOFF_CONFIG` (clap fills both into one option), else the
/// default path.
pub fn resolve_path(explicit: Option<&Path>) -> PathBuf {
    explicit
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from(DEFAULT_CONFIG_PATH))
}

/// Read, parse and validate a config file. Every error is a [`Failure::input`] naming the file.
pub fn load(path: &Path) -> Result<Config> {
    crate::trust::refuse_replaceable(path, "config")?;
    let text = fs::read_to_string(path)
        .map_err(|e| Failure::input(format!("cannot read config {}: {e}", path.display())))?;
    parse(&text)
        .map_err(|e| anyhow::Error::new(Failure::input(format!("{}: {e:#}", path.display()))))
}

/// Parse and validate config text.
pub fn parse(text: &str) -> Result<Config> {
    if text.trim().is_empty() {
        anyhow::bail!("the file is empty; expected a JSON object with a \"components\" list");
    }
    let mut deserializer = serde_json::Deserializer::from_str(text);
    let config: Config = serde_path_to_error::deserialize(&mut deserializer).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        if path == "." || path.is_empty() {
            anyhow::anyhow!("{inner}")
        } else {
            anyhow::anyhow!("{path}: {inner}")
        }
    })?;
    deserializer
        .end()
        .map_err(|e| anyhow::anyhow!("unexpected text after the JSON object: {e}"))?;
    validate(&config)?;
    let mut config = config;
    resolve_links(&mut config);
    Ok(config)
}

#[cfg(test)]
mod bind_tests;
#[cfg(test)]
mod tests;
