// Dev-only generator of the TC strings tagproxy's TCF tests use, written
// with the IAB Tech Lab's own encoder (@iabtechlabtcf/core), so the fixtures
// do not depend on src/consent/tcf.rs in any way.
//
//   cd tests/tcf && npm ci && npm run build     # rewrites fixtures.json
//
// Each fixture is encoded, then decoded again by the same library; what the
// library decodes is written as `expected`, and the script fails if the
// library dropped any signal asked for (its semantic pre-encoder removes
// signals a vendor could not have under its GVL declarations, so the tiny
// vendor list below declares what each case needs). The issue's example
// string (issue 10, item 6) is decoded the same way, not re-encoded.
//
// Output: one JSON object, fixture name -> { tc_string, about, expected }.

import { GVL, PurposeRestriction, RestrictionType, TCModel, TCString } from '@iabtechlabtcf/core';

const ISSUE_EXAMPLE =
  'COwWHt-OwWHt-DNACOENAXCAANDAAEkAAAAAFpQBQABAAGgAQABIBXgFpAK_ABAK-ACCAAwAIAAk';

// A hand-written vendor list in the GVL v3 shape (only the fields the
// encoder reads). Purposes 1-11 and special purposes 1-3 as in TCF v2.2.
const ids = (n) => Object.fromEntries([...Array(n)].map((_, i) => [i + 1, { id: i + 1, name: `p${i + 1}` }]));
const vendor = (id, purposes, legIntPurposes, flexiblePurposes) => ({
  id,
  name: `vendor ${id}`,
  purposes,
  legIntPurposes,
  flexiblePurposes,
  specialPurposes: [],
  features: [],
  specialFeatures: [],
});
const vendorList = {
  gvlSpecificationVersion: 3,
  vendorListVersion: 150,
  tcfPolicyVersion: 4,
  lastUpdated: '2026-01-01T00:00:00Z',
  purposes: ids(11),
  specialPurposes: ids(3),
  features: ids(3),
  specialFeatures: ids(2),
  stacks: {},
  dataCategories: {},
  vendors: Object.fromEntries(
    [
      vendor(2, [1, 7], [], []),
      vendor(8, [1, 2, 9], [7, 8], [2, 7, 8, 9]),
      vendor(9, [1], [], []),
      vendor(755, [1, 3, 4, 7, 9, 10], [2, 8], [2, 7, 8, 9, 10]),
      ...[1000, 1001, 1002, 1003, 1004, 1005, 1006, 1007, 1008, 1009, 1010].map((id) =>
        vendor(id, [1], [7, 8, 9], []),
      ),
      vendor(1126, [1, 7], [9], []),
    ].map((v) => [v.id, v]),
  ),
};

const created = new Date(Date.UTC(2026, 0, 15, 10, 0, 0));
const updated = new Date(Date.UTC(2026, 0, 15, 10, 30, 0));

function encode({ purposeConsents = [], purposeLI = [], vendorConsents = [], vendorLI = [], restrictions = [] }) {
  const tc = new TCModel(new GVL(structuredClone(vendorList)));
  tc.cmpId = 300;
  tc.cmpVersion = 2;
  tc.consentScreen = 1;
  tc.publisherCountryCode = 'DE';
  tc.isServiceSpecific = true;
  tc.created = created;
  tc.lastUpdated = updated;
  tc.purposeConsents.set(purposeConsents);
  tc.purposeLegitimateInterests.set(purposeLI);
  tc.vendorConsents.set(vendorConsents);
  tc.vendorLegitimateInterests.set(vendorLI);
  for (const [purpose, type, vendors] of restrictions) {
    for (const v of vendors) tc.publisherRestrictions.add(v, new PurposeRestriction(purpose, type));
  }
  const s = TCString.encode(tc);
  const got = describe(s);
  const asked = {
    purpose_consents: purposeConsents,
    purpose_legitimate_interests: purposeLI,
    vendor_consents: vendorConsents,
    vendor_legitimate_interests: vendorLI,
  };
  for (const [k, v] of Object.entries(asked)) {
    if (JSON.stringify([...v].sort((a, b) => a - b)) !== JSON.stringify(got[k])) {
      throw new Error(`the encoder changed ${k}: asked ${v}, got ${got[k]} (${s})`);
    }
  }
  const n = restrictions.reduce((a, r) => a + r[2].length, 0);
  const m = got.publisher_restrictions.reduce((a, r) => a + r.vendors.length, 0);
  if (n !== m) throw new Error(`the encoder dropped restrictions: ${JSON.stringify(got.publisher_restrictions)}`);
  return s;
}

/** What the IAB library reads from a TC string (core segment). */
function describe(s) {
  const tc = TCString.decode(s);
  const list = (v) => {
    const out = [];
    v.forEach((on, id) => on && out.push(id));
    return out;
  };
  const restrictions = tc.publisherRestrictions
    .getRestrictions()
    .map((r) => ({
      purpose_id: r.purposeId,
      restriction_type: r.restrictionType,
      vendors: tc.publisherRestrictions.getVendors(r),
    }))
    .sort((a, b) => a.purpose_id - b.purpose_id || a.restriction_type - b.restriction_type);
  return {
    version: tc.version,
    // Deciseconds since the epoch, as on the wire.
    created: Math.round(tc.created.getTime() / 100),
    last_updated: Math.round(tc.lastUpdated.getTime() / 100),
    cmp_id: tc.cmpId,
    cmp_version: tc.cmpVersion,
    consent_screen: tc.consentScreen,
    consent_language: tc.consentLanguage,
    vendor_list_version: tc.vendorListVersion,
    tcf_policy_version: tc.policyVersion,
    is_service_specific: tc.isServiceSpecific,
    purpose_one_treatment: tc.purposeOneTreatment,
    publisher_cc: tc.publisherCountryCode,
    purpose_consents: list(tc.purposeConsents),
    purpose_legitimate_interests: list(tc.purposeLegitimateInterests),
    vendor_consents: list(tc.vendorConsents),
    vendor_legitimate_interests: list(tc.vendorLegitimateInterests),
    publisher_restrictions: restrictions,
    disclosed_vendors: list(tc.vendorsDisclosed),
    publisher_purpose_consents: list(tc.publisherConsents),
    publisher_purpose_legitimate_interests: list(tc.publisherLegitimateInterests),
  };
}

const { NOT_ALLOWED, REQUIRE_CONSENT, REQUIRE_LI } = RestrictionType;

const cases = {
  not_allowed: {
    about: 'restriction type 0: purpose 7 not allowed for vendor 755, which has consent for it',
    purposeConsents: [1, 2, 7, 8, 9, 10],
    vendorConsents: [8, 755],
    restrictions: [[7, NOT_ALLOWED, [755]]],
  },
  require_consent: {
    about:
      'restriction type 1: vendor 8 must use consent for purpose 7 (it has only LI); vendor 755 must use consent for purpose 2 (no consent for purpose 2)',
    purposeConsents: [1, 7],
    purposeLI: [2, 7, 8],
    vendorConsents: [755],
    vendorLI: [8, 755],
    restrictions: [
      [2, REQUIRE_CONSENT, [755]],
      [7, REQUIRE_CONSENT, [8]],
    ],
  },
  require_li: {
    about:
      'restriction type 2: vendor 755 must use LI for purpose 7 (it has consent and LI); vendor 8 must use LI for purpose 9 (no purpose LI for 9)',
    purposeConsents: [2, 7, 9],
    purposeLI: [2, 7],
    vendorConsents: [8, 755],
    vendorLI: [755],
    restrictions: [
      [7, REQUIRE_LI, [755]],
      [9, REQUIRE_LI, [8]],
    ],
  },
  li_ranges: {
    about:
      'no restrictions; consent for purpose 1 only, LI for purposes 2, 7-10; range-encoded vendor sections (ids up to 1126)',
    purposeConsents: [1],
    purposeLI: [2, 7, 8, 9, 10],
    vendorConsents: [2, 1000, 1001, 1002, 1126],
    vendorLI: [1003, 1004, 1005, 1006, 1007, 1008, 1126],
  },
};

const out = {};
for (const [name, c] of Object.entries(cases)) {
  const s = encode(c);
  out[name] = { tc_string: s, about: c.about, expected: describe(s) };
}
out.issue_example = {
  tc_string: ISSUE_EXAMPLE,
  about: 'issue 10, item 6: type-0 restriction on purpose 1 for vendors 8-9',
  expected: describe(ISSUE_EXAMPLE),
};
console.log(JSON.stringify(out, null, 2));
