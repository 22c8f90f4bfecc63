//! The DNS answer, as a pure function of the compiled directory, the question, where the
//! client is, and an injected random number generator: which records, which response code,
//! which authority, and the EDNS Client Subnet scope.
//!
//! Steering: a Site's regions are ordered by the longest client subnet that holds the
//! client (EDNS Client Subnet when present, else the source address); the first region with
//! a ready front-end of the asked family answers. When no subnet holds the client, or every
//! matching region is empty, all the Site's ready front-ends are the pool. Within the pool,
//! up to `answer_count` addresses are drawn without replacement, each draw weighted by
//! headroom, so the first address — the one most clients use — follows the weights.

use std::net::IpAddr;

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::rdata::{A, AAAA};
use hickory_proto::rr::{DNSClass, Name, RData, Record, RecordType};
use ipnet::IpNet;

use crate::directory::{CompiledSite, Index, Node, SiteId, Weighted, ZoneId};

/// One question.
#[derive(Clone, Copy, Debug)]
pub struct Question<'a> {
    /// The name as asked (its case is kept in the answer).
    pub name: &'a Name,
    /// The type asked.
    pub qtype: RecordType,
    /// The class asked.
    pub qclass: DNSClass,
}

/// Where the client is, as far as the query tells.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClientSubnet {
    /// The client's address, host bits beyond `source_prefix` zero.
    pub address: IpAddr,
    /// How many leading bits of `address` are known (32 or 128 for a source address).
    pub source_prefix: u8,
}

impl ClientSubnet {
    /// A client known by its full address (no EDNS Client Subnet).
    pub fn from_address(address: IpAddr) -> Self {
        let address = match address {
            // A v4 client reaching a dual-stack socket shows up mapped.
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
            v4 @ IpAddr::V4(_) => v4,
        };
        let source_prefix = if address.is_ipv4() { 32 } else { 128 };
        Self {
            address,
            source_prefix,
        }
    }
}

/// What to answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Answer {
    /// The response code.
    pub rcode: ResponseCode,
    /// The AA bit: set for every name in a served zone.
    pub authoritative: bool,
    /// The answer section.
    pub answers: Vec<Record>,
    /// The authority section (the zone's SOA in negative answers).
    pub authority: Vec<Record>,
    /// The additional section (name server glue).
    pub additionals: Vec<Record>,
    /// The EDNS Client Subnet scope prefix: how many leading bits of the client's address
    /// this answer depends on (0 for answers that do not depend on it).
    pub scope_prefix: u8,
    /// The Site whose hostname was asked, for metrics.
    pub site: Option<SiteId>,
}

impl Answer {
    fn refused() -> Self {
        Self {
            rcode: ResponseCode::Refused,
            authoritative: false,
            answers: Vec::new(),
            authority: Vec::new(),
            additionals: Vec::new(),
            scope_prefix: 0,
            site: None,
        }
    }

    fn negative(index: &Index, zone: ZoneId, rcode: ResponseCode, site: Option<SiteId>) -> Self {
        Self {
            rcode,
            authoritative: true,
            answers: Vec::new(),
            authority: vec![index.zones[zone].negative_soa.clone()],
            additionals: Vec::new(),
            scope_prefix: 0,
            site,
        }
    }

    fn positive(answers: Vec<Record>, additionals: Vec<Record>, site: Option<SiteId>) -> Self {
        Self {
            rcode: ResponseCode::NoError,
            authoritative: true,
            answers,
            authority: Vec::new(),
            additionals,
            scope_prefix: 0,
            site,
        }
    }
}

/// The answer to `question` from a client at `client`.
///
/// Guarantees: a name outside every served zone, a class other than IN or ANY and zone
/// transfers are REFUSED; class ANY is answered exactly as IN (RFC 1035 §3.2.5: `*` matches
/// any class, and IN is the only class held — BIND answers it the same way); a name in a zone that owns nothing and has nothing below it is
/// NXDOMAIN with the zone's SOA in the authority section; a name that exists without records
/// of the asked type is NODATA (NOERROR, no answer, the SOA in authority) — also a Site with
/// no ready front-end of that family anywhere, rather than an address known to be down.
pub fn answer(
    index: &Index,
    question: &Question<'_>,
    client: ClientSubnet,
    rng: &mut fastrand::Rng,
) -> Answer {
    // CH (version.bind and the like), HS, NONE (meaningful in UPDATE only) and unknown
    // classes hold nothing here; REFUSED, as for a zone not served.
    if !matches!(question.qclass, DNSClass::IN | DNSClass::ANY)
        || matches!(question.qtype, RecordType::AXFR | RecordType::IXFR)
    {
        return Answer::refused();
    }
    let Some(zone_id) = index.zone_of(question.name) else {
        return Answer::refused();
    };
    let zone = &index.zones[zone_id];
    let node = match index.names.get(question.name) {
        Some((_, node)) => node,
        None => match wildcard_site(index, question.name) {
            Some(site) => return site_answer(index, zone_id, site, question, client, rng),
            None => {
                return Answer::negative(index, zone_id, ResponseCode::NXDomain, None);
            }
        },
    };
    let qtype = question.qtype;
    match node {
        Node::Site(site) => site_answer(index, zone_id, *site, question, client, rng),
        Node::Apex => {
            let mut answers = Vec::new();
            let mut additionals = Vec::new();
            if matches!(qtype, RecordType::SOA | RecordType::ANY) {
                answers.push(zone.soa.clone());
            }
            if matches!(qtype, RecordType::NS | RecordType::ANY) {
                answers.extend(zone.ns.iter().cloned());
                additionals.extend(zone.glue.iter().cloned());
            }
            if answers.is_empty() {
                Answer::negative(index, zone_id, ResponseCode::NoError, None)
            } else {
                Answer::positive(answers, additionals, None)
            }
        }
        Node::Nameserver(glue) => {
            let answers: Vec<Record> = glue
                .iter()
                .map(|&id| &zone.glue[id])
                .filter(|r| qtype == RecordType::ANY || r.record_type() == qtype)
                .cloned()
                .collect();
            if answers.is_empty() {
                Answer::negative(index, zone_id, ResponseCode::NoError, None)
            } else {
                Answer::positive(answers, Vec::new(), None)
            }
        }
        Node::EmptyNonTerminal => Answer::negative(index, zone_id, ResponseCode::NoError, None),
    }
}

/// The Site of a wildcard hostname `*.parent` matching `name` one label below `parent`.
fn wildcard_site(index: &Index, name: &Name) -> Option<SiteId> {
    if index.wildcards.is_empty() || name.num_labels() == 0 {
        return None;
    }
    index.wildcards.get(&name.base_name()).copied()
}

fn site_answer(
    index: &Index,
    zone_id: ZoneId,
    site_id: SiteId,
    question: &Question<'_>,
    client: ClientSubnet,
    rng: &mut fastrand::Rng,
) -> Answer {
    let site = &index.sites[site_id];
    let families: &[RecordType] = match question.qtype {
        RecordType::A => &[RecordType::A],
        RecordType::AAAA => &[RecordType::AAAA],
        // RFC 8482 lets ANY be answered with a subset; both address families is the useful one.
        RecordType::ANY => &[RecordType::A, RecordType::AAAA],
        _ => &[],
    };
    let steering = steer(site, client);
    let mut answers = Vec::new();
    for &family in families {
        let pool = choose_pool(site, &steering.regions, family);
        for address in pick(pool, index.policy.answer_count, rng) {
            let data = match address {
                IpAddr::V4(v4) => RData::A(A(v4)),
                IpAddr::V6(v6) => RData::AAAA(AAAA(v6)),
            };
            answers.push(Record::from_rdata(
                question.name.clone(),
                index.policy.ttl,
                data,
            ));
        }
    }
    if answers.is_empty() {
        return Answer::negative(index, zone_id, ResponseCode::NoError, Some(site_id));
    }
    let mut positive = Answer::positive(answers, Vec::new(), Some(site_id));
    positive.scope_prefix = steering.scope_prefix;
    positive
}

/// Where a client is steered for one Site.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Steering {
    /// Regions (indices into [`CompiledSite::regions`]) whose subnets hold the client,
    /// nearest (longest prefix) first.
    pub regions: Vec<usize>,
    /// The leading bits of the client's address this choice depends on (RFC 7871 scope).
    pub scope_prefix: u8,
}

/// The regions nearest `client` for `site`, and the scope of that choice.
///
/// A subnet longer than the client's source prefix cannot be known to hold the client, so
/// it does not match; it still lengthens the scope when it overlaps the client's prefix, so
/// a resolver does not cache the answer for clients that subnet would steer elsewhere.
pub fn steer(site: &CompiledSite, client: ClientSubnet) -> Steering {
    let mut regions: Vec<usize> = Vec::new();
    let mut matched_len: Option<u8> = None;
    for subnet in &site.subnets {
        if subnet.net.prefix_len() <= client.source_prefix
            && subnet.net.contains(&client.address)
            && !regions.contains(&subnet.region)
        {
            matched_len.get_or_insert(subnet.net.prefix_len());
            regions.push(subnet.region);
        }
    }
    if client.source_prefix == 0 {
        return Steering {
            regions,
            scope_prefix: 0,
        };
    }
    let matched = matched_len.unwrap_or(0);
    let mut scope = matched;
    for subnet in &site.subnets {
        let len = subnet.net.prefix_len();
        if len <= matched {
            // Sorted longest first: nothing shorter can split the matched block.
            break;
        }
        if let Some(common) = common_prefix(&subnet.net, client.address) {
            scope = scope.max(len.min(common.saturating_add(1)));
        }
    }
    Steering {
        regions,
        scope_prefix: scope,
    }
}

/// Leading bits `address` shares with `net`'s network address; `None` across families.
fn common_prefix(net: &IpNet, address: IpAddr) -> Option<u8> {
    let bits = match (net.network(), address) {
        (IpAddr::V4(a), IpAddr::V4(b)) => (u32::from(a) ^ u32::from(b)).leading_zeros(),
        (IpAddr::V6(a), IpAddr::V6(b)) => (u128::from(a) ^ u128::from(b)).leading_zeros(),
        _ => return None,
    };
    u8::try_from(bits).ok()
}

/// The pool of front-ends of `family` to draw from: the first of `regions` that has one,
/// else every region's.
fn choose_pool<'a>(
    site: &'a CompiledSite,
    regions: &[usize],
    family: RecordType,
) -> &'a [Weighted] {
    let of = |pool: &'a crate::directory::RegionPool| -> &'a [Weighted] {
        if family == RecordType::A {
            &pool.v4
        } else {
            &pool.v6
        }
    };
    for &region in regions {
        let pool = of(&site.regions[region]);
        if !pool.is_empty() {
            return pool;
        }
    }
    if family == RecordType::A {
        &site.all_v4
    } else {
        &site.all_v6
    }
}

/// Up to `count` distinct addresses from `pool`, each draw weighted by the weights of those
/// still left; equal chances when every weight left is zero.
pub fn pick(pool: &[Weighted], count: usize, rng: &mut fastrand::Rng) -> Vec<IpAddr> {
    let mut left: Vec<Weighted> = pool.to_vec();
    let mut chosen = Vec::with_capacity(count.min(pool.len()));
    while chosen.len() < count && !left.is_empty() {
        let total: f64 = left.iter().map(|w| w.weight).sum();
        let position = if total > 0.0 {
            let mut target = rng.f64() * total;
            let mut position = left.len() - 1;
            for (i, candidate) in left.iter().enumerate() {
                if target < candidate.weight {
                    position = i;
                    break;
                }
                target -= candidate.weight;
            }
            // Rounding can leave the target past the end: the last positive weight takes it.
            if left[position].weight <= 0.0 {
                position = left
                    .iter()
                    .rposition(|w| w.weight > 0.0)
                    .unwrap_or(position);
            }
            position
        } else {
            rng.usize(..left.len())
        };
        // `remove` keeps the others' order, so a seeded run repeats exactly.
        chosen.push(left.remove(position).address);
    }
    chosen
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::directory::AnswerPolicy;
    use crate::directory::tests::sample;
    use std::collections::HashMap;

    fn index_with(count: usize) -> Index {
        sample()
            .compile(
                AnswerPolicy {
                    ttl: 30,
                    answer_count: count,
                },
                42,
            )
            .expect("compiles")
    }

    fn ask(index: &Index, name: &str, qtype: RecordType, client: &str) -> Answer {
        let name = Name::from_ascii(name).expect("name");
        let (address, prefix) = client.split_once('/').unwrap_or((client, ""));
        let address: IpAddr = address.parse().expect("address");
        let client = if prefix.is_empty() {
            ClientSubnet::from_address(address)
        } else {
            ClientSubnet {
                address,
                source_prefix: prefix.parse().expect("prefix"),
            }
        };
        let question = Question {
            name: &name,
            qtype,
            qclass: DNSClass::IN,
        };
        answer(index, &question, client, &mut fastrand::Rng::with_seed(7))
    }

    fn addresses(answer: &Answer) -> Vec<String> {
        answer.answers.iter().map(|r| r.data.to_string()).collect()
    }

    #[test]
    fn steers_to_the_longest_matching_subnet() {
        let index = index_with(4);
        let eu = ask(&index, "shop.example.com.", RecordType::A, "10.1.2.3");
        let mut got = addresses(&eu);
        got.sort();
        assert_eq!(got, ["198.51.100.1", "198.51.100.2"], "eu only, ready only");
        // 10.2/16 (us) is longer than nothing; 10.0.0.0/8 is us too.
        let us = ask(&index, "shop.example.com.", RecordType::A, "10.2.0.9");
        assert_eq!(addresses(&us), ["203.0.113.1"]);
        let v6 = ask(
            &index,
            "shop.example.com.",
            RecordType::AAAA,
            "2001:db8:1::5",
        );
        assert_eq!(addresses(&v6), ["2001:db8:e::1"]);
        assert_eq!(eu.answers[0].ttl, 30);
        assert_eq!(eu.rcode, ResponseCode::NoError);
        assert!(eu.authoritative);
        assert_eq!(eu.site, Some(0));
    }

    #[test]
    fn unknown_clients_get_every_region() {
        let index = index_with(8);
        let mut got = addresses(&ask(
            &index,
            "shop.example.com.",
            RecordType::A,
            "192.0.2.1",
        ));
        got.sort();
        assert_eq!(got, ["198.51.100.1", "198.51.100.2", "203.0.113.1"]);
    }

    #[test]
    fn answer_count_bounds_the_answer() {
        let index = index_with(1);
        let got = ask(&index, "shop.example.com.", RecordType::A, "192.0.2.1");
        assert_eq!(got.answers.len(), 1);
    }

    #[test]
    fn fails_over_when_the_nearest_region_has_no_ready_front_end() {
        let mut directory = sample();
        for endpoint in &mut directory.frontends[0].endpoints {
            endpoint.ready = false;
        }
        let index = directory
            .compile(AnswerPolicy::default(), 1)
            .expect("compiles");
        let got = ask(&index, "shop.example.com.", RecordType::A, "10.1.2.3");
        assert_eq!(addresses(&got), ["203.0.113.1"]);
        // And with no IPv6 front-end left anywhere: NODATA, never an unready address.
        let v6 = ask(
            &index,
            "shop.example.com.",
            RecordType::AAAA,
            "2001:db8:1::5",
        );
        assert_eq!(v6.rcode, ResponseCode::NoError);
        assert!(v6.answers.is_empty());
        assert_eq!(v6.authority[0].record_type(), RecordType::SOA);
    }

    #[test]
    fn weights_follow_headroom() {
        let index = index_with(1);
        let name = Name::from_ascii("shop.example.com.").expect("name");
        let question = Question {
            name: &name,
            qtype: RecordType::A,
            qclass: DNSClass::IN,
        };
        let client = ClientSubnet::from_address("10.1.0.1".parse().expect("ip"));
        let mut rng = fastrand::Rng::with_seed(1);
        let mut counts: HashMap<String, u32> = HashMap::new();
        let draws = 20_000;
        for _ in 0..draws {
            let got = answer(&index, &question, client, &mut rng);
            *counts.entry(got.answers[0].data.to_string()).or_default() += 1;
        }
        // Headroom 1 : 3.
        let share = f64::from(counts["198.51.100.2"]) / f64::from(draws);
        assert!(
            (share - 0.75).abs() < 0.02,
            "share {share}, counts {counts:?}"
        );
    }

    #[test]
    fn zero_weights_draw_evenly_and_never_repeat() {
        let pool: Vec<Weighted> = (1..=4)
            .map(|i| Weighted {
                address: IpAddr::from([192, 0, 2, i]),
                weight: 0.0,
            })
            .collect();
        let mut rng = fastrand::Rng::with_seed(3);
        let mut firsts: HashMap<IpAddr, u32> = HashMap::new();
        for _ in 0..4000 {
            let got = pick(&pool, 3, &mut rng);
            assert_eq!(got.len(), 3);
            let mut distinct = got.clone();
            distinct.sort();
            distinct.dedup();
            assert_eq!(distinct.len(), 3, "{got:?}");
            *firsts.entry(got[0]).or_default() += 1;
        }
        assert!(
            firsts.values().all(|&n| (800..1200).contains(&n)),
            "{firsts:?}"
        );
        // A zero weight among positive ones is never drawn while a positive one is left.
        let mixed = [
            Weighted {
                weight: 0.0,
                ..pool[0]
            },
            Weighted {
                weight: 1.0,
                ..pool[1]
            },
        ];
        for _ in 0..100 {
            assert_eq!(pick(&mixed, 1, &mut rng), [pool[1].address]);
        }
    }

    #[test]
    fn a_seed_repeats_the_same_answers() {
        let index = index_with(2);
        let run = |seed| {
            let mut rng = fastrand::Rng::with_seed(seed);
            let name = Name::from_ascii("shop.example.com.").expect("name");
            let question = Question {
                name: &name,
                qtype: RecordType::A,
                qclass: DNSClass::IN,
            };
            let client = ClientSubnet::from_address("192.0.2.1".parse().expect("ip"));
            (0..50)
                .map(|_| addresses(&answer(&index, &question, client, &mut rng)))
                .collect::<Vec<_>>()
        };
        assert_eq!(run(9), run(9));
        assert_ne!(run(9), run(10));
    }

    #[test]
    fn apex_has_soa_and_ns_with_glue() {
        let index = index_with(2);
        let soa = ask(&index, "example.com.", RecordType::SOA, "192.0.2.1");
        assert_eq!(soa.answers.len(), 1);
        assert_eq!(soa.answers[0].record_type(), RecordType::SOA);
        let ns = ask(&index, "EXAMPLE.com.", RecordType::NS, "192.0.2.1");
        assert_eq!(ns.answers.len(), 2);
        assert_eq!(ns.additionals.len(), 2, "glue of ns1.example.com");
        let glue = ask(&index, "ns1.example.com.", RecordType::AAAA, "192.0.2.1");
        assert_eq!(addresses(&glue), ["2001:db8::53"]);
        let apex_a = ask(&index, "example.com.", RecordType::A, "192.0.2.1");
        assert_eq!(apex_a.rcode, ResponseCode::NoError);
        assert!(apex_a.answers.is_empty());
    }

    #[test]
    fn nxdomain_nodata_and_refused() {
        let index = index_with(2);
        let nx = ask(&index, "nope.example.com.", RecordType::A, "192.0.2.1");
        assert_eq!(nx.rcode, ResponseCode::NXDomain);
        assert!(nx.authoritative);
        assert_eq!(nx.authority.len(), 1);
        assert_eq!(nx.authority[0].record_type(), RecordType::SOA);
        assert_eq!(nx.authority[0].ttl, 30, "negative TTL");
        // Two labels below a wildcard parent: no match.
        let deep = ask(&index, "a.b.shop.example.com.", RecordType::A, "192.0.2.1");
        assert_eq!(deep.rcode, ResponseCode::NXDomain);

        let nodata = ask(&index, "shop.example.com.", RecordType::MX, "192.0.2.1");
        assert_eq!(nodata.rcode, ResponseCode::NoError);
        assert!(nodata.answers.is_empty());
        assert_eq!(nodata.authority[0].record_type(), RecordType::SOA);
        assert_eq!(nodata.site, Some(0));
        // An empty non-terminal exists: NODATA, not NXDOMAIN (RFC 8020).
        let ent = ask(&index, "deep.example.com.", RecordType::A, "192.0.2.1");
        assert_eq!(ent.rcode, ResponseCode::NoError);
        assert!(ent.answers.is_empty());

        let refused = ask(&index, "shop.example.org.", RecordType::A, "192.0.2.1");
        assert_eq!(refused.rcode, ResponseCode::Refused);
        assert!(!refused.authoritative);
        let axfr = ask(&index, "example.com.", RecordType::AXFR, "192.0.2.1");
        assert_eq!(axfr.rcode, ResponseCode::Refused);
        let name = Name::from_ascii("shop.example.com.").expect("name");
        let chaos = Question {
            name: &name,
            qtype: RecordType::A,
            qclass: DNSClass::CH,
        };
        let client = ClientSubnet::from_address("192.0.2.1".parse().expect("ip"));
        let got = answer(&index, &chaos, client, &mut fastrand::Rng::with_seed(1));
        assert_eq!(got.rcode, ResponseCode::Refused);
    }

    #[test]
    fn class_any_is_answered_as_in_and_other_classes_are_refused() {
        let index = index_with(2);
        let name = Name::from_ascii("shop.example.com.").expect("name");
        let client = ClientSubnet::from_address("10.1.0.1".parse().expect("ip"));
        let asked = |qclass, qtype| {
            let question = Question {
                name: &name,
                qtype,
                qclass,
            };
            answer(&index, &question, client, &mut fastrand::Rng::with_seed(4))
        };
        for qtype in [RecordType::A, RecordType::MX, RecordType::ANY] {
            assert_eq!(
                asked(DNSClass::ANY, qtype),
                asked(DNSClass::IN, qtype),
                "{qtype}"
            );
        }
        for qclass in [
            DNSClass::CH,
            DNSClass::HS,
            DNSClass::NONE,
            DNSClass::Unknown(2),
        ] {
            assert_eq!(
                asked(qclass, RecordType::A),
                Answer::refused(),
                "{qclass:?}"
            );
        }
    }

    #[test]
    fn wildcards_answer_one_label_below_and_keep_the_asked_case() {
        let index = index_with(1);
        let got = ask(&index, "Cdn.SHOP.example.com.", RecordType::A, "10.2.0.1");
        assert_eq!(addresses(&got), ["203.0.113.1"]);
        assert!(
            got.answers[0]
                .name
                .eq_case(&Name::from_ascii("Cdn.SHOP.example.com.").expect("n"))
        );
    }

    #[test]
    fn any_answers_both_families() {
        let index = index_with(1);
        let got = ask(&index, "shop.example.com.", RecordType::ANY, "10.1.0.1");
        let types: Vec<RecordType> = got.answers.iter().map(Record::record_type).collect();
        assert_eq!(types, [RecordType::A, RecordType::AAAA]);
    }

    #[test]
    fn scope_covers_exactly_what_the_choice_depends_on() {
        let index = index_with(1);
        let site = &index.sites[0];
        let at = |text: &str, prefix: u8| ClientSubnet {
            address: text.parse().expect("ip"),
            source_prefix: prefix,
        };
        // Inside 10.1/16 (eu): nothing longer splits it.
        assert_eq!(steer(site, at("10.1.2.0", 24)).scope_prefix, 16);
        // 10.3/16 is in 10/8 (us), but 10.1/16 and 10.2/16 sit inside 10/8: 10.3.x first
        // differs from 10.2.x at bit 16, so the answer holds for 10.3/16 only (conservative:
        // 10.2/16 is us as well, but a longer subnet always narrows the scope).
        let steering = steer(site, at("10.3.0.0", 24));
        assert_eq!(site.regions[steering.regions[0]].region, "us");
        assert_eq!(steering.scope_prefix, 16);
        // Nowhere: the first bit that separates the client from the nearest subnet.
        assert_eq!(steer(site, at("192.0.2.0", 24)).scope_prefix, 1);
        assert!(steer(site, at("192.0.2.0", 24)).regions.is_empty());
        // A /8 source cannot be placed in 10.1/16: it matches 10/8, scope says more is needed.
        let coarse = steer(site, at("10.0.0.0", 8));
        assert_eq!(site.regions[coarse.regions[0]].region, "us");
        assert_eq!(coarse.scope_prefix, 16);
        // Source prefix 0: the client opted out; scope 0.
        assert_eq!(steer(site, at("0.0.0.0", 0)).scope_prefix, 0);
        // IPv6 client against v6 subnets only.
        assert_eq!(steer(site, at("2001:db8:1::", 56)).scope_prefix, 48);
    }

    #[test]
    fn mapped_v4_sources_are_v4() {
        let client = ClientSubnet::from_address("::ffff:10.1.0.1".parse().expect("ip"));
        assert_eq!(client.address, "10.1.0.1".parse::<IpAddr>().expect("ip"));
        assert_eq!(client.source_prefix, 32);
    }
}
