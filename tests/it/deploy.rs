//! The Kubernetes manifests in `deploy/`: the keys a sharded run needs, read back as data
//! (YAML through the test environment's PyYAML), so a broken edit fails here and not in a
//! cluster.

use serde_json::Value;

use crate::support::{run_python, workspace_root};

/// A manifest as JSON.
fn manifest(name: &str) -> Value {
    let path = workspace_root().join("deploy").join(name);
    let script = "import json, sys, yaml\nprint(json.dumps(yaml.safe_load(open(sys.argv[1]))))";
    run_python(script, &[&path.display().to_string()])
}

/// Checks a Job spec (a Job's `spec`, a CronJob's `jobTemplate.spec`): indexed, N pods at
/// once, N shards, the token and the S3 credentials from Secrets, the shard from the index.
fn check_job_spec(spec: &Value, what: &str) {
    assert_eq!(spec["completionMode"], "Indexed", "{what}");
    let completions = spec["completions"].as_u64().unwrap();
    assert!(completions > 1, "{what}: {completions} completions");
    assert_eq!(
        spec["parallelism"].as_u64(),
        Some(completions),
        "{what}: all shards at once"
    );
    let pod = &spec["template"]["spec"];
    assert_eq!(pod["restartPolicy"], "Never", "{what}");
    let containers = pod["containers"].as_array().unwrap();
    assert_eq!(containers.len(), 1, "{what}");
    let container = &containers[0];
    let args: Vec<&str> = container["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    assert_eq!(args[0], "run", "{what}: {args:?}");
    let pipeline = args[1].strip_prefix("/errlake/").unwrap();
    assert!(
        workspace_root().join(pipeline).exists(),
        "{what}: {pipeline} is not a pipeline of the repository"
    );
    let destination = args.iter().position(|a| *a == "--destination").unwrap();
    assert!(
        args[destination + 1].starts_with("s3://"),
        "{what}: {args:?}"
    );
    // The shard comes from JOB_COMPLETION_INDEX, never from a fixed flag.
    assert!(
        !args.iter().any(|a| a.starts_with("--shard")),
        "{what}: {args:?}"
    );

    let env = container["env"].as_array().unwrap();
    let var = |name: &str| env.iter().find(|e| e["name"] == name);
    let shards = var("ERRLAKE_SHARDS").unwrap_or_else(|| panic!("{what}: no ERRLAKE_SHARDS"));
    assert_eq!(
        shards["value"].as_str().and_then(|v| v.parse::<u64>().ok()),
        Some(completions),
        "{what}: ERRLAKE_SHARDS must equal completions"
    );
    for secret in ["AUTH_TOKEN", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"] {
        let e = var(secret).unwrap_or_else(|| panic!("{what}: no {secret}"));
        assert!(
            e.get("value").is_none(),
            "{what}: {secret} written in the manifest"
        );
        assert!(
            e["valueFrom"]["secretKeyRef"]["name"].is_string(),
            "{what}: {secret} must come from a Secret"
        );
    }
    assert!(var("AWS_REGION").is_some(), "{what}: no AWS_REGION");
}

#[test]
fn the_indexed_job_runs_one_shard_per_index() {
    let job = manifest("job.yaml");
    assert_eq!(job["apiVersion"], "batch/v1");
    assert_eq!(job["kind"], "Job");
    check_job_spec(&job["spec"], "job.yaml");
}

#[test]
fn the_cron_job_runs_the_same_shards_on_a_schedule_without_overlap() {
    let cron = manifest("cronjob.yaml");
    assert_eq!(cron["apiVersion"], "batch/v1");
    assert_eq!(cron["kind"], "CronJob");
    assert_eq!(
        cron["spec"]["schedule"]
            .as_str()
            .unwrap()
            .split(' ')
            .count(),
        5
    );
    assert_eq!(cron["spec"]["concurrencyPolicy"], "Forbid");
    check_job_spec(&cron["spec"]["jobTemplate"]["spec"], "cronjob.yaml");
    // The two run the same pipeline the same way.
    let job = manifest("job.yaml");
    assert_eq!(
        cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]["args"],
        job["spec"]["template"]["spec"]["containers"][0]["args"]
    );
}

#[test]
fn the_image_holds_the_runner_and_the_pipelines_and_no_secret() {
    let dockerfile = std::fs::read_to_string(workspace_root().join("deploy/Dockerfile")).unwrap();
    assert!(dockerfile.contains("cargo build --release --package xtask"));
    assert!(dockerfile.contains("COPY pipelines /errlake/pipelines"));
    assert!(dockerfile.contains("ENTRYPOINT [\"/usr/local/bin/errlake\"]"));
    for secret in ["AUTH_TOKEN", "AWS_SECRET_ACCESS_KEY", "ENV "] {
        assert!(
            !dockerfile.contains(secret),
            "the image must not carry {secret}"
        );
    }
}
