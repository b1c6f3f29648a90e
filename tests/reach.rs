//! No more reach than Docker's own `-p`: a reference container published with `docker run -p`
//! and a handoff component on the default bridge, tried from every place a client can be —
//! a neighbour host, the host itself, a container on the default bridge, on a user network
//! (which Docker isolates from the default bridge), on an `--internal` network, the
//! component's own container, 127.0.0.1 and ::1 on the host — at every address that place can
//! aim at. handoff's port must answer nowhere the `-p` port does not. The matrix is printed;
//! README, "Who reaches a component", carries it with the reasons where handoff answers less.

mod common;

use std::process::Command;

use common::docker::{docker_available, ipv4_of, must, ComponentOptions, DockerSandbox};
use common::{is_root, NETKIT};

/// One try of `target` from a place: whether a connection was answered.
fn answered(load: &str) -> bool {
    let json: serde_json::Value = load
        .lines()
        .rev()
        .find_map(|line| serde_json::from_str(line).ok())
        .unwrap_or(serde_json::Value::Null);
    json["ok"].as_u64().unwrap_or(0) > 0
}

const LOAD: &[&str] = &[
    "load",
    "--connections",
    "1",
    "--duration-ms",
    "400",
    "--target",
];

/// Where a client can be.
enum Place {
    Neighbour,
    Host,
    /// A throw-away container on this Docker network.
    Network(String),
    /// Inside this running container.
    Container(String),
}

impl Place {
    fn tries(&self, sandbox: &DockerSandbox, image: &str, target: &str) -> bool {
        let args: Vec<&str> = LOAD.iter().copied().chain([target]).collect();
        let output = match self {
            Place::Neighbour => sandbox.client_command(&args).output(),
            Place::Host => Command::new(NETKIT).args(&args).output(),
            Place::Network(network) => Command::new("docker")
                .args(["run", "--rm", "--network", network])
                .args([
                    "--label",
                    &format!("handoff-test.sandbox={}", sandbox.table),
                ])
                .arg(image)
                .arg("/usr/local/bin/handoff-netkit")
                .args(&args)
                .output(),
            Place::Container(id) => Command::new("docker")
                .args(["exec", id, "/usr/local/bin/handoff-netkit"])
                .args(&args)
                .output(),
        }
        .expect("a client");
        answered(&String::from_utf8_lossy(&output.stdout))
    }
}

/// The address of Docker network `network`'s bridge on the host.
fn bridge_address(network: &str) -> String {
    let id = must("docker", &["network", "inspect", "-f", "{{.Id}}", network]);
    ipv4_of(&format!("br-{}", &id[..12]))
}

#[test]
#[ignore = "needs root and Docker: run by sudo scripts/test.sh"]
fn handoff_answers_nowhere_that_docker_run_p_does_not() {
    assert!(
        is_root(),
        "this test needs root: run `sudo scripts/test.sh`"
    );
    assert!(
        docker_available(),
        "no Docker daemon answers; scripts/test.sh starts one"
    );
    let sandbox = DockerSandbox::new(ComponentOptions::default());
    sandbox.handoff_ok(&["start", "web"]);
    let component = sandbox.containers()[0].0.clone();
    let image = format!("{}:v1", sandbox.repo);
    // The reference: the same image published the way every operator knows. Its port is
    // offset beyond what the run's other sandboxes use (see the link test in docker.rs).
    let published = sandbox.port + 25_000;
    sandbox.run_foreign("v1", &["-p", &format!("{published}:8080")]);
    let (user, internal) = (
        format!("{}-user", sandbox.id),
        format!("{}-int", sandbox.id),
    );
    must("docker", &["network", "create", &user]);
    must("docker", &["network", "create", "--internal", &internal]);
    let _networks = Networks(vec![user.clone(), internal.clone()]);

    let host = sandbox.host_address.clone();
    let docker0 = ipv4_of("docker0");
    let places: Vec<(String, Place, Vec<String>)> = vec![
        (
            "a neighbour host".into(),
            Place::Neighbour,
            vec![host.clone()],
        ),
        (
            "the host itself".into(),
            Place::Host,
            vec![
                host.clone(),
                docker0.clone(),
                "127.0.0.1".into(),
                "[::1]".into(),
            ],
        ),
        (
            "a container on the default bridge".into(),
            Place::Network("bridge".into()),
            vec![host.clone(), docker0.clone()],
        ),
        (
            "a container on a user network (isolated from the bridge)".into(),
            Place::Network(user.clone()),
            vec![host.clone(), bridge_address(&user)],
        ),
        (
            "a container on an --internal network".into(),
            Place::Network(internal.clone()),
            vec![host.clone(), bridge_address(&internal)],
        ),
        (
            "the component's own container".into(),
            Place::Container(component),
            vec![host.clone(), docker0.clone()],
        ),
    ];
    let mut wider = Vec::new();
    eprintln!("| place | address | docker run -p | handoff |");
    for (name, place, addresses) in &places {
        for address in addresses {
            let by_p = place.tries(&sandbox, &image, &format!("{address}:{published}"));
            let by_handoff = place.tries(&sandbox, &image, &format!("{address}:{}", sandbox.port));
            let word = |yes: bool| if yes { "answers" } else { "no answer" };
            eprintln!(
                "| {name} | {address} | {} | {} |",
                word(by_p),
                word(by_handoff)
            );
            if by_handoff && !by_p {
                wider.push(format!("{name} at {address}"));
            }
        }
    }
    assert!(
        wider.is_empty(),
        "handoff answers where docker run -p does not: {wider:?}"
    );
    // The control: the places that must be served are served (a probe that cannot connect
    // anywhere would pass the check above).
    for (place, address) in [(&places[0].1, &host), (&places[2].1, &docker0)] {
        assert!(
            place.tries(&sandbox, &image, &format!("{address}:{}", sandbox.port)),
            "handoff does not answer at {address}"
        );
    }
}

/// Docker networks removed when the test ends, also when it fails.
struct Networks(Vec<String>);

impl Drop for Networks {
    fn drop(&mut self) {
        for network in &self.0 {
            let _ = Command::new("docker")
                .args(["network", "rm", network])
                .output();
        }
    }
}
