//! Temporary stand-in until the TC string decoder lands (same API).
pub struct TcString;
impl TcString {
    pub fn parse(_s: &str) -> Result<TcString, ()> {
        Err(())
    }
    pub fn purpose_consent(&self, _p: u8) -> bool {
        false
    }
    pub fn vendor_consent(&self, _v: u16) -> bool {
        false
    }
}
impl std::fmt::Debug for TcString {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TcString")
    }
}
