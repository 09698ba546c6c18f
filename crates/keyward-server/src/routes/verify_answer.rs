//! The JSON answer of a verification, written straight from the cached key.
//!
//! `POST /v1/verify` answers once for every request a service serves. Through serde, a
//! `proto::VerifyResponse` cost ~3,000 instructions per answer: the key's scopes cloned
//! into it (and freed after), and every string, field names included, scanned for
//! characters to escape. Here the fixed parts are copied as they are, the ids are
//! formatted into the buffer, and only the scopes, the rate limit and the expiry go
//! through serde_json. The bytes are exactly those serde_json writes for the same
//! `proto::VerifyResponse` (same fields, same order, same omissions): a property test
//! holds the two together, so the wire type stays the one definition of the shape.

use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use compact_str::CompactString;
use keyward_core::VerifyCode;
use keyward_core::time::Timestamp;
use keyward_proto as proto;
use uuid::Uuid;

/// What a verification answers, borrowed from what the server holds.
#[derive(Debug, Clone, Copy)]
pub struct Answer<'a> {
    pub code: VerifyCode,
    pub key_id: Option<Uuid>,
    pub identity_id: Option<Uuid>,
    pub scopes: Option<&'a [CompactString]>,
    pub remaining: Option<i64>,
    pub rate_limit: Option<&'a proto::RateLimitStatus>,
    pub expires_at: Option<Timestamp>,
}

impl Answer<'_> {
    /// Appends the answer's JSON to `out`.
    pub fn write(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(if self.code == VerifyCode::Valid {
            br#"{"valid":true,"code":""#
        } else {
            br#"{"valid":false,"code":""#
        });
        // Codes are upper-case ASCII and underscores: nothing to escape.
        out.extend_from_slice(self.code.as_str().as_bytes());
        out.push(b'"');
        if let Some(id) = self.key_id {
            out.extend_from_slice(br#","key_id":"#);
            write_uuid(out, id);
        }
        if let Some(id) = self.identity_id {
            out.extend_from_slice(br#","identity_id":"#);
            write_uuid(out, id);
        }
        if let Some(scopes) = self.scopes {
            out.extend_from_slice(br#","scopes":["#);
            for (i, s) in scopes.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_value(out, s.as_str());
            }
            out.push(b']');
        }
        if let Some(r) = self.remaining {
            out.extend_from_slice(br#","remaining":"#);
            write_value(out, &r);
        }
        if let Some(r) = self.rate_limit {
            out.extend_from_slice(br#","rate_limit":"#);
            write_value(out, r);
        }
        if let Some(t) = &self.expires_at {
            out.extend_from_slice(br#","expires_at":"#);
            write_value(out, t);
        }
        out.push(b'}');
    }

    /// About how many bytes [`Answer::write`] appends, so the buffer is allocated once.
    pub fn size_hint(&self) -> usize {
        // The fixed parts and both ids take 130 bytes, a quota's count up to 33; a rate
        // limit or an expiry ~80 more each.
        let scopes = self
            .scopes
            .map_or(0, |s| s.iter().map(|s| s.len() + 3).sum::<usize>());
        let extra = if self.rate_limit.is_some() || self.expires_at.is_some() {
            192
        } else {
            0
        };
        176 + scopes + extra
    }
}

/// The JSON of `POST /v1/verify/batch`'s answer (`proto::VerifyBatchResponse`).
pub fn write_batch(answers: &[Answer<'_>]) -> Vec<u8> {
    let mut out = Vec::with_capacity(16 + answers.iter().map(Answer::size_hint).sum::<usize>());
    out.extend_from_slice(br#"{"results":["#);
    for (i, a) in answers.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        a.write(&mut out);
    }
    out.extend_from_slice(b"]}");
    out
}

/// A uuid as serde writes it: quoted, hyphenated, lower case.
fn write_uuid(out: &mut Vec<u8>, id: Uuid) {
    let mut buf = Uuid::encode_buffer();
    out.push(b'"');
    out.extend_from_slice(id.hyphenated().encode_lower(&mut buf).as_bytes());
    out.push(b'"');
}

/// A value as serde_json writes it (strings escaped as it escapes them).
fn write_value<T: serde::Serialize + ?Sized>(out: &mut Vec<u8>, value: &T) {
    // Writing to a `Vec` cannot fail, and these values (strings, integers, times, the
    // rate limit's derived `Serialize`) have no way to refuse.
    serde_json::to_writer(&mut *out, value).expect("serialising into memory");
}

/// A JSON body already written, answered as axum's `Json` answers.
pub struct JsonBytes(pub Vec<u8>);

impl IntoResponse for JsonBytes {
    fn into_response(self) -> Response {
        (
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            )],
            self.0,
        )
            .into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{TimeZone, Utc};
    use proptest::prelude::*;

    /// What serde_json writes for the wire type with the same content.
    fn through_serde(a: &Answer<'_>) -> Vec<u8> {
        serde_json::to_vec(&wire(a)).unwrap()
    }

    fn wire(a: &Answer<'_>) -> proto::VerifyResponse {
        proto::VerifyResponse {
            valid: a.code == VerifyCode::Valid,
            code: crate::convert::code(a.code),
            key_id: a.key_id,
            identity_id: a.identity_id,
            scopes: a
                .scopes
                .map(|s| s.iter().map(CompactString::to_string).collect()),
            remaining: a.remaining,
            rate_limit: a.rate_limit.cloned(),
            expires_at: a.expires_at,
        }
    }

    fn time() -> impl Strategy<Value = Timestamp> {
        // Whole microseconds, as the server's clock gives them, across the years.
        (0i64..4_102_444_800_000_000).prop_map(|us| Utc.timestamp_micros(us).unwrap())
    }

    fn rate_limit() -> impl Strategy<Value = proto::RateLimitStatus> {
        (any::<String>(), any::<u32>(), any::<u32>(), time()).prop_map(
            |(name, limit, remaining, reset_at)| proto::RateLimitStatus {
                name,
                limit,
                remaining,
                reset_at,
            },
        )
    }

    proptest! {
        /// Any answer, down to strings that need escaping, is written byte for byte as
        /// serde_json writes the wire type.
        #[test]
        fn answers_are_written_as_serde_writes_the_wire_type(
            code in 0usize..VerifyCode::ALL.len(),
            key_id in proptest::option::of(any::<u128>()),
            identity_id in proptest::option::of(any::<u128>()),
            scopes in proptest::option::of(proptest::collection::vec(any::<String>(), 0..4)),
            remaining in proptest::option::of(any::<i64>()),
            rate_limit in proptest::option::of(rate_limit()),
            expires_at in proptest::option::of(time()),
        ) {
            let scopes = scopes.map(|s| keyward_core::policy::scope_list(&s));
            let answer = Answer {
                code: VerifyCode::ALL[code],
                key_id: key_id.map(Uuid::from_u128),
                identity_id: identity_id.map(Uuid::from_u128),
                scopes: scopes.as_deref(),
                remaining,
                rate_limit: rate_limit.as_ref(),
                expires_at,
            };
            let mut written = Vec::new();
            answer.write(&mut written);
            prop_assert_eq!(
                String::from_utf8(written).unwrap(),
                String::from_utf8(through_serde(&answer)).unwrap()
            );
        }
    }

    /// A batch's answer is the wire type's too, empty or not.
    #[test]
    fn batches_are_written_as_serde_writes_the_wire_type() {
        let scopes = keyward_core::policy::scope_list(&["orders:read", "a\"quote"]);
        let one = Answer {
            code: VerifyCode::Valid,
            key_id: Some(Uuid::from_u128(7)),
            identity_id: Some(Uuid::from_u128(8)),
            scopes: Some(&scopes),
            remaining: Some(3),
            rate_limit: None,
            expires_at: Some(Utc.timestamp_micros(1_700_000_000_123_456).unwrap()),
        };
        let other = Answer {
            code: VerifyCode::NotFound,
            key_id: None,
            identity_id: None,
            scopes: None,
            remaining: None,
            rate_limit: None,
            expires_at: None,
        };
        for answers in [vec![], vec![one], vec![one, other, one]] {
            let results = answers.iter().map(wire).collect();
            assert_eq!(
                String::from_utf8(write_batch(&answers)).unwrap(),
                serde_json::to_string(&proto::VerifyBatchResponse { results }).unwrap()
            );
        }
    }

    /// The answer a warm verification of a typical key gives fits the first allocation.
    #[test]
    fn a_typical_answer_fits_its_size_hint() {
        let scopes = keyward_core::policy::scope_list(&["orders:read", "billing:*"]);
        let answer = Answer {
            code: VerifyCode::Valid,
            key_id: Some(Uuid::from_u128(u128::MAX)),
            identity_id: Some(Uuid::from_u128(u128::MAX)),
            scopes: Some(&scopes),
            remaining: Some(i64::MAX),
            rate_limit: None,
            expires_at: None,
        };
        let mut out = Vec::with_capacity(answer.size_hint());
        let capacity = out.capacity();
        answer.write(&mut out);
        assert_eq!(out.capacity(), capacity, "{} bytes", out.len());
    }
}
