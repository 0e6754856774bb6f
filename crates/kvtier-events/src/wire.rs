//! Encoding and decoding of [`EventMessage`] and [`Dump`] as JSON or msgpack.
//!
//! The layout of both encodings is specified in `docs/events.md`. msgpack messages are maps
//! with field names (not positional arrays), so consumers in other languages can read them
//! without this crate; decoding also accepts the positional form. Decoding never panics: any
//! malformed input is a [`WireError`].

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::{Dump, EventMessage};

/// The two encodings of the wire message.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum WireFormat {
    /// UTF-8 JSON; 128-bit values as 32 hex digits.
    Json,
    /// msgpack maps; 128-bit values as 16-byte big-endian `bin`.
    #[default]
    Msgpack,
}

/// A message could not be encoded or decoded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WireError {
    /// The bytes are not a valid message in the given format.
    #[error("malformed {format:?} event message: {reason}")]
    Malformed {
        /// The format tried.
        format: WireFormat,
        /// What the decoder reported.
        reason: String,
    },
    /// The value could not be encoded (not expected for the types of this crate).
    #[error("cannot encode event message as {format:?}: {reason}")]
    Encode {
        /// The format tried.
        format: WireFormat,
        /// What the encoder reported.
        reason: String,
    },
}

fn encode_any<T: Serialize>(value: &T, format: WireFormat) -> Result<Vec<u8>, WireError> {
    let r = match format {
        WireFormat::Json => serde_json::to_vec(value).map_err(|e| e.to_string()),
        WireFormat::Msgpack => rmp_serde::to_vec_named(value).map_err(|e| e.to_string()),
    };
    r.map_err(|reason| WireError::Encode { format, reason })
}

fn decode_any<T: DeserializeOwned>(bytes: &[u8], format: WireFormat) -> Result<T, WireError> {
    let r = match format {
        WireFormat::Json => serde_json::from_slice(bytes).map_err(|e| e.to_string()),
        WireFormat::Msgpack => rmp_serde::from_slice(bytes).map_err(|e| e.to_string()),
    };
    r.map_err(|reason| WireError::Malformed { format, reason })
}

impl EventMessage {
    /// Encodes the message.
    ///
    /// # Errors
    ///
    /// [`WireError::Encode`] if the encoder fails (it does not for valid messages).
    ///
    /// # Examples
    ///
    /// ```
    /// use kvtier_core::{Medium, SequenceHash};
    /// use kvtier_events::{EventBatch, EventKind, EventMessage, InstanceId, Payload, WireFormat};
    ///
    /// let msg = EventMessage {
    ///     instance: InstanceId(7),
    ///     event_id: 1,
    ///     payload: Payload::Batch(EventBatch {
    ///         medium: Medium::Gpu,
    ///         kind: EventKind::Create,
    ///         hashes: vec![SequenceHash::root(42)],
    ///         policy: Default::default(),
    ///     }),
    /// };
    /// for format in [WireFormat::Json, WireFormat::Msgpack] {
    ///     let bytes = msg.encode(format)?;
    ///     assert_eq!(EventMessage::decode(&bytes, format)?, msg);
    /// }
    /// # Ok::<(), kvtier_events::WireError>(())
    /// ```
    pub fn encode(&self, format: WireFormat) -> Result<Vec<u8>, WireError> {
        encode_any(self, format)
    }

    /// Decodes a message.
    ///
    /// # Errors
    ///
    /// [`WireError::Malformed`] for anything that is not a valid message.
    pub fn decode(bytes: &[u8], format: WireFormat) -> Result<Self, WireError> {
        decode_any(bytes, format)
    }
}

impl Dump {
    /// Encodes the dump.
    ///
    /// # Errors
    ///
    /// [`WireError::Encode`] if the encoder fails (it does not for valid dumps).
    pub fn encode(&self, format: WireFormat) -> Result<Vec<u8>, WireError> {
        encode_any(self, format)
    }

    /// Decodes a dump.
    ///
    /// # Errors
    ///
    /// [`WireError::Malformed`] for anything that is not a valid dump.
    pub fn decode(bytes: &[u8], format: WireFormat) -> Result<Self, WireError> {
        decode_any(bytes, format)
    }
}
