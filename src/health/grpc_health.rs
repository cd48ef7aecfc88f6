//! The few bytes of the gRPC health checking protocol a probe needs, by hand: the
//! `grpc.health.v1.HealthCheckRequest` it sends and the `HealthCheckResponse` it
//! reads, each in one gRPC length-prefixed message. Pure functions; the probe
//! ([`super::probe`]) does the HTTP/2 around them.
//!
//! ```text
//! message HealthCheckRequest  { string service = 1; }
//! message HealthCheckResponse { ServingStatus status = 1; }   // SERVING = 1
//! ```

use bytes::{BufMut, Bytes, BytesMut};

/// The method a check calls.
pub const CHECK_PATH: &str = "/grpc.health.v1.Health/Check";
/// `ServingStatus.SERVING`: the only answer that passes.
pub const SERVING: u64 = 1;
/// Most response body bytes a probe reads: the answer is a 5-byte message prefix and
/// 2 bytes of protobuf; a body past this is not a health answer.
pub const MAX_RESPONSE_BYTES: usize = 256;
/// Length of the gRPC message prefix: a compressed flag and a 4-byte big-endian length.
const PREFIX_BYTES: usize = 5;
/// A protobuf varint is at most 10 bytes (64 bits, 7 per byte).
const MAX_VARINT_BYTES: usize = 10;

/// Why a response body is not a health answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("body of {0} bytes is shorter than the 5-byte message prefix")]
    NoPrefix(usize),
    #[error("message is compressed, but the probe accepts no compression")]
    Compressed,
    #[error("message prefix has flag {0:#04x}; only 0 and 1 exist")]
    BadFlag(u8),
    #[error("message prefix says {said} bytes, but {got} follow")]
    LengthMismatch { said: u32, got: usize },
    #[error("varint at byte {0} is longer than 10 bytes or cut short")]
    BadVarint(usize),
    #[error("field {field} at byte {at} has wire type {wire}, which a health answer never holds")]
    BadWireType { field: u64, wire: u8, at: usize },
    #[error("field number 0 at byte {0}")]
    FieldZero(usize),
    #[error("field {field} at byte {at} runs past the end of the message")]
    Truncated { field: u64, at: usize },
}

/// The body of a `Check` request for `service` ("" asks about the server overall).
pub fn encode_request(service: &str) -> Bytes {
    let mut msg = BytesMut::with_capacity(service.len() + MAX_VARINT_BYTES + 1);
    if !service.is_empty() {
        msg.put_u8(0x0a); // field 1, wire type 2 (length-delimited)
        put_varint(&mut msg, service.len() as u64);
        msg.put_slice(service.as_bytes());
    }
    let mut out = BytesMut::with_capacity(PREFIX_BYTES + msg.len());
    out.put_u8(0);
    // The service name is bounded by configuration far below 4 GiB.
    out.put_u32(u32::try_from(msg.len()).unwrap_or(u32::MAX));
    out.put_slice(&msg);
    out.freeze()
}

fn put_varint(out: &mut BytesMut, mut v: u64) {
    while v >= 0x80 {
        out.put_u8((v as u8 & 0x7f) | 0x80);
        v >>= 7;
    }
    out.put_u8(v as u8);
}

/// The serving status in a whole response body: exactly one uncompressed message.
/// An absent status field is 0 (`UNKNOWN`), as protobuf defines.
pub fn decode_response(body: &[u8]) -> Result<u64, DecodeError> {
    if body.len() < PREFIX_BYTES {
        return Err(DecodeError::NoPrefix(body.len()));
    }
    match body[0] {
        0 => {}
        1 => return Err(DecodeError::Compressed),
        flag => return Err(DecodeError::BadFlag(flag)),
    }
    let said = u32::from_be_bytes([body[1], body[2], body[3], body[4]]);
    let msg = &body[PREFIX_BYTES..];
    if usize::try_from(said).ok() != Some(msg.len()) {
        return Err(DecodeError::LengthMismatch {
            said,
            got: msg.len(),
        });
    }
    serving_status(msg)
}

/// Field 1 (the last one wins, as in protobuf); other fields are skipped.
fn serving_status(msg: &[u8]) -> Result<u64, DecodeError> {
    let mut status = 0;
    let mut at = 0;
    while at < msg.len() {
        let start = at;
        let key = varint(msg, &mut at)?;
        let (field, wire) = (key >> 3, (key & 7) as u8);
        if field == 0 {
            return Err(DecodeError::FieldZero(start));
        }
        let skip = match wire {
            0 => {
                let v = varint(msg, &mut at)?;
                if field == 1 {
                    status = v;
                }
                0
            }
            1 => 8,
            2 => {
                let len = varint(msg, &mut at)?;
                usize::try_from(len).unwrap_or(usize::MAX)
            }
            5 => 4,
            _ => {
                return Err(DecodeError::BadWireType {
                    field,
                    wire,
                    at: start,
                })
            }
        };
        if field == 1 && wire != 0 {
            return Err(DecodeError::BadWireType {
                field,
                wire,
                at: start,
            });
        }
        at = at
            .checked_add(skip)
            .filter(|&end| end <= msg.len())
            .ok_or(DecodeError::Truncated { field, at: start })?;
    }
    Ok(status)
}

fn varint(msg: &[u8], at: &mut usize) -> Result<u64, DecodeError> {
    let start = *at;
    let mut v = 0u64;
    for i in 0..MAX_VARINT_BYTES {
        let Some(&b) = msg.get(start + i) else {
            break;
        };
        // The tenth byte may hold only the top bit of 64.
        if i == MAX_VARINT_BYTES - 1 && b > 1 {
            break;
        }
        v |= u64::from(b & 0x7f) << (7 * i);
        if b < 0x80 {
            *at = start + i + 1;
            return Ok(v);
        }
    }
    Err(DecodeError::BadVarint(start))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn framed(msg: &[u8]) -> Vec<u8> {
        let mut v = vec![0];
        v.extend_from_slice(&(msg.len() as u32).to_be_bytes());
        v.extend_from_slice(msg);
        v
    }

    #[test]
    fn requests() {
        assert_eq!(&encode_request("")[..], &[0, 0, 0, 0, 0]);
        assert_eq!(
            &encode_request("a.B")[..],
            &[0, 0, 0, 0, 5, 0x0a, 3, b'a', b'.', b'B']
        );
        let long = "s".repeat(300);
        let body = encode_request(&long);
        // 300 = 0b10_0101100: varint ac 02.
        assert_eq!(&body[..8], &[0, 0, 0, 1, 47, 0x0a, 0xac, 0x02]);
        assert_eq!(body.len(), 5 + 3 + 300);
    }

    #[test]
    fn answers() {
        assert_eq!(decode_response(&framed(&[0x08, 1])), Ok(SERVING));
        assert_eq!(decode_response(&framed(&[0x08, 2])), Ok(2));
        assert_eq!(decode_response(&framed(&[])), Ok(0), "absent is UNKNOWN");
        // The last status wins; unknown fields of every kind are skipped.
        let msg = [
            0x08, 2, // status NOT_SERVING
            0x10, 0x96, 0x01, // field 2 varint
            0x19, 1, 2, 3, 4, 5, 6, 7, 8, // field 3 fixed64
            0x22, 2, b'h', b'i', // field 4 bytes
            0x2d, 1, 2, 3, 4, // field 5 fixed32
            0x08, 1, // status SERVING
        ];
        assert_eq!(decode_response(&framed(&msg)), Ok(SERVING));
        // A non-minimal varint is still the value.
        assert_eq!(decode_response(&framed(&[0x08, 0x81, 0x00])), Ok(SERVING));
    }

    #[test]
    fn hostile_bodies_are_errors_never_panics() {
        use DecodeError::*;
        assert_eq!(decode_response(&[]), Err(NoPrefix(0)));
        assert_eq!(decode_response(&[0, 0, 0]), Err(NoPrefix(3)));
        assert_eq!(decode_response(&[1, 0, 0, 0, 2, 8, 1]), Err(Compressed));
        assert_eq!(decode_response(&[7, 0, 0, 0, 0]), Err(BadFlag(7)));
        let said_more = [0, 0, 0, 0, 9, 8, 1];
        assert_eq!(
            decode_response(&said_more),
            Err(LengthMismatch { said: 9, got: 2 })
        );
        let huge = [0, 0xff, 0xff, 0xff, 0xff, 8, 1];
        assert!(matches!(decode_response(&huge), Err(LengthMismatch { .. })));
        let mut two = framed(&[8, 1]);
        two.extend(framed(&[8, 1]));
        assert!(matches!(decode_response(&two), Err(LengthMismatch { .. })));
        // Varints cut short or too long.
        assert_eq!(decode_response(&framed(&[0x08])), Err(BadVarint(1)));
        assert_eq!(decode_response(&framed(&[0x08, 0x80])), Err(BadVarint(1)));
        let eleven = [
            0x08, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f,
        ];
        assert_eq!(decode_response(&framed(&eleven)), Err(BadVarint(1)));
        let overflow = [
            0x08, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02,
        ];
        assert_eq!(decode_response(&framed(&overflow)), Err(BadVarint(1)));
        // Groups, bad wire types, field zero, the status in the wrong wire type.
        let group = [0x0b, 0x0c];
        let e = decode_response(&framed(&group));
        assert!(
            matches!(
                e,
                Err(BadWireType {
                    field: 1,
                    wire: 3,
                    ..
                })
            ),
            "{e:?}"
        );
        assert!(matches!(
            decode_response(&framed(&[0x0f])),
            Err(BadWireType { wire: 7, .. })
        ));
        assert_eq!(decode_response(&framed(&[0x00, 1])), Err(FieldZero(0)));
        assert!(matches!(
            decode_response(&framed(&[0x0a, 1, 1])),
            Err(BadWireType {
                field: 1,
                wire: 2,
                ..
            })
        ));
        // Lengths and fixed fields past the end, including a length near u64::MAX.
        let past = [0x12, 5, 1];
        assert_eq!(
            decode_response(&framed(&past)),
            Err(Truncated { field: 2, at: 0 })
        );
        let giant = [
            0x12, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01,
        ];
        assert_eq!(
            decode_response(&framed(&giant)),
            Err(Truncated { field: 2, at: 0 })
        );
        assert!(matches!(
            decode_response(&framed(&[0x19, 1, 2])),
            Err(Truncated { .. })
        ));
        assert!(matches!(
            decode_response(&framed(&[0x1d, 1])),
            Err(Truncated { .. })
        ));
    }

    #[test]
    fn every_short_or_flipped_answer_decodes_or_errs() {
        let good = framed(&[0x08, 1, 0x12, 2, b'o', b'k']);
        for cut in 0..good.len() {
            let _ = decode_response(&good[..cut]);
        }
        for i in 0..good.len() {
            for bit in 0..8 {
                let mut b = good.clone();
                b[i] ^= 1 << bit;
                let _ = decode_response(&b);
            }
        }
        assert_eq!(decode_response(&good), Ok(SERVING));
    }
}
