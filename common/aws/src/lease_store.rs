//! Shard leases in DynamoDB: the [`LeaseStore`] that lets several consumer instances share a
//! stream (the Kinesis Client Library's lease table).
//!
//! One item per shard: `shard` (hash key, string), `owner` (string, absent when free),
//! `counter` and `expires_at` (numbers, milliseconds). Every write is a `PutItem` with a
//! condition on `counter` (`attribute_not_exists` of the key for creation; both names are DynamoDB reserved
//! words, so expressions alias them): a failed condition is
//! the answer "someone else wrote it", never an error. The table is created on demand
//! (on-demand billing) when [`DynamoLeaseStore::ensure_table`] is called.
//!
//! The lease renewer runs on a runtime of its own; its store
//! ([`LeaseStore::for_renewer`]) is the same table through a client with its own HTTP
//! connections, which that runtime drives: a connection opened by the busy processing
//! runtime is never lent to it (test: `own_connections_renew_while_the_runtime_that_opened_the_shared_ones_is_blocked`).

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use aws_config::SdkConfig;
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_dynamodb::types::{
    AttributeDefinition, AttributeValue, BillingMode, KeySchemaElement, KeyType,
    ScalarAttributeType,
};
use bikeshare_stream::ShardId;
use bikeshare_stream::lease::{Lease, LeaseError, LeaseStore};
use bikeshare_types::Timestamp;
use bikeshare_types::error::chain;
use smart_default::SmartDefault;

const CONDITION_FAILED: &str = "ConditionalCheckFailedException";

/// `[runner.leases]`: where the processor's shard leases live.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize, SmartDefault)]
#[serde(default)]
pub struct LeaseSettings {
    /// `memory` (default: one instance takes every shard, no DynamoDB) or `dynamodb`
    /// (several instances share the shards).
    #[default(LeaseStoreKind::Memory)]
    pub store: LeaseStoreKind,
    /// The DynamoDB table: one per application and input stream.
    #[default("bikeshare-processor-leases")]
    pub table: String,
    /// AWS region; from the standard AWS configuration when absent.
    pub region: Option<String>,
    /// Endpoint override for DynamoDB only (an emulator); `AWS_ENDPOINT_URL_DYNAMODB` works
    /// as well.
    pub endpoint_url: Option<String>,
    /// Create the table if it is missing (development, emulators; in AWS the
    /// infrastructure templates create it).
    pub create_table: bool,
    /// This instance's name among those sharing the shards; unique per running process.
    /// Default: `<host>-<pid>`.
    pub owner: Option<String>,
    /// How long a lease lasts unless renewed; renewed every third of it. An instance that
    /// dies loses its shards after at most this long.
    #[default(10_000)]
    pub duration_ms: u64,
}

/// Which lease store.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LeaseStoreKind {
    #[default]
    Memory,
    Dynamodb,
}

/// Leases of one application in one DynamoDB table.
#[derive(Debug, Clone)]
pub struct DynamoLeaseStore {
    client: Client,
    table: String,
}

fn store_error<E>(operation: &str, err: &SdkError<E>) -> LeaseError
where
    E: std::error::Error + Send + Sync + 'static,
{
    LeaseError::Store(format!("{operation}: {}", chain(err)))
}

impl DynamoLeaseStore {
    /// The table `table`, through a client built from the shared configuration;
    /// `endpoint_url` overrides the endpoint for DynamoDB only (else
    /// `AWS_ENDPOINT_URL_DYNAMODB` or the regional endpoint).
    pub fn new(sdk: &SdkConfig, table: impl Into<String>, endpoint_url: Option<&str>) -> Self {
        let mut config = aws_sdk_dynamodb::config::Builder::from(sdk);
        if let Some(url) = endpoint_url {
            config = config.endpoint_url(url);
        }
        Self {
            client: Client::from_conf(config.build()),
            table: table.into(),
        }
    }

    /// Creates the table unless it exists.
    pub async fn ensure_table(&self) -> Result<(), LeaseError> {
        let attribute = AttributeDefinition::builder()
            .attribute_name("shard")
            .attribute_type(ScalarAttributeType::S)
            .build()
            .map_err(|e| LeaseError::Store(e.to_string()))?;
        let key = KeySchemaElement::builder()
            .attribute_name("shard")
            .key_type(KeyType::Hash)
            .build()
            .map_err(|e| LeaseError::Store(e.to_string()))?;
        let created = self
            .client
            .create_table()
            .table_name(&self.table)
            .attribute_definitions(attribute)
            .key_schema(key)
            .billing_mode(BillingMode::PayPerRequest)
            .send()
            .await;
        match created {
            Ok(_) => Ok(()),
            Err(e) if e.code() == Some("ResourceInUseException") => Ok(()),
            Err(e) => Err(store_error("CreateTable", &e)),
        }
    }

    /// The same table through a client of the same configuration with its own HTTP
    /// connections (its own pool), for use from another runtime.
    pub fn with_own_connections(&self) -> Self {
        let config = self
            .client
            .config()
            .to_builder()
            .http_client(bikeshare_runtime::aws::https_client())
            .build();
        Self {
            client: Client::from_conf(config),
            table: self.table.clone(),
        }
    }

    fn item(lease: &Lease) -> HashMap<String, AttributeValue> {
        let mut item = HashMap::from([
            ("shard".to_owned(), AttributeValue::S(lease.shard.0.clone())),
            (
                "counter".to_owned(),
                AttributeValue::N(lease.counter.to_string()),
            ),
            (
                "expires_at".to_owned(),
                AttributeValue::N(lease.expires_at.millis().to_string()),
            ),
        ]);
        if let Some(owner) = &lease.owner {
            item.insert("owner".to_owned(), AttributeValue::S(owner.clone()));
        }
        item
    }

    fn lease(item: &HashMap<String, AttributeValue>) -> Result<Lease, LeaseError> {
        let text = |k: &str| item.get(k).and_then(|v| v.as_s().ok()).cloned();
        let number = |k: &str| item.get(k).and_then(|v| v.as_n().ok()).cloned();
        let bad = || LeaseError::Store(format!("malformed lease item {item:?}"));
        Ok(Lease {
            shard: ShardId(text("shard").ok_or_else(bad)?),
            owner: text("owner"),
            counter: number("counter")
                .and_then(|n| n.parse().ok())
                .ok_or_else(bad)?,
            expires_at: Timestamp(
                number("expires_at")
                    .and_then(|n| n.parse().ok())
                    .ok_or_else(bad)?,
            ),
        })
    }
}

#[async_trait]
impl LeaseStore for DynamoLeaseStore {
    async fn list(&self) -> Result<Vec<Lease>, LeaseError> {
        let mut leases = Vec::new();
        let mut start = None;
        loop {
            let page = self
                .client
                .scan()
                .table_name(&self.table)
                .consistent_read(true)
                .set_exclusive_start_key(start)
                .send()
                .await
                .map_err(|e| store_error("Scan", &e))?;
            for item in page.items.unwrap_or_default() {
                leases.push(Self::lease(&item)?);
            }
            match page.last_evaluated_key {
                Some(key) if !key.is_empty() => start = Some(key),
                _ => break,
            }
        }
        leases.sort_by(|a, b| a.shard.cmp(&b.shard));
        Ok(leases)
    }

    async fn create(&self, shard: &ShardId) -> Result<(), LeaseError> {
        let free = Lease {
            shard: shard.clone(),
            owner: None,
            counter: 0,
            expires_at: Timestamp(0),
        };
        let put = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(Self::item(&free)))
            .condition_expression("attribute_not_exists(#s)")
            .expression_attribute_names("#s", "shard")
            .send()
            .await;
        match put {
            Ok(_) => Ok(()),
            Err(e) if e.code() == Some(CONDITION_FAILED) => Ok(()),
            Err(e) => Err(store_error("PutItem", &e)),
        }
    }

    async fn replace(&self, lease: &Lease, expected_counter: u64) -> Result<bool, LeaseError> {
        let put = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(Self::item(lease)))
            .condition_expression("#c = :expected")
            .expression_attribute_names("#c", "counter")
            .expression_attribute_values(
                ":expected",
                AttributeValue::N(expected_counter.to_string()),
            )
            .send()
            .await;
        match put {
            Ok(_) => Ok(true),
            Err(e) if e.code() == Some(CONDITION_FAILED) => Ok(false),
            Err(e) => Err(store_error("PutItem", &e)),
        }
    }

    fn for_renewer(&self) -> Option<Arc<dyn LeaseStore>> {
        Some(Arc::new(self.with_own_connections()))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use std::time::Duration;

    use super::*;

    fn current_thread() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    }

    /// The renewer's store answers while the runtime that opened the shared client's
    /// connections runs nothing (the processing runtime with its only worker kept busy):
    /// through the shared client, a call from the renewer's runtime reuses a pooled
    /// connection only that runtime drives, and stalls; through
    /// [`DynamoLeaseStore::with_own_connections`] it opens its own, driven by the calling
    /// runtime, and the renewal is written.
    ///
    /// Against moto's DynamoDB through the testkit's proxy (on a runtime of its own): moto
    /// closes every connection after one answer, so a client talking to it directly never
    /// reuses one; the proxy keeps them open, as DynamoDB does. Its Kinesis policy intercepts
    /// no DynamoDB operation: every call is forwarded unchanged.
    #[test]
    fn own_connections_renew_while_the_runtime_that_opened_the_shared_ones_is_blocked() {
        let Some(moto) = bikeshare_testkit::emulators::moto_endpoint(
            "own_connections_renew_while_the_runtime_that_opened_the_shared_ones_is_blocked",
        ) else {
            return;
        };
        let proxy_runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let proxy = proxy_runtime.block_on(bikeshare_testkit::fault_proxy::FaultProxy::start(
            &moto,
            bikeshare_testkit::fault_proxy::kinesis::Policy::new(0),
        ));
        let endpoint = proxy.endpoint();
        let shard = ShardId::from_index(0);
        let table = format!("own-connections-{}", std::process::id());
        // The processing runtime opens the shared client's connections, then runs nothing.
        let processing = current_thread();
        let store = processing.block_on(async {
            let sdk = bikeshare_runtime::aws::emulator_sdk_config(&endpoint).await;
            let store = DynamoLeaseStore::new(&sdk, table, Some(&endpoint));
            store.ensure_table().await.unwrap();
            store.create(&shard).await.unwrap();
            assert_eq!(store.list().await.unwrap().len(), 1);
            store
        });
        let renewal = Lease {
            shard: shard.clone(),
            owner: Some("a".into()),
            counter: 1,
            expires_at: Timestamp(1_000_000),
        };
        let (shared, own) = (store.clone(), store.with_own_connections());
        let (through_shared, through_own) = std::thread::spawn(move || {
            current_thread().block_on(async {
                // The renewal first: a call that stalls and is abandoned takes its pooled
                // connection with it, after which a shared client would connect afresh.
                let through_own =
                    tokio::time::timeout(Duration::from_secs(10), own.replace(&renewal, 0)).await;
                // Bounded well below the SDK's operation timeout: a stall, not an error.
                let through_shared =
                    tokio::time::timeout(Duration::from_secs(2), shared.list()).await;
                (through_shared.is_ok(), through_own)
            })
        })
        .join()
        .unwrap();
        assert!(
            !through_shared,
            "the shared client answered from another runtime: this test shows nothing"
        );
        let renewed = through_own
            .expect("the renewal through its own connections stalled")
            .unwrap_or_else(|e| panic!("the renewal through its own connections failed: {e}"));
        assert!(renewed, "the renewal was refused");
        // The processing runtime, running again, reads the renewal.
        let leases = processing.block_on(store.list()).unwrap();
        assert_eq!(leases[0].owner.as_deref(), Some("a"));
        assert_eq!(leases[0].counter, 1);
        drop(proxy);
    }
}
