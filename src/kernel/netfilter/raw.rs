//! nftables messages as bytes: attribute walking and building, for what `generations.rs`
//! does with rules and maps (the request/answer exchange is `exchange.rs`'s). A leaf: it
//! depends on nothing of ours.
//!
//! Why bytes and not netlink-packet-netfilter's types: a switch copies the component's rule
//! with one string changed (the map it looks up), and that rule holds `ct` and `nat`
//! expressions that the crate (0.4) does not model. Walking the attributes and renaming the
//! one string keeps every other byte as the kernel gave it; a typed round trip would have to
//! understand all of them. Element lists still go through the crate (`batch.rs`).

/// `NFNL_SUBSYS_NFTABLES`, the high byte of every message type here.
pub const SUBSYSTEM: u16 = 10;
/// `NFPROTO_INET`: our table's family.
const FAMILY_INET: u8 = 1;
/// Set on the type of an attribute that holds attributes.
pub const NESTED: u16 = 0x8000;
/// `NLMSG_ERROR` (an error or, with code 0, an acknowledgement) and `NLMSG_DONE`.
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;

/// One attribute: its type (flags stripped) and payload.
pub struct Attribute<'a> {
    pub kind: u16,
    pub payload: &'a [u8],
}

/// The attributes in `bytes`, in order; a malformed length ends the walk.
pub fn attributes(bytes: &[u8]) -> Vec<Attribute<'_>> {
    let mut out = Vec::new();
    let mut offset = 0;
    while bytes.len().saturating_sub(offset) >= 4 {
        let length = usize::from(u16::from_ne_bytes([bytes[offset], bytes[offset + 1]]));
        let kind = u16::from_ne_bytes([bytes[offset + 2], bytes[offset + 3]]) & 0x3fff;
        if length < 4 || offset + length > bytes.len() {
            break;
        }
        out.push(Attribute {
            kind,
            payload: &bytes[offset + 4..offset + length],
        });
        offset += (length + 3) & !3;
    }
    out
}

/// The payload of the first attribute of `kind` in `bytes`.
pub fn find(bytes: &[u8], kind: u16) -> Option<&[u8]> {
    attributes(bytes)
        .into_iter()
        .find(|a| a.kind == kind)
        .map(|a| a.payload)
}

/// A string attribute's value (without its terminating NUL).
pub fn string(payload: &[u8]) -> Option<&str> {
    std::str::from_utf8(payload.split(|b| *b == 0).next()?).ok()
}

/// Append an attribute (padded to 4 bytes).
pub fn put(out: &mut Vec<u8>, kind: u16, payload: &[u8]) {
    let length = u16::try_from(4 + payload.len()).unwrap_or(u16::MAX);
    out.extend_from_slice(&length.to_ne_bytes());
    out.extend_from_slice(&kind.to_ne_bytes());
    out.extend_from_slice(payload);
    out.resize((out.len() + 3) & !3, 0);
}

/// Append a NUL-terminated string attribute.
pub fn put_string(out: &mut Vec<u8>, kind: u16, value: &str) {
    let mut payload = value.as_bytes().to_vec();
    payload.push(0);
    put(out, kind, &payload);
}

/// One nftables message of type `message` (`NFT_MSG_*`) in our family.
pub fn message(message: u16, flags: u16, sequence: u32, attributes: &[u8]) -> Vec<u8> {
    let length = u32::try_from(16 + 4 + attributes.len()).unwrap_or(u32::MAX);
    let mut out = Vec::with_capacity(20 + attributes.len());
    out.extend_from_slice(&length.to_ne_bytes());
    out.extend_from_slice(&((SUBSYSTEM << 8) | message).to_ne_bytes());
    out.extend_from_slice(&flags.to_ne_bytes());
    out.extend_from_slice(&sequence.to_ne_bytes());
    out.extend_from_slice(&0u32.to_ne_bytes());
    out.extend_from_slice(&[FAMILY_INET, 0, 0, 0]);
    out.extend_from_slice(attributes);
    out
}

/// One message of an answer: an object's attributes, an error message's sequence number and
/// code (0: an acknowledgement), or the end of a dump.
pub enum Answer {
    Object { attributes: Vec<u8> },
    Error { sequence: u32, code: i32 },
    Done,
}

/// The messages of one datagram (a malformed one ends the walk).
pub fn answers(datagram: &[u8]) -> Vec<Answer> {
    let mut out = Vec::new();
    let mut offset = 0;
    while datagram.len().saturating_sub(offset) >= 16 {
        let rest = &datagram[offset..];
        let length = u32::from_ne_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
        if length < 16 || length > rest.len() {
            break;
        }
        let kind = u16::from_ne_bytes([rest[4], rest[5]]);
        let sequence = u32::from_ne_bytes([rest[8], rest[9], rest[10], rest[11]]);
        let body = &rest[16..length];
        out.push(match kind {
            NLMSG_ERROR if body.len() >= 4 => Answer::Error {
                sequence,
                code: i32::from_ne_bytes([body[0], body[1], body[2], body[3]]),
            },
            NLMSG_DONE => Answer::Done,
            _ if body.len() >= 4 => Answer::Object {
                attributes: body[4..].to_vec(),
            },
            _ => break,
        });
        offset += (length + 3) & !3;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attributes_round_trip_with_padding() {
        let mut bytes = Vec::new();
        put_string(&mut bytes, 1, "backend_web");
        put(&mut bytes, 2 | NESTED, &[1, 2, 3, 4]);
        let parsed = attributes(&bytes);
        assert_eq!(parsed.len(), 2);
        assert_eq!(string(parsed[0].payload), Some("backend_web"));
        assert_eq!(parsed[1].kind, 2);
        assert_eq!(find(&bytes, 2), Some(&[1u8, 2, 3, 4][..]));
    }

    #[test]
    fn malformed_bytes_end_the_walk_without_a_panic() {
        assert!(attributes(&[200, 0, 1, 0, 9]).is_empty());
        assert!(attributes(&[2, 0]).is_empty());
        assert!(answers(&[255; 15]).is_empty());
        assert!(answers(&[64, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]).is_empty());
    }

    #[test]
    fn a_message_carries_its_length_type_and_family() {
        let bytes = message(6, 0x405, 7, &[8, 0, 1, 0, 0, 0, 0, 0]);
        assert_eq!(u32::from_ne_bytes(bytes[0..4].try_into().unwrap()), 28);
        assert_eq!(u16::from_ne_bytes([bytes[4], bytes[5]]), (10 << 8) | 6);
        assert_eq!(bytes[16], FAMILY_INET);
        match &answers(&bytes)[..] {
            [Answer::Object { attributes }] => assert_eq!(attributes.len(), 8),
            _ => panic!("not one object"),
        }
    }
}
