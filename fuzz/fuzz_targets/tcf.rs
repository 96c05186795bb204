//! The IAB TCF v2.2 TC string decoder on arbitrary text: never panics, and
//! every query on a decoded string answers without panicking.
#![no_main]
use libfuzzer_sys::fuzz_target;
use tagproxy::consent::tcf::TcString;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else { return };
    if let Ok(tc) = TcString::parse(s) {
        for purpose in 0..=25u8 {
            let _ = tc.purpose_consent(purpose);
            let _ = tc.purpose_legitimate_interest(purpose);
            for vendor in [0u16, 1, 8, 9, 755, u16::MAX] {
                let _ = tc.restriction(purpose, vendor);
            }
        }
        for vendor in [0u16, 1, 2, 8, 755, 1000, u16::MAX] {
            let _ = tc.vendor_consent(vendor);
            let _ = tc.vendor_legitimate_interest(vendor);
        }
        for id in 0..=13u8 {
            let _ = tc.special_feature(id);
        }
    }
});
