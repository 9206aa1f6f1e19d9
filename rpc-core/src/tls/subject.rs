//! Who a client certificate names: the common name and organisations of its
//! subject, read from the DER without copying it.
//!
//! Only certificates that already passed rustls' verification against the
//! server's client CA reach this reader, but it still treats its input as
//! hostile: every length is checked against what is left before slicing,
//! nesting is fixed (the walk never recurses on the input), and anything
//! unexpected yields "no name" rather than an error or a panic.

/// DER tag of a SEQUENCE.
const SEQUENCE: u8 = 0x30;
/// DER tag of a SET.
const SET: u8 = 0x31;
/// DER tag of an OBJECT IDENTIFIER.
const OID: u8 = 0x06;
/// The `[0] EXPLICIT` tag of a certificate's version.
const VERSION: u8 = 0xa0;
/// `id-at-commonName` (2.5.4.3), as DER content.
const COMMON_NAME: &[u8] = &[0x55, 0x04, 0x03];
/// `id-at-organizationName` (2.5.4.10), as DER content.
const ORGANIZATION: &[u8] = &[0x55, 0x04, 0x0a];
/// String types a name attribute may use that this reader accepts:
/// UTF8String, PrintableString, IA5String.
const STRINGS: [u8; 3] = [0x0c, 0x13, 0x16];

/// The parts of a certificate's subject that stand for its holder.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Subject {
    /// The subject's common name (CN), if it has exactly one.
    pub(crate) common_name: Option<String>,
    /// Every organisation (O) of the subject, in order.
    pub(crate) organizations: Vec<String>,
}

/// Reads the subject of a DER certificate; `None` if it is not a
/// well-formed certificate.
pub(crate) fn subject_of(certificate: &[u8]) -> Option<Subject> {
    let (tag, certificate, _) = element(certificate)?;
    if tag != SEQUENCE {
        return None;
    }
    let (tag, mut tbs, _) = element(certificate)?;
    if tag != SEQUENCE {
        return None;
    }
    // version [0] (optional), serial, signature algorithm, issuer, validity:
    // skipped; the subject comes next.
    if tbs.first() == Some(&VERSION) {
        tbs = element(tbs)?.2;
    }
    for _ in 0..4 {
        tbs = element(tbs)?.2;
    }
    let (tag, mut names, _) = element(tbs)?;
    if tag != SEQUENCE {
        return None;
    }
    let mut subject = Subject::default();
    let mut common_names = 0;
    while !names.is_empty() {
        let (tag, mut set, rest) = element(names)?;
        names = rest;
        if tag != SET {
            return None;
        }
        while !set.is_empty() {
            let (tag, attribute, rest) = element(set)?;
            set = rest;
            if tag != SEQUENCE {
                return None;
            }
            let (tag, kind, value) = element(attribute)?;
            if tag != OID {
                return None;
            }
            let (tag, value, _) = element(value)?;
            let Some(text) = STRINGS
                .contains(&tag)
                .then(|| std::str::from_utf8(value).ok())
                .flatten()
            else {
                continue;
            };
            if kind == COMMON_NAME {
                common_names += 1;
                subject.common_name = Some(text.to_owned());
            } else if kind == ORGANIZATION {
                subject.organizations.push(text.to_owned());
            }
        }
    }
    if common_names != 1 {
        subject.common_name = None;
    }
    Some(subject)
}

/// Splits one DER element off `input`: its tag, its content and what
/// follows it. `None` if the element is malformed or runs past the input.
fn element(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    // Multi-byte tags never occur in the parts of a certificate read here.
    if tag & 0x1f == 0x1f {
        return None;
    }
    let (&first, mut rest) = rest.split_first()?;
    let len = if first < 0x80 {
        usize::from(first)
    } else {
        // Long form: 1 to 4 length bytes (certificates are far below 4 GiB).
        let count = usize::from(first & 0x7f);
        if count == 0 || count > 4 {
            return None;
        }
        let (bytes, after) = rest.split_at_checked(count)?;
        rest = after;
        bytes
            .iter()
            .fold(0usize, |len, &byte| (len << 8) | usize::from(byte))
    };
    let (content, after) = rest.split_at_checked(len)?;
    Some((tag, content, after))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A DER element with a short or long length.
    fn der(tag: u8, content: &[u8]) -> Vec<u8> {
        let mut out = vec![tag];
        let len = content.len();
        if len < 0x80 {
            out.push(u8::try_from(len).unwrap());
        } else {
            let bytes = u32::try_from(len).unwrap().to_be_bytes();
            let skip = bytes.iter().take_while(|&&b| b == 0).count();
            out.push(0x80 | u8::try_from(4 - skip).unwrap());
            out.extend_from_slice(&bytes[skip..]);
        }
        out.extend_from_slice(content);
        out
    }

    fn attribute(kind: &[u8], tag: u8, value: &str) -> Vec<u8> {
        der(
            SET,
            &der(
                SEQUENCE,
                &[der(OID, kind), der(tag, value.as_bytes())].concat(),
            ),
        )
    }

    fn certificate(names: &[Vec<u8>]) -> Vec<u8> {
        let tbs = [
            der(VERSION, &der(0x02, &[2])),
            der(0x02, &[1, 2, 3]),
            der(SEQUENCE, &der(OID, &[0x2a, 0x86, 0x48])),
            der(SEQUENCE, &attribute(COMMON_NAME, 0x0c, "issuer")),
            der(
                SEQUENCE,
                &[der(0x17, b"250101000000Z"), der(0x17, b"350101000000Z")].concat(),
            ),
            der(SEQUENCE, &names.concat()),
            der(SEQUENCE, &[0u8; 200]),
        ]
        .concat();
        der(
            SEQUENCE,
            &[der(SEQUENCE, &tbs), der(SEQUENCE, &[]), der(0x03, &[0])].concat(),
        )
    }

    #[test]
    fn reads_the_common_name_and_every_organization() {
        let cert = certificate(&[
            attribute(ORGANIZATION, 0x0c, "worker"),
            attribute(COMMON_NAME, 0x13, "node-7"),
            attribute(ORGANIZATION, 0x16, "admin"),
            attribute(&[0x55, 0x04, 0x06], 0x13, "NZ"),
        ]);
        assert_eq!(
            subject_of(&cert),
            Some(Subject {
                common_name: Some("node-7".into()),
                organizations: vec!["worker".into(), "admin".into()],
            })
        );
    }

    #[test]
    fn two_common_names_name_nobody() {
        let cert = certificate(&[
            attribute(COMMON_NAME, 0x0c, "a"),
            attribute(COMMON_NAME, 0x0c, "b"),
        ]);
        assert_eq!(subject_of(&cert).and_then(|s| s.common_name), None);
    }

    #[test]
    fn truncated_or_lying_input_is_refused_without_panicking() {
        let cert = certificate(&[attribute(COMMON_NAME, 0x0c, "node")]);
        for len in 0..cert.len() {
            assert_eq!(subject_of(&cert[..len]), None, "cut at {len}");
        }
        // Lengths that claim more than is there, or too many length bytes.
        assert_eq!(subject_of(&[0x30, 0x84, 0xff, 0xff, 0xff, 0xff, 0]), None);
        assert_eq!(subject_of(&[0x30, 0x89, 1, 2, 3, 4, 5, 6, 7, 8, 9]), None);
        assert_eq!(subject_of(&[0x30, 0x80]), None);
        assert_eq!(subject_of(&[0x3f, 0x01, 0x00]), None);
        assert_eq!(subject_of(&[]), None);
    }

    proptest::proptest! {
        #[test]
        fn garbage_never_panics(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..400)) {
            let _ = subject_of(&bytes);
        }

        #[test]
        fn flipped_bytes_of_a_certificate_never_panic(at in 0usize..400, value in proptest::num::u8::ANY) {
            let mut cert = certificate(&[attribute(COMMON_NAME, 0x0c, "node")]);
            let len = cert.len();
            if let Some(byte) = cert.get_mut(at % len) {
                *byte = value;
            }
            let _ = subject_of(&cert);
        }
    }
}
