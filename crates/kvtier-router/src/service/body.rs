//! Reading request bodies within limits, and deserialising lists within limits.
//!
//! A body is refused with `413` before any of it is read when its `Content-Length` is over
//! the limit, and as soon as the bytes received pass the limit when it has none (chunked);
//! the whole body must arrive within the body timeout (`408` otherwise), so a client that
//! sends half a body and stops holds its connection for that long at most.
//!
//! Lists in a query (tokens, hashes, multimodal items) are counted while they are
//! deserialised and refused past their limit, so a body of small numbers never expands into
//! more memory than the limits allow.

use std::marker::PhantomData;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, StatusCode, header};
use http_body_util::BodyExt;
use serde::de::{Deserialize, Deserializer, SeqAccess, Visitor};

/// Why a body was not read.
#[derive(Debug)]
pub(crate) enum BodyError {
    /// Over the limit (by `Content-Length` or by the bytes received).
    TooLarge { limit: usize },
    /// It did not arrive in time.
    Timeout,
    /// The connection failed or the framing was invalid.
    Read(String),
}

impl BodyError {
    /// The status and message answering it.
    pub(crate) fn status(&self) -> (StatusCode, String) {
        match self {
            BodyError::TooLarge { limit } => (
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("the body is over the limit of {limit} bytes"),
            ),
            BodyError::Timeout => (
                StatusCode::REQUEST_TIMEOUT,
                "the body did not arrive in time".to_owned(),
            ),
            BodyError::Read(e) => (StatusCode::BAD_REQUEST, format!("reading the body: {e}")),
        }
    }
}

/// The declared `Content-Length`, if any (an unparsable one counts as absent: hyper has
/// refused malformed framing before a handler runs).
pub(crate) fn content_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// Reads `body` whole, refusing it past `limit` bytes or after `timeout`.
pub(crate) async fn read_limited(
    headers: &HeaderMap,
    body: Body,
    limit: usize,
    timeout: Duration,
) -> Result<Bytes, BodyError> {
    let declared = content_length(headers);
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(BodyError::TooLarge { limit });
    }
    let read = async move {
        let capacity = declared.map_or(0, |n| n as usize);
        let mut buf = Vec::with_capacity(capacity);
        let mut body = body;
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| BodyError::Read(e.to_string()))?;
            if let Ok(data) = frame.into_data() {
                if buf.len() + data.len() > limit {
                    return Err(BodyError::TooLarge { limit });
                }
                buf.extend_from_slice(&data);
            }
        }
        Ok(Bytes::from(buf))
    };
    tokio::time::timeout(timeout, read)
        .await
        .map_err(|_| BodyError::Timeout)?
}

/// Deserialises an optional list of at most `MAX` elements (`null` and absence are `None`),
/// failing as soon as element `MAX + 1` appears.
pub(crate) fn bounded_list<'de, D, T, const MAX: usize>(d: D) -> Result<Option<Vec<T>>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    struct OptionVisitor<T, const MAX: usize>(PhantomData<T>);
    struct SeqVisitor<T, const MAX: usize>(PhantomData<T>);

    impl<'de, T: Deserialize<'de>, const MAX: usize> Visitor<'de> for SeqVisitor<T, MAX> {
        type Value = Vec<T>;

        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "a list of at most {MAX} elements")
        }

        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<T>, A::Error> {
            let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(MAX).min(4096));
            while let Some(x) = seq.next_element()? {
                if out.len() == MAX {
                    return Err(serde::de::Error::custom(format_args!(
                        "a list of more than {MAX} elements"
                    )));
                }
                out.push(x);
            }
            Ok(out)
        }
    }

    impl<'de, T: Deserialize<'de>, const MAX: usize> Visitor<'de> for OptionVisitor<T, MAX> {
        type Value = Option<Vec<T>>;

        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "null or a list of at most {MAX} elements")
        }

        fn visit_none<E: serde::de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }

        fn visit_unit<E: serde::de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }

        fn visit_some<D2: Deserializer<'de>>(self, d: D2) -> Result<Self::Value, D2::Error> {
            d.deserialize_seq(SeqVisitor::<T, MAX>(PhantomData))
                .map(Some)
        }
    }

    d.deserialize_option(OptionVisitor::<T, MAX>(PhantomData))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Deserialize)]
    struct Probe {
        #[serde(default, deserialize_with = "bounded_list::<_, _, 3>")]
        xs: Option<Vec<u32>>,
    }

    #[test]
    fn lists_are_bounded_while_parsing() {
        let p: Probe = serde_json::from_str(r#"{"xs": [1, 2, 3]}"#).unwrap();
        assert_eq!(p.xs, Some(vec![1, 2, 3]));
        let p: Probe = serde_json::from_str(r#"{"xs": null}"#).unwrap();
        assert_eq!(p.xs, None);
        let p: Probe = serde_json::from_str("{}").unwrap();
        assert_eq!(p.xs, None);
        let e = serde_json::from_str::<Probe>(r#"{"xs": [1, 2, 3, 4]}"#)
            .err()
            .unwrap();
        assert!(e.to_string().contains("more than 3"), "{e}");
    }
}
