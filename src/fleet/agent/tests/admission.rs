//! What a host admits of the spec: signed by a listed key, for this fleet and key, newer than
//! what it accepted; and what it does with the rest (nothing, and says so).

use super::*;
use crate::fleet::sealed::Envelope;

fn refused_config(bench: &Bench) -> String {
    bench
        .refusals("h1")
        .get(&bench.keys.config())
        .cloned()
        .unwrap_or_default()
}

#[test]
fn an_unsigned_config_is_refused_by_a_host_that_requires_signatures_and_nothing_starts() {
    let mut bench = Bench::new();
    bench.set_config(CONFIG, false);
    let mut agent = bench.agent("h1", Trust::Signed);
    settle(&mut agent);
    assert!(agent.host.calls.is_empty(), "{:?}", agent.host.calls);
    assert!(
        refused_config(&bench).starts_with("unsigned spec"),
        "{:?}",
        bench.refusals("h1")
    );
    assert!(bench.log("h1").contains("refused: unsigned spec"));
}

#[test]
fn a_config_signed_by_a_key_not_listed_is_refused_naming_the_key() {
    let mut bench = Bench::new();
    let snapshot = bench.snapshot();
    spec::store_config(
        &mut bench.store.client(),
        &bench.keys,
        &snapshot,
        CONFIG.into(),
        Some(&bench.stranger),
    )
    .unwrap()
    .unwrap();
    let mut agent = bench.agent("h1", Trust::Signed);
    settle(&mut agent);
    assert!(agent.host.calls.is_empty());
    let why = refused_config(&bench);
    assert!(why.contains("SHA256:") && why.contains("not in"), "{why}");
}

#[test]
fn a_signed_config_changed_after_signing_is_refused_as_a_bad_signature() {
    let mut bench = Bench::new();
    bench.set_config(CONFIG, true);
    let stored = bench.snapshot().config.unwrap();
    let text = String::from_utf8(stored.bytes).unwrap();
    bench.forge(&bench.keys.config(), text.replace("\"v1\"", "\"evil\""));
    let mut agent = bench.agent("h1", Trust::Signed);
    settle(&mut agent);
    assert!(agent.host.calls.is_empty());
    assert!(
        refused_config(&bench).contains("bad signature"),
        "{}",
        refused_config(&bench)
    );
}

#[test]
fn a_signed_config_is_admitted_and_who_signed_it_is_logged_nowhere_else_needed() {
    let mut bench = Bench::new();
    bench.set_config(CONFIG, true);
    let mut agent = bench.agent("h1", Trust::Signed);
    settle(&mut agent);
    assert_eq!(agent.host.calls, ["start web v1", "start api v1"]);
    assert!(bench.refusals("h1").is_empty());
}

#[test]
fn an_older_signed_config_put_back_is_refused_as_a_replay_and_the_newer_one_stays() {
    let mut bench = Bench::new();
    bench.set_config(CONFIG, true);
    let old = bench.snapshot().config.unwrap();
    let old_signature = old.signature.clone().unwrap();
    let mut agent = bench.agent("h1", Trust::Signed);
    settle(&mut agent);
    bench.set_config(&CONFIG.replace("\"api\"", "\"api2\""), true);
    settle(&mut agent);
    assert_eq!(agent.host.called("start api2 v1"), 1);
    // Someone with etcd's root puts the old record and its (valid) signature back.
    bench.forge(&bench.keys.config(), old.bytes);
    bench.forge(&bench.keys.signature(&bench.keys.config()), old_signature);
    agent.host.serving.clear();
    settle(&mut agent);
    assert!(
        refused_config(&bench).contains("replayed spec"),
        "{}",
        refused_config(&bench)
    );
    // What it converges to is still the newer config: api2, not api.
    assert_eq!(agent.host.called("start api2 v1"), 2);
    assert_eq!(agent.host.called("start api v1"), 1);
}

#[test]
fn what_a_host_accepted_survives_its_restart() {
    let mut bench = Bench::new();
    bench.set_config(CONFIG, true);
    let old = bench.snapshot().config.unwrap();
    let mut agent = bench.agent("h1", Trust::Signed);
    settle(&mut agent);
    bench.set_config(&CONFIG.replace("\"api\"", "\"api2\""), true);
    settle(&mut agent);
    drop(agent);
    bench.forge(&bench.keys.config(), old.bytes);
    bench.forge(
        &bench.keys.signature(&bench.keys.config()),
        old.signature.unwrap(),
    );
    let mut again = bench.agent("h1", Trust::Signed);
    settle(&mut again);
    assert!(refused_config(&bench).contains("replayed spec"));
    assert_eq!(again.host.calls, ["start web v1", "start api2 v1"]);
}

#[test]
fn a_config_deleted_from_the_store_changes_nothing_on_a_host_that_accepted_it() {
    let mut bench = Bench::new();
    bench.set_config(CONFIG, true);
    let mut agent = bench.agent("h1", Trust::Signed);
    settle(&mut agent);
    bench.store.delete(&bench.keys.config());
    agent.host.serving.remove("web");
    settle(&mut agent);
    assert_eq!(
        agent.host.called("start web v1"),
        2,
        "it still converges to what it accepted"
    );
}

#[test]
fn a_signed_record_moved_to_another_key_or_fleet_is_refused_as_misplaced() {
    let mut bench = Bench::new();
    bench.set_config(CONFIG, true);
    let stored = bench.snapshot().config.unwrap();
    let other = Keys::new("staging").unwrap();
    // The prod config and its signature, copied into staging.
    bench.forge(&other.config(), stored.bytes.clone());
    bench.forge(&other.signature(&other.config()), stored.signature.unwrap());
    let bench_keys = std::mem::replace(&mut bench.keys, other.clone());
    let mut agent = bench.agent("h1", Trust::Signed);
    let _ = agent.round();
    bench.keys = bench_keys;
    let snapshot = Snapshot::read(&mut bench.store.client(), &other).unwrap();
    let refused = &snapshot.refusals["h1"].refused[&other.config()];
    assert!(refused.contains("misplaced spec"), "{refused}");
    assert!(agent.host.calls.is_empty());
}

#[test]
fn a_record_that_is_not_an_envelope_is_refused_and_never_crashes_the_agent() {
    let mut bench = Bench::new();
    for garbage in [&b"{\"components\": []}"[..], b"\xff\xfe\x00", b""] {
        bench.forge(&bench.keys.config(), garbage.to_vec());
        bench.forge(&bench.keys.rollout(), garbage.to_vec());
        bench.forge(&bench.keys.stop("web"), garbage.to_vec());
        let mut agent = bench.agent("h1", Trust::Anything);
        settle(&mut agent);
        let refusals = bench.refusals("h1");
        assert!(
            refusals[&bench.keys.config()].contains("malformed spec"),
            "{refusals:?}"
        );
        assert_eq!(refusals.len(), 3, "{refusals:?}");
    }
}

#[test]
fn a_signed_config_that_does_not_validate_is_refused_and_the_one_before_kept() {
    let mut bench = Bench::new();
    bench.set_config(CONFIG, true);
    let mut agent = bench.agent("h1", Trust::Signed);
    settle(&mut agent);
    // Written around setconfig's validation, but signed.
    let bad = CONFIG.replace("\"external\": 80", "\"external\": 99999");
    let snapshot = bench.snapshot();
    let (_, ops) = crate::fleet::sealed::seal(
        &bench.keys,
        &bench.keys.config(),
        bad,
        snapshot.config.as_ref(),
        Some(&bench.operator),
    )
    .unwrap();
    bench.store.client().txn(vec![], ops).unwrap();
    agent.host.serving.clear();
    settle(&mut agent);
    assert!(
        refused_config(&bench).contains("invalid spec"),
        "{}",
        refused_config(&bench)
    );
    assert_eq!(agent.host.called("start web v1"), 2);
}

#[test]
fn two_records_with_one_sequence_are_a_conflict() {
    let mut bench = Bench::new();
    bench.set_config(CONFIG, false);
    let mut agent = bench.agent("h1", Trust::Anything);
    settle(&mut agent);
    let mut envelope: Envelope = bench.snapshot().config.unwrap().envelope().unwrap();
    envelope.body = CONFIG.replace("\"api\"", "\"api2\"");
    bench.forge(&bench.keys.config(), envelope.encode());
    settle(&mut agent);
    assert!(refused_config(&bench).contains("conflicting spec"));
    assert_eq!(agent.host.called("start api2 v1"), 0);
}

#[test]
fn a_malformed_signature_is_refused_and_reported_never_a_crash() {
    let mut bench = Bench::new();
    bench.set_config(CONFIG, true);
    let signature_key = bench.keys.signature(&bench.keys.config());
    let mut agent = bench.agent("h1", Trust::Signed);
    for garbage in [
        "",
        "-----BEGIN SSH SIGNATURE-----\nnot base64\n-----END SSH SIGNATURE-----\n",
        "-----BEGIN SSH SIGNATURE-----\nU1NIU0lH\n-----END SSH SIGNATURE-----\n",
    ] {
        bench.forge(&signature_key, garbage);
        settle(&mut agent);
        let why = refused_config(&bench);
        assert!(why.contains("signature"), "{garbage:?}: {why}");
        assert!(agent.host.calls.is_empty());
    }
}
