//! One source of truth for AWS names: every `infra/environments/<env>.toml`, loaded through the
//! app's own loader (`bikeshare infra names --config ...`), names only streams, tables (with
//! the key the code writes), buckets and prefixes, delivery streams, the endpoint, the model
//! package group, the topic and the metric namespace that the CloudFormation templates create
//! for that environment; the role that runs each command allows every action of
//! `infra/permissions.toml` on its resource; and `infra/cloudformation/lake-catalog.yaml` is
//! exactly what `bikeshare infra catalog` generates from the lake's Arrow schemas.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use figment::providers::Format as _;
use serde_norway::Value;

use crate::support::{BIN, bikeshare, ok};

const ACCOUNT: &str = "387706002632";
const REGION: &str = "ca-central-1";
const ENVIRONMENTS: [&str; 3] = ["dev", "staging", "prod"];

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Every template's resources: (file, logical id, resource).
fn resources() -> Vec<(String, String, Value)> {
    let dir = root().join("infra/cloudformation");
    let mut out = Vec::new();
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    assert!(
        files.len() >= 7,
        "templates in {}: {files:?}",
        dir.display()
    );
    for f in files {
        let tpl: Value = serde_norway::from_str(&std::fs::read_to_string(&f).unwrap())
            .unwrap_or_else(|e| panic!("{}: {e}", f.display()));
        let name = f.file_name().unwrap().to_string_lossy().into_owned();
        for (id, res) in tpl["Resources"].as_mapping().unwrap() {
            out.push((name.clone(), id.as_str().unwrap().to_owned(), res.clone()));
        }
    }
    out
}

/// A property's value in environment `env`: plain strings, and `!Sub` strings with the
/// environment, account, region and partition substituted; `None` for anything else.
fn resolve(v: &Value, env: &str) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Tagged(t) if t.tag == "Sub" => t.value.as_str().map(|s| {
            s.replace("${Environment}", env)
                .replace("${AWS::AccountId}", ACCOUNT)
                .replace("${AWS::Region}", REGION)
                .replace("${AWS::Partition}", "aws")
        }),
        _ => None,
    }
}

fn of_type<'a>(all: &'a [(String, String, Value)], ty: &str) -> Vec<&'a Value> {
    all.iter()
        .filter(|(_, _, r)| r["Type"].as_str() == Some(ty))
        .map(|(_, _, r)| &r["Properties"])
        .collect()
}

fn names_of(all: &[(String, String, Value)], ty: &str, prop: &str, env: &str) -> BTreeSet<String> {
    of_type(all, ty)
        .into_iter()
        .filter_map(|p| resolve(&p[prop], env))
        .collect()
}

fn used(v: &serde_json::Value) -> bool {
    v["used"].as_bool() == Some(true)
}

#[test]
fn every_environment_names_only_what_the_stacks_create() {
    let all = resources();
    let dir = tempfile::tempdir().unwrap();
    for env in ENVIRONMENTS {
        let config = root().join(format!("infra/environments/{env}.toml"));
        let out = ok(bikeshare(dir.path())
            .env_remove("BIKESHARE_DATA_DIR")
            .args(["infra", "names", "--config", config.to_str().unwrap()]));
        let names: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(names["region"], REGION, "{env}");

        let streams = names_of(&all, "AWS::Kinesis::Stream", "Name", env);
        for s in names["streams"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|s| used(s))
        {
            let name = s["name"].as_str().unwrap();
            assert!(
                streams.contains(name),
                "{env}: stream {name} not in {streams:?}"
            );
        }

        let lease = &names["lease_table"];
        assert!(
            used(lease),
            "{env}: leases must be in DynamoDB (several process tasks)"
        );
        assert_eq!(
            lease["create_table"], false,
            "{env}: the stack creates the table"
        );
        let table = of_type(&all, "AWS::DynamoDB::Table")
            .into_iter()
            .find(|p| resolve(&p["TableName"], env).as_deref() == lease["name"].as_str())
            .unwrap_or_else(|| panic!("{env}: no table {}", lease["name"]));
        let keys: Vec<&str> = table["KeySchema"]
            .as_sequence()
            .unwrap()
            .iter()
            .map(|k| k["AttributeName"].as_str().unwrap())
            .collect();
        // The attribute DynamoLeaseStore writes as the hash key (common/aws/src/lease_store.rs);
        // tests/it/infra_deploy.rs has the code write into the deployed table.
        assert_eq!(keys, ["shard"], "{env}: lease table key schema");

        let buckets = names_of(&all, "AWS::S3::Bucket", "BucketName", env);
        // The processor's and the lake archiver's checkpoints, each under its own prefix.
        for who in ["checkpoints", "archiver_checkpoints"] {
            let cp = &names[who];
            assert!(
                used(cp),
                "{env}: {who} must be in S3 (Fargate tasks restart): {cp}"
            );
            assert_eq!(cp["create_bucket"], false, "{env}");
            assert!(
                buckets.contains(cp["bucket"].as_str().unwrap()),
                "{env}: {cp}"
            );
            assert!(
                cp["prefix"].as_str().unwrap().starts_with("checkpoints/"),
                "{env}: {cp}"
            );
        }
        let (processor, archiver) = (
            names["checkpoints"]["prefix"].as_str().unwrap(),
            names["archiver_checkpoints"]["prefix"].as_str().unwrap(),
        );
        assert!(
            !processor.starts_with(archiver) && !archiver.starts_with(processor),
            "{env}: the processor's and the archiver's checkpoints share keys: {processor} {archiver}"
        );
        let lake = &names["lake"];
        assert!(used(lake), "{env}: the lake must be in S3");
        assert!(
            buckets.contains(lake["bucket"].as_str().unwrap()),
            "{env}: {lake}"
        );
        assert_eq!(
            lake["prefix"], "lake",
            "{env}: lake-catalog.yaml's tables read lake/"
        );

        let delivery = names_of(
            &all,
            "AWS::KinesisFirehose::DeliveryStream",
            "DeliveryStreamName",
            env,
        );
        let firehose = names["firehose"].as_array().unwrap();
        assert!(firehose.iter().all(used), "{env}: the Firehose sink is on");
        for d in firehose {
            let name = d["name"].as_str().unwrap();
            assert!(
                delivery.contains(name),
                "{env}: delivery stream {name} not in {delivery:?}"
            );
        }

        let endpoint = &names["endpoint"];
        assert!(used(endpoint), "{env}: scoring through the endpoint");
        let endpoints = names_of(&all, "AWS::SageMaker::Endpoint", "EndpointName", env);
        assert!(
            endpoints.contains(endpoint["name"].as_str().unwrap()),
            "{env}: {endpoint}"
        );
        let mm = &names["model_monitor"];
        assert_eq!(
            mm["endpoint_name"], endpoint["name"],
            "{env}: capture under the endpoint's name"
        );
        let capture: BTreeSet<String> = of_type(&all, "AWS::SageMaker::EndpointConfig")
            .into_iter()
            .filter_map(|p| resolve(&p["DataCaptureConfig"]["DestinationS3Uri"], env))
            .collect();
        let want = format!(
            "s3://{}/{}",
            mm["bucket"].as_str().unwrap(),
            mm["data_capture_prefix"].as_str().unwrap()
        );
        assert!(
            capture.contains(&want),
            "{env}: data capture {want} not in {capture:?}"
        );

        // The SageMaker registry: the serving stack's group, archives under models/ in the
        // stack's bucket (where its Model reads models/<ModelVersion>/model.tar.gz).
        let registry = &names["registry"];
        let groups = names_of(
            &all,
            "AWS::SageMaker::ModelPackageGroup",
            "ModelPackageGroupName",
            env,
        );
        let group = registry["model_package_group"].as_str().unwrap();
        assert!(
            groups.contains(group),
            "{env}: model package group {group} not in {groups:?}"
        );
        assert!(
            buckets.contains(registry["bucket"].as_str().unwrap()),
            "{env}: {registry}"
        );
        assert_eq!(registry["prefix"], "models/", "{env}: {registry}");
        assert_eq!(
            registry["create_group"], false,
            "{env}: the stack creates the group"
        );
        if env != "dev" {
            assert!(used(registry), "{env}: the registry is SageMaker's");
        }

        let topics = names_of(&all, "AWS::SNS::Topic", "TopicName", env);
        let arn = names["sns_topic_arn"].as_str().unwrap();
        let topic = arn
            .strip_prefix(&format!("arn:aws:sns:{REGION}:{ACCOUNT}:"))
            .unwrap_or_else(|| panic!("{env}: {arn}"));
        assert!(
            topics.contains(topic),
            "{env}: topic {topic} not in {topics:?}"
        );

        // Every PutMetricData grant is limited to the namespace the app pushes to.
        let ns = names["cloudwatch_namespace"].as_str().unwrap();
        let mut limited = 0;
        for role in of_type(&all, "AWS::IAM::Role") {
            for st in statements(role) {
                if actions(st).contains(&"cloudwatch:PutMetricData".to_owned()) {
                    let cond = &st["Condition"];
                    let allowed: Vec<String> = ["StringEquals", "StringLike"]
                        .iter()
                        .flat_map(|op| {
                            let v = &cond[*op]["cloudwatch:namespace"];
                            v.as_sequence().cloned().unwrap_or_else(|| vec![v.clone()])
                        })
                        .filter_map(|v| resolve(&v, env))
                        .collect();
                    assert!(
                        !allowed.is_empty(),
                        "{env}: PutMetricData without a namespace condition"
                    );
                    if allowed.iter().any(|a| a == ns) {
                        limited += 1;
                    }
                }
            }
        }
        assert!(
            limited >= 4,
            "{env}: the task roles may push into {ns} ({limited})"
        );
    }
}

fn statements(role: &Value) -> Vec<&Value> {
    role["Policies"]
        .as_sequence()
        .into_iter()
        .flatten()
        .flat_map(|p| {
            p["PolicyDocument"]["Statement"]
                .as_sequence()
                .into_iter()
                .flatten()
        })
        .filter(|s| s["Effect"].as_str() == Some("Allow"))
        .collect()
}

fn actions(st: &Value) -> Vec<String> {
    match &st["Action"] {
        Value::String(a) => vec![a.clone()],
        Value::Sequence(s) => s
            .iter()
            .filter_map(|a| a.as_str().map(str::to_owned))
            .collect(),
        _ => Vec::new(),
    }
}

#[derive(Debug, serde::Deserialize)]
struct Grant {
    role: String,
    allow: Vec<String>,
}

#[test]
fn each_command_role_allows_what_the_command_calls() {
    let all = resources();
    let table: BTreeMap<String, Grant> = figment::Figment::from(figment::providers::Toml::file(
        root().join("infra/permissions.toml"),
    ))
    .extract()
    .unwrap();
    assert!(table.len() >= 5, "{table:?}");
    for env in ENVIRONMENTS {
        for (command, grant) in &table {
            let role_name = grant.role.replace("{env}", env);
            let role = of_type(&all, "AWS::IAM::Role")
                .into_iter()
                .find(|p| resolve(&p["RoleName"], env).as_deref() == Some(role_name.as_str()))
                .unwrap_or_else(|| panic!("{command}: no role {role_name}"));
            for entry in &grant.allow {
                let (action, resource) =
                    entry.split_once(" @ ").unwrap_or_else(|| panic!("{entry}"));
                let resource = resource.replace("{env}", env);
                let ok = statements(role).iter().any(|st| {
                    actions(st).iter().any(|a| a == action) && {
                        let rs: Vec<String> = match &st["Resource"] {
                            Value::Sequence(s) => {
                                s.iter().filter_map(|r| resolve(r, env)).collect()
                            }
                            r => resolve(r, env).into_iter().collect(),
                        };
                        rs.iter().any(|r| r.contains(&resource))
                    }
                });
                assert!(
                    ok,
                    "{env}: {command} ({role_name}) may not {action} on {resource}"
                );
            }
        }
    }
}

/// The port the container running `command` binds (`--bind ADDR:PORT`).
fn bound_port(all: &[(String, String, Value)], command: &str) -> Option<u16> {
    of_type(all, "AWS::ECS::TaskDefinition")
        .into_iter()
        .flat_map(|p| {
            p["ContainerDefinitions"]
                .as_sequence()
                .cloned()
                .unwrap_or_default()
        })
        .filter_map(|c| {
            let args: Vec<String> = c["Command"]
                .as_sequence()?
                .iter()
                .filter_map(|a| a.as_str().map(str::to_owned))
                .collect();
            if args.first().map(String::as_str) != Some(command) {
                return None;
            }
            let bind = args.iter().skip_while(|a| *a != "--bind").nth(1)?;
            bind.rsplit_once(':')?.1.parse().ok()
        })
        .next()
}

fn port_in(rule: &Value, port: u16) -> bool {
    let n = |v: &Value| v.as_u64().and_then(|n| u16::try_from(n).ok());
    matches!((n(&rule["FromPort"]), n(&rule["ToPort"])), (Some(a), Some(b)) if a <= port && port <= b)
}

/// Every environment runs the subscription API (`bikeshare api`) behind the load balancer,
/// whose connections come from the balancer's addresses: its `[api] trusted_proxies` must
/// cover the range the balancer reaches the API in (the balancer's security group egress to
/// the API's port), and its per-client limit must be below the total, or one client could
/// take every subscription (decision 094).
#[test]
fn the_api_behind_the_load_balancer_trusts_it_and_limits_each_client() {
    let all = resources();
    let port = bound_port(&all, "api").expect("compute.yaml runs `bikeshare api --bind ADDR:PORT`");
    // Security groups allowed into the API's port from another security group: the balancer's.
    let sources: BTreeSet<String> = of_type(&all, "AWS::EC2::SecurityGroupIngress")
        .into_iter()
        .filter(|r| port_in(r, port))
        .filter_map(|r| match &r["SourceSecurityGroupId"] {
            Value::Tagged(t) if t.tag == "Ref" => t.value.as_str().map(str::to_owned),
            _ => None,
        })
        .collect();
    let balancer_ranges: Vec<ipnet::IpNet> = all
        .iter()
        .filter(|(_, id, r)| {
            sources.contains(id) && r["Type"].as_str() == Some("AWS::EC2::SecurityGroup")
        })
        .flat_map(|(_, _, r)| {
            r["Properties"]["SecurityGroupEgress"]
                .as_sequence()
                .cloned()
                .unwrap_or_default()
        })
        .filter(|rule| port_in(rule, port))
        .map(|rule| {
            let cidr = rule["CidrIp"].as_str().expect("a literal CidrIp");
            cidr.parse().unwrap_or_else(|e| panic!("{cidr}: {e}"))
        })
        .collect();
    assert!(
        !balancer_ranges.is_empty(),
        "compute.yaml: the API on port {port} is reached only from the load balancer's security group ({sources:?}), whose egress names its range"
    );
    for env in ENVIRONMENTS {
        let file = root().join(format!("infra/environments/{env}.toml"));
        let api: bikeshare_sinks::subscribe::SubscribeConfig =
            figment::Figment::from(figment::providers::Toml::file(&file))
                .extract_inner("api")
                .unwrap_or_else(|e| panic!("{env}: [api]: {e}"));
        for range in &balancer_ranges {
            assert!(
                api.trusted_proxies.iter().any(|t| t.contains(range)),
                "{env}: [api] trusted_proxies {:?} must cover the load balancer's range {range}: \
                 else every client counts as the balancer",
                api.trusted_proxies
            );
        }
        assert!(
            api.max_per_client < api.max_subscriptions,
            "{env}: [api] max_per_client {} must be below max_subscriptions {}",
            api.max_per_client,
            api.max_subscriptions
        );
    }
}

#[test]
fn the_catalog_template_is_generated_from_the_lake_schemas() {
    let committed = root().join("infra/cloudformation/lake-catalog.yaml");
    let generated = ok(bikeshare(Path::new(".")).args(["infra", "catalog"]));
    if std::env::var_os("BIKESHARE_BLESS").is_some() {
        std::fs::write(&committed, &generated).unwrap();
    }
    assert_eq!(
        std::fs::read_to_string(&committed).unwrap(),
        generated,
        "{} differs from `{BIN} infra catalog` (BIKESHARE_BLESS=1 rewrites it)",
        committed.display()
    );
}
