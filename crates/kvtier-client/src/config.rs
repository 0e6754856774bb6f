//! [`ClientConfig`]: what a client sends at HELLO and how long it waits.
//!
//! One config serves both clients. It is plain data (cloned into each connection); nothing
//! in it is checked until [`Client::connect`](crate::Client::connect), where a namespace or
//! token over the limits is a [`ClientError::Request`](crate::ClientError::Request).

use std::time::Duration;

use kvtier_proto::Limits;

/// Settings of a client connection.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use kvtier_client::ClientConfig;
///
/// let config = ClientConfig::new()
///     .with_namespace("tenant-a")
///     .with_token(b"secret".to_vec())
///     .with_io_timeout(Some(Duration::from_secs(5)));
/// assert_eq!(config.namespace(), "tenant-a");
/// assert_eq!(config.connect_timeout(), Some(ClientConfig::DEFAULT_CONNECT_TIMEOUT));
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientConfig {
    namespace: String,
    token: Option<Vec<u8>>,
    limits: Limits,
    connect_timeout: Option<Duration>,
    io_timeout: Option<Duration>,
    loopback_congestion: Option<String>,
}

impl Default for ClientConfig {
    fn default() -> Self {
        ClientConfig {
            namespace: String::new(),
            token: None,
            limits: Limits::default(),
            connect_timeout: Some(Self::DEFAULT_CONNECT_TIMEOUT),
            io_timeout: Some(Self::DEFAULT_IO_TIMEOUT),
            loopback_congestion: None,
        }
    }
}

impl ClientConfig {
    /// Default of [`ClientConfig::connect_timeout`]: 5 seconds.
    pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
    /// Default of [`ClientConfig::io_timeout`]: 30 seconds.
    pub const DEFAULT_IO_TIMEOUT: Duration = Duration::from_secs(30);

    /// The defaults: the default namespace (`""`), no token, [`Limits::default`], the
    /// default timeouts.
    pub fn new() -> Self {
        Self::default()
    }

    /// The namespace to open at HELLO (UTF-8, at most `limits.max_namespace_len` bytes).
    /// Default: `""`, the server's default namespace.
    #[must_use]
    pub fn with_namespace(mut self, namespace: impl Into<String>) -> Self {
        self.namespace = namespace.into();
        self
    }

    /// The auth token sent at HELLO (opaque bytes, at most `limits.max_token_len`). Default:
    /// none.
    #[must_use]
    pub fn with_token(mut self, token: impl Into<Vec<u8>>) -> Self {
        self.token = Some(token.into());
        self
    }

    /// The limits this side enforces on frames it receives, and the ceiling of those it sends
    /// (the server's own limits from HELLO lower the latter further). Default:
    /// [`Limits::default`], the protocol's defaults.
    #[must_use]
    pub fn with_limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    /// How long opening the TCP connection may take (blocking client: per resolved address;
    /// async client: all addresses together); `None` waits as long as the OS does. Default:
    /// [`ClientConfig::DEFAULT_CONNECT_TIMEOUT`].
    #[must_use]
    pub fn with_connect_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// How long a call waits (blocking client: for each read or write to make progress;
    /// async client: from sending a request to its reply). `None` (or zero) waits forever.
    /// The async client's subscriptions are exempt (events may be rare). Default:
    /// [`ClientConfig::DEFAULT_IO_TIMEOUT`].
    #[must_use]
    pub fn with_io_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.io_timeout = timeout;
        self
    }

    /// TCP congestion control of a connection to a loopback address (`None`: the system's
    /// default). PUT bytes flow from the client, so its choice sets their pace; where the
    /// host's default paces (`bbr`), `cubic` is faster through a few connections and slower
    /// through many (see `kvtier_server::ServerBuilder::with_loopback_congestion`). Other
    /// connections keep the system's choice. Default: `None`.
    #[must_use]
    pub fn with_loopback_congestion(mut self, name: Option<String>) -> Self {
        self.loopback_congestion = name.filter(|n| !n.is_empty());
        self
    }

    /// The loopback congestion control, if any.
    pub fn loopback_congestion(&self) -> Option<&str> {
        self.loopback_congestion.as_deref()
    }

    /// The namespace.
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// The auth token, if any.
    pub fn token(&self) -> Option<&[u8]> {
        self.token.as_deref()
    }

    /// The limits.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// The connect timeout.
    pub fn connect_timeout(&self) -> Option<Duration> {
        self.connect_timeout
    }

    /// The I/O timeout.
    pub fn io_timeout(&self) -> Option<Duration> {
        self.io_timeout
    }
}
