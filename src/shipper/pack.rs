//! TEMPORARY stub; replaced by the helper's version.
use std::fs::File;
use std::path::Path;
pub struct PackOptions {
    pub level: i32,
    pub threads: u32,
}
pub struct Packed {
    pub raw_bytes: u64,
    pub compressed_bytes: u64,
    pub sha256: [u8; 32],
    pub warnings: Vec<String>,
}
#[derive(Debug)]
pub struct PackError(String);
impl std::fmt::Display for PackError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}
impl PackError {
    pub fn is_no_space(&self) -> bool {
        false
    }
}
pub fn pack_episode(
    _d: &Path,
    _id: &str,
    _out: File,
    _o: &PackOptions,
    _p: &mut dyn FnMut(u64),
) -> Result<(File, Packed), PackError> {
    Err(PackError("stub".into()))
}
