#!/usr/bin/env python3
"""Planted faults: each one breaks a promise of the README behind the tests' back, and the
tests that guard that promise must then fail. Run by scripts/mutants.sh (root, dockerd).

For every fault, a copy of the tree gets the fault (an exact text replacement; a fault whose
anchor is missing is an error, never silently skipped), and the tests named for it run there
(`cargo test ... -- --include-ignored --exact`, or a test script such as
scripts/vagrant-test.sh, which builds the package from the faulty tree). A fault is *caught* when they fail, *survived*
when they pass: a survivor means a promise no test can see broken. Every test named runs
first on an unmutated copy: one that fails there is a *broken target*, reported as such and
never counted as a catch. Exit status 0 only when every fault was caught and no target is
broken.
"""

import argparse
import os
import shutil
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# (name, the promise it breaks, file, anchor, replacement, [(test target, test name)])
FAULTS = [
    (
        "drain-returns-at-once",
        "drain --wait returns when the last flow ends, not before",
        "src/ops/watch.rs",
        "    let started = Instant::now();\n    let mut addresses",
        "    return Ok(Outcome {\n        drained: targets.iter().map(|t| t.backend.clone()).collect(),\n"
        "        ..Outcome::default()\n    });\n    #[allow(unreachable_code)]\n"
        "    let started = Instant::now();\n    let mut addresses",
        [
            ("kernel", "drain_wait_returns_right_after_the_last_flow_closes_and_not_before"),
            ("lib", "ops::watch::tests::a_backend_drains_when_its_last_flow_ends"),
        ],
    ),
    (
        "update-returns-at-the-switch",
        "update returns when the old container is gone",
        "src/cli/mod.rs",
        "    let drain = crate::ops::drain::finish_drain(env, component, None)?;\n"
        "    output::drain(&component.name, &drain, None)",
        "    Ok(())",
        [
            ("docker", "start_then_update_under_load_drops_nothing_and_retires_the_old_container"),
        ],
    ),
    (
        "switch-does-nothing",
        "switch moves new connections to the new backend",
        "src/kernel/netfilter/script.rs",
        "        // The hot path: the component is routed already on exactly these external ports, with",
        "        if !component.is_empty() {\n            return Ok(());\n        }\n"
        "        // The hot path: the component is routed already on exactly these external ports, with",
        [("kernel", "a_switch_moves_new_connections_while_an_upload_finishes_byte_exact_on_the_old_backend")],
    ),
    (
        "stop-does-not-drain",
        "stop drains before it retires",
        "src/ops/stop.rs",
        "    if drain_first {\n        return Ok(StopReport {",
        "    if drain_first && false {\n        return Ok(StopReport {",
        [
            ("docker", "stop_drains_and_signals_after_the_last_flow_kill_cuts_and_signals_nothing"),
            ("lib", "ops::tests::stop::stop_unroutes_drains_signals_and_retires_everything"),
        ],
    ),
    (
        "drain-timeout-1-ms",
        "a drain waits up to drainTimeout",
        "src/config/schema.rs",
        "        self.drain_timeout.unwrap_or(DEFAULT_DRAIN_TIMEOUT_MS)",
        "        self.drain_timeout.map(|_| 1).unwrap_or(1)",
        [
            ("kernel", "drain_wait_returns_right_after_the_last_flow_closes_and_not_before"),
            ("lib", "ops::tests::update::the_drain_waits_for_the_old_versions_flow_then_expires_its_finished_entries"),
        ],
    ),
    (
        "netkit-counts-a-stall-as-success",
        "the traffic tool fails a request whose server never closes",
        "src/bin/handoff-netkit/client.rs",
        'Err(anyhow!("no FIN from the server within the read timeout"))',
        "Ok(())",
        [("bin:handoff-netkit", "load::tests::a_server_that_never_closes_fails_the_request")],
    ),
    (
        "held-connection-cut-at-the-switch",
        "a switch leaves existing connections where they are",
        "src/ops/switch.rs",
        '    crash::point("after-switch");',
        '    crash::point("after-switch");\n'
        "    if let Some(previous) = &previous {\n"
        "        let _ = super::drain::forget_flows(&mut **env.conntrack(), previous, true);\n"
        "    }",
        [("kernel", "drain_wait_returns_right_after_the_last_flow_closes_and_not_before")],
    ),
    (
        "restart-reported-as-previous",
        "restore never drains the container it has just started again at another address",
        "src/ops/switch.rs",
        "        .filter(|record| container.is_none() || record.container != container);",
        "        .filter(|_| true);",
        [("lib", "ops::tests::restore::after_a_reboot_the_active_container_is_started_again_and_nothing_of_it_is_drained")],
    ),
    (
        "active-container-retired",
        "the active container is never retired, whatever the state says",
        "src/ops/retire.rs",
        "            Some(id) if active_containers.contains(id) => {",
        "            Some(id) if id.is_empty() => {",
        [("lib", "ops::tests::restore::a_draining_record_of_the_active_container_is_forgotten_never_retired")],
    ),
    (
        "stale-dispatch-ports-kept",
        "a port dropped from the config leaves the ruleset at the next switch",
        "src/kernel/netfilter/ruleset.rs",
        "    let stale = change.stale_ports();",
        "    let stale: Vec<PortKey> = Vec::new();",
        [("kernel", "a_port_dropped_from_the_config_leaves_the_ruleset_and_stop_still_works")],
    ),
    (
        "rollback-flips-forward-again",
        "a rollback run again finds it done and never flips forward to the version it left",
        "src/ops/rollback.rs",
        "        return Ok(Rollback::AlreadyDone(done));",
        "        let _ = done;",
        [
            ("lib", "ops::tests::rollback::a_rollback_routes_back_to_the_draining_version_and_the_active_one_drains"),
            ("docker", "a_rollback_under_load_returns_to_the_draining_version_and_retires_the_bad_one"),
        ],
    ),
    (
        "canary-takes-everything",
        "a canary takes PCT % of new connections, not all of them",
        "src/kernel/netfilter/ruleset.rs",
        '        format!("numgen random mod 100 < {weight}")',
        '        format!("numgen random mod 100 < {}", weight.max(100))',
        [("kernel", "a_canary_takes_its_share_in_the_kernel_and_promote_and_rollback_keep_every_flow")],
    ),
    (
        "ipv6-fails-open",
        "IPv6 to a component's ports is refused, not passed to the host's own listener",
        "src/kernel/netfilter/ruleset.rs",
        '        format!(\n'
        '            "add rule {t} prerouting meta nfproto ipv6 {}",\n'
        "            REFUSE_IPV6[0]\n"
        "        ),\n",
        "",
        [("kernel", "a_components_ports_are_refused_over_ipv6_instead_of_reaching_the_hosts_own_listener")],
    ),
    (
        "link-is-public",
        "a component link is reached only at its network's gateway, from that network",
        "src/kernel/netfilter/ruleset.rs",
        "fib daddr . iif type local meta l4proto tcp tcp dport vmap @{LINKS_MAP}",
        "fib daddr type local meta l4proto tcp tcp dport vmap @{LINKS_MAP}",
        [("docker", "a_component_calls_another_through_its_link_without_a_failure_across_an_update")],
    ),
    (
        "hairpin-mode-not-set",
        "a container reaches its own component through the host (hairpin mode on its bridge port)",
        "src/kernel/bridge_port.rs",
        "        LinkInfo::PortData(InfoPortData::BridgePort(vec![InfoBridgePort::HairpinMode(\n            true,",
        "        LinkInfo::PortData(InfoPortData::BridgePort(vec![InfoBridgePort::HairpinMode(\n            false,",
        [("docker", "host_local_and_other_container_clients_reach_the_component")],
    ),
    (
        "table-before-udp-not-rebuilt",
        "a table laid out before UDP is rebuilt by the next change, and no flow notices",
        "src/kernel/netfilter/script.rs",
        "        if !dispatch.as_ref().is_some_and(migrate::needs_rebuild) {\n            return Err(error);",
        "        if dispatch.is_some() || dispatch.is_none() {\n            return Err(error);",
        [("kernel", "a_table_from_before_udp_is_rebuilt_by_the_next_switch_and_no_flow_notices")],
    ),
    (
        "udp-flows-not-counted",
        "a drain of a backend that served UDP waits for its UDP flows' entries to go",
        "src/kernel/conntrack/decode.rs",
        "        Protocol::Udp => crate::config::Protocol::Udp,\n",
        "",
        [("kernel", "a_udp_port_switches_with_the_component_and_a_udp_flow_drains_when_its_entry_goes")],
    ),
    (
        "ipv6-dump-trusts-the-kernel-filter",
        "a drain of an IPv6 backend waits for its IPv6 flows (the kernel's IPv6 reply filter is inverted)",
        "src/kernel/conntrack/request.rs",
        "    let filtered = replies_from.filter(IpAddr::is_ipv4);",
        "    let filtered = replies_from;",
        [
            ("ipv6", "an_ipv6_flow_is_drained_counted_and_restored_like_an_ipv4_one"),
            ("ipv6", "a_dump_for_one_ipv6_backend_returns_exactly_its_flows"),
        ],
    ),
    (
        "container-ipv6-not-switched",
        "a container on a network with IPv6 takes IPv6 clients in the same switch as IPv4 ones",
        "src/ops/switch.rs",
        "        Some(_) => Backends::default().with(address).with_optional(address6),",
        "        Some(_) => Backends::default().with(address),",
        [
            ("docker", "a_container_on_an_ipv6_network_is_updated_in_both_families_without_a_failure"),
            ("lib", "ops::tests::ipv6::a_container_with_an_ipv6_address_takes_both_families_in_one_transaction"),
        ],
    ),
    (
        "localnet-guard-missing",
        "with route_localnet on for localhostClients, a neighbour cannot reach the host's loopback services",
        "src/kernel/netfilter/ruleset.rs",
        "             ct status & dnat == 0 ct state != {{ established, related }} drop\"",
        "             ct status & dnat == 0 ct state != {{ established, related }} accept\"",
        [("kernel", "the_loopback_guard_outlives_the_table")],
    ),
    (
        "stop-on-the-clients-default-timeout",
        "a stop longer than the Docker client's 120 s timeout gets its whole grace",
        "src/runtime/docker.rs",
        "        let client = self.client.clone().with_timeout(grace + STOP_ANSWER_SLACK);",
        "        let client = self.client.clone();\n        let _ = STOP_ANSWER_SLACK;",
        [("docker", "a_stop_longer_than_the_docker_clients_timeout_waits_its_grace_out")],
    ),
    (
        "bind-address-ignored",
        "a bound port is the component's on its address only",
        "src/kernel/netfilter/ruleset.rs",
        "    let bound = bindings::wanted(ports);",
        "    let bound: Vec<Binding> = Vec::new();",
        [("kernel", "a_bound_port_is_the_components_on_its_address_only")],
    ),
    (
        "isolation-skipped",
        "a container on an --internal network cannot reach a component (no more reach than docker run -p)",
        "src/kernel/netfilter/docker_user.rs",
        "    if chain == CHAIN && isolation {",
        "    if chain == CHAIN && isolation && false {",
        [("reach", "handoff_answers_nowhere_that_docker_run_p_does_not")],
    ),
    (
        "one-label-for-every-table",
        "each table's hole in Docker's FORWARD admits its own flows only",
        "src/kernel/netfilter/label.rs",
        "    if table == DEFAULT_TABLE {\n        return DEFAULT_LABEL;\n    }",
        "    if !table.is_empty() {\n        return DEFAULT_LABEL;\n    }",
        [("kernel", "two_tables_each_admit_only_their_own_flows")],
    ),
    (
        "route-localnet-host-wide",
        "route_localnet is turned on only on the backends' interfaces, so the LAN stays out when the table is gone",
        "src/kernel/netfilter/localnet.rs",
        '            std::fs::write(flag_path(name), "1").map_err(|error| {',
        '            std::fs::write(flag_path("all"), "1").map_err(|error| {',
        [("kernel", "the_loopback_guard_outlives_the_table"),
         ("kernel", "localhost_clients_reach_the_component_at_127_0_0_1")],
    ),
    (
        "route-localnet-never-put-back",
        "the route_localnet flag is put back when no component needs it",
        "src/kernel/netfilter/script.rs",
        "        if self.localnet.has_record() && !self.loopback_clients_anywhere()? {",
        "        if false && self.localnet.has_record() && !self.loopback_clients_anywhere()? {",
        [("kernel", "the_loopback_guard_outlives_the_table"),
         ("kernel", "localhost_clients_reach_the_component_at_127_0_0_1")],
    ),
    (
        "fleet-stop-does-not-drain",
        "fleet stop drains each host before it retires the containers",
        "src/cli/fleet/agent/stops.rs",
        '                            let stopped = status(name, None, None, STOPPED, None);\n'
        '                            self.drains.start(self.globals, component, Some(stopped))?;\n'
        '                            status(name, None, None, STOPPING, None)',
        '                            let _ = with_env(self.globals, |env| stop(env, component, false));\n'
        '                            status(name, None, None, STOPPED, None)',
        [("fleet", "a_fleet_stop_drains_before_retiring_a_kill_cuts_it_short_and_a_start_serves_again")],
    ),
    (
        "forward-fallback-missing",
        "new connections keep flowing while dockerd re-arranges FORWARD",
        "src/kernel/netfilter/docker_user.rs",
        '                        add(iptables, &["-A", FALLBACK_CHAIN], table)?;',
        "",
        [
            ("docker", "new_connections_keep_flowing_while_dockerd_creates_networks"),
            ("docker", "stop_drains_and_signals_after_the_last_flow_kill_cuts_and_signals_nothing"),
        ],
    ),
    (
        "dump-filter-malformed",
        "a retirement dumps one backend's flows, not the whole table",
        "src/kernel/conntrack/request.rs",
        "    attribute.extend_from_slice(&12u16.to_ne_bytes());",
        "    attribute.extend_from_slice(&16u16.to_ne_bytes());",
        [("kernel", "a_dump_for_one_backend_is_filtered_by_the_kernel")],
    ),
    (
        "package-removal-leaves-the-table",
        "removing the package leaves no table behind",
        "debian/prerm",
        "    if ! /usr/sbin/handoff --lock-timeout 60 teardown; then",
        "    if false; then",
        [("script", "scripts/vagrant-test.sh")],
    ),
    (
        "package-does-not-enable-restore",
        "a reboot restores the routes with no manual step",
        "debian/postinst",
        "        deb-systemd-helper enable handoff-restore.service >/dev/null || true",
        "        true",
        [("script", "scripts/vagrant-test.sh")],
    ),
    (
        "switch-waits-on-a-delete",
        "a switch's transaction only adds, so it never waits for an RCU grace period",
        "src/kernel/netfilter/generations.rs",
        "        if now.iter().all(|element| wanted.contains(element)) {",
        "        if now.is_empty() && wanted.is_empty() {",
        [("generations", "a_switch_only_adds_and_the_older_generations_go_after_the_drain")],
    ),
    (
        "older-generations-kept",
        "the older generations of a component's maps are deleted once its drain ends",
        "src/kernel/netfilter/script.rs",
        "        generations::compact(&self.table)\n",
        "        Ok(())\n",
        [("generations", "a_switch_only_adds_and_the_older_generations_go_after_the_drain")],
    ),
    (
        "unsigned-spec-admitted",
        "a host with a signers file acts only on specs signed by a key listed there",
        "src/fleet/admission.rs",
        "    let signer = match required {\n        None => None,",
        "    let signer = match required.filter(|_| false) {\n        None => None,",
        [
            ("fleet_secure", "a_secured_fleet_runs_only_what_its_operator_signed_and_its_host_allows"),
            ("lib", "fleet::agent::tests::admission::an_unsigned_config_is_refused_by_a_host_that_requires_signatures_and_nothing_starts"),
        ],
    ),
    (
        "policy-ignored",
        "a fleet agent starts nothing its host's policy forbids",
        "src/fleet/agent/mod.rs",
        "            match self.policy.as_ref().map(|p| p.check(&desired)) {",
        "            match self.policy.as_ref().filter(|_| false).map(|p| p.check(&desired)) {",
        [
            ("fleet_secure", "a_secured_fleet_runs_only_what_its_operator_signed_and_its_host_allows"),
            ("lib", "fleet::agent::tests::policy::a_component_the_policy_forbids_is_refused_with_the_reason_and_the_others_run"),
        ],
    ),
    (
        "old-spec-replayed",
        "an old signed spec put back cannot roll a host backwards",
        "src/fleet/admission.rs",
        "        Some(before) if envelope.sequence < before.sequence => {",
        "        Some(before) if envelope.sequence < before.sequence && false => {",
        [("lib", "fleet::agent::tests::admission::an_older_signed_config_put_back_is_refused_as_a_replay_and_the_newer_one_stays")],
    ),
    (
        "deaf-host-kept-alive",
        "a host whose agent can no longer follow the fleet is not reported alive",
        "src/fleet/registration.rs",
        "            Some(broken) if broken > WATCH_BROKEN_GRACE => {",
        "            Some(broken) if broken > WATCH_BROKEN_GRACE && false => {",
        [("fleet_secure", "a_host_that_can_no_longer_follow_the_fleet_is_not_reported_alive")],
    ),
    (
        "turn-ignores-halts",
        "no host takes a turn in a rollout another host halted",
        "src/fleet/rollout.rs",
        "                Cond::nothing_under_since(keys.halts(), rollout_revision),\n",
        "",
        [("lib", "fleet::agent::tests::rollouts::a_host_that_read_the_rollout_before_another_halted_it_cannot_take_a_turn")],
    ),
]


def run(*args, cwd, env=None):
    return subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True)


def plant(tree, path, anchor, replacement):
    target = os.path.join(tree, path)
    with open(target) as f:
        text = f.read()
    if text.count(anchor) != 1:
        raise SystemExit(f"{path}: the anchor of a fault is not there exactly once:\n{anchor}")
    with open(target, "w") as f:
        f.write(text.replace(anchor, replacement))


def test_args(target, name):
    if target == "lib":
        return ["--lib", "--features", "test-hooks", "--", "--exact", name]
    if target.startswith("bin:"):
        return ["--bin", target[4:], "--features", "test-hooks", "--", "--include-ignored",
                "--exact", name]
    return ["--test", target, "--features", "test-hooks", "--", "--include-ignored", "--exact",
            name]


def copy_tree(label):
    tree = tempfile.mkdtemp(prefix=f"handoff-mutant-{label}-")
    shutil.copytree(ROOT, tree, dirs_exist_ok=True, ignore=shutil.ignore_patterns("target", ".git"))
    return tree


def passes(tree, target, test, env, label):
    """Whether `test` passes in `tree`; a tree that does not build is an error."""
    if target == "script":
        # Its own target directory: the script packages what it builds there.
        script_env = {k: v for k, v in env.items() if k != "CARGO_TARGET_DIR"}
        return run("bash", test, cwd=tree, env=script_env).returncode == 0
    result = run("cargo", "test", "--quiet", *test_args(target, test), cwd=tree, env=env)
    if "error[" in result.stderr and "test result" not in result.stdout:
        raise SystemExit(f"{label}: the tree does not build:\n{result.stderr}")
    return result.returncode == 0


def broken_targets(chosen, env):
    """The tests named for `chosen` that fail on an unmutated tree."""
    targets = sorted({t for *_, tests in chosen for t in tests})
    tree = copy_tree("unmutated")
    try:
        broken = {t for t in targets if not passes(tree, *t, env, "unmutated")}
    finally:
        shutil.rmtree(tree, ignore_errors=True)
    for target, test in sorted(broken):
        print(f"broken target (fails with no fault planted): {target} {test}", file=sys.stderr,
              flush=True)
    return broken


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--only", help="comma-separated fault names")
    args = parser.parse_args()
    chosen = [f for f in FAULTS if not args.only or f[0] in args.only.split(",")]
    target_dir = os.path.join(ROOT, "target", "mutants")
    env = dict(os.environ, CARGO_TARGET_DIR=target_dir)
    broken = broken_targets(chosen, env)
    results = []
    for name, promise, path, anchor, replacement, tests in chosen:
        tree = copy_tree(name)
        try:
            plant(tree, path, anchor, replacement)
            failed = [test for target, test in tests
                      if (target, test) not in broken and not passes(tree, target, test, env, name)]
            results.append((name, promise, failed))
            verdict = f"caught by {', '.join(failed)}" if failed else "SURVIVED"
            print(f"{name}: {verdict}", file=sys.stderr, flush=True)
        finally:
            shutil.rmtree(tree, ignore_errors=True)
    print("| planted fault | the promise it breaks | caught by |")
    print("|---|---|---|")
    for name, promise, failed in results:
        print(f"| {name} | {promise} | {', '.join(failed) if failed else '**survived**'} |")
    for target, test in sorted(broken):
        print(f"| (broken target) | fails with no fault planted | {target} {test} |")
    sys.exit(0 if not broken and all(failed for _, _, failed in results) else 1)


if __name__ == "__main__":
    main()
