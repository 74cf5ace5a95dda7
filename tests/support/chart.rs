//! `scripts/chart.py` (the real Helm 4 library and Kubernetes' schemas, from the test venv) as
//! the chart, argocd and e2e tests call it.

use std::process::Command;

use serde_json::Value;

/// Runs `scripts/chart.py ARGS`; returns (exit code, stdout, stderr).
pub fn chart_py(args: &[&str]) -> (i32, String, String) {
    let python = super::python();
    let output = Command::new(&python)
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/chart.py"))
        .args(args)
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run {}: {e}; run scripts/test.sh, which installs helm-python-sdk and \
                 kubernetes-validate in a venv",
                python.display()
            )
        });
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

pub fn run_json(command: &str, values: &Value, extra: &[&str]) -> Value {
    let values = values.to_string();
    let mut args = vec![command, "--values", &values];
    args.extend_from_slice(extra);
    let (code, stdout, stderr) = chart_py(&args);
    assert_eq!(code, 0, "chart.py {command} failed: {stderr}");
    serde_json::from_str(&stdout).expect("chart.py prints JSON")
}

/// The rendered objects (as an install, release vpc-cni-tuner in namespace vpc-cni-tuner).
pub fn render(values: &Value) -> Vec<Value> {
    render_with(values, &[])
}

pub fn render_with(values: &Value, extra: &[&str]) -> Vec<Value> {
    run_json("render", values, extra)
        .as_array()
        .expect("a list")
        .iter()
        .map(|entry| entry["object"].clone())
        .collect()
}
