//! Native accelerator for secureml-audit: the hot path, the lake's columns and the integrity hashing.
//!
//! Every function writes byte for byte (or returns exactly) what its pure-Python path gives, which runs when
//! this module is absent or `SECUREML_AUDIT_NATIVE=0`; tests compare the two.
//!
//! - `Sealer` writes exactly what `secureml.audit.privacy.protect.sealer()` writes in Python:
//!   `<head><base64(nonce12 + AES-256-GCM(JSON text of the value) + tag)>`, the associated data being the field
//!   name, with the key schedule expanded once per subject; `reveal::open_sealed` opens such texts in batches.
//! - `event::EventChain` is a trail's whole envelope and hash chain, byte for byte `codec.seal` of its parts
//!   (and `log_model_inference`'s write path).
//! - `decode::decode_events` decodes sealed Avro events column by column into Arrow (the materializer);
//!   `rows::log_dicts` turns a query's Arrow result into the guide's dicts; `integrity` re-encodes lake rows to
//!   their canonical bytes and hashes Merkle leaves and nodes (verify, checkpoints). Columns cross through
//!   `arrow_ffi` (the Arrow C Data Interface, no copies).

mod arenas;
mod arrow_ffi;
mod decode;
mod event;
mod integrity;
mod reveal;
mod rows;

use std::sync::Mutex;

use aes_gcm::aead::{AeadInPlace, KeyInit};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use pyo3::exceptions::{PyOSError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyString};

pub(crate) const NONCE_LEN: usize = 12;
/// What every stored ciphertext starts with (`protect.ENCRYPTED_PREFIX`; a test pins the two equal): a value that
/// already does is not sealed again.
pub(crate) const ENCRYPTED_PREFIX: &str = "enc:v1:";
/// The interface this build offers (`accelerator.INTERFACE` must equal it): raised whenever a function or method
/// the Python side calls is added or changed, so an older build left installed is not used, rather than failing.
const INTERFACE: u32 = 8;

/// The 96-bit nonce source of one sealer: a random 64-bit part drawn when the sealer is made (fresh
/// in every process) and a 32-bit counter; the random part is drawn again before the counter wraps,
/// so a nonce never repeats under the key within the process (the scheme of `SubjectKey.nonce`).
struct Nonces {
    base: u64,
    counter: u32,
}

impl Nonces {
    fn new() -> PyResult<Self> {
        Ok(Nonces { base: random_u64()?, counter: 0 })
    }

    fn next(&mut self) -> PyResult<[u8; NONCE_LEN]> {
        if self.counter == u32::MAX {
            self.base = random_u64()?;
            self.counter = 0;
        }
        let mut nonce = [0u8; NONCE_LEN];
        nonce[..8].copy_from_slice(&self.base.to_be_bytes());
        nonce[8..].copy_from_slice(&self.counter.to_be_bytes());
        self.counter += 1;
        Ok(nonce)
    }
}

fn random_u64() -> PyResult<u64> {
    let mut bytes = [0u8; 8];
    getrandom::getrandom(&mut bytes)
        .map_err(|err| PyOSError::new_err(format!("secureml_audit_native: no random bytes from the OS: {err}")))?;
    Ok(u64::from_be_bytes(bytes))
}

/// Appends `text` as a JSON string exactly as Python's `json.encoder.encode_basestring` does (the
/// `ensure_ascii=False` form): only `"`, `\` and control characters are escaped, with the short
/// escapes where JSON has them and lowercase `\u00xx` otherwise; everything else is copied as UTF-8.
fn push_json_string(out: &mut Vec<u8>, text: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.push(b'"');
    let bytes = text.as_bytes();
    let mut start = 0;
    for (i, &byte) in bytes.iter().enumerate() {
        let short = match byte {
            b'"' => b'"',
            b'\\' => b'\\',
            b'\n' => b'n',
            b'\r' => b'r',
            b'\t' => b't',
            0x08 => b'b',
            0x0c => b'f',
            0x00..=0x1f => 0,
            _ => continue,
        };
        out.extend_from_slice(&bytes[start..i]);
        if short != 0 {
            out.extend_from_slice(&[b'\\', short]);
        } else {
            out.extend_from_slice(&[b'\\', b'u', b'0', b'0', HEX[(byte >> 4) as usize], HEX[(byte & 0xf) as usize]]);
        }
        start = i + 1;
    }
    out.extend_from_slice(&bytes[start..]);
    out.push(b'"');
}

/// A subject's AES-256-GCM cipher, its key schedule expanded once (sealing and `reveal::open_sealed` share it).
pub(crate) fn cipher(key: &[u8], caller: &str) -> PyResult<Aes256Gcm> {
    Aes256Gcm::new_from_slice(key)
        .map_err(|_| PyValueError::new_err(format!("{caller}: key must be 32 bytes (AES-256), got {}", key.len())))
}

/// Encrypts values of one field under one subject's key: `Sealer(key, head, aad, dumps)`, then
/// `seal(value)`. A `str` is escaped here; any other value is turned into JSON text by `dumps` (the
/// Python encoder the pure path uses, so both paths encrypt the same text).
#[pyclass(frozen, module = "secureml_audit_native")]
struct Sealer {
    cipher: Aes256Gcm,
    head: String,
    aad: Vec<u8>,
    dumps: PyObject,
    nonces: Mutex<Nonces>,
}

#[pymethods]
impl Sealer {
    #[new]
    fn new(key: &[u8], head: String, aad: Vec<u8>, dumps: PyObject) -> PyResult<Self> {
        let cipher = cipher(key, "Sealer")?;
        Ok(Sealer { cipher, head, aad, dumps, nonces: Mutex::new(Nonces::new()?) })
    }

    /// The stored form of `value`: the head, then base64 of nonce + ciphertext + tag.
    fn seal<'py>(&self, py: Python<'py>, value: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyString>> {
        let mut sealed = Vec::with_capacity(64);
        // The nonce's place is reserved first so the ciphertext is built in one buffer, in place.
        sealed.extend_from_slice(&[0u8; NONCE_LEN]);
        if value.is_exact_instance_of::<PyString>() {
            push_json_string(&mut sealed, value.downcast::<PyString>()?.to_str()?);
        } else {
            let text = self.dumps.bind(py).call1((value,))?;
            sealed.extend_from_slice(text.downcast::<PyString>()?.to_str()?.as_bytes());
        }
        let nonce = self.nonces.lock().expect("nonce counter lock poisoned").next()?;
        sealed[..NONCE_LEN].copy_from_slice(&nonce);
        let (_, plain) = sealed.split_at_mut(NONCE_LEN);
        let tag = self
            .cipher
            .encrypt_in_place_detached(Nonce::from_slice(&nonce), &self.aad, plain)
            .map_err(|_| PyValueError::new_err("Sealer.seal: value too long for AES-GCM"))?;
        sealed.extend_from_slice(&tag);
        let mut text = String::with_capacity(self.head.len() + sealed.len().div_ceil(3) * 4);
        text.push_str(&self.head);
        STANDARD.encode_string(&sealed, &mut text);
        Ok(PyString::new(py, &text))
    }

    /// `values[field]` sealed in place when it is a `str` not sealed yet (anything else is left as it is): the
    /// privacy step's work on one encrypted field in one call instead of five Python operations.
    fn seal_field(&self, py: Python<'_>, values: &Bound<'_, PyDict>, field: &Bound<'_, PyString>) -> PyResult<()> {
        if let Some(value) = values.get_item(field)? {
            if let Ok(text) = value.downcast::<PyString>() {
                if !text.to_str()?.starts_with(ENCRYPTED_PREFIX) {
                    values.set_item(field, self.seal(py, &value)?)?;
                }
            }
        }
        Ok(())
    }
}

#[pymodule]
fn secureml_audit_native(module: &Bound<'_, PyModule>) -> PyResult<()> {
    module.add_class::<Sealer>()?;
    module.add_class::<event::EventChain>()?;
    module.add("ENCRYPTED_PREFIX", ENCRYPTED_PREFIX)?;
    module.add("INTERFACE", INTERFACE)?;
    module.add_function(wrap_pyfunction!(arrow_ffi::arrow_roundtrip, module)?)?;
    module.add_function(wrap_pyfunction!(decode::decode_events, module)?)?;
    module.add_class::<integrity::Canonical>()?;
    module.add_function(wrap_pyfunction!(integrity::leaf_hashes, module)?)?;
    module.add_function(wrap_pyfunction!(integrity::extend_frontier, module)?)?;
    module.add_function(wrap_pyfunction!(rows::log_dicts, module)?)?;
    module.add_function(wrap_pyfunction!(rows::pick, module)?)?;
    module.add_class::<rows::JsonCache>()?;
    module.add_function(wrap_pyfunction!(arenas::arenas_prefaulted, module)?)?;
    module.add_function(wrap_pyfunction!(reveal::open_sealed, module)?)?;
    module.add_function(wrap_pyfunction!(reveal::marked_columns, module)?)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counter_about_to_wrap_draws_a_new_random_part() {
        let old = 0x0123_4567_89ab_cdef_u64;
        let mut nonces = Nonces { base: old, counter: u32::MAX - 1 };
        let last_of_old = nonces.next().unwrap();
        assert_eq!(last_of_old[..8], old.to_be_bytes());
        assert_eq!(last_of_old[8..], (u32::MAX - 1).to_be_bytes());
        let renewed: Vec<_> = (0..3).map(|_| nonces.next().unwrap()).collect();
        assert_ne!(renewed[0][..8], old.to_be_bytes()); // a fresh 64-bit draw (equal with chance 2^-64)
        assert!(renewed.iter().all(|n| n[..8] == renewed[0][..8]));
        let counters: Vec<_> = renewed.iter().map(|n| u32::from_be_bytes(n[8..].try_into().unwrap())).collect();
        assert_eq!(counters, [0, 1, 2]);
    }
}
