//! A query's OPT record read straight from its bytes: whether it carries one, its DO bit,
//! and its EDNS Client Subnet option checked octet for octet (RFC 7871 §6).
//!
//! hickory-proto decodes the message itself; this second, narrow reading exists for two
//! things its decoder cannot tell us. A query that does not decode as a whole still gets a
//! FORMERR, and that FORMERR must carry an OPT record when the query did (RFC 6891 §6.1.1),
//! so the OPT is looked for without trusting the rest. And hickory's ECS decoder reads only
//! the address octets the source prefix needs and silently ignores any beyond them, so an
//! option with too many octets would pass; RFC 7871 §6 says to refuse it with FORMERR.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::answer::ClientSubnet;

/// The OPT pseudo-RR's type (RFC 6891 §6.1.1).
const OPT_TYPE: u16 = 41;
/// The EDNS Client Subnet option's code (RFC 7871 §6).
const ECS_CODE: u16 = 8;
/// The DO bit in the OPT record's flags (RFC 3225 §3).
const DO_FLAG: u16 = 0x8000;

/// The OPT record of a query, as far as its bytes could be read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RawOpt<'a> {
    /// The DO bit: the client wants DNSSEC records (copied into the response).
    pub dnssec_ok: bool,
    /// The record's data: the options, each code, length and value.
    pub options: &'a [u8],
}

/// The first OPT record in `packet`'s additional section, walking the sections as far as
/// their bytes allow: `None` when there is none or the walk cannot reach it.
///
/// Never panics; every step is bounds-checked and moves forward, so the walk ends within
/// the packet's length whatever the counts in the header claim.
pub fn find(packet: &[u8]) -> Option<RawOpt<'_>> {
    let count = |at: usize| -> Option<usize> {
        let bytes = packet.get(at..at + 2)?;
        Some(usize::from(u16::from_be_bytes([bytes[0], bytes[1]])))
    };
    let (questions, answers, authority, additional) = (count(4)?, count(6)?, count(8)?, count(10)?);
    let mut at = 12;
    for _ in 0..questions {
        // Name, then type and class.
        at = skip_name(packet, at)?.checked_add(4)?;
    }
    for _ in 0..answers + authority {
        at = skip_record(packet, at)?.end;
    }
    for _ in 0..additional {
        let record = skip_record(packet, at)?;
        if record.rtype == OPT_TYPE {
            // TTL: extended RCODE, version, then the flags whose top bit is DO.
            let flags = u16::from_be_bytes([record.ttl[2], record.ttl[3]]);
            return Some(RawOpt {
                dnssec_ok: flags & DO_FLAG != 0,
                options: record.data,
            });
        }
        at = record.end;
    }
    None
}

/// One resource record's fields this reading needs.
struct RawRecord<'a> {
    rtype: u16,
    ttl: &'a [u8],
    data: &'a [u8],
    end: usize,
}

fn skip_record(packet: &[u8], at: usize) -> Option<RawRecord<'_>> {
    let fixed = skip_name(packet, at)?;
    let head = packet.get(fixed..fixed.checked_add(10)?)?;
    let length = usize::from(u16::from_be_bytes([head[8], head[9]]));
    let start = fixed + 10;
    let data = packet.get(start..start.checked_add(length)?)?;
    Some(RawRecord {
        rtype: u16::from_be_bytes([head[0], head[1]]),
        ttl: &head[4..8],
        data,
        end: start + length,
    })
}

/// The offset just past the name at `at`: labels up to the root label, or up to a
/// compression pointer (which ends the name where it stands).
fn skip_name(packet: &[u8], mut at: usize) -> Option<usize> {
    loop {
        let length = *packet.get(at)?;
        match length & 0xc0 {
            0x00 if length == 0 => return Some(at + 1),
            0x00 => at += 1 + usize::from(length),
            0xc0 => {
                packet.get(at + 1)?;
                return Some(at + 2);
            }
            // 0x40 and 0x80 are reserved label types (RFC 6891 §5): the name cannot be read.
            _ => return None,
        }
    }
}

/// Why a query's EDNS Client Subnet option is refused with FORMERR (RFC 7871 §6, §7.1.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum EcsRefusal {
    /// An option's length runs past the OPT record's data.
    #[error("an EDNS option runs past the OPT record's data")]
    OptionsCut,
    /// The option is shorter than its FAMILY and prefix fields.
    #[error("the ECS option is shorter than its fixed fields")]
    Short,
    /// The query carries two ECS options: which client is asking would be a guess.
    #[error("the query carries more than one ECS option")]
    Duplicate,
    /// A FAMILY other than IPv4 (1) or IPv6 (2).
    #[error("ECS family {0} is neither IPv4 (1) nor IPv6 (2)")]
    Family(u16),
    /// A SOURCE PREFIX-LENGTH longer than the family's addresses.
    #[error("ECS source prefix {prefix} is longer than the family's {bits} bits")]
    PrefixTooLong {
        /// The source prefix length.
        prefix: u8,
        /// The family's address length in bits.
        bits: u8,
    },
    /// ADDRESS holds more or fewer octets than SOURCE PREFIX-LENGTH needs.
    #[error("ECS address has {got} octets where source prefix {prefix} needs {needed}")]
    AddressLength {
        /// The source prefix length.
        prefix: u8,
        /// The octets the prefix needs.
        needed: usize,
        /// The octets sent.
        got: usize,
    },
    /// ADDRESS has bits set beyond SOURCE PREFIX-LENGTH.
    #[error("ECS address has bits set beyond source prefix {0}")]
    BitsBeyondPrefix(u8),
    /// A non-zero SCOPE PREFIX-LENGTH: in queries it must be 0.
    #[error("ECS scope prefix {0} in a query, where it must be 0")]
    ScopeInQuery(u8),
}

/// The client subnet the OPT record's ECS option gives: `Ok(None)` without one.
///
/// # Errors
/// An [`EcsRefusal`] for every option RFC 7871 says to refuse: a wrong family, a prefix
/// longer than the address, too many or too few address octets, bits set beyond the
/// prefix, a non-zero scope; also two ECS options, or an option list cut short.
pub fn client_subnet(opt: &RawOpt<'_>) -> Result<Option<ClientSubnet>, EcsRefusal> {
    let mut found = None;
    let mut rest = opt.options;
    while !rest.is_empty() {
        let head = rest.get(..4).ok_or(EcsRefusal::OptionsCut)?;
        let code = u16::from_be_bytes([head[0], head[1]]);
        let length = usize::from(u16::from_be_bytes([head[2], head[3]]));
        let value = rest.get(4..4 + length).ok_or(EcsRefusal::OptionsCut)?;
        rest = &rest[4 + length..];
        if code != ECS_CODE {
            continue;
        }
        if found.is_some() {
            return Err(EcsRefusal::Duplicate);
        }
        found = Some(parse_ecs(value)?);
    }
    Ok(found)
}

/// One ECS option's value: FAMILY, SOURCE PREFIX-LENGTH, SCOPE PREFIX-LENGTH, ADDRESS.
fn parse_ecs(value: &[u8]) -> Result<ClientSubnet, EcsRefusal> {
    let fixed = value.get(..4).ok_or(EcsRefusal::Short)?;
    let family = u16::from_be_bytes([fixed[0], fixed[1]]);
    let (prefix, scope) = (fixed[2], fixed[3]);
    let address = &value[4..];
    let bits = match family {
        1 => 32,
        2 => 128,
        other => return Err(EcsRefusal::Family(other)),
    };
    if prefix > bits {
        return Err(EcsRefusal::PrefixTooLong { prefix, bits });
    }
    let needed = usize::from(prefix).div_ceil(8);
    if address.len() != needed {
        return Err(EcsRefusal::AddressLength {
            prefix,
            needed,
            got: address.len(),
        });
    }
    // The last octet's bits beyond the prefix; earlier octets are wholly inside it.
    if let Some(&last) = address.last()
        && prefix % 8 != 0
        && last & (0xff >> (prefix % 8)) != 0
    {
        return Err(EcsRefusal::BitsBeyondPrefix(prefix));
    }
    if scope != 0 {
        return Err(EcsRefusal::ScopeInQuery(scope));
    }
    let address = if family == 1 {
        let mut octets = [0; 4];
        octets[..needed].copy_from_slice(address);
        IpAddr::V4(Ipv4Addr::from(octets))
    } else {
        let mut octets = [0; 16];
        octets[..needed].copy_from_slice(address);
        IpAddr::V6(Ipv6Addr::from(octets))
    };
    Ok(ClientSubnet {
        address,
        source_prefix: prefix,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_proto::op::{Edns, Message, Query};
    use hickory_proto::rr::rdata::opt::EdnsOption;
    use hickory_proto::rr::{Name, RecordType};

    fn opt(options: &[u8]) -> RawOpt<'_> {
        RawOpt {
            dnssec_ok: false,
            options,
        }
    }

    /// An ECS option (code 8) with `value`.
    fn ecs(value: &[u8]) -> Vec<u8> {
        let mut option = vec![0, 8];
        option.extend_from_slice(&u16::try_from(value.len()).expect("short").to_be_bytes());
        option.extend_from_slice(value);
        option
    }

    fn subnet(text: &str, prefix: u8) -> ClientSubnet {
        ClientSubnet {
            address: text.parse().expect("ip"),
            source_prefix: prefix,
        }
    }

    #[test]
    fn a_well_formed_ecs_gives_the_subnet() {
        let v4 = ecs(&[0, 1, 24, 0, 10, 1, 2]);
        assert_eq!(client_subnet(&opt(&v4)), Ok(Some(subnet("10.1.2.0", 24))));
        let odd = ecs(&[0, 1, 12, 0, 10, 0x10]);
        assert_eq!(client_subnet(&opt(&odd)), Ok(Some(subnet("10.16.0.0", 12))));
        let v6 = ecs(&[0, 2, 48, 0, 0x20, 0x01, 0x0d, 0xb8, 0, 1]);
        assert_eq!(
            client_subnet(&opt(&v6)),
            Ok(Some(subnet("2001:db8:1::", 48)))
        );
        // Prefix 0: the client opts out of steering; no address octets at all.
        let none = ecs(&[0, 1, 0, 0]);
        assert_eq!(client_subnet(&opt(&none)), Ok(Some(subnet("0.0.0.0", 0))));
        // Other options around it are skipped; no ECS at all is no subnet.
        let mut mixed = vec![0, 10, 0, 2, 0xab, 0xcd];
        mixed.extend_from_slice(&v4);
        assert_eq!(
            client_subnet(&opt(&mixed)),
            Ok(Some(subnet("10.1.2.0", 24)))
        );
        assert_eq!(client_subnet(&opt(&[0, 10, 0, 0])), Ok(None));
        assert_eq!(client_subnet(&opt(&[])), Ok(None));
    }

    #[test]
    fn every_malformed_ecs_is_refused() {
        let refused = |value: &[u8]| client_subnet(&opt(&ecs(value))).expect_err("refused");
        // More octets than /24 needs (the case hickory's decoder lets through).
        assert_eq!(
            refused(&[0, 1, 24, 0, 10, 1, 2, 0]),
            EcsRefusal::AddressLength {
                prefix: 24,
                needed: 3,
                got: 4
            }
        );
        assert_eq!(
            refused(&[0, 1, 0, 0, 10]),
            EcsRefusal::AddressLength {
                prefix: 0,
                needed: 0,
                got: 1
            }
        );
        // Fewer.
        assert!(matches!(
            refused(&[0, 2, 56, 0, 0x20, 0x01]),
            EcsRefusal::AddressLength {
                needed: 7,
                got: 2,
                ..
            }
        ));
        // 10.1.0.0/12: bit 15 is beyond the 12-bit prefix.
        assert_eq!(
            refused(&[0, 1, 12, 0, 10, 1]),
            EcsRefusal::BitsBeyondPrefix(12)
        );
        assert_eq!(
            refused(&[0, 1, 24, 16, 10, 1, 2]),
            EcsRefusal::ScopeInQuery(16)
        );
        assert_eq!(
            refused(&[0, 1, 33, 0, 10, 1, 2, 3, 4]),
            EcsRefusal::PrefixTooLong {
                prefix: 33,
                bits: 32
            }
        );
        assert_eq!(refused(&[0, 3, 0, 0]), EcsRefusal::Family(3));
        assert_eq!(refused(&[0, 1, 0]), EcsRefusal::Short);
        let two = [ecs(&[0, 1, 8, 0, 10]), ecs(&[0, 1, 8, 0, 11])].concat();
        assert_eq!(client_subnet(&opt(&two)), Err(EcsRefusal::Duplicate));
        assert_eq!(
            client_subnet(&opt(&[0, 8, 0, 9, 0, 1])),
            Err(EcsRefusal::OptionsCut)
        );
        assert_eq!(client_subnet(&opt(&[0, 8])), Err(EcsRefusal::OptionsCut));
    }

    fn query(edns: Option<Edns>) -> Vec<u8> {
        let mut message = Message::query();
        message.add_query(Query::query(
            Name::from_ascii("shop.example.com.").expect("name"),
            RecordType::A,
        ));
        if let Some(edns) = edns {
            message.set_edns(edns);
        }
        message.to_vec().expect("encodes")
    }

    #[test]
    fn finds_the_opt_record_and_its_do_bit() {
        assert_eq!(find(&query(None)), None);
        let mut edns = Edns::new();
        edns.set_dnssec_ok(true);
        edns.options_mut()
            .insert(EdnsOption::Unknown(8, vec![0, 1, 8, 0, 10]));
        let packet = query(Some(edns));
        let found = find(&packet).expect("OPT");
        assert!(found.dnssec_ok);
        assert_eq!(client_subnet(&found), Ok(Some(subnet("10.0.0.0", 8))));
        let plain = query(Some(Edns::new()));
        assert_eq!(
            find(&plain),
            Some(RawOpt {
                dnssec_ok: false,
                options: &[]
            })
        );
    }

    #[test]
    fn finds_an_opt_behind_a_compressed_name_and_an_answer_record() {
        // Header: 1 question, 1 answer, 0 authority, 1 additional.
        let mut packet = vec![0, 1, 0, 0, 0, 1, 0, 1, 0, 0, 0, 1];
        packet.extend_from_slice(b"\x04shop\x07example\x03com\x00\x00\x01\x00\x01");
        // An answer record named by a pointer to the question's name, 4 bytes of data.
        packet.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 30, 0, 4, 192, 0, 2, 1]);
        // OPT: root name, type 41, payload 1232, TTL with DO, no data.
        packet.extend_from_slice(&[0, 0, 41, 0x04, 0xd0, 0, 0, 0x80, 0, 0, 0]);
        let found = find(&packet).expect("OPT");
        assert!(found.dnssec_ok);
        assert!(found.options.is_empty());
    }

    #[test]
    fn a_walk_that_cannot_reach_an_opt_finds_none_and_never_panics() {
        let packet = query(Some(Edns::new()));
        for end in 0..packet.len() {
            assert_eq!(find(&packet[..end]), None, "cut at {end}");
        }
        // Counts claiming far more records than the bytes hold.
        let mut lying = packet.clone();
        lying[4..12].copy_from_slice(&[0xff; 8]);
        assert_eq!(find(&lying), None);
        // A reserved label type in the question name.
        let mut reserved = packet;
        reserved[12] = 0x41;
        assert_eq!(find(&reserved), None);
    }
}
