//! The subject CN of a client certificate: with client-certificate authentication it is the
//! etcd user, which `Access` needs to tell who etcd will see. Read by hand with the few DER
//! rules it takes, because no crate in the build offers it: rustls-pki-types carries a
//! certificate as bytes, and rustls-webpki (built for rustls) parses one but hands out its
//! subject only as raw DER, leaving the walk through the name's attributes to do here anyway.

/// The subject CN of a DER certificate, read with the few DER rules a certificate needs:
/// the etcd user that client-certificate authentication takes it for.
pub(super) fn common_name(certificate: &[u8]) -> Option<String> {
    let (certificate, _) = der(certificate, 0x30)?;
    let (mut tbs, _) = der(certificate, 0x30)?;
    // version [0] (optional), serialNumber, signature, issuer, validity, then the subject.
    if tbs.first() == Some(&0xa0) {
        tbs = der_any(tbs)?.2;
    }
    for _ in 0..4 {
        tbs = der_any(tbs)?.2;
    }
    let (mut names, _) = der(tbs, 0x30)?;
    let mut found = None;
    while !names.is_empty() {
        let (set, rest) = der(names, 0x31)?;
        names = rest;
        let mut attributes = set;
        while !attributes.is_empty() {
            let (attribute, rest) = der(attributes, 0x30)?;
            attributes = rest;
            let (oid, value) = der(attribute, 0x06)?;
            // 2.5.4.3, commonName.
            if oid == [0x55, 0x04, 0x03] {
                found = Some(String::from_utf8_lossy(der_any(value)?.1).into_owned());
            }
        }
    }
    found
}

/// One DER element with `tag`: its content and what follows it.
fn der(input: &[u8], tag: u8) -> Option<(&[u8], &[u8])> {
    let (found, content, rest) = der_any(input)?;
    (found == tag).then_some((content, rest))
}

/// One DER element: its tag, its content and what follows it.
fn der_any(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, input) = input.split_first()?;
    let (&first, mut input) = input.split_first()?;
    let length = if first < 0x80 {
        usize::from(first)
    } else {
        let bytes = usize::from(first & 0x7f);
        if bytes == 0 || bytes > 4 || input.len() < bytes {
            return None;
        }
        let (length, rest) = input.split_at(bytes);
        input = rest;
        length
            .iter()
            .fold(0usize, |n, b| (n << 8) | usize::from(*b))
    };
    if input.len() < length {
        return None;
    }
    let (content, rest) = input.split_at(length);
    Some((tag, content, rest))
}
