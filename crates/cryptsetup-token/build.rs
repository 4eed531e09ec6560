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
    // `crypt_token_json_get` comes from libcryptsetup, which loads the plugin; a DT_NEEDED
    // on it resolves the symbol even in a host that loaded libcryptsetup RTLD_LOCAL. By its
    // soname, which the runtime package (libcryptsetup12) has, with no -dev package needed.
    println!("cargo:rustc-cdylib-link-arg=-l:libcryptsetup.so.12");
}
