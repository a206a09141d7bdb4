//! Run examples for each planned image, like the seed's: the `docker run` line and a
//! Kubernetes Deployment + Service (SSH, JupyterLab, TensorBoard; a GPU limit for CUDA
//! images). Generated from the plan; the password and the Jupyter token come from
//! files (a mounted directory, a Kubernetes Secret the user creates), never inline.

use serde_json::{json, Value};

use crate::config::settings::Settings;
use crate::plan::Cell;

/// The Secret the Kubernetes example mounts (keys `password`, `token`).
pub const SECRET: &str = "image-matrix-credentials";

/// A DNS-1123 name from a cell id: `py3-11-debian12-amd64-torch2-5-1`.
pub fn k8s_name(id: &str) -> String {
    let mut n: String = id
        .to_ascii_lowercase()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    n.truncate(63);
    n.trim_matches('-').to_string()
}

fn ports(s: &Settings) -> [(&'static str, u16); 3] {
    let rt = &s.runtime;
    [
        ("ssh", rt.ssh_port),
        ("jupyter", rt.jupyter_port),
        ("tensorboard", rt.tensorboard_port),
    ]
}

/// `docker run` for the cell's primary tag (credentials from ./secrets).
pub fn docker_run(s: &Settings, c: &Cell) -> String {
    let mut a = vec![
        "docker run -d".to_string(),
        format!("--name {}", k8s_name(&c.id)),
    ];
    if c.base.cuda.is_some() {
        a.push("--gpus all".into());
    }
    for (_, p) in ports(s) {
        a.push(format!("-p {p}:{p}"));
    }
    a.push("-v \"$PWD/secrets:/run/secrets:ro\"".into());
    a.push("-e ROOT_PASSWORD_FILE=/run/secrets/password".into());
    a.push("-e JUPYTER_TOKEN_FILE=/run/secrets/token".into());
    a.push(c.primary_tag().to_string());
    a.join(" \\\n  ")
}

/// A `List` of one Deployment and one Service for the cell's primary tag.
pub fn kubernetes(s: &Settings, c: &Cell) -> Value {
    let name = k8s_name(&c.id);
    let labels =
        json!({"app.kubernetes.io/name": name, "app.kubernetes.io/part-of": "image-matrix"});
    let container_ports: Vec<Value> = ports(s)
        .iter()
        .map(|(n, p)| json!({"name": n, "containerPort": p, "protocol": "TCP"}))
        .collect();
    let service_ports: Vec<Value> = ports(s)
        .iter()
        .map(|(n, p)| json!({"name": n, "port": p, "targetPort": n, "protocol": "TCP"}))
        .collect();
    let mut container = json!({
        "name": "image",
        "image": c.primary_tag(),
        "ports": container_ports,
        "env": [
            {"name": "ROOT_PASSWORD_FILE", "value": "/run/secrets/image-matrix/password"},
            {"name": "JUPYTER_TOKEN_FILE", "value": "/run/secrets/image-matrix/token"}
        ],
        "volumeMounts": [{"name": "credentials", "mountPath": "/run/secrets/image-matrix", "readOnly": true}],
        "readinessProbe": {"tcpSocket": {"port": "jupyter"}, "initialDelaySeconds": 5, "periodSeconds": 10}
    });
    if c.base.cuda.is_some() {
        container["resources"] = json!({"limits": {"nvidia.com/gpu": 1}});
    }
    let deployment = json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "labels": labels},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app.kubernetes.io/name": name}},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "containers": [container],
                    "volumes": [{"name": "credentials", "secret": {"secretName": SECRET}}]
                }
            }
        }
    });
    let service = json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "labels": labels},
        "spec": {
            "type": "ClusterIP",
            "selector": {"app.kubernetes.io/name": name},
            "ports": service_ports
        }
    });
    json!({"apiVersion": "v1", "kind": "List", "items": [deployment, service]})
}
