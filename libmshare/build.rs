//! Gives the C shared library its SONAME (the file is installed as
//! libmshare.so.MAJOR by tools/install-libmshare.sh).

fn main() {
    let major = std::env::var("CARGO_PKG_VERSION_MAJOR").unwrap();
    println!("cargo:rustc-cdylib-link-arg=-Wl,-soname,libmshare.so.{major}");
}
