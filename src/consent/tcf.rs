//! IAB TCF v2.2 TC string decoder (the `euconsent-v2` cookie).
//!
//! Decodes the core segment exactly as the IAB Tech Lab "Consent string and
//! vendor list formats v2" specification lays it out (big-endian fields,
//! bits numbered left to right, base64url without padding), plus the two
//! optional segments tagproxy cares about: Disclosed Vendors (segment type
//! 1, mandatory in global strings since TCF 2.3) and Publisher TC (type 3).
//! Allowed Vendors (type 2, obsolete) and any unknown type are skipped.
//!
//! The module is pure and total: any input, however malformed, gives
//! `Ok` or `Err`, never a panic (property-tested below). SPEC section 9: a
//! missing or malformed string grants nothing, so callers treat `Err` as
//! "no consent".

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;

/// The IAB purposes TCF v2.2 defines (Policies, Appendix A): 1 store and/or
/// access information on a device, 2 use limited data to select advertising,
/// 3-6 create / use profiles for personalised advertising and content,
/// 7 measure advertising performance, 8 measure content performance,
/// 9 understand audiences, 10 develop and improve services, 11 use limited
/// data to select content. Special purposes are a separate id space with no
/// signal in the TC string.
pub const PURPOSES: std::ops::RangeInclusive<u8> = 1..=11;

/// Whether TCF v2.2 policy lets IAB purpose `purpose` rest on legitimate
/// interest: never purpose 1 (device access needs consent) nor, since v2.2,
/// purposes 3-6 (personalised advertising and content profiles). Source: IAB
/// Europe TCF Policies v2.2, Appendix A; `@iabtechlabtcf/core` clears the LI
/// bits of exactly these purposes when encoding.
pub fn legitimate_interest_allowed(purpose: u8) -> bool {
    PURPOSES.contains(&purpose) && !matches!(purpose, 1 | 3..=6)
}

/// Why a TC string was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TcfError {
    #[error("empty TC string or segment")]
    Empty,
    #[error("segment {segment} is not base64url")]
    Base64 { segment: usize },
    #[error("string ends early: {needed} bits needed at bit {at}")]
    Truncated { at: usize, needed: u32 },
    #[error("unsupported TC string version {0} (only 2 is decoded)")]
    Version(u8),
    #[error("letter code {0} is not A-Z")]
    Letter(u8),
    #[error("vendor id 0 in a range entry")]
    VendorIdZero,
    #[error("vendor range {start}-{end} ends before it starts")]
    BadRange { start: u16, end: u16 },
    #[error("vendor id {id} above the section's MaxVendorId {max}")]
    AboveMax { id: u16, max: u16 },
    #[error("segment type {0} where it is not allowed (core again, or a repeat)")]
    Segment(u8),
}

/// A decoded TC string (core segment plus the optional segments).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TcString {
    /// Always 2 (anything else is rejected).
    pub version: u8,
    /// Deciseconds since the Unix epoch.
    pub created: u64,
    /// Deciseconds since the Unix epoch.
    pub last_updated: u64,
    pub cmp_id: u16,
    pub cmp_version: u16,
    pub consent_screen: u8,
    /// Two upper-case letters, e.g. `EN`.
    pub consent_language: String,
    pub vendor_list_version: u16,
    /// 2 for TCF 2.0/2.1 strings, 4 for TCF 2.2, 5 for TCF 2.3.
    pub tcf_policy_version: u8,
    pub is_service_specific: bool,
    /// Named UseNonStandardStacks before TCF 2.2.
    pub use_non_standard_texts: bool,
    /// 12 bits; special feature 1 is the most significant.
    pub special_feature_opt_ins: u16,
    /// 24 bits; purpose 1 is the most significant (bit 23).
    pub purpose_consents: u32,
    /// 24 bits; purpose 1 is the most significant (bit 23).
    pub purpose_legitimate_interests: u32,
    pub purpose_one_treatment: bool,
    /// Two upper-case letters, e.g. `DE`.
    pub publisher_cc: String,
    pub vendor_consents: VendorSet,
    pub vendor_legitimate_interests: VendorSet,
    pub publisher_restrictions: Vec<PublisherRestriction>,
    /// Segment type 1, when present.
    pub disclosed_vendors: Option<VendorSet>,
    /// Segment type 3, when present.
    pub publisher_tc: Option<PublisherTc>,
}

/// A set of vendor ids, kept as sorted, merged, inclusive ranges whatever
/// the wire encoding (bit field or range entries) was.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VendorSet {
    max_vendor_id: u16,
    ranges: Vec<(u16, u16)>,
}

/// PubRestrictionEntry: a purpose, a restriction and the vendors it covers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublisherRestriction {
    pub purpose_id: u8,
    pub restriction_type: RestrictionType,
    /// No MaxVendorId on the wire: `max_vendor_id()` is the largest id.
    pub vendors: VendorSet,
}

/// RestrictionType (2 bits).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RestrictionType {
    /// 0: purpose flatly not allowed by the publisher.
    NotAllowed,
    /// 1: require consent.
    RequireConsent,
    /// 2: require legitimate interest.
    RequireLegitimateInterest,
    /// 3: undefined by the specification.
    Undefined,
}

/// Publisher TC segment (segment type 3).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PublisherTc {
    /// 24 bits; purpose 1 is the most significant.
    pub purpose_consents: u32,
    /// 24 bits; purpose 1 is the most significant.
    pub purpose_legitimate_interests: u32,
    /// 0..=63.
    pub num_custom_purposes: u8,
    /// `num_custom_purposes` bits, right-aligned; custom purpose 1 is the
    /// most significant of them.
    pub custom_purpose_consents: u64,
    /// Same layout as `custom_purpose_consents`.
    pub custom_purpose_legitimate_interests: u64,
}

impl TcString {
    /// Decode a TC string (`core[.segment]*`). Surrounding whitespace and
    /// trailing `=` padding on any segment are tolerated.
    pub fn parse(s: &str) -> Result<TcString, TcfError> {
        let s = s.trim();
        if s.is_empty() {
            return Err(TcfError::Empty);
        }
        let mut segments = s.split('.');
        let core = decode_segment(segments.next().unwrap_or(""), 0)?;
        let mut tc = parse_core(&mut Bits::new(&core))?;
        for (i, seg) in segments.enumerate() {
            let data = decode_segment(seg, i + 1)?;
            let mut b = Bits::new(&data);
            match b.read(3)? as u8 {
                1 if tc.disclosed_vendors.is_none() => {
                    tc.disclosed_vendors = Some(read_vendor_section(&mut b)?);
                }
                3 if tc.publisher_tc.is_none() => {
                    tc.publisher_tc = Some(read_publisher_tc(&mut b)?);
                }
                t @ (0 | 1 | 3) => return Err(TcfError::Segment(t)),
                // 2 = Allowed Vendors (obsolete since TCF 2.2), 4..=7 unknown.
                _ => {}
            }
        }
        Ok(tc)
    }

    /// Consent for IAB purpose `purpose` (1..=24); false outside that range.
    pub fn purpose_consent(&self, purpose: u8) -> bool {
        flag(self.purpose_consents as u64, 24, purpose)
    }

    /// Legitimate interest established for purpose `purpose` (1..=24).
    pub fn purpose_legitimate_interest(&self, purpose: u8) -> bool {
        flag(self.purpose_legitimate_interests as u64, 24, purpose)
    }

    /// Consent for GVL vendor `vendor`.
    pub fn vendor_consent(&self, vendor: u16) -> bool {
        self.vendor_consents.contains(vendor)
    }

    /// Legitimate interest established for GVL vendor `vendor`.
    pub fn vendor_legitimate_interest(&self, vendor: u16) -> bool {
        self.vendor_legitimate_interests.contains(vendor)
    }

    /// Opt-in for special feature `id` (1..=12); false outside that range.
    pub fn special_feature(&self, id: u8) -> bool {
        flag(self.special_feature_opt_ins as u64, 12, id)
    }

    /// The publisher's restriction on `purpose` for `vendor`, if any (the
    /// first matching entry).
    pub fn restriction(&self, purpose: u8, vendor: u16) -> Option<RestrictionType> {
        self.restrictions(purpose, vendor).next()
    }

    /// Every restriction the publisher set on `purpose` for `vendor`. The
    /// spec allows one per vendor and purpose; a string that sets several
    /// gets all of them applied (see `vendor_has_basis`).
    pub fn restrictions(
        &self,
        purpose: u8,
        vendor: u16,
    ) -> impl Iterator<Item = RestrictionType> + '_ {
        self.publisher_restrictions
            .iter()
            .filter(move |r| r.purpose_id == purpose && r.vendors.contains(vendor))
            .map(|r| r.restriction_type)
    }

    /// Whether IAB purpose `purpose` itself has a legal basis: consent, or,
    /// when `accept_li` and TCF v2.2 allows LI for it, legitimate interest
    /// transparency without objection (PurposesLITransparency). Publisher
    /// restrictions are per vendor and do not apply here.
    pub fn purpose_has_basis(&self, purpose: u8, accept_li: bool) -> bool {
        self.purpose_consent(purpose)
            || (accept_li
                && legitimate_interest_allowed(purpose)
                && self.purpose_legitimate_interest(purpose))
    }

    /// Whether GVL vendor `vendor` has a legal basis for IAB purpose
    /// `purpose`: consent (purpose and vendor consent bits) or, when
    /// `accept_li` and TCF v2.2 allows LI for the purpose, legitimate
    /// interest (purpose LI transparency and vendor LI bits), subject to the
    /// publisher's restrictions as the "Consent string and vendor list
    /// formats v2" spec defines them (PubRestrictionEntry):
    /// - type 0, not allowed: no basis at all, whatever the signals;
    /// - type 1, require consent: only consent counts;
    /// - type 2, require legitimate interest: only LI counts, so a purpose
    ///   that does not accept LI (a vendor registered for consent, in GVL
    ///   terms) has no basis, and neither has one of purposes 1, 3-6, for
    ///   which the policy forbids LI;
    /// - type 3, undefined: no basis (an unknown restriction is not ignored).
    ///
    /// Several restrictions on one vendor and purpose all apply.
    pub fn vendor_has_basis(&self, purpose: u8, vendor: u16, accept_li: bool) -> bool {
        let (mut consent_ok, mut li_ok) = (true, accept_li);
        for r in self.restrictions(purpose, vendor) {
            match r {
                RestrictionType::RequireConsent => li_ok = false,
                RestrictionType::RequireLegitimateInterest => consent_ok = false,
                RestrictionType::NotAllowed | RestrictionType::Undefined => return false,
            }
        }
        (consent_ok && self.purpose_consent(purpose) && self.vendor_consent(vendor))
            || (li_ok
                && legitimate_interest_allowed(purpose)
                && self.purpose_legitimate_interest(purpose)
                && self.vendor_legitimate_interest(vendor))
    }
}

impl PublisherTc {
    /// Publisher consent for IAB purpose `purpose` (1..=24).
    pub fn purpose_consent(&self, purpose: u8) -> bool {
        flag(self.purpose_consents as u64, 24, purpose)
    }

    /// Publisher legitimate interest for IAB purpose `purpose` (1..=24).
    pub fn purpose_legitimate_interest(&self, purpose: u8) -> bool {
        flag(self.purpose_legitimate_interests as u64, 24, purpose)
    }

    /// Consent for custom purpose `id` (1..=num_custom_purposes).
    pub fn custom_purpose_consent(&self, id: u8) -> bool {
        flag(self.custom_purpose_consents, self.num_custom_purposes, id)
    }

    /// Legitimate interest for custom purpose `id`.
    pub fn custom_purpose_legitimate_interest(&self, id: u8) -> bool {
        flag(
            self.custom_purpose_legitimate_interests,
            self.num_custom_purposes,
            id,
        )
    }
}

impl RestrictionType {
    fn from_bits(v: u64) -> RestrictionType {
        match v & 3 {
            0 => RestrictionType::NotAllowed,
            1 => RestrictionType::RequireConsent,
            2 => RestrictionType::RequireLegitimateInterest,
            _ => RestrictionType::Undefined,
        }
    }

    /// The 2-bit wire value.
    pub fn bits(self) -> u8 {
        match self {
            RestrictionType::NotAllowed => 0,
            RestrictionType::RequireConsent => 1,
            RestrictionType::RequireLegitimateInterest => 2,
            RestrictionType::Undefined => 3,
        }
    }
}

impl VendorSet {
    /// Build a set from inclusive ranges in any order (overlaps allowed).
    /// Rejects id 0, `end < start` and ids above `max_vendor_id`.
    pub fn from_ranges(
        max_vendor_id: u16,
        ranges: impl IntoIterator<Item = (u16, u16)>,
    ) -> Result<VendorSet, TcfError> {
        let mut v = Vec::new();
        for (start, end) in ranges {
            check_range(start, end, Some(max_vendor_id))?;
            v.push((start, end));
        }
        Ok(VendorSet {
            max_vendor_id,
            ranges: normalize(v),
        })
    }

    /// Build a set from ids (0 is ignored); MaxVendorId is the largest id.
    pub fn from_ids(ids: impl IntoIterator<Item = u16>) -> VendorSet {
        let ranges = normalize(
            ids.into_iter()
                .filter(|&i| i != 0)
                .map(|i| (i, i))
                .collect(),
        );
        VendorSet {
            max_vendor_id: ranges.last().map_or(0, |r| r.1),
            ranges,
        }
    }

    pub fn contains(&self, id: u16) -> bool {
        // Ranges are sorted and disjoint: find the last one starting <= id.
        let i = self.ranges.partition_point(|&(start, _)| start <= id);
        i > 0 && id <= self.ranges[i - 1].1
    }

    /// The MaxVendorId field as encoded (may exceed the largest member).
    pub fn max_vendor_id(&self) -> u16 {
        self.max_vendor_id
    }

    /// Sorted, disjoint, non-adjacent inclusive ranges.
    pub fn ranges(&self) -> &[(u16, u16)] {
        &self.ranges
    }

    pub fn is_empty(&self) -> bool {
        self.ranges.is_empty()
    }

    /// Number of member ids.
    pub fn len(&self) -> usize {
        self.ranges
            .iter()
            .map(|&(a, b)| usize::from(b - a) + 1)
            .sum()
    }

    /// Member ids in ascending order.
    pub fn iter(&self) -> impl Iterator<Item = u16> + '_ {
        self.ranges.iter().flat_map(|&(a, b)| a..=b)
    }
}

/// Bit `id` (1-based, most significant first) of a `width`-bit field.
fn flag(field: u64, width: u8, id: u8) -> bool {
    id >= 1 && id <= width && (field >> (width - id)) & 1 == 1
}

fn check_range(start: u16, end: u16, max: Option<u16>) -> Result<(), TcfError> {
    if start == 0 {
        return Err(TcfError::VendorIdZero);
    }
    if end < start {
        return Err(TcfError::BadRange { start, end });
    }
    match max {
        Some(max) if end > max => Err(TcfError::AboveMax { id: end, max }),
        _ => Ok(()),
    }
}

/// Sort and merge overlapping or adjacent ranges.
fn normalize(mut v: Vec<(u16, u16)>) -> Vec<(u16, u16)> {
    v.sort_unstable();
    let mut out: Vec<(u16, u16)> = Vec::with_capacity(v.len());
    for (a, b) in v {
        match out.last_mut() {
            Some(last) if u32::from(a) <= u32::from(last.1) + 1 => last.1 = last.1.max(b),
            _ => out.push((a, b)),
        }
    }
    out
}

/// Base64url (no padding) to bytes. Trailing `=` is tolerated; the 6-bit
/// groups are completed with `A` (zero bits) to whole bytes, so a string
/// whose bit count was only padded to a multiple of 6 (any length, even
/// 1 mod 4) decodes and no bit of the last character is lost.
fn decode_segment(seg: &str, segment: usize) -> Result<Vec<u8>, TcfError> {
    let seg = seg.trim_end_matches('=');
    if seg.is_empty() {
        return Err(TcfError::Empty);
    }
    let mut padded = String::with_capacity(seg.len() + 3);
    padded.push_str(seg);
    while !padded.len().is_multiple_of(4) {
        padded.push('A');
    }
    URL_SAFE_NO_PAD
        .decode(padded.as_bytes())
        .map_err(|_| TcfError::Base64 { segment })
}

/// Big-endian bit reader over a byte slice, bit 0 = MSB of byte 0.
struct Bits<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> Bits<'a> {
    fn new(data: &'a [u8]) -> Self {
        Bits { data, pos: 0 }
    }

    fn remaining(&self) -> usize {
        (self.data.len() * 8).saturating_sub(self.pos)
    }

    /// Read `n` (0..=64) bits as an unsigned big-endian number.
    fn read(&mut self, n: u32) -> Result<u64, TcfError> {
        if n > 64 || (n as usize) > self.remaining() {
            return Err(TcfError::Truncated {
                at: self.pos,
                needed: n,
            });
        }
        let mut v: u64 = 0;
        for _ in 0..n {
            let bit = (self.data[self.pos / 8] >> (7 - self.pos % 8)) & 1;
            v = (v << 1) | u64::from(bit);
            self.pos += 1;
        }
        Ok(v)
    }

    fn bool(&mut self) -> Result<bool, TcfError> {
        Ok(self.read(1)? == 1)
    }

    /// Two 6-bit letters, A = 0 .. Z = 25.
    fn letters(&mut self) -> Result<String, TcfError> {
        let mut s = String::with_capacity(2);
        for _ in 0..2 {
            let c = self.read(6)? as u8;
            if c > 25 {
                return Err(TcfError::Letter(c));
            }
            s.push(char::from(b'A' + c));
        }
        Ok(s)
    }
}

fn parse_core(b: &mut Bits) -> Result<TcString, TcfError> {
    let version = b.read(6)? as u8;
    if version != 2 {
        return Err(TcfError::Version(version));
    }
    Ok(TcString {
        version,
        created: b.read(36)?,
        last_updated: b.read(36)?,
        cmp_id: b.read(12)? as u16,
        cmp_version: b.read(12)? as u16,
        consent_screen: b.read(6)? as u8,
        consent_language: b.letters()?,
        vendor_list_version: b.read(12)? as u16,
        tcf_policy_version: b.read(6)? as u8,
        is_service_specific: b.bool()?,
        use_non_standard_texts: b.bool()?,
        special_feature_opt_ins: b.read(12)? as u16,
        purpose_consents: b.read(24)? as u32,
        purpose_legitimate_interests: b.read(24)? as u32,
        purpose_one_treatment: b.bool()?,
        publisher_cc: b.letters()?,
        vendor_consents: read_vendor_section(b)?,
        vendor_legitimate_interests: read_vendor_section(b)?,
        publisher_restrictions: read_publisher_restrictions(b)?,
        disclosed_vendors: None,
        publisher_tc: None,
    })
}

/// MaxVendorId 16, IsRangeEncoding 1, then a bit field of MaxVendorId bits
/// or NumEntries 12 + range entries.
fn read_vendor_section(b: &mut Bits) -> Result<VendorSet, TcfError> {
    let max_vendor_id = b.read(16)? as u16;
    let ranges = if b.bool()? {
        normalize(read_range_entries(b, Some(max_vendor_id))?)
    } else {
        if usize::from(max_vendor_id) > b.remaining() {
            return Err(TcfError::Truncated {
                at: b.pos,
                needed: u32::from(max_vendor_id),
            });
        }
        let mut ranges: Vec<(u16, u16)> = Vec::new();
        for id in 1..=max_vendor_id {
            if b.bool()? {
                match ranges.last_mut() {
                    Some(last) if last.1 + 1 == id => last.1 = id,
                    _ => ranges.push((id, id)),
                }
            }
        }
        ranges
    };
    Ok(VendorSet {
        max_vendor_id,
        ranges,
    })
}

/// NumEntries 12, then per entry IsARange 1, StartOrOnlyVendorId 16,
/// [EndVendorId 16].
fn read_range_entries(b: &mut Bits, max: Option<u16>) -> Result<Vec<(u16, u16)>, TcfError> {
    let n = b.read(12)? as usize;
    // Each entry takes at least 17 bits: fail before allocating for a lie.
    if n * 17 > b.remaining() {
        return Err(TcfError::Truncated {
            at: b.pos,
            needed: (n * 17) as u32,
        });
    }
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let is_range = b.bool()?;
        let start = b.read(16)? as u16;
        let end = if is_range { b.read(16)? as u16 } else { start };
        check_range(start, end, max)?;
        out.push((start, end));
    }
    Ok(out)
}

/// NumPubRestrictions 12, then per entry PurposeId 6, RestrictionType 2,
/// and a range section.
fn read_publisher_restrictions(b: &mut Bits) -> Result<Vec<PublisherRestriction>, TcfError> {
    let n = b.read(12)? as usize;
    let mut out = Vec::new();
    for _ in 0..n {
        let purpose_id = b.read(6)? as u8;
        let restriction_type = RestrictionType::from_bits(b.read(2)?);
        let ranges = normalize(read_range_entries(b, None)?);
        out.push(PublisherRestriction {
            purpose_id,
            restriction_type,
            vendors: VendorSet {
                max_vendor_id: ranges.last().map_or(0, |r| r.1),
                ranges,
            },
        });
    }
    Ok(out)
}

/// After SegmentType: PubPurposesConsent 24, PubPurposesLITransparency 24,
/// NumCustomPurposes 6, CustomPurposesConsent N, CustomPurposesLITransparency N.
fn read_publisher_tc(b: &mut Bits) -> Result<PublisherTc, TcfError> {
    let purpose_consents = b.read(24)? as u32;
    let purpose_legitimate_interests = b.read(24)? as u32;
    let num_custom_purposes = b.read(6)? as u8;
    let n = u32::from(num_custom_purposes);
    Ok(PublisherTc {
        purpose_consents,
        purpose_legitimate_interests,
        num_custom_purposes,
        custom_purpose_consents: b.read(n)?,
        custom_purpose_legitimate_interests: b.read(n)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    // ---- a test-only encoder, written from the same spec tables ----

    const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

    #[derive(Default)]
    struct BitWriter {
        bits: Vec<bool>,
    }

    impl BitWriter {
        /// Append `v` as `n` big-endian bits (`n` may exceed 64 for runs
        /// of zeros).
        fn put(&mut self, v: u64, n: u32) {
            assert!(n >= 64 || v >> n == 0, "{v} does not fit {n} bits");
            for i in (0..n).rev() {
                self.bits.push(i < 64 && (v >> i) & 1 == 1);
            }
        }
        fn letters(&mut self, s: &str) {
            let b = s.as_bytes();
            assert_eq!(b.len(), 2);
            for &c in b {
                assert!(c.is_ascii_uppercase());
                self.put(u64::from(c - b'A'), 6);
            }
        }
        /// Zero-pad to a multiple of 6 bits and map each group to a
        /// base64url character, as the spec describes (no byte padding).
        fn finish(mut self) -> String {
            while !self.bits.len().is_multiple_of(6) {
                self.bits.push(false);
            }
            self.bits
                .chunks(6)
                .map(|c| {
                    let v = c.iter().fold(0usize, |a, &b| (a << 1) | usize::from(b));
                    char::from(B64[v])
                })
                .collect()
        }
    }

    #[derive(Clone, Copy, Debug)]
    enum Style {
        Bitfield,
        Range,
        /// Whichever is shorter, as the spec asks of encoders.
        Auto,
    }

    fn range_entries(w: &mut BitWriter, ranges: &[(u16, u16)]) {
        w.put(ranges.len() as u64, 12);
        for &(a, b) in ranges {
            w.put(u64::from(a != b), 1);
            w.put(u64::from(a), 16);
            if a != b {
                w.put(u64::from(b), 16);
            }
        }
    }

    fn vendor_section(w: &mut BitWriter, v: &VendorSet, style: Style) {
        let range_bits: usize = 12
            + v.ranges
                .iter()
                .map(|&(a, b)| if a == b { 17 } else { 33 })
                .sum::<usize>();
        let range = match style {
            Style::Bitfield => false,
            Style::Range => true,
            Style::Auto => range_bits < usize::from(v.max_vendor_id),
        };
        w.put(u64::from(v.max_vendor_id), 16);
        w.put(u64::from(range), 1);
        if range {
            range_entries(w, &v.ranges);
        } else {
            for id in 1..=v.max_vendor_id {
                w.put(u64::from(v.contains(id)), 1);
            }
        }
    }

    fn encode_with(tc: &TcString, style: Style) -> String {
        let mut w = BitWriter::default();
        w.put(u64::from(tc.version), 6);
        w.put(tc.created, 36);
        w.put(tc.last_updated, 36);
        w.put(u64::from(tc.cmp_id), 12);
        w.put(u64::from(tc.cmp_version), 12);
        w.put(u64::from(tc.consent_screen), 6);
        w.letters(&tc.consent_language);
        w.put(u64::from(tc.vendor_list_version), 12);
        w.put(u64::from(tc.tcf_policy_version), 6);
        w.put(u64::from(tc.is_service_specific), 1);
        w.put(u64::from(tc.use_non_standard_texts), 1);
        w.put(u64::from(tc.special_feature_opt_ins), 12);
        w.put(u64::from(tc.purpose_consents), 24);
        w.put(u64::from(tc.purpose_legitimate_interests), 24);
        w.put(u64::from(tc.purpose_one_treatment), 1);
        w.letters(&tc.publisher_cc);
        vendor_section(&mut w, &tc.vendor_consents, style);
        vendor_section(&mut w, &tc.vendor_legitimate_interests, style);
        w.put(tc.publisher_restrictions.len() as u64, 12);
        for r in &tc.publisher_restrictions {
            w.put(u64::from(r.purpose_id), 6);
            w.put(u64::from(r.restriction_type.bits()), 2);
            range_entries(&mut w, &r.vendors.ranges);
        }
        let mut out = w.finish();
        if let Some(d) = &tc.disclosed_vendors {
            let mut w = BitWriter::default();
            w.put(1, 3);
            vendor_section(&mut w, d, style);
            out.push('.');
            out.push_str(&w.finish());
        }
        if let Some(p) = &tc.publisher_tc {
            let mut w = BitWriter::default();
            w.put(3, 3);
            w.put(u64::from(p.purpose_consents), 24);
            w.put(u64::from(p.purpose_legitimate_interests), 24);
            w.put(u64::from(p.num_custom_purposes), 6);
            w.put(p.custom_purpose_consents, u32::from(p.num_custom_purposes));
            w.put(
                p.custom_purpose_legitimate_interests,
                u32::from(p.num_custom_purposes),
            );
            out.push('.');
            out.push_str(&w.finish());
        }
        out
    }

    fn encode(tc: &TcString) -> String {
        encode_with(tc, Style::Auto)
    }

    /// 24-bit purpose field with the listed purposes set (purpose 1 = MSB).
    fn purposes(ids: &[u8]) -> u32 {
        ids.iter().fold(0, |a, &p| a | 1 << (24 - p))
    }

    fn base() -> TcString {
        TcString {
            version: 2,
            created: 17_000_000_000,
            last_updated: 17_000_000_100,
            cmp_id: 10,
            cmp_version: 3,
            consent_screen: 1,
            consent_language: "EN".into(),
            vendor_list_version: 150,
            tcf_policy_version: 4,
            is_service_specific: true,
            use_non_standard_texts: false,
            special_feature_opt_ins: 0,
            purpose_consents: purposes(&[1, 7]),
            purpose_legitimate_interests: 0,
            purpose_one_treatment: false,
            publisher_cc: "DE".into(),
            vendor_consents: VendorSet::default(),
            vendor_legitimate_interests: VendorSet::default(),
            publisher_restrictions: vec![],
            disclosed_vendors: None,
            publisher_tc: None,
        }
    }

    fn round_trip(tc: &TcString) {
        for style in [Style::Bitfield, Style::Range, Style::Auto] {
            let s = encode_with(tc, style);
            assert_eq!(TcString::parse(&s).as_ref(), Ok(tc), "{style:?}: {s}");
        }
    }

    // ---- public strings from the IAB specification ----
    //
    // Source: IAB Tech Lab, "Transparency and Consent String with Global
    // Vendor & CMP List Formats" (TCF v2.0, GDPR-Transparency-and-Consent-
    // Framework/TCFv2/IAB Tech Lab - Consent string and vendor list formats
    // v2.md), section "TC String Format". Expected values derived by hand
    // from the field table (6-bit base64url groups, big-endian fields).

    /// The spec's service-specific example: Core + Publisher TC.
    const IAB_SERVICE_SPECIFIC: &str = "CLcVDxRMWfGmWAVAHCENAXCkAKDAADnAABRgA5mdfCKZuYJez-NQm0TBMYA4oCAAGQYIAAAAAAEAIAEgAA.argAC0gAAAAAAAAAAAA";

    #[test]
    fn iab_spec_service_specific_example() {
        // C=000010 -> Version 2. L c V D x R = 001011 011100 010101 000011
        // 110001 010001: Created is the next 36 bits = 12286442577 ds
        // = 2008-12-07T10:04:17.7Z; LastUpdated 13262154134 ds
        // = 2012-01-10T17:10:13.4Z. CmpId 21, CmpVersion 7, ConsentScreen 2,
        // ConsentLanguage E(4) N(13) = "EN", VendorListVersion 23,
        // TcfPolicyVersion 2, IsServiceSpecific 1, UseNonStandardTexts 0,
        // SpecialFeatureOptIns 010000000000 (feature 2),
        // PurposesConsent 101000001100000000000000 (1, 3, 9, 10),
        // PurposesLITransparency 001110011100000000000000 (3, 4, 5, 8, 9, 10),
        // PurposeOneTreatment 0, PublisherCC K(10) M(12) = "KM".
        // Vendor consents: MaxVendorId 115, bit field, 56 vendors set.
        // Vendor LI: MaxVendorId 113, bit field {1,9,26,27,30,36,37,43,86,97,110,113}.
        // NumPubRestrictions 0.
        // Segment 2: a=011010 -> SegmentType 3 (Publisher TC);
        // PubPurposesConsent 010101011100000000000000 (2, 4, 6, 8, 9, 10),
        // PubPurposesLITransparency 010110100100000000000000 (2, 4, 5, 7, 10),
        // NumCustomPurposes 0.
        let tc = TcString::parse(IAB_SERVICE_SPECIFIC).unwrap();
        assert_eq!(tc.version, 2);
        assert_eq!(tc.created, 12_286_442_577);
        assert_eq!(tc.last_updated, 13_262_154_134);
        assert_eq!(tc.cmp_id, 21);
        assert_eq!(tc.cmp_version, 7);
        assert_eq!(tc.consent_screen, 2);
        assert_eq!(tc.consent_language, "EN");
        assert_eq!(tc.vendor_list_version, 23);
        assert_eq!(tc.tcf_policy_version, 2);
        assert!(tc.is_service_specific);
        assert!(!tc.use_non_standard_texts);
        assert_eq!(tc.special_feature_opt_ins, 0b0100_0000_0000);
        assert!(!tc.special_feature(1) && tc.special_feature(2));
        assert_eq!(tc.purpose_consents, purposes(&[1, 3, 9, 10]));
        for p in 1..=24 {
            assert_eq!(tc.purpose_consent(p), [1, 3, 9, 10].contains(&p), "{p}");
        }
        assert_eq!(
            tc.purpose_legitimate_interests,
            purposes(&[3, 4, 5, 8, 9, 10])
        );
        assert!(!tc.purpose_one_treatment);
        assert_eq!(tc.publisher_cc, "KM");
        assert_eq!(tc.vendor_consents.max_vendor_id(), 115);
        let consented: Vec<u16> = tc.vendor_consents.iter().collect();
        assert_eq!(
            consented,
            [
                2, 3, 6, 7, 8, 10, 12, 13, 14, 15, 16, 21, 25, 27, 30, 31, 34, 35, 37, 38, 39, 42,
                43, 49, 52, 54, 55, 56, 57, 59, 60, 63, 64, 65, 66, 67, 68, 69, 73, 74, 76, 78, 83,
                86, 87, 89, 90, 92, 96, 99, 100, 106, 109, 110, 114, 115
            ]
        );
        assert!(tc.vendor_consent(2) && !tc.vendor_consent(1) && !tc.vendor_consent(116));
        assert_eq!(tc.vendor_legitimate_interests.max_vendor_id(), 113);
        assert_eq!(
            tc.vendor_legitimate_interests.iter().collect::<Vec<_>>(),
            [1, 9, 26, 27, 30, 36, 37, 43, 86, 97, 110, 113]
        );
        assert!(tc.publisher_restrictions.is_empty());
        assert_eq!(tc.disclosed_vendors, None);
        let p = tc.publisher_tc.as_ref().unwrap();
        assert_eq!(p.purpose_consents, purposes(&[2, 4, 6, 8, 9, 10]));
        assert_eq!(p.purpose_legitimate_interests, purposes(&[2, 4, 5, 7, 10]));
        assert_eq!(p.num_custom_purposes, 0);
        assert!(p.purpose_consent(2) && !p.purpose_consent(1));
        // Our encoder, fed the decoded model, gives back the same core bits.
        assert_eq!(TcString::parse(&encode_with(&tc, Style::Bitfield)), Ok(tc));
    }

    /// The spec's globally-scoped example with all four segments:
    /// Core . DisclosedVendors . AllowedVendors . PublisherTC. (Its leading
    /// `C` is Version 2, not a v1 string: v1 strings start with `B`.)
    const IAB_GLOBAL_FOUR_SEGMENTS: &str = "COw4XqLOw4XqLAAAAAENAXCAAAAAAAAAAAAAAAAAAAAA.IFukWSQgAIQwgI0QEByFAAAAeIAACAIgSAAQAIAgEQACEABAAAgAQFAEAIAAAGBAAgAAAAQAIFAAMCQAAgAAQiRAEQAAAAANAAIAAggAIYQFAAARmggBC3ZCYzU2yIA.QFukWSQgAIQwgI0QEByFAAAAeIAACAIgSAAQAIAgEQACEABAAAgAQFAEAIAAAGBAAgAAAAQAIFAAMCQAAgAAQiRAEQAAAAANAAIAAggAIYQFAAARmggBC3ZCYzU2yIA.YAAAAAAAAAAAAAAAAAA";

    #[test]
    fn iab_spec_global_four_segment_example() {
        // Core: Version 2; Created = LastUpdated = 15852468875 ds
        // = 2020-03-26T18:21:27.5Z; CmpId 0, CmpVersion 0, ConsentScreen 0,
        // "EN", VendorListVersion 23, TcfPolicyVersion 2, global (0),
        // no special features, no purposes, PublisherCC "AA",
        // both vendor sections MaxVendorId 0, NumPubRestrictions 0.
        // Segment I=001000 -> type 1 Disclosed Vendors: MaxVendorId 733,
        // bit field (2, 6, 8, 9, 12, ..., 729, 733). Segment Q=010000 ->
        // type 2 Allowed Vendors: skipped. Segment Y=011000 -> type 3
        // Publisher TC, all zero.
        let tc = TcString::parse(IAB_GLOBAL_FOUR_SEGMENTS).unwrap();
        assert_eq!(tc.created, 15_852_468_875);
        assert_eq!(tc.last_updated, 15_852_468_875);
        assert_eq!((tc.cmp_id, tc.cmp_version, tc.consent_screen), (0, 0, 0));
        assert_eq!(tc.consent_language, "EN");
        assert_eq!(tc.vendor_list_version, 23);
        assert_eq!(tc.tcf_policy_version, 2);
        assert!(!tc.is_service_specific);
        assert_eq!(tc.purpose_consents, 0);
        assert!((1..=24).all(|p| !tc.purpose_consent(p)));
        assert_eq!(tc.publisher_cc, "AA");
        assert!(tc.vendor_consents.is_empty());
        assert_eq!(tc.vendor_consents.max_vendor_id(), 0);
        let d = tc.disclosed_vendors.as_ref().unwrap();
        assert_eq!(d.max_vendor_id(), 733);
        assert_eq!(d.len(), 115);
        assert_eq!(d.iter().take(6).collect::<Vec<_>>(), [2, 6, 8, 9, 12, 15]);
        assert!(d.contains(733) && d.contains(729) && !d.contains(732));
        assert_eq!(tc.publisher_tc, Some(PublisherTc::default()));
    }

    /// The spec's OOB "Example 1/2": Core + DisclosedVendors.
    const IAB_OOB_CORE_DISCLOSED: &str = "COvFyGBOvFyGBAbAAAENAPCAAOAAAAAAAAAAAEEUACCKAAA.IFoEUQQgAIQwgIwQABAEAAAAOIAACAIAAAAQAIAgEAACEAAAAAgAQBAAAAAAAGBAAgAAAAAAAFAAECAAAgAAQARAEQAAAAAJAAIAAgAAAYQEAAAQmAgBC3ZAYzUw";

    #[test]
    fn iab_spec_oob_examples() {
        // Core (47 characters): Created = LastUpdated = 15822430593 ds
        // = 2020-02-20T23:57:39.3Z; CmpId 27, CmpVersion 0, "EN",
        // VendorListVersion 15, TcfPolicyVersion 2, PurposesConsent
        // 111000000000000000000000 (1, 2, 3), no LI purposes, "AA";
        // vendor consents and LI: MaxVendorId 8, bit field 01000101
        // (2, 6, 8). Disclosed Vendors: MaxVendorId 720, 79 vendors.
        let tc = TcString::parse(IAB_OOB_CORE_DISCLOSED).unwrap();
        assert_eq!(tc.created, 15_822_430_593);
        assert_eq!(tc.cmp_id, 27);
        assert_eq!(tc.vendor_list_version, 15);
        assert_eq!(tc.purpose_consents, purposes(&[1, 2, 3]));
        assert!(tc.purpose_consent(3) && !tc.purpose_consent(4));
        assert_eq!(tc.vendor_consents.iter().collect::<Vec<_>>(), [2, 6, 8]);
        assert_eq!(
            tc.vendor_legitimate_interests.iter().collect::<Vec<_>>(),
            [2, 6, 8]
        );
        let d = tc.disclosed_vendors.unwrap();
        assert_eq!((d.max_vendor_id(), d.len()), (720, 79));

        // The core alone (the spec's "segment removed" form).
        let core = IAB_OOB_CORE_DISCLOSED.split('.').next().unwrap();
        assert_eq!(TcString::parse(core).unwrap().disclosed_vendors, None);

        // The spec's "Example 3" appends `.PVAfDObdrA`: P=001111 makes it a
        // second Disclosed Vendors segment (type 1), and its range entries
        // run past the 60 bits it has. A repeated, truncated segment: Err.
        let ex3 = format!("{IAB_OOB_CORE_DISCLOSED}.PVAfDObdrA");
        assert!(TcString::parse(&ex3).is_err());
        let data = decode_segment("PVAfDObdrA", 1).unwrap();
        let mut b = Bits::new(&data);
        assert_eq!(b.read(3), Ok(1));
        assert!(matches!(
            read_vendor_section(&mut b),
            Err(TcfError::Truncated { .. })
        ));
    }

    /// The spec's Example 3 string with an AllowedVendors segment.
    const IAB_OOB_ALLOWED: &str = "CGL23UdMFJzvuA9ACCENAXCEAC0AAGrAAA5YA5ht7-_d_7_vd-f-nrf4_4A4hM4JCKoK4YhmAqABgAEgAA.IFut_a83_Ma_t-_SvB3v4-IAeIAACAIgSAAQAIAgEQACEABAAAgAQFAEAIAAAGBAAgAAAAQAIFAAMCQAAgAAQiRAEQAAAAANAAIAAggAIYQFAAARmggBC3ZCYzU2yIA.QFulWfTw4obx_Z2zUj6XkNIAeIAACAIgSAAQAIAgEQACEABAAAgAQFAEAIAAAGBAAgAAAAQAIFAAMCQAAgAAQiRAEQAAAAANAAIAAggAIYQFAAARmggBC3ZCYzU2yIA";

    #[test]
    fn iab_spec_allowed_vendors_example() {
        // CmpId 61, CmpVersion 2, ConsentScreen 2, "EN", VendorListVersion
        // 23, SpecialFeatureOptIns feature 2, PurposesConsent
        // 001011010000000000000000 (3, 5, 6, 8), PurposesLITransparency
        // (2, 3, 5, 7, 9, 10), PublisherCC "HL", vendor consents MaxVendorId
        // 115 (bit field), Disclosed Vendors MaxVendorId 733; the Allowed
        // Vendors segment is skipped.
        let tc = TcString::parse(IAB_OOB_ALLOWED).unwrap();
        assert_eq!((tc.cmp_id, tc.cmp_version, tc.consent_screen), (61, 2, 2));
        assert_eq!(tc.vendor_list_version, 23);
        assert!(tc.special_feature(2) && !tc.special_feature(1));
        assert_eq!(tc.purpose_consents, purposes(&[3, 5, 6, 8]));
        assert_eq!(
            tc.purpose_legitimate_interests,
            purposes(&[2, 3, 5, 7, 9, 10])
        );
        assert_eq!(tc.publisher_cc, "HL");
        assert_eq!(tc.vendor_consents.max_vendor_id(), 115);
        assert!(tc.vendor_consent(4) && !tc.vendor_consent(6) && tc.vendor_consent(115));
        assert_eq!(tc.disclosed_vendors.unwrap().max_vendor_id(), 733);
        assert_eq!(tc.publisher_tc, None);
    }

    /// A fixed vector with every feature this decoder reads, produced by an
    /// independent encoder (a throwaway Python script written from the spec
    /// table, not from this file): range-encoded vendor consents, a bit
    /// field for LI, two publisher restrictions, a range-encoded Disclosed
    /// Vendors segment of 17 characters (1 mod 4: no whole bytes), an
    /// Allowed Vendors segment, and a Publisher TC with 3 custom purposes.
    const FIXED_V22: &str = "CP1R2oAP1R2pkEsAFBFRCWEsAPLAAEJAAAYgF5wAwABQAGAAgBeYAFOBACHAAgAEQBkAGYJABAXm.IGQQAoAAgAVAvMDIA.QACvg.dAAACAAAAdQ";

    #[test]
    fn fixed_vector_with_ranges_restrictions_and_segments() {
        // Created 17000000000 ds = 2023-11-14T22:13:20Z, LastUpdated +10 s;
        // CmpId 300, CmpVersion 5, screen 1, "FR", VLV 150, policy 4
        // (TCF 2.2), service-specific; special features 1, 2; purposes
        // 1, 2, 3, 4, 7, 9, 10; LI 2, 7, 10; PublisherCC "DE".
        let tc = TcString::parse(FIXED_V22).unwrap();
        let expected = TcString {
            version: 2,
            created: 17_000_000_000,
            last_updated: 17_000_000_100,
            cmp_id: 300,
            cmp_version: 5,
            consent_screen: 1,
            consent_language: "FR".into(),
            vendor_list_version: 150,
            tcf_policy_version: 4,
            is_service_specific: true,
            use_non_standard_texts: false,
            special_feature_opt_ins: 0b1100_0000_0000,
            purpose_consents: purposes(&[1, 2, 3, 4, 7, 9, 10]),
            purpose_legitimate_interests: purposes(&[2, 7, 10]),
            purpose_one_treatment: false,
            publisher_cc: "DE".into(),
            vendor_consents: VendorSet::from_ranges(755, [(2, 2), (6, 8), (755, 755)]).unwrap(),
            vendor_legitimate_interests: VendorSet::from_ranges(10, [(1, 3), (10, 10)]).unwrap(),
            publisher_restrictions: vec![
                PublisherRestriction {
                    purpose_id: 7,
                    restriction_type: RestrictionType::NotAllowed,
                    vendors: VendorSet::from_ids([8, 100, 101, 102]),
                },
                PublisherRestriction {
                    purpose_id: 2,
                    restriction_type: RestrictionType::RequireConsent,
                    vendors: VendorSet::from_ids([755]),
                },
            ],
            disclosed_vendors: Some(VendorSet::from_ranges(800, [(1, 10), (755, 800)]).unwrap()),
            publisher_tc: Some(PublisherTc {
                purpose_consents: purposes(&[1, 3]),
                purpose_legitimate_interests: purposes(&[2]),
                num_custom_purposes: 3,
                custom_purpose_consents: 0b101,
                custom_purpose_legitimate_interests: 0b010,
            }),
        };
        assert_eq!(tc, expected);
        assert!(tc.vendor_consent(755) && tc.vendor_consent(7) && !tc.vendor_consent(9));
        assert_eq!(tc.restriction(7, 101), Some(RestrictionType::NotAllowed));
        assert_eq!(
            tc.restriction(2, 755),
            Some(RestrictionType::RequireConsent)
        );
        assert_eq!(tc.restriction(7, 755), None);
        let p = tc.publisher_tc.as_ref().unwrap();
        assert!(p.custom_purpose_consent(1) && !p.custom_purpose_consent(2));
        assert!(p.custom_purpose_consent(3) && !p.custom_purpose_consent(4));
        assert!(p.custom_purpose_legitimate_interest(2));
        // Our encoder agrees with the independent one, bit for bit, on the
        // core and the Publisher TC segment (Allowed Vendors is not kept).
        let ours = encode_with(&tc, Style::Range);
        let theirs: Vec<&str> = FIXED_V22.split('.').collect();
        let ours: Vec<&str> = ours.split('.').collect();
        assert_eq!(ours[1], theirs[1]);
        assert_eq!(ours[2], theirs[3]);
        round_trip(&tc);
    }

    // ---- strings written by the IAB's own encoder ----

    /// Every fixture of tests/tcf/fixtures.json (written by
    /// `@iabtechlabtcf/core`, see tests/tcf/encode.mjs) decodes to exactly
    /// what that library decodes from it: an encoder and decoder
    /// independent of this file.
    #[test]
    fn iab_library_fixtures_decode_as_the_library_reads_them() {
        let all: serde_json::Value =
            serde_json::from_str(include_str!("../../tests/tcf/fixtures.json")).unwrap();
        let ids = |v: &serde_json::Value| -> Vec<u64> {
            v.as_array()
                .unwrap()
                .iter()
                .map(|n| n.as_u64().unwrap())
                .collect()
        };
        let bits = |field: u64, width: u8| -> Vec<u64> {
            (1..=width)
                .filter(|&i| flag(field, width, i))
                .map(u64::from)
                .collect()
        };
        let set = |v: &VendorSet| -> Vec<u64> { v.iter().map(u64::from).collect() };
        let names: Vec<&String> = all.as_object().unwrap().keys().collect();
        assert_eq!(
            names,
            [
                "issue_example",
                "li_ranges",
                "not_allowed",
                "require_consent",
                "require_li"
            ]
        );
        for (name, f) in all.as_object().unwrap() {
            let s = f["tc_string"].as_str().unwrap();
            let e = &f["expected"];
            let tc = TcString::parse(s).unwrap_or_else(|err| panic!("{name}: {err}"));
            let ctx = format!("{name}: {s}");
            assert_eq!(u64::from(tc.version), e["version"], "{ctx}");
            assert_eq!(tc.created, e["created"], "{ctx}");
            assert_eq!(tc.last_updated, e["last_updated"], "{ctx}");
            assert_eq!(u64::from(tc.cmp_id), e["cmp_id"], "{ctx}");
            assert_eq!(u64::from(tc.cmp_version), e["cmp_version"], "{ctx}");
            assert_eq!(u64::from(tc.consent_screen), e["consent_screen"], "{ctx}");
            assert_eq!(tc.consent_language, e["consent_language"], "{ctx}");
            assert_eq!(
                u64::from(tc.vendor_list_version),
                e["vendor_list_version"],
                "{ctx}"
            );
            assert_eq!(
                u64::from(tc.tcf_policy_version),
                e["tcf_policy_version"],
                "{ctx}"
            );
            assert_eq!(tc.is_service_specific, e["is_service_specific"], "{ctx}");
            assert_eq!(
                tc.purpose_one_treatment, e["purpose_one_treatment"],
                "{ctx}"
            );
            assert_eq!(tc.publisher_cc, e["publisher_cc"], "{ctx}");
            assert_eq!(
                bits(tc.purpose_consents.into(), 24),
                ids(&e["purpose_consents"]),
                "{ctx}"
            );
            assert_eq!(
                bits(tc.purpose_legitimate_interests.into(), 24),
                ids(&e["purpose_legitimate_interests"]),
                "{ctx}"
            );
            assert_eq!(
                set(&tc.vendor_consents),
                ids(&e["vendor_consents"]),
                "{ctx}"
            );
            assert_eq!(
                set(&tc.vendor_legitimate_interests),
                ids(&e["vendor_legitimate_interests"]),
                "{ctx}"
            );
            let mut restrictions: Vec<(u64, u64, Vec<u64>)> = tc
                .publisher_restrictions
                .iter()
                .map(|r| {
                    (
                        u64::from(r.purpose_id),
                        u64::from(r.restriction_type.bits()),
                        set(&r.vendors),
                    )
                })
                .collect();
            restrictions.sort();
            let expected: Vec<(u64, u64, Vec<u64>)> = e["publisher_restrictions"]
                .as_array()
                .unwrap()
                .iter()
                .map(|r| {
                    (
                        r["purpose_id"].as_u64().unwrap(),
                        r["restriction_type"].as_u64().unwrap(),
                        ids(&r["vendors"]),
                    )
                })
                .collect();
            assert_eq!(restrictions, expected, "{ctx}");
            assert_eq!(
                tc.disclosed_vendors.as_ref().map(set).unwrap_or_default(),
                ids(&e["disclosed_vendors"]),
                "{ctx}"
            );
            let (pc, pli) = tc.publisher_tc.as_ref().map_or((0, 0), |p| {
                (p.purpose_consents, p.purpose_legitimate_interests)
            });
            assert_eq!(
                bits(pc.into(), 24),
                ids(&e["publisher_purpose_consents"]),
                "{ctx}"
            );
            assert_eq!(
                bits(pli.into(), 24),
                ids(&e["publisher_purpose_legitimate_interests"]),
                "{ctx}"
            );
        }
        // The string, field by field as the issue states it.
        let tc = TcString::parse(all["issue_example"]["tc_string"].as_str().unwrap()).unwrap();
        assert_eq!(tc.restriction(1, 8), Some(RestrictionType::NotAllowed));
        assert_eq!(tc.restriction(1, 9), Some(RestrictionType::NotAllowed));
        assert_eq!(tc.restriction(1, 10), None);
        assert_eq!(tc.restriction(2, 8), None);
        // li_ranges: both vendor sections are range-encoded (IsRangeEncoding
        // is the bit after the 213-bit header and the 16-bit MaxVendorId).
        let core = all["li_ranges"]["tc_string"].as_str().unwrap();
        let data = decode_segment(core.split('.').next().unwrap(), 0).unwrap();
        let mut b = Bits::new(&data);
        for n in [64, 64, 64, 21] {
            b.read(n).unwrap();
        }
        assert_eq!(b.read(16), Ok(1126), "MaxVendorId of the consent section");
        assert_eq!(b.read(1), Ok(1), "range encoding");
        let consents = read_range_entries(&mut b, Some(1126)).unwrap();
        assert_eq!(consents, [(2, 2), (1000, 1002), (1126, 1126)]);
        assert_eq!(b.read(16), Ok(1126), "MaxVendorId of the LI section");
        assert_eq!(b.read(1), Ok(1), "range encoding");
    }

    // ---- round trips through the test encoder ----

    #[test]
    fn round_trip_bitfield_and_range_sections() {
        let mut tc = base();
        round_trip(&tc); // empty sets, MaxVendorId 0
        tc.vendor_consents = VendorSet::from_ids([1, 2, 3, 10, 755]);
        tc.vendor_legitimate_interests = VendorSet::from_ranges(900, [(5, 5)]).unwrap();
        round_trip(&tc);
        tc.vendor_consents = VendorSet::from_ranges(65535, [(1, 65535)]).unwrap();
        round_trip(&tc);
        tc.vendor_consents =
            VendorSet::from_ranges(3000, [(7, 7), (100, 2000), (2999, 3000)]).unwrap();
        round_trip(&tc);
        assert!(tc.vendor_consent(1500) && !tc.vendor_consent(2001) && !tc.vendor_consent(0));
        // Bit field with MaxVendorId above the largest member.
        tc.vendor_consents = VendorSet::from_ranges(50, [(3, 4)]).unwrap();
        let s = encode_with(&tc, Style::Bitfield);
        assert_eq!(
            TcString::parse(&s).unwrap().vendor_consents.max_vendor_id(),
            50
        );
    }

    #[test]
    fn round_trip_fields_at_their_widths() {
        let mut tc = base();
        tc.created = (1 << 36) - 1;
        tc.last_updated = 0;
        tc.cmp_id = 4095;
        tc.cmp_version = 4095;
        tc.consent_screen = 63;
        tc.consent_language = "ZZ".into();
        tc.vendor_list_version = 4095;
        tc.tcf_policy_version = 63;
        tc.is_service_specific = false;
        tc.use_non_standard_texts = true;
        tc.special_feature_opt_ins = 0xfff;
        tc.purpose_consents = 0xff_ffff;
        tc.purpose_legitimate_interests = 0x80_0001;
        tc.purpose_one_treatment = true;
        tc.publisher_cc = "AA".into();
        round_trip(&tc);
        assert!((1..=24).all(|p| tc.purpose_consent(p)));
        assert!(!tc.purpose_consent(0) && !tc.purpose_consent(25));
        assert!((1..=12).all(|f| tc.special_feature(f)) && !tc.special_feature(13));
        assert!(tc.purpose_legitimate_interest(1) && tc.purpose_legitimate_interest(24));
        assert!(!tc.purpose_legitimate_interest(2));
    }

    #[test]
    fn round_trip_publisher_restrictions() {
        let mut tc = base();
        tc.publisher_restrictions = vec![
            PublisherRestriction {
                purpose_id: 1,
                restriction_type: RestrictionType::NotAllowed,
                vendors: VendorSet::from_ids([]),
            },
            PublisherRestriction {
                purpose_id: 63,
                restriction_type: RestrictionType::Undefined,
                vendors: VendorSet::from_ranges(700, [(1, 1), (600, 700)]).unwrap(),
            },
            PublisherRestriction {
                purpose_id: 4,
                restriction_type: RestrictionType::RequireLegitimateInterest,
                vendors: VendorSet::from_ids([65535]),
            },
        ];
        round_trip(&tc);
        assert_eq!(tc.restriction(63, 650), Some(RestrictionType::Undefined));
        assert_eq!(
            tc.restriction(4, 65535),
            Some(RestrictionType::RequireLegitimateInterest)
        );
        assert_eq!(tc.restriction(1, 1), None);
    }

    #[test]
    fn round_trip_disclosed_vendors_and_publisher_tc() {
        let mut tc = base();
        tc.disclosed_vendors = Some(VendorSet::from_ids([1, 2, 3, 4, 5, 99, 1000]));
        round_trip(&tc);
        tc.publisher_tc = Some(PublisherTc {
            purpose_consents: purposes(&[1, 24]),
            purpose_legitimate_interests: purposes(&[2]),
            num_custom_purposes: 63,
            custom_purpose_consents: (1 << 63) - 1,
            custom_purpose_legitimate_interests: 1,
        });
        round_trip(&tc);
        let p = tc.publisher_tc.as_ref().unwrap();
        assert!(p.custom_purpose_consent(63) && !p.custom_purpose_consent(64));
        assert!(
            p.custom_purpose_legitimate_interest(63) && !p.custom_purpose_legitimate_interest(62)
        );
        tc.disclosed_vendors = None;
        round_trip(&tc);
        // Segment order is free: Publisher TC before Disclosed Vendors.
        tc.disclosed_vendors = Some(VendorSet::from_ids([7]));
        let s = encode(&tc);
        let parts: Vec<&str> = s.split('.').collect();
        let swapped = format!("{}.{}.{}", parts[0], parts[2], parts[1]);
        assert_eq!(TcString::parse(&swapped), Ok(tc));
    }

    #[test]
    fn unknown_segments_are_skipped() {
        let mut tc = base();
        tc.vendor_consents = VendorSet::from_ids([5]);
        let s = encode(&tc);
        for t in [2u64, 4, 5, 6, 7] {
            let mut w = BitWriter::default();
            w.put(t, 3);
            w.put(0xabcdef, 24);
            assert_eq!(
                TcString::parse(&format!("{s}.{}", w.finish())).as_ref(),
                Ok(&tc)
            );
        }
        // A second core (type 0) or a repeated known segment is rejected.
        let mut w = BitWriter::default();
        w.put(0, 3);
        w.put(0, 30);
        assert_eq!(
            TcString::parse(&format!("{s}.{}", w.finish())),
            Err(TcfError::Segment(0))
        );
        tc.disclosed_vendors = Some(VendorSet::from_ids([1]));
        let s = encode(&tc);
        let dv = s.split('.').nth(1).unwrap();
        assert_eq!(
            TcString::parse(&format!("{s}.{dv}")),
            Err(TcfError::Segment(1))
        );
        // A repeated publisher TC segment too.
        let mut tc = base();
        tc.publisher_tc = Some(PublisherTc {
            purpose_consents: purposes(&[1]),
            ..PublisherTc::default()
        });
        let s = encode(&tc);
        let pub_tc = s.split('.').nth(1).unwrap();
        assert_eq!(
            TcString::parse(&format!("{s}.{pub_tc}")),
            Err(TcfError::Segment(3))
        );
    }

    /// A segment that is not base64url is named by its place: the core is
    /// 0, the first segment after it 1.
    #[test]
    fn a_bad_segment_is_named_by_its_place() {
        let s = encode(&base());
        assert_eq!(
            TcString::parse("CP!c"),
            Err(TcfError::Base64 { segment: 0 })
        );
        assert_eq!(
            TcString::parse(&format!("{s}.!!!!")),
            Err(TcfError::Base64 { segment: 1 })
        );
        let mut w = BitWriter::default();
        w.put(5, 3);
        w.put(0, 21);
        assert_eq!(
            TcString::parse(&format!("{s}.{}.!!!!", w.finish())),
            Err(TcfError::Base64 { segment: 2 })
        );
    }

    /// The 6-bit groups of one segment, zero-padded to whole bytes (what an
    /// encoder working in bytes, like @iabtcf/core, would produce).
    fn to_bytes(seg: &str) -> Vec<u8> {
        let mut bits: Vec<bool> = seg
            .bytes()
            .flat_map(|c| {
                let v = B64.iter().position(|&b| b == c).unwrap();
                (0..6).rev().map(move |i| (v >> i) & 1 == 1)
            })
            .collect();
        while !bits.len().is_multiple_of(8) {
            bits.push(false);
        }
        bits.chunks(8)
            .map(|c| c.iter().fold(0u8, |a, &b| (a << 1) | u8::from(b)))
            .collect()
    }

    #[test]
    fn padding_and_byte_aligned_encodings_are_accepted() {
        let mut saw_padding = false;
        for n in 0..6u16 {
            let mut tc = base();
            tc.vendor_consents = VendorSet::from_ids((1..=n).map(|i| i * 3));
            tc.disclosed_vendors = Some(VendorSet::from_ids([2, 40 + n]));
            let s = encode(&tc);
            for engine in [URL_SAFE_NO_PAD, base64::engine::general_purpose::URL_SAFE] {
                let segs: Vec<String> = s
                    .split('.')
                    .map(|seg| engine.encode(to_bytes(seg)))
                    .collect();
                saw_padding |= segs.iter().any(|p| p.ends_with('='));
                assert_eq!(
                    TcString::parse(&segs.join(".")).as_ref(),
                    Ok(&tc),
                    "{segs:?}"
                );
            }
            assert_eq!(TcString::parse(&format!("  {s}\n")).as_ref(), Ok(&tc));
        }
        assert!(saw_padding);
    }

    // ---- rejections ----

    #[test]
    fn truncated_strings_are_errors() {
        // Every prefix that stops inside the fixed 213-bit header (36
        // characters) or the first vendor section header is an error.
        for s in [IAB_SERVICE_SPECIFIC, FIXED_V22, IAB_OOB_CORE_DISCLOSED] {
            for n in 1..=38 {
                assert!(TcString::parse(&s[..n]).is_err(), "{}", &s[..n]);
            }
        }
        // Cut in the middle of the IAB example's vendor bit field.
        assert!(matches!(
            TcString::parse(&IAB_SERVICE_SPECIFIC[..50]),
            Err(TcfError::Truncated { .. })
        ));
        // Cut in the middle of the range entries of the fixed vector.
        let core = FIXED_V22.split('.').next().unwrap();
        assert!(TcString::parse(&core[..45]).is_err());
        // Publisher TC promising 63 custom purposes it does not carry.
        let mut w = BitWriter::default();
        w.put(3, 3);
        w.put(0, 48);
        w.put(63, 6);
        w.put(0, 20);
        let s = format!("{}.{}", encode(&base()), w.finish());
        assert!(matches!(
            TcString::parse(&s),
            Err(TcfError::Truncated { .. })
        ));
    }

    #[test]
    fn garbage_and_other_versions_are_errors() {
        for s in [
            "",
            "   ",
            ".",
            "C.",
            "..",
            "not a tc string",
            "CPc!@#$",
            "CO+/AAAA",
            "C=A",
            "%7B%22analytics%22%3Atrue%7D",
            "{\"tcString\":\"CP\"}",
            "C",
            "CA",
            "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
            "________________________________________________________",
        ] {
            assert!(TcString::parse(s).is_err(), "{s:?}");
        }
        // The widely used TCF v1.1 example string (`B` = version 1).
        assert_eq!(
            TcString::parse("BOEFEAyOEFEAyAHABDENAI4AAAB9vABAASA"),
            Err(TcfError::Version(1))
        );
        let mut tc = base();
        tc.version = 3;
        assert_eq!(TcString::parse(&encode(&tc)), Err(TcfError::Version(3)));
    }

    #[test]
    fn bad_ranges_and_letters_are_errors() {
        /// A core segment with a hand-written, unchecked range section.
        fn with_consent_ranges(max: u16, entries: &[(u16, u16)]) -> String {
            let mut w = BitWriter::default();
            w.put(2, 6);
            w.put(0, 36 + 36 + 12 + 12 + 6);
            w.letters("EN");
            w.put(0, 12 + 6 + 1 + 1 + 12 + 24 + 24 + 1);
            w.letters("DE");
            w.put(u64::from(max), 16);
            w.put(1, 1);
            w.put(entries.len() as u64, 12);
            for &(a, b) in entries {
                w.put(1, 1);
                w.put(u64::from(a), 16);
                w.put(u64::from(b), 16);
            }
            w.put(0, 16 + 1 + 12);
            w.finish()
        }
        assert!(TcString::parse(&with_consent_ranges(10, &[(2, 5)])).is_ok());
        assert_eq!(
            TcString::parse(&with_consent_ranges(10, &[(5, 2)])),
            Err(TcfError::BadRange { start: 5, end: 2 })
        );
        assert_eq!(
            TcString::parse(&with_consent_ranges(10, &[(0, 2)])),
            Err(TcfError::VendorIdZero)
        );
        assert_eq!(
            TcString::parse(&with_consent_ranges(10, &[(2, 11)])),
            Err(TcfError::AboveMax { id: 11, max: 10 })
        );
        assert_eq!(
            TcString::parse(&with_consent_ranges(0, &[(1, 1)])),
            Err(TcfError::AboveMax { id: 1, max: 0 })
        );
        // Overlapping and unordered entries are accepted and merged.
        let tc = TcString::parse(&with_consent_ranges(20, &[(10, 12), (1, 3), (2, 11)])).unwrap();
        assert_eq!(tc.vendor_consents.ranges(), &[(1, 12)]);

        // ConsentLanguage letter 26 is not A-Z.
        let mut w = BitWriter::default();
        w.put(2, 6);
        w.put(0, 36 + 36 + 12 + 12 + 6);
        w.put(26, 6);
        w.put(0, 200);
        assert_eq!(TcString::parse(&w.finish()), Err(TcfError::Letter(26)));

        assert_eq!(
            VendorSet::from_ranges(5, [(3, 2)]),
            Err(TcfError::BadRange { start: 3, end: 2 })
        );
        assert_eq!(
            VendorSet::from_ranges(5, [(0, 2)]),
            Err(TcfError::VendorIdZero)
        );
        assert_eq!(
            VendorSet::from_ranges(5, [(3, 6)]),
            Err(TcfError::AboveMax { id: 6, max: 5 })
        );
    }

    #[test]
    fn bit_reader() {
        let data = [0b1010_1100, 0xff, 0x00];
        let mut b = Bits::new(&data);
        assert_eq!(b.read(0), Ok(0));
        assert_eq!(b.read(3), Ok(0b101));
        assert_eq!(b.read(9), Ok(0b0_1100_1111));
        assert_eq!(b.remaining(), 12);
        assert_eq!(b.read(12), Ok(0b1111_0000_0000));
        assert_eq!(b.read(1), Err(TcfError::Truncated { at: 24, needed: 1 }));
        let mut b = Bits::new(&[0xff; 9]);
        assert_eq!(b.read(64), Ok(u64::MAX));
        assert!(b.read(65).is_err());
    }

    #[test]
    fn vendor_set_basics() {
        let v = VendorSet::from_ids([9, 3, 4, 5, 0, 9, 1]);
        assert_eq!(v.ranges(), &[(1, 1), (3, 5), (9, 9)]);
        assert_eq!(v.max_vendor_id(), 9);
        assert_eq!(v.len(), 5);
        assert!(!v.contains(0) && v.contains(1) && !v.contains(2) && v.contains(4));
        assert!(!v.contains(10) && !v.contains(u16::MAX));
        let full = VendorSet::from_ranges(u16::MAX, [(1, u16::MAX), (5, 6)]).unwrap();
        assert_eq!(full.len(), 65535);
        assert!(full.contains(u16::MAX) && !full.contains(0));
        assert!(!v.is_empty() && !full.is_empty());
        assert!(VendorSet::from_ids([]).is_empty());
    }

    /// A range section that claims more entries than its bits could hold
    /// (17 bits at least each) is refused before reading them, saying how
    /// many bits the claim needs.
    #[test]
    fn range_entries_claiming_too_much_are_refused_up_front() {
        // NumEntries = 2 (34 bits at least), then 20 bits.
        let data = [0x00, 0x20, 0x00, 0x00];
        assert_eq!(
            read_range_entries(&mut Bits::new(&data), None),
            Err(TcfError::Truncated { at: 12, needed: 34 })
        );
        // The same 20 bits hold one single-vendor entry.
        let data = [0x00, 0x10, 0x00, 0x08];
        assert_eq!(
            read_range_entries(&mut Bits::new(&data), None),
            Ok(vec![(1, 1)])
        );
    }

    /// The publisher segment's accessors read their own field, purpose 1
    /// the most significant of 24 bits, custom purpose 1 the most
    /// significant of `num_custom_purposes`.
    #[test]
    fn publisher_tc_accessors() {
        let p = PublisherTc {
            purpose_consents: purposes(&[1, 24]),
            purpose_legitimate_interests: purposes(&[2, 7]),
            num_custom_purposes: 3,
            custom_purpose_consents: 0b100,
            custom_purpose_legitimate_interests: 0b011,
        };
        for n in 0..=25u8 {
            assert_eq!(p.purpose_consent(n), n == 1 || n == 24, "consent {n}");
            assert_eq!(p.purpose_legitimate_interest(n), n == 2 || n == 7, "LI {n}");
        }
        for id in 0..=4u8 {
            assert_eq!(p.custom_purpose_consent(id), id == 1, "custom {id}");
            assert_eq!(
                p.custom_purpose_legitimate_interest(id),
                id == 2 || id == 3,
                "custom LI {id}"
            );
        }
    }

    // ---- property tests ----

    fn vendor_set(max_id: u16) -> impl Strategy<Value = VendorSet> {
        (
            prop::collection::vec((1..=max_id, 0u16..40), 0..12),
            0u16..100,
        )
            .prop_map(|(runs, extra)| {
                let ranges: Vec<(u16, u16)> = runs
                    .into_iter()
                    .map(|(a, len)| (a, a.saturating_add(len)))
                    .collect();
                let top = ranges.iter().map(|r| r.1).max().unwrap_or(0);
                VendorSet::from_ranges(top.saturating_add(extra), ranges).unwrap()
            })
    }

    fn letters() -> impl Strategy<Value = String> {
        "[A-Z]{2}"
    }

    prop_compose! {
        fn restriction()(
            purpose_id in 0u8..64,
            t in 0u64..4,
            vendors in vendor_set(u16::MAX),
        ) -> PublisherRestriction {
            PublisherRestriction {
                purpose_id,
                restriction_type: RestrictionType::from_bits(t),
                // No MaxVendorId on the wire: the largest member is the max.
                vendors: VendorSet::from_ranges(
                    vendors.ranges.last().map_or(0, |r| r.1),
                    vendors.ranges,
                )
                .unwrap(),
            }
        }
    }

    prop_compose! {
        fn publisher_tc()(
            pc in 0u32..1 << 24,
            pli in 0u32..1 << 24,
            n in 0u8..64,
            cc in any::<u64>(),
            cli in any::<u64>(),
        ) -> PublisherTc {
            let mask = if n == 0 { 0 } else { u64::MAX >> (64 - u32::from(n)) };
            PublisherTc {
                purpose_consents: pc,
                purpose_legitimate_interests: pli,
                num_custom_purposes: n,
                custom_purpose_consents: cc & mask,
                custom_purpose_legitimate_interests: cli & mask,
            }
        }
    }

    prop_compose! {
        fn tc_string()(
            head in (0u64..1 << 36, 0u64..1 << 36, 0u16..4096, 0u16..4096, 0u8..64, letters(), 0u16..4096, 0u8..64),
            flags in (any::<bool>(), any::<bool>(), 0u16..4096, 0u32..1 << 24, 0u32..1 << 24, any::<bool>(), letters()),
            vc in prop_oneof![4 => vendor_set(1200), 1 => vendor_set(u16::MAX)],
            vli in vendor_set(1200),
            restrictions in prop::collection::vec(restriction(), 0..4),
            disclosed in prop::option::of(vendor_set(3000)),
            ptc in prop::option::of(publisher_tc()),
        ) -> TcString {
            let (created, last_updated, cmp_id, cmp_version, consent_screen, consent_language, vendor_list_version, tcf_policy_version) = head;
            let (is_service_specific, use_non_standard_texts, special_feature_opt_ins, purpose_consents, purpose_legitimate_interests, purpose_one_treatment, publisher_cc) = flags;
            TcString {
                version: 2,
                created,
                last_updated,
                cmp_id,
                cmp_version,
                consent_screen,
                consent_language,
                vendor_list_version,
                tcf_policy_version,
                is_service_specific,
                use_non_standard_texts,
                special_feature_opt_ins,
                purpose_consents,
                purpose_legitimate_interests,
                purpose_one_treatment,
                publisher_cc,
                vendor_consents: vc,
                vendor_legitimate_interests: vli,
                publisher_restrictions: restrictions,
                disclosed_vendors: disclosed,
                publisher_tc: ptc,
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(10_000))]

        /// Any string of base64url characters, dots and '=' never panics.
        #[test]
        fn random_strings_never_panic(s in "[A-Za-z0-9_=.-]{0,300}") {
            let _ = TcString::parse(&s);
        }

        /// Strings that start like a v2 core segment (`C`), with segments,
        /// reach far deeper into the decoder; still no panic.
        #[test]
        fn random_v2_like_strings_never_panic(
            s in "C[A-Za-z0-9_-]{30,200}(\\.[A-Za-z0-9_-]{0,80}){0,4}"
        ) {
            let _ = TcString::parse(&s);
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(1_000))]

        /// Random valid models round-trip through encoder and decoder, in
        /// every vendor-section encoding.
        #[test]
        fn valid_models_round_trip(tc in tc_string()) {
            for style in [Style::Bitfield, Style::Range, Style::Auto] {
                let s = encode_with(&tc, style);
                prop_assert_eq!(TcString::parse(&s), Ok(tc.clone()));
            }
            for id in tc.vendor_consents.iter().take(50) {
                prop_assert!(tc.vendor_consent(id));
            }
        }

        /// Mutations of valid strings (a character replaced, a cut, a
        /// character inserted) give Ok or Err, never a panic.
        #[test]
        fn mutated_valid_strings_never_panic(
            tc in tc_string(),
            pos in any::<prop::sample::Index>(),
            c in prop::sample::select(B64.to_vec()),
            op in 0u8..3,
        ) {
            let s = encode(&tc);
            let i = pos.index(s.len() + 1);
            let mut m = s.into_bytes();
            match op {
                0 if i < m.len() => m[i] = c,
                1 => m.truncate(i),
                _ => m.insert(i, c),
            }
            let _ = TcString::parse(std::str::from_utf8(&m).unwrap());
        }
    }
}
