//! S3-compatible object storage for G4 (cargo feature `s3`): configuration and client setup.

use std::sync::Arc;
use std::time::Duration;

use object_store::aws::AmazonS3Builder;
use object_store::{ClientOptions, ObjectStore, RetryConfig};

use super::G4Error;

/// Where and how to reach an S3-compatible bucket.
///
/// Credentials and region fall back to the usual `AWS_*` environment variables when not set.
/// Setting an endpoint (MinIO, Ceph, moto, a loopback test server) switches to path-style
/// requests.
///
/// # Examples
///
/// ```
/// use kvtier_storage::remote::S3Config;
///
/// let config = S3Config::new("kv-blocks")
///     .with_endpoint("http://127.0.0.1:9000")
///     .with_credentials("key", "secret");
/// assert_eq!(config.bucket(), "kv-blocks");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S3Config {
    bucket: String,
    region: Option<String>,
    endpoint: Option<String>,
    credentials: Option<(String, String)>,
}

impl S3Config {
    /// A configuration for `bucket`, with region, endpoint and credentials from the environment.
    pub fn new(bucket: impl Into<String>) -> Self {
        Self {
            bucket: bucket.into(),
            region: None,
            endpoint: None,
            credentials: None,
        }
    }

    /// The bucket's name.
    pub fn bucket(&self) -> &str {
        &self.bucket
    }

    /// The region (default: `AWS_REGION` / `AWS_DEFAULT_REGION`, else `us-east-1`).
    pub fn with_region(mut self, region: impl Into<String>) -> Self {
        self.region = Some(region.into());
        self
    }

    /// A custom endpoint URL; `http://` is allowed (default: AWS's endpoint for the region).
    pub fn with_endpoint(mut self, endpoint: impl Into<String>) -> Self {
        self.endpoint = Some(endpoint.into());
        self
    }

    /// Static credentials (default: from the environment).
    pub fn with_credentials(
        mut self,
        access_key_id: impl Into<String>,
        secret_access_key: impl Into<String>,
    ) -> Self {
        self.credentials = Some((access_key_id.into(), secret_access_key.into()));
        self
    }

    /// Builds the client; requests time out after `timeout` and are not retried (the G4
    /// store's breaker decides when to try again).
    pub(crate) fn build(&self, timeout: Duration) -> Result<Arc<dyn ObjectStore>, G4Error> {
        let mut b = AmazonS3Builder::from_env()
            .with_bucket_name(&self.bucket)
            .with_client_options(
                ClientOptions::new()
                    .with_timeout(timeout)
                    .with_connect_timeout(timeout),
            )
            .with_retry(RetryConfig {
                max_retries: 0,
                retry_timeout: timeout,
                ..Default::default()
            });
        if let Some(region) = &self.region {
            b = b.with_region(region);
        }
        if let Some(endpoint) = &self.endpoint {
            b = b
                .with_endpoint(endpoint)
                .with_allow_http(true)
                .with_virtual_hosted_style_request(false);
        }
        if let Some((key, secret)) = &self.credentials {
            b = b.with_access_key_id(key).with_secret_access_key(secret);
        }
        Ok(Arc::new(
            b.build().map_err(|e| G4Error::Config(e.to_string()))?,
        ))
    }
}
