//! `libcryptsetup-token-atrest-kmip.so`: a libcryptsetup external token plugin (the ABI of
//! cryptsetup 2.4 and later), so that stock `cryptsetup open --token-only` and
//! systemd-cryptsetup unlock atrest volumes without atrest's daemon. For an `atrest-kmip`
//! token it reads the KMIP key's identifier from the token, loads atrest's configuration
//! (`/etc/atrest/atrest.toml`, or `$ATREST_TOKEN_CONFIG`; checked as atrest checks it),
//! fetches the key over KMIP with the same key-state policy as `atrest open` (only an Active
//! key unlocks), and hands cryptsetup the secret as the passphrase of the keyslot the token
//! names. The secret lives in zeroized memory and is wiped when cryptsetup frees it.
//!
//! This is the one crate of atrest that is called from C, so the FFI boundary is here and
//! nowhere else: every entry point checks its pointers, catches panics (unwinding into C is
//! undefined), and returns a negative errno as libcryptsetup expects.

#![allow(unsafe_code)]

use std::ffi::{c_char, c_int, c_void, CStr};
use std::path::PathBuf;

use zeroize::Zeroize;

/// libcryptsetup's opaque device handle.
#[repr(C)]
pub struct CryptDevice {
    _private: [u8; 0],
}

extern "C" {
    /// From libcryptsetup, which has loaded this plugin: the JSON of token `token`.
    fn crypt_token_json_get(cd: *mut CryptDevice, token: c_int, json: *mut *const c_char) -> c_int;
}

const EINVAL: c_int = 22;
const ENOENT: c_int = 2;
const EPERM: c_int = 1;
const EAGAIN: c_int = 11;

const DEFAULT_CONFIG: &str = "/etc/atrest/atrest.toml";

/// What can keep the plugin from giving a secret, with the errno libcryptsetup hears.
#[derive(Debug)]
struct Refused {
    errno: c_int,
    why: String,
}

fn refused(errno: c_int, why: impl ToString) -> Refused {
    Refused {
        errno,
        why: why.to_string(),
    }
}

/// The KMIP key's identifier in an atrest token's JSON.
fn key_uid(json: &str) -> Result<String, Refused> {
    let v: serde_json::Value =
        serde_json::from_str(json).map_err(|e| refused(EINVAL, format!("token JSON: {e}")))?;
    if v["type"] != "atrest-kmip" {
        return Err(refused(EINVAL, "not an atrest-kmip token"));
    }
    if v["key_mode"] != "wrapped" {
        return Err(refused(
            EINVAL,
            "a direct-mode volume has no keyslot for a token to open (its KMIP key is the volume key: use `atrest open`)",
        ));
    }
    match v["key_uid"].as_str() {
        Some(uid) if !uid.is_empty() && uid.len() <= 1024 && !uid.chars().any(char::is_control) => {
            Ok(uid.to_owned())
        }
        _ => Err(refused(EINVAL, "the token names no usable key identifier")),
    }
}

/// The secret for the token with JSON `json`, fetched over KMIP.
fn fetch(json: &str) -> Result<zeroize::Zeroizing<Vec<u8>>, Refused> {
    let uid = key_uid(json)?;
    let path = std::env::var_os("ATREST_TOKEN_CONFIG")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(DEFAULT_CONFIG));
    let config = service::config::Config::load(&path)
        .map_err(|e| refused(ENOENT, format!("{}: {e}", path.display())))?;
    let mut kms =
        service::keys::KeyManager::new(config).map_err(|e| refused(EINVAL, e.to_string()))?;
    kms.fetch_usable(&uid).map_err(|e| {
        // A server that does not answer is worth a retry; anything else is a refusal.
        let errno = if e.to_string().contains("no KMIP server answered") {
            EAGAIN
        } else {
            EPERM
        };
        refused(errno, e)
    })
}

/// Runs `f`, turning a panic into -EINVAL: unwinding into libcryptsetup is undefined.
fn guarded(f: impl FnOnce() -> c_int) -> c_int {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).unwrap_or(-EINVAL)
}

/// libcryptsetup's `crypt_token_open_func`: on success `*buffer` holds the passphrase of
/// the keyslot the token names, `*buffer_len` its length, freed by
/// [`cryptsetup_token_buffer_free`].
///
/// # Safety
/// `cd` is libcryptsetup's device, `buffer` and `buffer_len` valid for writing.
#[no_mangle]
pub unsafe extern "C" fn cryptsetup_token_open(
    cd: *mut CryptDevice,
    token: c_int,
    buffer: *mut *mut c_char,
    buffer_len: *mut usize,
    _usrptr: *mut c_void,
) -> c_int {
    guarded(|| {
        if cd.is_null() || buffer.is_null() || buffer_len.is_null() {
            return -EINVAL;
        }
        let mut json: *const c_char = std::ptr::null();
        // SAFETY: cd comes from libcryptsetup, json is a valid out-pointer; libcryptsetup
        // keeps the string alive while the device is.
        let r = unsafe { crypt_token_json_get(cd, token, &mut json) };
        if r < 0 || json.is_null() {
            return if r < 0 { r } else { -EINVAL };
        }
        // SAFETY: a NUL-terminated string owned by libcryptsetup (checked non-null).
        let Ok(json) = unsafe { CStr::from_ptr(json) }.to_str() else {
            return -EINVAL;
        };
        match fetch(json) {
            Ok(secret) => {
                // A copy of exactly its length (`into_boxed_slice` could reallocate and
                // leave the bytes behind unwiped); `secret` is wiped when it drops.
                let boxed: Box<[u8]> = Box::from(&secret[..]);
                let len = boxed.len();
                // SAFETY: both out-pointers were checked non-null; ownership of the
                // allocation passes to libcryptsetup until it calls buffer_free.
                unsafe {
                    *buffer_len = len;
                    *buffer = Box::into_raw(boxed).cast::<c_char>();
                }
                0
            }
            Err(e) => {
                eprintln!("atrest token: {}", e.why);
                -e.errno
            }
        }
    })
}

/// libcryptsetup's `crypt_token_buffer_free_func`: wipes and frees a buffer from
/// [`cryptsetup_token_open`].
///
/// # Safety
/// `buffer` and `buffer_len` are exactly what `cryptsetup_token_open` returned.
#[no_mangle]
pub unsafe extern "C" fn cryptsetup_token_buffer_free(buffer: *mut c_void, buffer_len: usize) {
    let _ = guarded(|| {
        if !buffer.is_null() {
            // SAFETY: the allocation was made by cryptsetup_token_open as a boxed slice of
            // exactly buffer_len bytes.
            let mut b: Box<[u8]> = unsafe {
                Box::from_raw(std::ptr::slice_from_raw_parts_mut(
                    buffer.cast::<u8>(),
                    buffer_len,
                ))
            };
            b.zeroize();
        }
        0
    });
}

/// libcryptsetup's `crypt_token_validate_func`: 0 when `json` is an atrest token this
/// plugin can use (`cryptsetup token import` asks).
///
/// # Safety
/// `json` is a NUL-terminated string.
#[no_mangle]
pub unsafe extern "C" fn cryptsetup_token_validate(
    _cd: *mut CryptDevice,
    json: *const c_char,
) -> c_int {
    guarded(|| {
        if json.is_null() {
            return -EINVAL;
        }
        // SAFETY: checked non-null; NUL-terminated per the ABI.
        match unsafe { CStr::from_ptr(json) }.to_str().map(key_uid) {
            Ok(Ok(_)) => 0,
            _ => -EINVAL,
        }
    })
}

/// libcryptsetup's `crypt_token_version_func`.
#[no_mangle]
pub extern "C" fn cryptsetup_token_version() -> *const c_char {
    concat!("atrest ", env!("CARGO_PKG_VERSION"), "\0")
        .as_ptr()
        .cast()
}

// Each entry point under the symbol version libcryptsetup's dlvsym asks for.
std::arch::global_asm!(
    ".symver cryptsetup_token_open, cryptsetup_token_open@@CRYPTSETUP_TOKEN_1.0",
    ".symver cryptsetup_token_buffer_free, cryptsetup_token_buffer_free@@CRYPTSETUP_TOKEN_1.0",
    ".symver cryptsetup_token_validate, cryptsetup_token_validate@@CRYPTSETUP_TOKEN_1.0",
    ".symver cryptsetup_token_version, cryptsetup_token_version@@CRYPTSETUP_TOKEN_1.0",
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_wrapped_atrest_token_with_a_sane_identifier_is_used() {
        let t = |s: &str| key_uid(s).map_err(|e| e.why);
        assert_eq!(
            t(r#"{"type":"atrest-kmip","keyslots":["1"],"key_uid":"k-1","key_mode":"wrapped"}"#)
                .unwrap(),
            "k-1"
        );
        assert!(t(r#"{"type":"luks2-keyring","key_uid":"k","key_mode":"wrapped"}"#).is_err());
        assert!(
            t(r#"{"type":"atrest-kmip","key_uid":"k","key_mode":"direct"}"#)
                .unwrap_err()
                .contains("direct-mode")
        );
        assert!(
            t(r#"{"type":"atrest-kmip","key_uid":"k\u001b]0;x","key_mode":"wrapped"}"#).is_err()
        );
        assert!(t("not json").is_err());
    }
}
