//! The mount the library uses, found once per process.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use libmshare::Mount;

use crate::config::Config;
use crate::once::Race;

/// The mount (`MSHARE_DIR`, else the first msharefs mount), or why there
/// is none; looked up at the first call that needs it.
pub fn get(config: &Config) -> Result<&'static Mount, String> {
    static MOUNT: Race<Result<Mount, String>> = Race::new();
    MOUNT
        .get_or_init(|| {
            Mount::find(config.dir.as_deref()).map_err(|e| format!("no msharefs mount: {e}"))
        })
        .as_ref()
        .map_err(Clone::clone)
}

/// `path` as a C string (a path with a NUL in it becomes empty, which no
/// call accepts).
pub fn c_path(path: &Path) -> CString {
    CString::new(path.as_os_str().as_bytes()).unwrap_or_default()
}
