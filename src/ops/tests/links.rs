use super::super::testkit::{docker_address, update_and_drain, Kit};
use super::super::update::start;

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
