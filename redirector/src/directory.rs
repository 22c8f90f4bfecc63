//! The directory: what the redirector knows, as plain data — the zones it is authoritative
//! for, the Sites' hostnames, and the front-end groups (one per Frontend) with their region,
//! client subnets and endpoints — and its compiled, indexed form that answers are read from.
//!
//! Sources (a file, the Kubernetes API) produce a [`Directory`]; [`Directory::compile`] checks
//! it whole and builds an [`Index`]. A directory that does not compile is refused as a whole,
//! so the last good index keeps answering.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;

use hickory_proto::rr::rdata::{A, AAAA, NS, SOA};
use hickory_proto::rr::{Name, RData, Record};
use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use crate::error::DirectoryError;
use crate::rfc2136::{CompiledExport, ExportTarget};

/// Answer TTL when none is configured: low, so that a change reaches clients quickly.
pub const DEFAULT_TTL: u32 = 30;

/// Addresses per answer when none is configured.
pub const DEFAULT_ANSWER_COUNT: usize = 2;

/// Most addresses one answer may carry (a larger setting is refused).
pub const MAX_ANSWER_COUNT: usize = 64;

/// Everything the redirector answers from, as a source hands it over.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Directory {
    /// The zones served; a query for a name outside all of them is refused.
    #[serde(default)]
    pub zones: Vec<Zone>,
    /// The Sites and their hostnames.
    #[serde(default)]
    pub sites: Vec<SiteEntry>,
    /// The front-end groups that serve the Sites.
    #[serde(default)]
    pub frontends: Vec<FrontendGroup>,
    /// RFC 2136 export of Sites' front-ends to other authoritative servers.
    #[serde(default)]
    pub exports: Vec<ExportTarget>,
}

/// A zone the redirector is authoritative for.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Zone {
    /// The apex, such as `example.com`.
    pub name: String,
    /// The zone's name servers (its NS records); at least one.
    pub nameservers: Vec<Nameserver>,
    /// The SOA RNAME (mailbox as a name); defaults to `hostmaster.ZONE`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostmaster: Option<String>,
    /// TTL of the SOA and NS records, and the SOA's negative-caching TTL's upper bound.
    #[serde(default = "default_zone_ttl")]
    pub ttl: u32,
    /// How long resolvers may cache a negative answer (the SOA MINIMUM), in seconds.
    #[serde(default = "default_negative_ttl")]
    pub negative_ttl: u32,
}

fn default_zone_ttl() -> u32 {
    3600
}

fn default_negative_ttl() -> u32 {
    DEFAULT_TTL
}

/// One name server of a zone; its addresses are served as glue when it lies in the zone.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Nameserver {
    /// Its host name.
    pub name: String,
    /// Its addresses, answered for `name` when it is inside a served zone.
    #[serde(default)]
    pub addresses: Vec<IpAddr>,
}

/// A Site, by name, with the hostnames clients look up.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SiteEntry {
    /// The Site's name (also the `site` metric label).
    pub name: String,
    /// Host names; a leading `*.` matches every name one label below (as the Site's own
    /// routing does).
    pub hostnames: Vec<String>,
}

/// A pool of front-ends in one region (a Frontend) and the Sites it serves.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FrontendGroup {
    /// The Frontend's name.
    pub name: String,
    /// Its region: clients matched to one of its subnets are sent to this region first.
    pub region: String,
    /// The Sites served, by name.
    pub sites: Vec<String>,
    /// Client networks nearest to this region.
    #[serde(default)]
    pub client_subnets: Vec<IpNet>,
    /// Its front-ends.
    #[serde(default)]
    pub endpoints: Vec<Endpoint>,
}

/// One front-end address.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Endpoint {
    /// The address clients connect to.
    pub address: IpAddr,
    /// Whether it takes traffic; unready front-ends are never answered.
    #[serde(default = "default_ready")]
    pub ready: bool,
    /// Relative spare capacity (from QoS and load); answers favour larger headroom. A
    /// negative or non-finite value counts as zero.
    #[serde(default = "default_headroom")]
    pub headroom: f64,
}

fn default_ready() -> bool {
    true
}

fn default_headroom() -> f64 {
    1.0
}

/// How answers are shaped, from the command line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AnswerPolicy {
    /// TTL of A and AAAA answers.
    pub ttl: u32,
    /// Most addresses per answer.
    pub answer_count: usize,
}

impl Default for AnswerPolicy {
    fn default() -> Self {
        Self {
            ttl: DEFAULT_TTL,
            answer_count: DEFAULT_ANSWER_COUNT,
        }
    }
}

/// Index of a zone in [`Index::zones`].
pub type ZoneId = usize;

/// Index of a Site in [`Index::sites`].
pub type SiteId = usize;

/// A compiled zone: its apex records, ready to answer.
#[derive(Clone, Debug)]
pub struct CompiledZone {
    /// The apex.
    pub origin: Name,
    /// The SOA record.
    pub soa: Record,
    /// The SOA with the negative-caching TTL, for the authority section of negative answers
    /// (RFC 2308 §3).
    pub negative_soa: Record,
    /// The NS records.
    pub ns: Vec<Record>,
    /// Glue: A and AAAA records of in-zone name servers, for the additional section.
    pub glue: Vec<Record>,
}

/// An address with its selection weight.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Weighted {
    /// The address.
    pub address: IpAddr,
    /// The weight, finite and non-negative.
    pub weight: f64,
}

/// One region's ready front-ends for a Site, by address family.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RegionPool {
    /// The region's name.
    pub region: String,
    /// Ready IPv4 front-ends.
    pub v4: Vec<Weighted>,
    /// Ready IPv6 front-ends.
    pub v6: Vec<Weighted>,
}

/// A client subnet of a region serving a Site.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RegionSubnet {
    /// The subnet (normalised: host bits zero).
    pub net: IpNet,
    /// Index into [`CompiledSite::regions`].
    pub region: usize,
}

/// A compiled Site: its regions' pools and the subnets steering clients to them.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct CompiledSite {
    /// The Site's name.
    pub name: String,
    /// One pool per region serving the Site, sorted by region name.
    pub regions: Vec<RegionPool>,
    /// Every client subnet of those regions, longest prefix first.
    pub subnets: Vec<RegionSubnet>,
    /// Every ready IPv4 front-end of the Site, over all regions: the pool for clients no
    /// subnet places.
    pub all_v4: Vec<Weighted>,
    /// Every ready IPv6 front-end of the Site.
    pub all_v6: Vec<Weighted>,
}

/// What an owner name in a served zone is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Node {
    /// The zone apex (SOA, NS).
    Apex,
    /// A Site hostname.
    Site(SiteId),
    /// An in-zone name server (glue addresses, by index into [`CompiledZone::glue`]).
    Nameserver(Vec<usize>),
    /// A name that owns no records but has names below it (RFC 8020: NODATA, not NXDOMAIN).
    EmptyNonTerminal,
}

/// The compiled directory: every lookup an answer needs, by exact name.
#[derive(Clone, Debug)]
pub struct Index {
    /// Served zones.
    pub zones: Vec<CompiledZone>,
    /// Sites, in the directory's order.
    pub sites: Vec<CompiledSite>,
    /// Owner names (lower-cased comparison) in served zones: what each is, and its zone.
    pub names: HashMap<Name, (ZoneId, Node)>,
    /// Wildcard hostnames: the parent name of `*.parent` → its Site.
    pub wildcards: HashMap<Name, SiteId>,
    /// The answer policy the index was compiled with.
    pub policy: AnswerPolicy,
    /// The zones' SOA serial: it changes with every directory applied.
    pub serial: u32,
    /// Hostnames skipped because no served zone holds them (Site, hostname).
    pub skipped: Vec<(String, String)>,
    /// Exports to other servers.
    pub exports: Vec<CompiledExport>,
}

impl Index {
    /// The served zone holding `name` (the longest matching apex), if any.
    pub fn zone_of(&self, name: &Name) -> Option<ZoneId> {
        let mut best: Option<(ZoneId, u8)> = None;
        for (id, zone) in self.zones.iter().enumerate() {
            let labels = zone.origin.num_labels();
            if zone.origin.zone_of(name) && best.is_none_or(|(_, b)| labels > b) {
                best = Some((id, labels));
            }
        }
        best.map(|(id, _)| id)
    }

    /// Looks a Site's ID up by name.
    pub fn site_id(&self, name: &str) -> Option<SiteId> {
        self.sites.iter().position(|s| s.name == name)
    }
}

fn parse_name(text: &str, what: &'static str) -> Result<Name, DirectoryError> {
    let mut name = Name::from_ascii(text).map_err(|source| DirectoryError::Name {
        what,
        name: text.to_owned(),
        reason: source.to_string(),
    })?;
    name.set_fqdn(true);
    Ok(name.to_lowercase())
}

fn weight_of(headroom: f64) -> f64 {
    if headroom.is_finite() && headroom > 0.0 {
        headroom
    } else {
        0.0
    }
}

impl Directory {
    /// Checks the directory whole and builds its index, with SOA serial `serial`.
    ///
    /// Hostnames outside every served zone are skipped (listed in [`Index::skipped`]): in a
    /// cluster, only some Sites' names may be delegated to the redirector.
    ///
    /// # Errors
    /// A zone, name server or hostname that is not a valid domain name; a zone without a
    /// name server or served twice; a hostname claimed by two Sites or shadowing a zone apex
    /// or name server; a Site or Frontend named twice; an answer count of 0 or above
    /// [`MAX_ANSWER_COUNT`].
    pub fn compile(&self, policy: AnswerPolicy, serial: u32) -> Result<Index, DirectoryError> {
        if policy.answer_count == 0 || policy.answer_count > MAX_ANSWER_COUNT {
            return Err(DirectoryError::AnswerCount(policy.answer_count));
        }
        let mut index = Index {
            zones: Vec::with_capacity(self.zones.len()),
            sites: Vec::with_capacity(self.sites.len()),
            names: HashMap::new(),
            wildcards: HashMap::new(),
            policy,
            serial,
            skipped: Vec::new(),
            exports: Vec::new(),
        };
        for zone in &self.zones {
            let compiled = compile_zone(zone, serial)?;
            if index.zones.iter().any(|z| z.origin == compiled.origin) {
                return Err(DirectoryError::Duplicate {
                    what: "zone",
                    name: zone.name.clone(),
                });
            }
            index.zones.push(compiled);
        }
        for (id, zone) in index.zones.iter().enumerate() {
            index.names.insert(zone.origin.clone(), (id, Node::Apex));
        }
        // In-zone name servers own their glue (a name server may be named by several zones).
        let mut glue_owners: Vec<(Name, ZoneId, usize)> = Vec::new();
        for (zone_id, zone) in index.zones.iter().enumerate() {
            for (glue_id, record) in zone.glue.iter().enumerate() {
                glue_owners.push((record.name.clone(), zone_id, glue_id));
            }
        }
        for (owner, declaring_zone, glue_id) in glue_owners {
            let Some(zone_id) = index.zone_of(&owner) else {
                continue;
            };
            if zone_id != declaring_zone {
                continue;
            }
            match index.names.entry(owner) {
                std::collections::hash_map::Entry::Occupied(mut entry) => {
                    if let (_, Node::Nameserver(ids)) = entry.get_mut() {
                        ids.push(glue_id);
                    }
                }
                std::collections::hash_map::Entry::Vacant(entry) => {
                    entry.insert((zone_id, Node::Nameserver(vec![glue_id])));
                }
            }
        }

        let mut site_ids: BTreeMap<&str, SiteId> = BTreeMap::new();
        for site in &self.sites {
            if site_ids.insert(&site.name, index.sites.len()).is_some() {
                return Err(DirectoryError::Duplicate {
                    what: "Site",
                    name: site.name.clone(),
                });
            }
            index.sites.push(CompiledSite {
                name: site.name.clone(),
                ..CompiledSite::default()
            });
        }
        for (site_id, site) in self.sites.iter().enumerate() {
            for hostname in &site.hostnames {
                let (wildcard, bare) = match hostname.strip_prefix("*.") {
                    Some(rest) => (true, rest),
                    None => (false, hostname.as_str()),
                };
                let name = parse_name(bare, "hostname")?;
                let Some(zone_id) = index.zone_of(&name) else {
                    index.skipped.push((site.name.clone(), hostname.clone()));
                    continue;
                };
                let clash = |other: &str| DirectoryError::HostnameClash {
                    hostname: hostname.clone(),
                    site: site.name.clone(),
                    other: other.to_owned(),
                };
                if wildcard {
                    if let Some(&other) = index.wildcards.get(&name) {
                        return Err(clash(&index.sites[other].name));
                    }
                    index.wildcards.insert(name.clone(), site_id);
                    // The parent owns nothing itself unless another entry says so.
                    index
                        .names
                        .entry(name.clone())
                        .or_insert((zone_id, Node::EmptyNonTerminal));
                } else {
                    match index.names.get(&name) {
                        Some((_, Node::Site(other))) => {
                            return Err(clash(&index.sites[*other].name));
                        }
                        Some((_, Node::Apex)) => return Err(clash("the zone apex")),
                        Some((_, Node::Nameserver(_))) => return Err(clash("a name server")),
                        Some((_, Node::EmptyNonTerminal)) | None => {
                            index
                                .names
                                .insert(name.clone(), (zone_id, Node::Site(site_id)));
                        }
                    }
                }
                add_empty_non_terminals(&mut index, &name, zone_id);
            }
        }

        let mut frontend_names: BTreeMap<&str, ()> = BTreeMap::new();
        for group in &self.frontends {
            if frontend_names.insert(&group.name, ()).is_some() {
                return Err(DirectoryError::Duplicate {
                    what: "Frontend",
                    name: group.name.clone(),
                });
            }
            for site_name in &group.sites {
                // A Frontend may name a Site that does not exist (yet): nothing to serve.
                let Some(&site_id) = site_ids.get(site_name.as_str()) else {
                    continue;
                };
                add_group(&mut index.sites[site_id], group);
            }
        }
        for site in &mut index.sites {
            site.subnets
                .sort_by_key(|s| std::cmp::Reverse(s.net.prefix_len()));
            site.all_v4 = site.regions.iter().flat_map(|r| r.v4.clone()).collect();
            site.all_v6 = site.regions.iter().flat_map(|r| r.v6.clone()).collect();
        }
        for target in &self.exports {
            let hostnames = self
                .sites
                .iter()
                .find(|s| s.name == target.site)
                .map_or(&[][..], |s| s.hostnames.as_slice());
            let export = target.compile(&index, hostnames)?;
            index.exports.push(export);
        }
        Ok(index)
    }
}

/// Marks every name between `name` and its zone's apex as existing (RFC 8020).
fn add_empty_non_terminals(index: &mut Index, name: &Name, zone_id: ZoneId) {
    let apex_labels = index.zones[zone_id].origin.num_labels();
    let mut parent = name.base_name();
    while parent.num_labels() > apex_labels {
        index
            .names
            .entry(parent.clone())
            .or_insert((zone_id, Node::EmptyNonTerminal));
        parent = parent.base_name();
    }
}

fn add_group(site: &mut CompiledSite, group: &FrontendGroup) {
    let region = match site.regions.iter().position(|r| r.region == group.region) {
        Some(position) => position,
        None => {
            // Keep regions sorted by name so the index does not depend on Frontend order;
            // subnets already recorded point at positions, so shift them.
            let position = site
                .regions
                .partition_point(|r| r.region.as_str() < group.region.as_str());
            site.regions.insert(
                position,
                RegionPool {
                    region: group.region.clone(),
                    ..RegionPool::default()
                },
            );
            for subnet in &mut site.subnets {
                if subnet.region >= position {
                    subnet.region += 1;
                }
            }
            position
        }
    };
    for net in &group.client_subnets {
        site.subnets.push(RegionSubnet {
            net: net.trunc(),
            region,
        });
    }
    let pool = &mut site.regions[region];
    for endpoint in group.endpoints.iter().filter(|e| e.ready) {
        let weighted = Weighted {
            address: endpoint.address,
            weight: weight_of(endpoint.headroom),
        };
        let family = if endpoint.address.is_ipv4() {
            &mut pool.v4
        } else {
            &mut pool.v6
        };
        // The same pod listed twice (two slices during a rollout) is one front-end.
        if !family.iter().any(|w| w.address == endpoint.address) {
            family.push(weighted);
        }
    }
}

fn compile_zone(zone: &Zone, serial: u32) -> Result<CompiledZone, DirectoryError> {
    let origin = parse_name(&zone.name, "zone")?;
    if zone.nameservers.is_empty() {
        return Err(DirectoryError::NoNameserver(zone.name.clone()));
    }
    let hostmaster = match &zone.hostmaster {
        Some(text) => parse_name(text, "hostmaster")?,
        None => origin
            .prepend_label("hostmaster")
            .map_err(|source| DirectoryError::Name {
                what: "hostmaster",
                name: format!("hostmaster.{}", zone.name),
                reason: source.to_string(),
            })?,
    };
    let mut ns = Vec::with_capacity(zone.nameservers.len());
    let mut glue = Vec::new();
    let mut primary = None;
    for server in &zone.nameservers {
        let name = parse_name(&server.name, "name server")?;
        primary.get_or_insert_with(|| name.clone());
        ns.push(Record::from_rdata(
            origin.clone(),
            zone.ttl,
            RData::NS(NS(name.clone())),
        ));
        if origin.zone_of(&name) {
            for address in &server.addresses {
                let data = match address {
                    IpAddr::V4(v4) => RData::A(A(*v4)),
                    IpAddr::V6(v6) => RData::AAAA(AAAA(*v6)),
                };
                glue.push(Record::from_rdata(name.clone(), zone.ttl, data));
            }
        }
    }
    let mname = primary.unwrap_or_else(|| origin.clone());
    let negative_ttl = zone.negative_ttl.min(zone.ttl);
    let soa_data = SOA::new(
        mname,
        hostmaster,
        serial,
        // Refresh, retry, expire: for secondaries; the redirector has none, but the values
        // are the conventional ones so that tools do not warn.
        3600,
        600,
        604_800,
        negative_ttl,
    );
    let soa = Record::from_rdata(origin.clone(), zone.ttl, RData::SOA(soa_data.clone()));
    let negative_soa = Record::from_rdata(origin.clone(), negative_ttl, RData::SOA(soa_data));
    Ok(CompiledZone {
        origin,
        soa,
        negative_soa,
        ns,
        glue,
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Shared with the fuzz target; the other modules' tests import it from here.
    pub(crate) use crate::fixtures::sample;

    #[test]
    fn compiles_names_regions_and_glue() {
        let index = sample()
            .compile(AnswerPolicy::default(), 7)
            .expect("compiles");
        let name = |s: &str| Name::from_ascii(s).expect("name");
        assert_eq!(index.zones.len(), 1);
        assert_eq!(index.zones[0].ns.len(), 2);
        assert_eq!(
            index.zones[0].glue.len(),
            2,
            "only the in-zone server's glue"
        );
        assert_eq!(index.names[&name("example.com.")].1, Node::Apex);
        assert_eq!(index.names[&name("SHOP.Example.com.")].1, Node::Site(0));
        assert_eq!(
            index.names[&name("deep.example.com.")].1,
            Node::EmptyNonTerminal
        );
        assert_eq!(
            index.names[&name("ns1.example.com.")].1,
            Node::Nameserver(vec![0, 1])
        );
        assert_eq!(index.wildcards[&name("shop.example.com.")], 0);
        assert_eq!(
            index.skipped,
            vec![("outside".to_owned(), "outside.example.org".to_owned())]
        );
        let shop = &index.sites[0];
        assert_eq!(shop.regions.len(), 2);
        assert_eq!(shop.regions[0].region, "eu");
        assert_eq!(shop.regions[0].v4.len(), 2, "the unready one is left out");
        assert_eq!(shop.regions[0].v6.len(), 1);
        assert_eq!(shop.subnets[0].net.prefix_len(), 48, "longest first");
        assert_eq!(shop.all_v4.len(), 3);
    }

    #[test]
    fn refuses_clashes_and_bad_names() {
        let mut clash = sample();
        clash.sites[1].hostnames = vec!["shop.example.com".into()];
        assert!(matches!(
            clash.compile(AnswerPolicy::default(), 1),
            Err(DirectoryError::HostnameClash { .. })
        ));
        let mut apex = sample();
        apex.sites[1].hostnames = vec!["example.com".into()];
        assert!(apex.compile(AnswerPolicy::default(), 1).is_err());
        let mut bad = sample();
        bad.zones[0].name = "exa mple..com".into();
        assert!(matches!(
            bad.compile(AnswerPolicy::default(), 1),
            Err(DirectoryError::Name { .. })
        ));
        let mut twice = sample();
        twice.frontends[1].name = "edge-eu".into();
        assert!(matches!(
            twice.compile(AnswerPolicy::default(), 1),
            Err(DirectoryError::Duplicate { .. })
        ));
        let zero = AnswerPolicy {
            answer_count: 0,
            ..AnswerPolicy::default()
        };
        assert!(sample().compile(zero, 1).is_err());
    }

    #[test]
    fn subnet_regions_survive_region_insertion_order() {
        // `us` is added first, then `eu` sorts before it: the us subnets must follow.
        let mut directory = sample();
        directory.frontends.reverse();
        let index = directory
            .compile(AnswerPolicy::default(), 1)
            .expect("compiles");
        let shop = &index.sites[0];
        for subnet in &shop.subnets {
            let expected = if subnet.net.to_string().starts_with("10.1.")
                || subnet.net.to_string().starts_with("2001:")
            {
                "eu"
            } else {
                "us"
            };
            assert_eq!(
                shop.regions[subnet.region].region, expected,
                "{}",
                subnet.net
            );
        }
    }
}
