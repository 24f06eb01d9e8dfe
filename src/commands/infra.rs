//! `bikeshare infra`: what the infrastructure templates must hold for this configuration.
//!
//! - `names`: every AWS name the loaded configuration would use (streams, lease table,
//!   buckets and prefixes, delivery streams, endpoint, model package group, topic, metric
//!   namespace), as JSON, each
//!   with whether the configuration uses it. `tests/it/infra_names.rs` holds every
//!   `infra/environments/<env>.toml` against the CloudFormation templates through it.
//! - `catalog`: the CloudFormation template of the lake's Glue database, one Glue table per
//!   dataset, the analysts' views as Glue views ([`bikeshare_lake::athena::views`], decision
//!   098) and the Athena named queries, generated from the lake's Arrow schemas
//!   ([`bikeshare_lake::athena::tables_sql`]) and `infra/athena/queries.sql`:
//!   `infra/cloudformation/lake-catalog.yaml` is its output (docs/decisions/080).

use std::io::Write as _;

use anyhow::Context;
use bikeshare_lake::Dataset;
use bikeshare_lake::athena::{QUERIES_SQL, parse_queries, parse_tables, tables_sql, views};
use serde_json::json;

use crate::cli::{InfraArgs, InfraCommand};
use crate::config::{
    CheckpointStoreKind, Config, PredictorBackend, RegistryBackend, StreamBackend,
};

pub async fn run(args: InfraArgs, config: Config) -> anyhow::Result<()> {
    let text = match args.command {
        InfraCommand::Names => serde_json::to_string_pretty(&names(&config))?,
        InfraCommand::Catalog => catalog_template()?,
    };
    let mut out = std::io::stdout().lock();
    writeln!(out, "{}", text.trim_end()).context("writing to stdout")?;
    Ok(())
}

/// `s3://bucket/prefix` split into bucket and prefix (no leading or trailing `/`).
fn s3_parts(url: &str) -> Option<(String, String)> {
    let rest = url.strip_prefix("s3://")?;
    let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
    Some((bucket.to_owned(), prefix.trim_matches('/').to_owned()))
}

/// The AWS names of `config`, with the commands that use them.
fn names(config: &Config) -> serde_json::Value {
    use bikeshare_sinks::stream::names as out;
    use bikeshare_stream::names as input;
    let kinesis = config.stream.backend == StreamBackend::Kinesis;
    let prefix = &config.stream.kinesis.stream_prefix;
    let stream = |logical: &str| format!("{prefix}{logical}");
    let streams = json!([
        { "name": stream(input::EVENTS), "used": kinesis },
        { "name": stream(input::DEAD_LETTERS), "used": kinesis },
        { "name": stream(input::PREDICTIONS), "used": kinesis },
        { "name": stream(out::LABELS), "used": kinesis },
        // Only `process --features` writes it.
        { "name": stream(out::FEATURES), "used": false },
    ]);
    let leases = &config.runner.leases;
    let cp = &config.runner.checkpoints;
    let acp = &config.archiver.checkpoints;
    let lake = s3_parts(&config.lake.url);
    let capture = lake.as_ref().map(|(bucket, prefix)| {
        let mm = &config.lake.model_monitor;
        let join = |p: &str| {
            [prefix.as_str(), p.trim_matches('/')]
                .iter()
                .filter(|s| !s.is_empty())
                .copied()
                .collect::<Vec<_>>()
                .join("/")
        };
        json!({
            "bucket": bucket,
            "data_capture_prefix": join(&mm.data_capture_prefix),
            "ground_truth_prefix": join(&mm.ground_truth_prefix),
            "endpoint_name": mm.endpoint_name,
            "variant": mm.variant,
            "used": config.lake.enabled && mm.enabled,
        })
    });
    let firehose = &config.firehose;
    let delivery: Vec<serde_json::Value> = Dataset::ALL
        .iter()
        .map(|d| {
            json!({
                "name": bikeshare_firehose::stream_name(&firehose.prefix, *d),
                "dataset": d.name(),
                // Feature vectors only with `features = true`.
                "used": firehose.enabled && (*d != Dataset::Features || firehose.features),
            })
        })
        .collect();
    let endpoint = &config.predictor.sagemaker;
    let registry = &config.registry;
    let group = if registry.sagemaker.model_package_group.is_empty() {
        &registry.model_name
    } else {
        &registry.sagemaker.model_package_group
    };
    json!({
        "region": config.stream.kinesis.region,
        "streams": streams,
        "lease_table": {
            "name": leases.table,
            "used": leases.store == bikeshare_aws::LeaseStoreKind::Dynamodb,
            "create_table": leases.create_table,
        },
        "checkpoints": {
            "bucket": cp.s3.bucket,
            "prefix": cp.s3.prefix,
            "used": cp.store == CheckpointStoreKind::S3,
            "create_bucket": cp.s3.create_bucket,
        },
        "archiver_checkpoints": {
            "bucket": acp.s3.bucket,
            "prefix": acp.s3.prefix,
            "used": config.lake.enabled && acp.store == CheckpointStoreKind::S3,
            "create_bucket": acp.s3.create_bucket,
        },
        "lake": lake.as_ref().map(|(bucket, prefix)| json!({
            "bucket": bucket,
            "prefix": prefix,
            "used": config.lake.enabled,
        })),
        "model_monitor": capture,
        "firehose": delivery,
        "endpoint": {
            "name": endpoint.endpoint_name,
            "used": config.predictor.backend == PredictorBackend::Sagemaker,
        },
        "registry": {
            "model_package_group": group,
            "bucket": registry.sagemaker.bucket,
            "prefix": registry.sagemaker.prefix,
            "create_group": registry.sagemaker.create_group,
            "used": registry.backend == RegistryBackend::Sagemaker,
        },
        "sns_topic_arn": config.alerts.sns.topic_arn,
        "cloudwatch_namespace": config.cloudwatch.enabled.then_some(&config.cloudwatch.namespace),
    })
}

/// A YAML double-quoted scalar (JSON's string syntax is YAML's).
fn q(s: &str) -> String {
    serde_json::Value::String(s.to_owned()).to_string()
}

/// The lake's Glue database, tables and Athena named queries as a CloudFormation template.
fn catalog_template() -> anyhow::Result<String> {
    let tables = parse_tables(&tables_sql()).context("the generated table definitions")?;
    let queries = parse_queries(QUERIES_SQL).context("infra/athena/queries.sql")?;
    let mut y = String::from(
        "# Generated by `bikeshare infra catalog` from the lake's Arrow schemas\n\
         # (bikeshare_lake::athena::tables_sql) and infra/athena/queries.sql: do not edit.\n\
         # tests/it/infra_names.rs fails when this file differs from the command's output.\n\
         AWSTemplateFormatVersion: \"2010-09-09\"\n\
         Description: >-\n  mlops-bikeshare lake catalog: the Glue database, one table per lake dataset\n  \
         (partition projection over year/month/day/hour) and the named analyst queries.\n\n\
         Parameters:\n  Environment:\n    Type: String\n    AllowedValues: [dev, staging, prod]\n\n\
         Resources:\n  Database:\n    Type: AWS::Glue::Database\n    Properties:\n      \
         CatalogId: !Ref AWS::AccountId\n      DatabaseInput:\n        \
         Name: !Sub \"bikeshare_${Environment}\"\n        \
         Description: The Parquet lake of mlops-bikeshare.\n",
    );
    let lake = "s3://bikeshare-${Environment}-${AWS::AccountId}-${AWS::Region}/lake";
    for t in &tables {
        let logical = format!("{}Table", camel(&t.name));
        y.push_str(&format!(
            "\n  {logical}:\n    Type: AWS::Glue::Table\n    Properties:\n      \
             CatalogId: !Ref AWS::AccountId\n      DatabaseName: !Ref Database\n      \
             TableInput:\n        Name: {name}\n        TableType: EXTERNAL_TABLE\n        \
             Parameters:\n          classification: parquet\n          EXTERNAL: \"TRUE\"\n",
            name = q(&t.name),
        ));
        for (k, v) in &t.properties {
            let v = v.replace("${lake}", lake);
            if v.contains("${Environment}") {
                // `${year}` and the like are Athena's placeholders: `${!...}` keeps them.
                let v = v
                    .replace("${year}", "${!year}")
                    .replace("${month}", "${!month}")
                    .replace("${day}", "${!day}")
                    .replace("${hour}", "${!hour}");
                y.push_str(&format!("          {}: !Sub {}\n", q(k), q(&v)));
            } else {
                y.push_str(&format!("          {}: {}\n", q(k), q(&v)));
            }
        }
        y.push_str("        PartitionKeys:\n");
        for (n, ty) in &t.partition_keys {
            y.push_str(&format!(
                "          - {{ Name: {}, Type: {} }}\n",
                q(n),
                q(ty)
            ));
        }
        y.push_str(&format!(
            "        StorageDescriptor:\n          Location: !Sub {loc}\n          \
             InputFormat: org.apache.hadoop.hive.ql.io.parquet.MapredParquetInputFormat\n          \
             OutputFormat: org.apache.hadoop.hive.ql.io.parquet.MapredParquetOutputFormat\n          \
             SerdeInfo:\n            \
             SerializationLibrary: org.apache.hadoop.hive.ql.io.parquet.serde.ParquetHiveSerDe\n          \
             Columns:\n",
            loc = q(&format!("{lake}/{}/", t.name)),
        ));
        for (n, ty) in &t.columns {
            y.push_str(&format!(
                "            - {{ Name: {}, Type: {} }}\n",
                q(n),
                q(ty)
            ));
        }
    }
    for v in views() {
        // Athena's own form of a view in Glue: `ViewOriginalText` holds the view's definition
        // (SQL, database, columns with Trino types) as base64 JSON; `!Sub` puts the database's
        // name in, the one `${` it may hold.
        anyhow::ensure!(
            !v.sql.contains("${"),
            "view {}: `${{` in its SQL would be read by !Sub",
            v.name
        );
        let definition = v.presto_view("${Database}").to_string();
        y.push_str(&format!(
            "\n  {logical}View:\n    Type: AWS::Glue::Table\n    Properties:\n      \
             CatalogId: !Ref AWS::AccountId\n      DatabaseName: !Ref Database\n      \
             TableInput:\n        Name: {name}\n        Description: {desc}\n        \
             TableType: VIRTUAL_VIEW\n        \
             Parameters:\n          presto_view: \"true\"\n          comment: \"Presto View\"\n        \
             ViewOriginalText: !Join\n          - \"\"\n          \
             - - \"/* Presto View: \"\n            \
             - Fn::Base64: !Sub {definition}\n            \
             - \" */\"\n        \
             ViewExpandedText: \"/* Presto View */\"\n        \
             StorageDescriptor:\n          Columns:\n",
            logical = camel(v.name),
            name = q(v.name),
            desc = q(v.comment),
            definition = q(&definition),
        ));
        for (n, ty) in &v.columns {
            y.push_str(&format!(
                "            - {{ Name: {}, Type: {} }}\n",
                q(n),
                q(ty)
            ));
        }
    }
    for query in &queries {
        y.push_str(&format!(
            "\n  {logical}Query:\n    Type: AWS::Athena::NamedQuery\n    Properties:\n      \
             Name: {name}\n      Description: {desc}\n      Database: !Ref Database\n      \
             WorkGroup: !Sub \"bikeshare-${{Environment}}\"\n      QueryString: {sql}\n",
            logical = camel(&query.name),
            name = q(&query.name),
            desc = q(&truncate(&query.description, 1024)),
            sql = q(&query.sql),
        ));
    }
    y.push_str("\nOutputs:\n  DatabaseName:\n    Value: !Ref Database\n");
    Ok(y)
}

/// `station_status` → `StationStatus`.
fn camel(name: &str) -> String {
    name.split('_')
        .map(|w| {
            let mut c = w.chars();
            c.next()
                .map(|f| f.to_ascii_uppercase().to_string() + c.as_str())
                .unwrap_or_default()
        })
        .collect()
}

fn truncate(s: &str, max: usize) -> String {
    s.chars().take(max).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn camel_case_of_dataset_names() {
        assert_eq!(camel("station_status"), "StationStatus");
        assert_eq!(camel("dead_letters"), "DeadLetters");
    }

    #[test]
    fn s3_url_parts() {
        assert_eq!(
            s3_parts("s3://b/lake/"),
            Some(("b".to_owned(), "lake".to_owned()))
        );
        assert_eq!(s3_parts("s3://b"), Some(("b".to_owned(), String::new())));
        assert_eq!(s3_parts("/var/lake"), None);
    }

    #[test]
    fn catalog_has_each_view_as_a_glue_view_with_its_definition() {
        let y = catalog_template().unwrap_or_default();
        for v in views() {
            let at = y
                .find(&format!("Name: \"{}\"", v.name))
                .unwrap_or_else(|| panic!("{}: no Glue table", v.name));
            let resource = &y[at..y[at..].find("\n\n").map_or(y.len(), |e| at + e)];
            assert!(resource.contains("TableType: VIRTUAL_VIEW"), "{resource}");
            assert!(resource.contains("ViewExpandedText: \"/* Presto View */\""));
            // What !Sub then Fn::Base64 encode: the definition, with the database's name.
            let line = resource
                .lines()
                .find_map(|l| l.trim().strip_prefix("- Fn::Base64: !Sub "))
                .unwrap_or_else(|| panic!("{}: no definition", v.name));
            let json: String = serde_json::from_str(line).unwrap_or_default();
            let definition: serde_json::Value = serde_json::from_str(&json).unwrap_or_default();
            assert_eq!(definition, v.presto_view("${Database}"), "{}", v.name);
            assert_eq!(definition["originalSql"], v.sql.as_str());
            // Glue's own column list, in the view's order (Athena calls a view stale when its
            // columns differ from what its SQL yields).
            let glue: Vec<&str> = resource
                .lines()
                .filter_map(|l| l.trim().strip_prefix("- { Name: \""))
                .filter_map(|l| l.split('"').next())
                .collect();
            let want: Vec<&str> = v.columns.iter().map(|(n, _)| n.as_str()).collect();
            assert_eq!(glue, want, "{}", v.name);
        }
    }

    #[test]
    fn catalog_has_a_table_per_dataset_with_the_schema_columns() {
        let y = catalog_template().unwrap_or_default();
        for d in Dataset::ALL {
            assert!(y.contains(&format!("Name: \"{}\"", d.name())), "{d}");
            for f in d.schema().fields() {
                assert!(
                    y.contains(&format!("Name: \"{}\"", f.name())),
                    "{d}.{}",
                    f.name()
                );
            }
        }
    }
}
