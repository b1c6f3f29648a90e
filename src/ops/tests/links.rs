use super::super::testkit::{docker_address, update_and_drain, Kit};
use super::super::update::start;
use crate::kernel::netfilter::Firewall;

/// `db` defines the link `db` (its port 5432), `app` requires it as `database`.
const LINKED: &str = r#"{"components": [
    {"name": "db", "repo": "repo", "tag": "v1", "pull": "never", "stopTimeout": 1,
     "defineComponentLinks": [{"name": "db", "port": 5432}]},
    {"name": "app", "repo": "repo", "tag": "v1", "pull": "never", "stopTimeout": 1,
     "ports": [{"external": 80, "container": 8080}],
     "requireComponentLinks": [{"name": "db", "alias": "database"}]}]}"#;

#[test]
fn a_link_is_switched_with_its_component_and_its_users_are_told_where_it_is() {
    let kit = Kit::with_config(LINKED);
    let env = kit.quiet_env();
    let db = kit.config.component("db").unwrap();
    let app = kit.config.component("app").unwrap();
    // A component with a link and no public port starts: the link is its only port.
    start(&env, db).unwrap();
    start(&env, app).unwrap();
    update_and_drain(&env, db, Some("v2"));
    let switches: Vec<String> = kit
        .firewall
        .log()
        .into_iter()
        .filter(|entry| entry.starts_with("switch db"))
        .collect();
    assert_eq!(
        switches,
        vec![
            format!("switch db {} links 172.17.0.1:5432", docker_address(2)),
            // app's container took .3, so db's new one is at .4.
            format!("switch db {} links 172.17.0.1:5432", docker_address(4)),
        ]
    );
    let app_container = kit
        .runtime
        .running()
        .into_iter()
        .find(|c| c.name.contains("app"))
        .expect("app runs");
    let environment = kit.runtime.env_of(&app_container.id);
    assert!(
        environment.contains(&"DATABASE_CLINK=tcp://172.17.0.1:5432".to_string()),
        "{environment:?}"
    );
    // app has no links of its own: nothing of the kind in its switch.
    assert!(kit
        .firewall
        .log()
        .iter()
        .any(|entry| entry == &format!("switch app {}", docker_address(3))));
}

#[test]
fn a_rerun_after_a_run_that_died_before_its_switch_routes_the_link_too() {
    let kit = Kit::with_config(LINKED);
    let env = kit.quiet_env();
    let db = kit.config.component("db").unwrap();
    start(&env, db).unwrap();
    // The dead run: the state says v2 is active, the kernel still routes v1 (link included).
    crate::ops::update::update(&env, db, Some("v2")).unwrap();
    let v1 = docker_address(2);
    kit.firewall
        .switch(&crate::kernel::netfilter::Switch {
            component: "db",
            current: &crate::kernel::netfilter::ComponentRoutes::default(),
            ports: &db.port_pairs(),
            backends: crate::kernel::netfilter::Backends::default().with(v1),
            canary: None,
            localhost: false,
            links: None,
            hairpin_sources: &[v1],
        })
        .unwrap();
    update_and_drain(&env, db, Some("v2"));
    let running = kit.runtime.running();
    assert_eq!(running.len(), 1, "{running:?}");
    let last = kit
        .firewall
        .log()
        .into_iter()
        .rfind(|e| e.starts_with("switch db"));
    assert_eq!(
        last,
        Some(format!(
            "switch db {} links 172.17.0.1:5432",
            running[0].address.unwrap()
        ))
    );
}
