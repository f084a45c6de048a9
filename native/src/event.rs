//! `EventChain`: a trail's hash chain and the envelope of its events, natively, with `log_model_inference`'s
//! whole write path in one call.
//!
//! It writes byte for byte what `secureml.audit.trail.EventChain` (the pure-Python path) writes: the envelope's
//! constant parts are encoded once by the trail, then per event the id, seq, type, level, timestamp, user, payload
//! and previous hash are joined, SHA-256 appended as an Avro string, and the message handed to the transport's
//! `emit`; the state (seq, last timestamp, previous hash) moves on only once `emit` returned. The trail's lock
//! serialises the calls (the trail holds it around each one); `seq` and `closed` are readable at any time, also
//! while an event is being emitted (another thread, or the transport itself, may ask).
//!
//! `model_inference` also does what the Python path does before that: the argument rules of `events.py`, the
//! privacy step the trail's policy asks for on an inference (pseudonymise the user, encrypt text fields under the
//! subject's key, through the `Protector`'s own caches and sealers), and the payload's encoding. Whatever it does
//! not handle (a subclass of `str`, a float output that is not finite, a level name, any value the rules refuse,
//! an oversized event, a closed trail) returns `False` before anything is recorded: the trail then takes the
//! pure-Python path, which raises its exact error or handles the rare case.

use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::Mutex;

use pyo3::exceptions::{PyRuntimeError, PyValueError};
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyBytes, PyDict, PyFloat, PyInt, PyString, PyTuple};
use sha2::{Digest, Sha256};

use crate::{push_json_string, ENCRYPTED_PREFIX};

/// `events.MAX_LEVEL`: levels are Avro ints.
const MAX_LEVEL: i64 = (1 << 31) - 1;
/// The level of an inference logged without one (`logging.INFO`).
const INFO: i64 = 20;

/// Zigzag varint of an Avro int or long (`codec.encode_long`).
fn push_long(out: &mut Vec<u8>, n: i64) {
    let mut z = ((n << 1) ^ (n >> 63)) as u64;
    while z > 127 {
        out.push((z as u8 & 0x7f) | 0x80);
        z >>= 7;
    }
    out.push(z as u8);
}

/// Avro string: length, then the UTF-8 bytes (`codec.encode_string`).
fn push_string(out: &mut Vec<u8>, text: &[u8]) {
    push_long(out, text.len() as i64);
    out.extend_from_slice(text);
}

/// The text of a value `events.text` accepts unchanged: an exact `str` with UTF-8 form and a visible ASCII
/// character (so certainly not blank). None for anything else, which the Python rules then judge.
fn plain_text<'a>(value: &'a Bound<'_, PyAny>) -> Option<&'a str> {
    if !value.is_exact_instance_of::<PyString>() {
        return None;
    }
    // SAFETY of the lifetime: the str borrows the Python string, which `value` keeps alive.
    let text = value.downcast::<PyString>().ok()?.to_str().ok()?;
    text.bytes().any(|b| (0x21..=0x7e).contains(&b)).then_some(text)
}

/// An optional text argument: Some(None) for None, Some(Some(str)) for plain text, None to leave to Python.
fn optional_text<'a, 'py>(value: &'a Bound<'py, PyAny>) -> Option<Option<&'a Bound<'py, PyString>>> {
    if value.is_none() {
        return Some(None);
    }
    plain_text(value)?;
    Some(Some(value.downcast::<PyString>().ok()?))
}

/// `events.json_value` of the values whose JSON text needs no Python: str, bool, None, an int within i64, a
/// finite float (its `repr`, as `json.dumps` writes it). None for anything else.
fn json_value(value: &Bound<'_, PyAny>, out: &mut Vec<u8>) -> Option<()> {
    if value.is_none() {
        out.extend_from_slice(b"null");
    } else if value.is_exact_instance_of::<PyString>() {
        push_json_string(out, value.downcast::<PyString>().ok()?.to_str().ok()?);
    } else if value.is_exact_instance_of::<PyBool>() {
        out.extend_from_slice(if value.is_truthy().ok()? { b"true" } else { b"false" });
    } else if value.is_exact_instance_of::<PyInt>() {
        out.extend_from_slice(value.extract::<i64>().ok()?.to_string().as_bytes());
    } else if value.is_exact_instance_of::<PyFloat>() {
        if !value.extract::<f64>().ok()?.is_finite() {
            return None; // json.dumps writes NaN and Infinity its own way
        }
        out.extend_from_slice(value.repr().ok()?.to_str().ok()?.as_bytes());
    } else {
        return None;
    }
    Some(())
}

/// `events.probability`: None, or an exact float or int within [0, 1] (NaN is not). Some(None) for None.
fn probability(value: &Bound<'_, PyAny>) -> Option<Option<f64>> {
    if value.is_none() {
        return Some(None);
    }
    if !(value.is_exact_instance_of::<PyFloat>() || value.is_exact_instance_of::<PyInt>()) {
        return None;
    }
    let number = value.extract::<f64>().ok()?;
    (0.0..=1.0).contains(&number).then_some(Some(number))
}

/// A payload field of `model_inference` in the schema's layout.
#[derive(Clone, Copy)]
enum Field {
    ModelId,
    InputData,
    Output,
    Confidence,
}

/// What the trail's privacy policy does to an inference (`Protector.native_plan`), and the `Protector`'s caches.
struct Privacy {
    /// identifier -> (pseudonym, sealer, ...): `Protector._subjects`.
    subjects: Py<PyDict>,
    /// `Protector._subject`: loads (or creates) an identifier's key on first sight.
    load: PyObject,
    pseudonymise_user: bool,
    /// Which of model_id, input_data, output are encrypted under the subject's key.
    encrypt: [bool; 3],
}

impl Privacy {
    /// `subjects.get(identifier) or load(identifier)`.
    fn subject<'py>(&self, py: Python<'py>, identifier: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyTuple>> {
        let found = match self.subjects.bind(py).get_item(identifier)? {
            Some(found) if found.is_truthy()? => found,
            _ => self.load.bind(py).call1((identifier,))?,
        };
        Ok(found.downcast_into::<PyTuple>()?)
    }
}

/// The mutable state of a trail's chain (`seq` and `closed` are published beside it).
struct State {
    last_ts: i64,
    /// The previous event's hash as an Avro string (the empty string before the first event).
    prev_hash: Vec<u8>,
    /// The last user and its encoding as an optional string: a trail's events mostly carry the same user object.
    user: Option<PyObject>,
    user_bytes: Vec<u8>,
}

/// A trail's hash chain; see the module's comment.
#[pyclass(frozen, module = "secureml_audit_native")]
pub struct EventChain {
    version: Vec<u8>,
    id_prefix: String,
    operation: Vec<u8>,
    trail: Vec<u8>,
    max_bytes: usize,
    /// The trail's module: `now_micros` is looked up on it per event, so that tests can set the clock.
    clock: PyObject,
    emit: PyObject,
    key: Py<PyBytes>,
    tracker: PyObject,
    state: Mutex<State>,
    seq: AtomicI64,
    closed: AtomicBool,
    // model_inference's fast path
    log_level: i64,
    default_user: Option<Py<PyString>>,
    type_bytes: Vec<u8>,
    layout: Vec<(usize, Field)>,
    trailing_nulls: usize,
    privacy: Option<Privacy>,
}

impl EventChain {
    /// Seals one event and hands it to the transport: Ok(Ok(event id)), or Ok(Err(size)) when the message is over
    /// the limit (nothing recorded). The state moves on only once `emit` returned.
    #[allow(clippy::too_many_arguments)]
    fn seal_and_emit<'py>(
        &self,
        py: Python<'py>,
        type_bytes: &[u8],
        level: i64,
        user: Option<&Bound<'py, PyString>>,
        payload: &[u8],
        ts: i64,
        closing: bool,
    ) -> PyResult<Result<Bound<'py, PyString>, usize>> {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        // Never waits: the trail's lock serialises the calls, and waiting here with the GIL held could deadlock.
        let mut state = self.state.try_lock().map_err(|_| {
            PyRuntimeError::new_err(
                "EventChain: called while another event is being sealed (the trail's lock serialises them)",
            )
        })?;
        let ts = ts.max(state.last_ts); // the wall clock stepped back: keep the operation's order
        let seq = self.seq.load(Ordering::SeqCst);
        let user_known = match (&state.user, user) {
            (None, None) => true,
            (Some(known), Some(user)) => known.is(user),
            _ => false,
        };
        if !user_known {
            let mut encoded = Vec::with_capacity(64);
            match user {
                None => encoded.push(0),
                Some(user) => {
                    encoded.push(2);
                    push_string(&mut encoded, user.to_str()?.as_bytes());
                }
            }
            state.user_bytes = encoded;
            state.user = user.map(|u| u.clone().into_any().unbind());
        }
        let event_id = format!("{}{}", self.id_prefix, seq);
        let mut message =
            Vec::with_capacity(256 + self.operation.len() + self.trail.len() + payload.len() + state.user_bytes.len());
        message.extend_from_slice(&self.version);
        push_string(&mut message, event_id.as_bytes());
        message.extend_from_slice(&self.operation);
        push_long(&mut message, seq);
        message.extend_from_slice(type_bytes);
        push_long(&mut message, level);
        push_long(&mut message, ts);
        message.extend_from_slice(&state.user_bytes);
        message.extend_from_slice(&self.trail);
        message.extend_from_slice(payload);
        message.extend_from_slice(&state.prev_hash);
        let digest = Sha256::digest(&message);
        let start = message.len();
        message.extend_from_slice(b"\x80\x01"); // 64, the length of the hex digest
        for byte in digest {
            message.extend_from_slice(&[HEX[(byte >> 4) as usize], HEX[(byte & 0xf) as usize]]);
        }
        if message.len() > self.max_bytes {
            return Ok(Err(message.len()));
        }
        let value = PyBytes::new(py, &message);
        self.emit.bind(py).call1((self.key.bind(py), value, self.tracker.bind(py)))?;
        state.last_ts = ts;
        state.prev_hash.clear();
        state.prev_hash.extend_from_slice(&message[start..]);
        self.seq.store(seq + 1, Ordering::SeqCst);
        if closing {
            self.closed.store(true, Ordering::SeqCst);
        }
        Ok(Ok(PyString::new(py, &event_id)))
    }

    fn now(&self, py: Python<'_>) -> PyResult<i64> {
        self.clock.bind(py).getattr(intern!(py, "now_micros"))?.call0()?.extract()
    }
}

#[pymethods]
impl EventChain {
    /// The chain of a trail: its constant envelope parts (encoded), the operation's start, the trail's module (for
    /// the clock), the transport's `emit` with the trail's key and tracker; then what `model_inference` needs: the
    /// trail's level and user, the type's encoding, its payload layout (nulls before each field, then the nulls
    /// after the last) and the privacy plan (None when the policy is off, or does more than this path does).
    #[new]
    #[allow(clippy::too_many_arguments)]
    #[pyo3(signature = (version, id_prefix, operation, trail, start, max_bytes, clock, emit, key, tracker,
                        log_level, default_user, type_bytes, layout, trailing_nulls, privacy))]
    fn new(
        version: Vec<u8>,
        id_prefix: String,
        operation: Vec<u8>,
        trail: Vec<u8>,
        start: i64,
        max_bytes: usize,
        clock: PyObject,
        emit: PyObject,
        key: Py<PyBytes>,
        tracker: PyObject,
        log_level: i64,
        default_user: Option<Py<PyString>>,
        type_bytes: Vec<u8>,
        layout: Vec<(usize, String)>,
        trailing_nulls: usize,
        privacy: Option<(Py<PyDict>, PyObject, bool, Vec<String>)>,
    ) -> PyResult<Self> {
        let field = |name: &str| match name {
            "model_id" => Ok(Field::ModelId),
            "input_data" => Ok(Field::InputData),
            "output" => Ok(Field::Output),
            "confidence" => Ok(Field::Confidence),
            _ => Err(PyValueError::new_err(format!("EventChain: {name:?} is not a field of model_inference"))),
        };
        let layout = layout.iter().map(|(nulls, name)| Ok((*nulls, field(name)?))).collect::<PyResult<_>>()?;
        let privacy = match privacy {
            None => None,
            Some((subjects, load, pseudonymise_user, fields)) => {
                let mut encrypt = [false; 3];
                for name in &fields {
                    match field(name)? {
                        Field::ModelId => encrypt[0] = true,
                        Field::InputData => encrypt[1] = true,
                        Field::Output => encrypt[2] = true,
                        Field::Confidence => {} // a number: the Python step seals only strings
                    }
                }
                Some(Privacy { subjects, load, pseudonymise_user, encrypt })
            }
        };
        Ok(EventChain {
            version,
            id_prefix,
            operation,
            trail,
            max_bytes,
            clock,
            emit,
            key,
            tracker,
            state: Mutex::new(State { last_ts: start, prev_hash: vec![0], user: None, user_bytes: vec![0] }),
            seq: AtomicI64::new(0),
            closed: AtomicBool::new(false),
            log_level,
            default_user,
            type_bytes,
            layout,
            trailing_nulls,
            privacy,
        })
    }

    /// The next event's seq (the events recorded so far).
    #[getter]
    fn seq(&self) -> i64 {
        self.seq.load(Ordering::SeqCst)
    }

    /// True once the closing event was recorded.
    #[getter]
    fn closed(&self) -> bool {
        self.closed.load(Ordering::SeqCst)
    }

    /// Seals an event of an encoded type and payload, at `now` or the clock's time, and emits it: its id, or the
    /// message's size (an int) when it is over the limit and nothing was recorded.
    #[pyo3(signature = (event_type, level, user, payload, now, closing))]
    #[allow(clippy::too_many_arguments)]
    fn append<'py>(
        &self,
        py: Python<'py>,
        event_type: &[u8],
        level: i64,
        user: Option<Bound<'py, PyString>>,
        payload: &[u8],
        now: Option<i64>,
        closing: bool,
    ) -> PyResult<PyObject> {
        let ts = match now {
            Some(ts) => ts,
            None => self.now(py)?,
        };
        Ok(match self.seal_and_emit(py, event_type, level, user.as_ref(), payload, ts, closing)? {
            Ok(event_id) => event_id.into_any().unbind(),
            Err(size) => size.into_pyobject(py)?.into_any().unbind(),
        })
    }

    /// `AuditTrail.log_model_inference` in one call: the event's id, None when its level is below the trail's, or
    /// False to take the pure-Python path (see the module's comment).
    #[allow(clippy::too_many_arguments)]
    fn model_inference<'py>(
        &self,
        py: Python<'py>,
        model_id: &Bound<'py, PyAny>,
        input_data: &Bound<'py, PyAny>,
        output: &Bound<'py, PyAny>,
        confidence: &Bound<'py, PyAny>,
        user: &Bound<'py, PyAny>,
        level: &Bound<'py, PyAny>,
        subject: &Bound<'py, PyAny>,
    ) -> PyResult<PyObject> {
        let fallback = || -> PyResult<PyObject> { Ok(PyBool::new(py, false).to_owned().into_any().unbind()) };
        if self.closed.load(Ordering::SeqCst) {
            return fallback();
        }
        let (Some(_), Some(_)) = (plain_text(model_id), plain_text(input_data)) else { return fallback() };
        let mut output_json = Vec::with_capacity(32);
        if json_value(output, &mut output_json).is_none() {
            return fallback();
        }
        let Some(confidence) = probability(confidence) else { return fallback() };
        let Some(user) = optional_text(user) else { return fallback() };
        let level = if level.is_none() {
            INFO
        } else if level.is_exact_instance_of::<PyInt>() {
            match level.extract::<i64>() {
                Ok(level) if (0..=MAX_LEVEL).contains(&level) => level,
                _ => return fallback(),
            }
        } else {
            return fallback();
        };
        let Some(subject) = optional_text(subject) else { return fallback() };
        if level < self.log_level {
            return Ok(py.None());
        }
        let mut user = match user {
            Some(user) => Some(user.clone()),
            None => self.default_user.as_ref().map(|u| u.bind(py).clone()),
        };
        let mut model_id = model_id.downcast::<PyString>()?.clone();
        let mut input_data = input_data.downcast::<PyString>()?.clone();
        let mut sealed_output: Option<Bound<'py, PyString>> = None;
        if let Some(privacy) = &self.privacy {
            // Protector.step's generated step for model_inference: the subject defaults to the user.
            let subject = subject.cloned().or_else(|| user.clone());
            let found = match &subject {
                None => None,
                Some(subject) => Some(privacy.subject(py, subject.as_any())?),
            };
            if privacy.pseudonymise_user {
                if let Some(who) = &user {
                    let pseudonym = match (&subject, &found) {
                        (Some(subject), Some(found)) if who.is(subject) => found.get_item(0)?,
                        _ => privacy.subject(py, who.as_any())?.get_item(0)?,
                    };
                    user = Some(pseudonym.downcast_into::<PyString>()?);
                }
            }
            if let Some(found) = &found {
                let seal = |text: &Bound<'py, PyString>| -> PyResult<Option<Bound<'py, PyString>>> {
                    if text.to_str()?.starts_with(ENCRYPTED_PREFIX) {
                        return Ok(None);
                    }
                    Ok(Some(found.get_item(1)?.call1((text,))?.downcast_into::<PyString>()?))
                };
                if privacy.encrypt[0] {
                    model_id = seal(&model_id)?.unwrap_or(model_id);
                }
                if privacy.encrypt[1] {
                    input_data = seal(&input_data)?.unwrap_or(input_data);
                }
                if privacy.encrypt[2] {
                    sealed_output = seal(&PyString::new(py, std::str::from_utf8(&output_json)?))?;
                }
            }
        }
        let mut payload = Vec::with_capacity(256);
        for (nulls, field) in &self.layout {
            payload.resize(payload.len() + nulls, 0);
            payload.push(2);
            match field {
                Field::ModelId => push_string(&mut payload, model_id.to_str()?.as_bytes()),
                Field::InputData => push_string(&mut payload, input_data.to_str()?.as_bytes()),
                Field::Output => match &sealed_output {
                    Some(text) => push_string(&mut payload, text.to_str()?.as_bytes()),
                    None => push_string(&mut payload, &output_json),
                },
                Field::Confidence => match confidence {
                    None => *payload.last_mut().expect("pushed above") = 0,
                    Some(number) => payload.extend_from_slice(&number.to_le_bytes()),
                },
            }
        }
        payload.resize(payload.len() + self.trailing_nulls, 0);
        let ts = self.now(py)?;
        match self.seal_and_emit(py, &self.type_bytes, level, user.as_ref(), &payload, ts, false)? {
            Ok(event_id) => Ok(event_id.into_any().unbind()),
            Err(_) => fallback(), // oversized: the Python path names the largest value
        }
    }
}
