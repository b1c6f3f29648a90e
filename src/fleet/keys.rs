//! Where each record of a fleet lives in etcd (the layout is documented in [`super`]), and
//! which of those keys each kind of etcd user may write ([`Keys::host_grants`],
//! [`Keys::operator_grants`]): the layout is drawn so that a host's credentials can write
//! nothing that changes what another host runs.

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

/// What an etcd role may do with a key or a range of keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Access {
    Read,
    ReadWrite,
}

/// One permission of an etcd role: `key` alone, or every key that starts with it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Grant {
    pub key: String,
    pub prefix: bool,
    pub access: Access,
}

impl Grant {
    fn new(key: String, prefix: bool, access: Access) -> Grant {
        Grant {
            key,
            prefix,
            access,
        }
    }
}

/// The keys of one fleet.
#[derive(Debug, Clone)]
pub struct Keys {
    fleet: String,
    root: String,
}

impl Keys {
    pub fn new(fleet: &str) -> Result<Keys> {
        valid_name("--fleet", fleet)?;
        Ok(Keys {
            fleet: fleet.to_string(),
            root: format!("/handoff/fleets/{fleet}/"),
        })
    }

    pub fn fleet(&self) -> &str {
        &self.fleet
    }

    pub fn root(&self) -> &str {
        &self.root
    }

    /// What only operators write, and every agent watches: the config, the rollout, the
    /// stops, and the signatures of each.
    pub fn spec(&self) -> String {
        format!("{}spec/", self.root)
    }

    pub fn config(&self) -> String {
        format!("{}config", self.spec())
    }

    pub fn rollout(&self) -> String {
        format!("{}rollout", self.spec())
    }

    pub fn stops(&self) -> String {
        format!("{}stops/", self.spec())
    }

    pub fn stop(&self, component: &str) -> String {
        format!("{}{component}", self.stops())
    }

    pub fn signatures(&self) -> String {
        format!("{}signatures/", self.spec())
    }

    /// Where the signature of the record stored at `record` (a key under `spec/`) is kept:
    /// `spec/signatures/` followed by the record's own path under `spec/`. Not a suffix on
    /// the record's key: a component may be named `web.sig`.
    pub fn signature(&self, record: &str) -> String {
        let relative = record.strip_prefix(&self.spec()).unwrap_or(record);
        format!("{}{relative}", self.signatures())
    }

    /// What hosts write that the rollout is made of, and that every agent watches: the turns
    /// (`turns/{slot}`, under the holder's lease), who is updating, who halted.
    pub fn coordination(&self) -> String {
        format!("{}rollout/", self.root)
    }

    pub fn turns(&self) -> String {
        format!("{}turns/", self.coordination())
    }

    pub fn turn(&self, slot: u32) -> String {
        format!("{}{slot}", self.turns())
    }

    pub fn updatings(&self) -> String {
        format!("{}updating/", self.coordination())
    }

    pub fn updating(&self, host: &str) -> String {
        format!("{}{host}", self.updatings())
    }

    pub fn halts(&self) -> String {
        format!("{}halts/", self.coordination())
    }

    pub fn halt(&self, host: &str) -> String {
        format!("{}{host}", self.halts())
    }

    pub fn hosts(&self) -> String {
        format!("{}hosts/", self.root)
    }

    pub fn host(&self, host: &str) -> String {
        format!("{}{host}", self.hosts())
    }

    pub fn members(&self) -> String {
        format!("{}members/", self.root)
    }

    pub fn member(&self, host: &str) -> String {
        format!("{}{host}", self.members())
    }

    pub fn refusals(&self) -> String {
        format!("{}refusals/", self.root)
    }

    /// What `host` refused of the spec, and why.
    pub fn refusal(&self, host: &str) -> String {
        format!("{}{host}", self.refusals())
    }

    pub fn statuses(&self) -> String {
        format!("{}status/", self.root)
    }

    /// Every status of one host.
    pub fn statuses_of(&self, host: &str) -> String {
        format!("{}{host}/", self.statuses())
    }

    pub fn status(&self, host: &str, component: &str) -> String {
        format!("{}{component}", self.statuses_of(host))
    }

    /// The etcd user (and role) of `host` in this fleet. A host named `op-*` would share the
    /// operators' names, so [`valid_host`] refuses it.
    pub fn host_user(&self, host: &str) -> String {
        format!("handoff-{}-{host}", self.fleet)
    }

    /// The etcd user (and role) of operator `name` in this fleet.
    pub fn operator_user(&self, name: &str) -> String {
        format!("handoff-{}-op-{name}", self.fleet)
    }

    /// What `host`'s credentials may do: read the fleet; write its registration, member
    /// record, statuses, refusals, halt and updating marker, and the turn slots (which every host
    /// competes for). Nothing under `spec/`, and no other host's keys.
    pub fn host_grants(&self, host: &str) -> Vec<Grant> {
        let mut grants = vec![
            Grant::new(self.root.clone(), true, Access::Read),
            Grant::new(self.host(host), false, Access::ReadWrite),
            Grant::new(self.member(host), false, Access::ReadWrite),
            Grant::new(self.statuses_of(host), true, Access::ReadWrite),
            Grant::new(self.refusal(host), false, Access::ReadWrite),
            Grant::new(self.halt(host), false, Access::ReadWrite),
            Grant::new(self.updating(host), false, Access::ReadWrite),
            Grant::new(self.turns(), true, Access::ReadWrite),
        ];
        grants.sort();
        grants
    }

    /// What an operator's credentials may do: read the fleet, write `spec/` (the config, the
    /// rollouts, the stops and their signatures).
    pub fn operator_grants(&self) -> Vec<Grant> {
        let mut grants = vec![
            Grant::new(self.root.clone(), true, Access::Read),
            Grant::new(self.spec(), true, Access::ReadWrite),
        ];
        grants.sort();
        grants
    }
}

/// A host's name in the fleet: a [`valid_name`] that does not start with `op-`, the prefix of
/// the operators' etcd users.
pub fn valid_host(what: &str, host: &str) -> Result<()> {
    valid_name(what, host)?;
    if host.starts_with("op-") {
        return Err(Failure::input(format!(
            "{what}: {host:?} starts with \"op-\", which names the fleet's operators in etcd; \
             choose another host name"
        ))
        .into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::{exit_code_of, ExitCode};

    #[test]
    fn every_key_of_a_fleet_is_under_its_own_root() {
        let keys = Keys::new("prod").unwrap();
        assert_eq!(keys.config(), "/handoff/fleets/prod/spec/config");
        assert_eq!(keys.turn(1), "/handoff/fleets/prod/rollout/turns/1");
        assert!(keys.rollout().starts_with(&keys.spec()));
        assert_eq!(keys.stop("web"), "/handoff/fleets/prod/spec/stops/web");
        assert_eq!(
            keys.signature(&keys.stop("web.sig")),
            "/handoff/fleets/prod/spec/signatures/stops/web.sig"
        );
        assert_eq!(
            keys.signature(&keys.config()),
            "/handoff/fleets/prod/spec/signatures/config"
        );
        assert_eq!(keys.host("h1"), "/handoff/fleets/prod/hosts/h1");
        assert_eq!(keys.member("h1"), "/handoff/fleets/prod/members/h1");
        assert_eq!(keys.halt("h1"), "/handoff/fleets/prod/rollout/halts/h1");
        assert!(keys.host("h1").starts_with(&keys.hosts()));
        assert_eq!(
            keys.status("h1", "web"),
            "/handoff/fleets/prod/status/h1/web"
        );
        for key in [keys.turn(0), keys.updating("h1"), keys.halt("h1")] {
            assert!(key.starts_with(&keys.coordination()), "{key}");
            assert!(!key.starts_with(&keys.spec()), "{key}");
        }
    }

    #[test]
    fn names_that_could_reach_into_another_key_are_refused() {
        for bad in ["", "a/b", "..", "A", "-x", "a b", &"a".repeat(64)] {
            let error = Keys::new(bad).unwrap_err();
            assert_eq!(exit_code_of(&error), ExitCode::Input, "{bad:?}");
        }
        assert!(valid_name("--host", "web-1.example").is_ok());
        let error = valid_host("--host", "op-alice").unwrap_err();
        assert_eq!(exit_code_of(&error), ExitCode::Input);
        assert!(valid_host("--host", "web-op-1").is_ok());
    }

    /// Whether `grants` let a user write `key`.
    fn writable(grants: &[Grant], key: &str) -> bool {
        grants.iter().any(|g| {
            g.access == Access::ReadWrite
                && if g.prefix {
                    key.starts_with(&g.key)
                } else {
                    key == g.key
                }
        })
    }

    #[test]
    fn a_hosts_grants_write_only_its_own_keys_and_the_turns() {
        let keys = Keys::new("prod").unwrap();
        let h1 = keys.host_grants("h1");
        for own in [
            keys.host("h1"),
            keys.member("h1"),
            keys.status("h1", "web"),
            keys.halt("h1"),
            keys.updating("h1"),
            keys.refusal("h1"),
            keys.turn(3),
        ] {
            assert!(writable(&h1, &own), "{own}");
        }
        for other in [
            keys.config(),
            keys.rollout(),
            keys.stop("web"),
            keys.signature(&keys.config()),
            keys.host("h10"),
            keys.host("h2"),
            keys.member("h2"),
            keys.status("h10", "web"),
            keys.status("h2", "web"),
            keys.halt("h2"),
            keys.updating("h2"),
            keys.refusal("h2"),
            "/handoff/fleets/prod2/rollout/turns/0".to_string(),
        ] {
            assert!(!writable(&h1, &other), "{other}");
        }
    }

    #[test]
    fn an_operators_grants_write_the_spec_and_nothing_a_host_reports() {
        let keys = Keys::new("prod").unwrap();
        let op = keys.operator_grants();
        assert!(writable(&op, &keys.config()));
        assert!(writable(&op, &keys.signature(&keys.rollout())));
        assert!(writable(&op, &keys.stop("web")));
        for host_key in [keys.host("h1"), keys.status("h1", "web"), keys.turn(0)] {
            assert!(!writable(&op, &host_key), "{host_key}");
        }
        assert_eq!(keys.operator_user("alice"), "handoff-prod-op-alice");
        assert_eq!(keys.host_user("h1"), "handoff-prod-h1");
    }
}
