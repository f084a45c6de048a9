//! The reading side of sealing: `open_sealed` opens many stored `enc:v1:<name>:<base64>` texts in one call, each
//! subject's key schedule expanded once (as `Sealer` does for sealing), the GIL released while it decrypts.
//!
//! It only does the common case, the one that was 14 us per row in Python (`privacy/reveal.py`, `Revealer.value`):
//! strict base64, a tag that checks, and a plaintext that is a JSON string without escapes (given as its `str`)
//! or any other plaintext (given as `bytes` for `json.loads`). Everything else (no key, a tag that does not
//! check, base64 Python's lenient decoder reads differently) gives None and the Python path decides, so both
//! paths give the same values, `<erased>` included.
//!
//! `Ciphers` (each subject's key schedule, expanded once) also serves `rows::log_dicts`, which opens each row's
//! ciphertext where it makes the row.

use std::collections::HashMap;

use ahash::RandomState;

use aes_gcm::aead::AeadInPlace;
use aes_gcm::{Aes256Gcm, Nonce, Tag};
use arrow_array::cast::AsArray;
use arrow_array::{Array, GenericStringArray, OffsetSizeTrait};
use arrow_schema::DataType;
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyList, PyString};

use crate::arrow_ffi::import_array;
use crate::{cipher, ENCRYPTED_PREFIX, NONCE_LEN};

const TAG_LEN: usize = 16;

/// Each subject's cipher, its key asked of `key_of(name)` (32 bytes or None) once per name.
pub(crate) struct Ciphers<'py> {
    key_of: Bound<'py, PyAny>,
    ciphers: Vec<Aes256Gcm>,
    index: HashMap<String, Option<usize>, RandomState>,
    /// The last name looked up and its place (a run of one subject's values finds it without hashing).
    last: Option<(String, Option<usize>)>,
}

impl<'py> Ciphers<'py> {
    pub(crate) fn new(key_of: Bound<'py, PyAny>) -> Self {
        Ciphers { key_of, ciphers: Vec::new(), index: HashMap::with_hasher(RandomState::new()), last: None }
    }

    /// The place of `name`'s cipher, None when it has no key.
    fn find(&mut self, name: &str) -> PyResult<Option<usize>> {
        if let Some((last, found)) = &self.last {
            if last == name {
                return Ok(*found);
            }
        }
        if let Some(&found) = self.index.get(name) {
            // The last name's buffer kept: a name that changes from row to row is copied, not allocated.
            match &mut self.last {
                Some((last, place)) => {
                    last.clear();
                    last.push_str(name);
                    *place = found;
                }
                None => self.last = Some((name.to_owned(), found)),
            }
            return Ok(found);
        }
        let key = self.key_of.call1((name,))?;
        let found = if key.is_none() {
            None
        } else {
            self.ciphers.push(cipher(key.downcast::<PyBytes>()?.as_bytes(), "open_sealed")?);
            Some(self.ciphers.len() - 1)
        };
        self.index.insert(name.to_owned(), found);
        Ok(found)
    }

    /// What this path makes of a stored text's bytes (`plain` is scratch space): see `Opened`. Split as `split`
    /// splits its str; a name that is not UTF-8 is left to the Python path, and base64 that is not ASCII does not
    /// decode strictly: the same outcomes as for the text's str, without checking its every byte first.
    pub(crate) fn open_bytes<'a>(&mut self, text: &[u8], plain: &'a mut Vec<u8>) -> PyResult<Opened<'a>> {
        let Some(rest) = text.strip_prefix(ENCRYPTED_PREFIX.as_bytes()) else {
            return Ok(Opened::Other);
        };
        let Some(colon) = rest.iter().position(|&b| b == b':') else {
            return Ok(Opened::Other);
        };
        let (Ok(name), payload) = (std::str::from_utf8(&rest[..colon]), &rest[colon + 1..]) else {
            return Ok(Opened::Other);
        };
        let Some(at) = self.find(name)? else {
            return Ok(Opened::Erased);
        };
        Ok(match decrypt(&self.ciphers[at], name, payload, plain) {
            Decrypted::Plain => match json_string(plain) {
                Some(value) => Opened::Text(value),
                None => Opened::Other,
            },
            Decrypted::Rejected => Opened::Erased,
            Decrypted::Unread => Opened::Other,
        })
    }
}

/// A stored text as `Ciphers::open_bytes` found it.
pub(crate) enum Opened<'a> {
    /// A ciphertext opened (strict base64, a tag that checks) of a JSON string without escapes: its value, as
    /// `Revealer.value` gives it.
    Text(&'a str),
    /// A ciphertext `Revealer.value` reads as `<erased>`: its subject has no key (erased, unknown, or not a
    /// pseudonym), or a key that does not open it (made after the erasure: the tag does not check).
    Erased,
    /// Anything else: the Python path decides.
    Other,
}

/// (subject name, base64 payload) of an `enc:v1:<name>:<base64>` text, split as `Revealer.value` splits it.
fn split(text: &str) -> Option<(&str, &str)> {
    text.strip_prefix(ENCRYPTED_PREFIX)?.split_once(':')
}

/// `[open(text) for text in texts]`: each a `str` (the value was that JSON string), `bytes` (a JSON text to
/// parse) or None (Python's `Revealer.value` decides). `key_of(name)` gives a subject's 32-byte key or None;
/// it is called once per name.
#[pyfunction]
pub fn open_sealed<'py>(
    py: Python<'py>,
    texts: &Bound<'py, PyList>,
    key_of: Bound<'py, PyAny>,
) -> PyResult<Bound<'py, PyList>> {
    let mut ciphers = Ciphers::new(key_of);
    let mut holders = Vec::with_capacity(texts.len());
    for item in texts.iter() {
        holders.push(item.downcast_into::<PyString>()?);
    }
    // (cipher, name, base64 payload) of each text the native path opens.
    let mut jobs: Vec<Option<(usize, &str, &str)>> = Vec::with_capacity(holders.len());
    for text in &holders {
        // A lone surrogate cannot be UTF-8: the Python path decides for such a text.
        let job = match text.to_str().ok().and_then(split) {
            None => None,
            Some((name, payload)) => ciphers.find(name)?.map(|at| (at, name, payload)),
        };
        jobs.push(job);
    }
    let ciphers = &ciphers.ciphers;
    // The plaintext of each text, or None when the Python path must decide.
    let opened: Vec<Option<Vec<u8>>> = py.allow_threads(|| {
        jobs.iter()
            .map(|job| {
                let (at, name, payload) = (*job)?;
                let mut plain = Vec::with_capacity(payload.len() / 4 * 3);
                open(&ciphers[at], name, payload, &mut plain).then_some(plain)
            })
            .collect()
    });
    let out = PyList::empty(py);
    for plain in opened {
        match plain {
            None => out.append(py.None())?,
            Some(plain) => match json_string(&plain) {
                Some(text) => out.append(PyString::new(py, text))?,
                None => out.append(PyBytes::new(py, &plain))?,
            },
        }
    }
    Ok(out)
}

/// Decrypts one payload into `plain`; false when the base64 is not strict, the payload too short or the tag does
/// not check.
fn open(cipher: &Aes256Gcm, name: &str, payload: &str, plain: &mut Vec<u8>) -> bool {
    let payload = payload.as_bytes();
    matches!(decrypt(cipher, name, payload, plain), Decrypted::Plain)
}

/// What decrypting one payload gave.
enum Decrypted {
    /// The plaintext, in `plain`.
    Plain,
    /// Strict base64 of a nonce, a ciphertext and a tag that does not check: `cryptography` refuses it alike.
    Rejected,
    /// Base64 the strict decoder refuses (Python's lenient one may read it) or a payload too short.
    Unread,
}

fn decrypt(cipher: &Aes256Gcm, name: &str, payload: &[u8], plain: &mut Vec<u8>) -> Decrypted {
    plain.clear();
    if STANDARD.decode_vec(payload, plain).is_err() || plain.len() < NONCE_LEN + TAG_LEN {
        return Decrypted::Unread;
    }
    let nonce: [u8; NONCE_LEN] = plain[..NONCE_LEN].try_into().expect("nonce length checked");
    let tag_at = plain.len() - TAG_LEN;
    let tag = *Tag::from_slice(&plain[tag_at..]);
    plain.truncate(tag_at);
    plain.drain(..NONCE_LEN);
    match cipher.decrypt_in_place_detached(Nonce::from_slice(&nonce), name.as_bytes(), plain, &tag) {
        Ok(()) => Decrypted::Plain,
        Err(_) => Decrypted::Rejected,
    }
}

/// The value of a JSON text that is a string without escapes (`"..."`: no `"`, `\` or control character inside,
/// valid UTF-8), which is what `json.loads` gives for it; None for any other text.
fn json_string(plain: &[u8]) -> Option<&str> {
    let body = plain.strip_prefix(b"\"")?.strip_suffix(b"\"")?;
    if body.iter().any(|&b| b == b'"' || b == b'\\' || b < 0x20) {
        return None;
    }
    std::str::from_utf8(body).ok()
}

/// The text columns of `batches` (RecordBatches of one schema) that hold something to reveal, in their order, by
/// `secureml.query.privacy.personal_columns`' rule: an identifier column (`identifiers`) a value starting `ps_`, a JSON
/// column (`json`) a value holding `enc:v1:` or `"ps_`, any other a value starting `enc:v1:`. The Arrow kernels
/// build a column of booleans for each test of each column; this stops at the first match, and looks for a JSON
/// column's marks in all its values' bytes at once, then value by value only where they occur.
#[pyfunction]
pub fn marked_columns(
    batches: &Bound<'_, PyList>,
    identifiers: Vec<String>,
    json: Vec<String>,
) -> PyResult<Vec<String>> {
    let arrays = batches.iter().map(|batch| import_array(&batch)).collect::<PyResult<Vec<_>>>()?;
    let mut found = vec![];
    let Some(first) = arrays.first() else {
        return Ok(found);
    };
    let DataType::Struct(fields) = first.data_type() else {
        return Err(PyValueError::new_err("marked_columns: batches must be RecordBatches"));
    };
    if arrays.iter().any(|array| !matches!(array.data_type(), DataType::Struct(these) if these == fields)) {
        return Err(PyValueError::new_err("marked_columns: batches must be RecordBatches of one schema"));
    }
    for (c, field) in fields.iter().enumerate() {
        let name = field.name();
        let rule = if identifiers.contains(name) {
            Mark::Starts("ps_")
        } else if json.contains(name) {
            Mark::Holds(ENCRYPTED_PREFIX, "\"ps_")
        } else {
            Mark::Starts(ENCRYPTED_PREFIX)
        };
        let mut marked = false;
        for array in &arrays {
            let column = array.as_struct().column(c);
            marked = match column.data_type() {
                DataType::Utf8 => rule.any(column.as_string::<i32>()),
                DataType::LargeUtf8 => rule.any(column.as_string::<i64>()),
                _ => break,
            };
            if marked {
                break;
            }
        }
        if marked {
            found.push(name.clone());
        }
    }
    Ok(found)
}

/// What makes a stored text one to reveal.
#[derive(Clone, Copy)]
enum Mark {
    Starts(&'static str),
    /// Either text anywhere in the value.
    Holds(&'static str, &'static str),
}

impl Mark {
    /// Whether a valid value of `texts` is marked.
    fn any<O: OffsetSizeTrait>(self, texts: &GenericStringArray<O>) -> bool {
        let valid = |i: usize| texts.is_valid(i);
        let offsets = texts.value_offsets();
        match self {
            Mark::Starts(prefix) => {
                // The first byte first (most values differ there), the validity only where all match.
                let (data, prefix) = (texts.value_data(), prefix.as_bytes());
                offsets.windows(2).enumerate().any(|(i, bounds)| {
                    let (start, end) = (bounds[0].as_usize(), bounds[1].as_usize());
                    end > start && data[start] == prefix[0] && data[start..end].starts_with(prefix) && valid(i)
                })
            }
            Mark::Holds(one, other) => {
                let (start, end) = (offsets[0].as_usize(), offsets[texts.len()].as_usize());
                // Every value's bytes at once (a mark found there may span two values, or lie in a null's bytes).
                let maybe = match std::str::from_utf8(&texts.value_data()[start..end]) {
                    Ok(all) => all.contains(one) || all.contains(other),
                    Err(_) => true,
                };
                let holds = |text: &str| text.contains(one) || text.contains(other);
                maybe && (0..texts.len()).any(|i| valid(i) && holds(texts.value(i)))
            }
        }
    }
}
