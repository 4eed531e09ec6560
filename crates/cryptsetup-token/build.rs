//! The plugin's exported functions carry the symbol version libcryptsetup asks for
//! (`CRYPTSETUP_TOKEN_1.0`): the version node comes from `token.map`, and `src/lib.rs`
//! binds each function to it with `.symver`.
fn main() {
    let map = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("token.map");
    println!("cargo:rerun-if-changed={}", map.display());
    println!(
        "cargo:rustc-cdylib-link-arg=-Wl,--version-script={}",
        map.display()
    );
}
