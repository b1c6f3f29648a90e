//! Where each record of a fleet lives in etcd (the layout is documented in [`super`]).

use anyhow::Result;

use crate::error::Failure;

/// A fleet or host name: `[a-z0-9][a-z0-9_.-]*`, at most 63 characters (a host name's label),
/// so that it can never reach into another key.
pub fn valid_name(what: &str, name: &str) -> Result<()> {
    let valid = !name.is_empty()
        && name.len() <= 63
        && name.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "_.-".contains(c));
    if !valid {
        return Err(Failure::input(format!(
            "{what}: {name:?} is not a valid name (use [a-z0-9][a-z0-9_.-]*, at most 63 characters)"
        ))
        .into());
    }
    Ok(())
}

/// The keys of one fleet.
#[derive(Debug, Clone)]
pub struct Keys {
    root: String,
}

impl Keys {
    pub fn new(fleet: &str) -> Result<Keys> {
        valid_name("--fleet", fleet)?;
        Ok(Keys {
            root: format!("/handoff/fleets/{fleet}/"),
        })
    }

    /// Everything the agents watch: the config, the rollout, its turns.
    pub fn spec(&self) -> String {
        format!("{}spec/", self.root)
    }

    pub fn config(&self) -> String {
        format!("{}config", self.spec())
    }

    pub fn rollout(&self) -> String {
        format!("{}rollout", self.spec())
    }

    pub fn turns(&self) -> String {
        format!("{}turns/", self.spec())
    }

    pub fn turn(&self, slot: u32) -> String {
        format!("{}{slot}", self.turns())
    }

    pub fn updatings(&self) -> String {
        format!("{}updating/", self.spec())
    }

    pub fn updating(&self, host: &str) -> String {
        format!("{}{host}", self.updatings())
    }

    pub fn stops(&self) -> String {
        format!("{}stopped/", self.spec())
    }

    pub fn stop(&self, component: &str) -> String {
        format!("{}{component}", self.stops())
    }

    pub fn root(&self) -> &str {
        &self.root
    }

    pub fn hosts(&self) -> String {
        format!("{}hosts/", self.root)
    }

    pub fn host(&self, host: &str) -> String {
        format!("{}{host}", self.hosts())
    }

    pub fn statuses(&self) -> String {
        format!("{}status/", self.root)
    }

    pub fn status(&self, host: &str, component: &str) -> String {
        format!("{}{host}/{component}", self.statuses())
    }

    pub fn members(&self) -> String {
        format!("{}members/", self.root)
    }

    pub fn member(&self, host: &str) -> String {
        format!("{}{host}", self.members())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::{exit_code_of, ExitCode};

    #[test]
    fn every_key_of_a_fleet_is_under_its_own_root() {
        let keys = Keys::new("prod").unwrap();
        assert_eq!(keys.config(), "/handoff/fleets/prod/spec/config");
        assert_eq!(keys.turn(1), "/handoff/fleets/prod/spec/turns/1");
        assert!(keys.rollout().starts_with(&keys.spec()));
        assert_eq!(keys.stop("web"), "/handoff/fleets/prod/spec/stopped/web");
        assert_eq!(keys.host("h1"), "/handoff/fleets/prod/hosts/h1");
        assert_eq!(keys.member("h1"), "/handoff/fleets/prod/members/h1");
        assert!(keys.host("h1").starts_with(&keys.hosts()));
        assert_eq!(
            keys.status("h1", "web"),
            "/handoff/fleets/prod/status/h1/web"
        );
    }

    #[test]
    fn names_that_could_reach_into_another_key_are_refused() {
        for bad in ["", "a/b", "..", "A", "-x", "a b", &"a".repeat(64)] {
            let error = Keys::new(bad).unwrap_err();
            assert_eq!(exit_code_of(&error), ExitCode::Input, "{bad:?}");
        }
        assert!(valid_name("--host", "web-1.example").is_ok());
    }
}
