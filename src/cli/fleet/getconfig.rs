//! `handoff fleet getconfig [--show-secrets] [--signers FILE]`: the fleet's stored config as
//! it was stored, with its environment variables' values shown as `***` unless
//! `--show-secrets`; who signed it, and its sequence number, on stderr.

use std::io::Write;

use anyhow::{Context, Result};
use serde_json::Value;

use super::{signed_by, Fleet, SignersArgs};
use crate::fleet::rollout::Snapshot;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Print environment variables' values as stored, not as `***`.
    #[arg(long)]
    pub show_secrets: bool,
    #[command(flatten)]
    pub signers: SignersArgs,
}

/// `text` with every `environmentVariables[].value` replaced by `***`; `None` when it has
/// none (the text is then shown as stored).
fn masked(text: &str) -> Option<String> {
    let mut config: Value = serde_json::from_str(text).ok()?;
    let mut masked = false;
    for component in config["components"].as_array_mut()? {
        let Some(variables) = component["environmentVariables"].as_array_mut() else {
            continue;
        };
        for variable in variables {
            if let Some(value) = variable.get_mut("value") {
                *value = Value::String("***".into());
                masked = true;
            }
        }
    }
    masked.then(|| format!("{:#}\n", config))
}

pub fn run(args: &Args, fleet: &Fleet) -> Result<()> {
    let required = args.signers.load()?;
    let snapshot = Snapshot::read(&mut fleet.connect()?, &fleet.keys)?;
    let Some(stored) = &snapshot.config else {
        return Err(fleet.no_config());
    };
    let Some(envelope) = stored.envelope() else {
        anyhow::bail!(
            "fleet {}: the stored config is not a spec record (written by an older handoff, \
             or by hand): store it again with `handoff fleet setconfig`",
            fleet.name
        );
    };
    eprintln!(
        "handoff: fleet: config sequence {}, {}",
        envelope.sequence,
        signed_by(Some(stored), required.as_ref())
    );
    let text = match args.show_secrets {
        true => None,
        false => masked(&envelope.body),
    }
    .unwrap_or(envelope.body);
    std::io::stdout()
        .write_all(text.as_bytes())
        .context("writing the config to stdout")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn environment_values_are_masked_and_a_config_without_any_is_shown_as_stored() {
        let text = r#"{"components": [{"name": "web", "environmentVariables":
            [{"name": "TOKEN", "value": "s3cret"}]}, {"name": "db"}]}"#;
        let shown = masked(text).expect("masked");
        assert!(!shown.contains("s3cret"), "{shown}");
        assert!(
            shown.contains("\"TOKEN\"") && shown.contains("\"***\""),
            "{shown}"
        );
        assert_eq!(masked(r#"{"components": [{"name": "web"}]}"#), None);
    }
}
