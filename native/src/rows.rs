//! Query results as the log dicts of `get_audit_logs`, built in one pass over the Arrow columns.
//!
//! `log_dicts` gives exactly the dicts of the pure-Python path (`secureml.query.logs._to_logs`): per row the
//! keys its event type carries, in order; times as ISO 8601 text; JSON texts parsed by `json.loads`, every
//! dict and list fresh per row (rows are the caller's to change); lists of texts as new lists. The Python
//! path pays a dict copy and a `__setitem__` per varying key through the interpreter, and an Arrow call or
//! two per column; here each row's dict is a C-level copy of the previous row of its type with only the
//! values that differ set, and a value that repeats further apart (a model's name, an operation's start) is
//! made once and shared, found through a hash of its bytes; an event's `prev_hash` is the str of the row before's
//! `hash` when it equals it. What remains of a row's cost is CPython's own (the dict's values, its new strings,
//! list and dict, and the kernel's page faults on fresh memory): this step takes 0.66-0.87x the CPU time of the
//! Python path (bench/RESULTS.md, wave 3).
//!
//! With a reveal (the query's text columns that hold pseudonyms or ciphertexts, the query's class of revealed
//! events, the subjects' keys and the Python reveal of one text), a row holding such a text is made as the revealed
//! event itself in the same pass: the dict with the shown values, of the query's `RevealedEvent` subclass, whose
//! `sealed` is found when read (`secureml.query.privacy.RevealedRows`); the same dict and `sealed` forms as
//! `secureml.audit.privacy.reveal.reveal_logs` makes of the row's dict, without a per-row Python loop, and at the
//! cost of a plain row's dict. Each ciphertext is opened where its row is made (they are unique by their random
//! nonces: gathering the distinct ones first only added a hash, a str and a dict entry each); pseudonyms, a few
//! per query, are revealed once.
//!
//! A result read in parts (`secureml.query.logs._streamed_logs`) calls this once per part, the parts sharing a
//! `JsonCache` (each JSON text parsed once per result). A pass of `PREFAULT_ROWS` rows or more takes CPython's new
//! arenas from a helper thread that faults them in on the other core (`arenas.rs`). Each row's dict is a copy of the
//! last row's of its type with only the changed values made and set: which changed is found a block of rows at a
//! time, a column at a time, from `HELPER_ROWS` rows on by another helper thread a block or more ahead (`Changes`).
//!
//! Anything outside what it handles (a column type the lake does not use, a time outside years 1-9999, a key
//! the table lacks) makes it return None, and the caller takes the Python path, which gives the same
//! dicts or raises its own error: one definition of the output, not two.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};

use ahash::RandomState;
use arrow_array::cast::AsArray;
use arrow_array::types::{Float64Type, Int32Type, Int64Type, TimestampMicrosecondType};
use arrow_array::{Array, ArrayRef, GenericListArray, GenericStringArray, OffsetSizeTrait, PrimitiveArray};
use arrow_schema::{DataType, TimeUnit};
use pyo3::exceptions::PyValueError;
use pyo3::ffi;
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyDict, PyList, PyString, PyType};

use crate::arenas::Prefault;
use crate::arrow_ffi::import_array;
use crate::reveal::{Ciphers, Opened};
use crate::ENCRYPTED_PREFIX;

/// Lookups of a column's value cache after which (at each doubling) it is dropped when most of them missed:
/// hashing a column of distinct values (event ids, times) only adds to its cost. An event's `prev_hash` stops being
/// compared with the row before's `hash` (`Chain`) likewise once fewer than 1 in 8 of this many were equal.
const PROBE_LOOKUPS: u32 = 256;
/// The same for a JSON column's parsed values, whose misses each cost a `json.loads` call (about 2 us, 100 times a
/// lookup): values that repeat, but seldom in their first few hundred rows (a compliance check's `details`, one of a
/// thousand, in a tenth of the rows), are made once each rather than parsed in every row.
const JSON_PROBE_LOOKUPS: u32 = 8192;

/// A text column's values, whichever offset width the exporter used.
#[derive(Clone, Copy)]
enum Texts<'a> {
    Small(&'a GenericStringArray<i32>),
    Large(&'a GenericStringArray<i64>),
}

impl<'a> Texts<'a> {
    fn of(array: &'a dyn Array) -> Option<Self> {
        match array.data_type() {
            DataType::Utf8 => Some(Texts::Small(array.as_string::<i32>())),
            DataType::LargeUtf8 => Some(Texts::Large(array.as_string::<i64>())),
            _ => None,
        }
    }

    /// The bytes of row `i`, None when it is null.
    #[inline(always)]
    fn get(self, i: usize) -> Option<&'a [u8]> {
        match self {
            Texts::Small(a) => a.is_valid(i).then(|| a.value(i).as_bytes()),
            Texts::Large(a) => a.is_valid(i).then(|| a.value(i).as_bytes()),
        }
    }
}

/// Whether two byte strings are equal, inline: most compared here are short (a name, an id, a hash) and most pairs
/// differ in length or in their first bytes, where a call to `memcmp` cost more than the comparison.
#[inline(always)]
fn same_bytes(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let mut left = a.chunks_exact(8);
    let mut right = b.chunks_exact(8);
    for (x, y) in (&mut left).zip(&mut right) {
        if u64::from_ne_bytes(x.try_into().expect("8 bytes")) != u64::from_ne_bytes(y.try_into().expect("8 bytes")) {
            return false;
        }
    }
    left.remainder().iter().zip(right.remainder()).all(|(x, y)| x == y)
}

/// A list-of-texts column (`regulations`, `columns_accessed`): each row's bounds in its values.
#[derive(Clone, Copy)]
enum Lists<'a> {
    Small(&'a GenericListArray<i32>, Texts<'a>),
    Large(&'a GenericListArray<i64>, Texts<'a>),
}

impl<'a> Lists<'a> {
    fn of(array: &'a dyn Array) -> Option<Self> {
        fn texts<O: OffsetSizeTrait>(list: &GenericListArray<O>) -> Option<Texts<'_>> {
            Texts::of(list.values().as_ref())
        }
        match array.data_type() {
            DataType::List(_) => {
                let list = array.as_list::<i32>();
                Some(Lists::Small(list, texts(list)?))
            }
            DataType::LargeList(_) => {
                let list = array.as_list::<i64>();
                Some(Lists::Large(list, texts(list)?))
            }
            _ => None,
        }
    }

    /// Row `i`'s values as (start, end) in `texts`, None when the row is null.
    #[inline]
    fn bounds(self, i: usize) -> Option<(usize, usize, Texts<'a>)> {
        match self {
            Lists::Small(a, texts) => {
                let o = a.value_offsets();
                a.is_valid(i).then(|| (o[i] as usize, o[i + 1] as usize, texts))
            }
            Lists::Large(a, texts) => {
                let o = a.value_offsets();
                a.is_valid(i).then(|| (o[i] as usize, o[i + 1] as usize, texts))
            }
        }
    }
}

/// One column of one batch, typed as the dicts hold it.
#[derive(Clone, Copy)]
enum Column<'a> {
    Null,
    Bool(&'a arrow_array::BooleanArray),
    Int32(&'a PrimitiveArray<Int32Type>),
    Int64(&'a PrimitiveArray<Int64Type>),
    Float64(&'a PrimitiveArray<Float64Type>),
    Text(Texts<'a>),
    /// JSON text, parsed per row.
    Json(Texts<'a>),
    /// Microseconds since the epoch, UTC, written as ISO 8601 text.
    Time(&'a PrimitiveArray<TimestampMicrosecondType>),
    List(Lists<'a>),
}

impl<'a> Column<'a> {
    /// The column as the Python path converts it (`_python_values`), or None when it is not one this step handles.
    fn of(array: &'a dyn Array, time: bool, json: bool) -> Option<Self> {
        let data_type = array.data_type();
        if time {
            return match data_type {
                DataType::Timestamp(TimeUnit::Microsecond, _) => {
                    Some(Column::Time(array.as_primitive::<TimestampMicrosecondType>()))
                }
                _ => None,
            };
        }
        if json {
            return Texts::of(array).map(Column::Json);
        }
        Some(match data_type {
            DataType::Null => Column::Null,
            DataType::Boolean => Column::Bool(array.as_boolean()),
            DataType::Int32 => Column::Int32(array.as_primitive::<Int32Type>()),
            DataType::Int64 => Column::Int64(array.as_primitive::<Int64Type>()),
            DataType::Float64 => Column::Float64(array.as_primitive::<Float64Type>()),
            DataType::Utf8 | DataType::LargeUtf8 => Column::Text(Texts::of(array)?),
            DataType::List(_) | DataType::LargeList(_) => Column::List(Lists::of(array)?),
            _ => return None,
        })
    }

    #[inline]
    fn is_null(self, i: usize) -> bool {
        match self {
            Column::Null => true,
            Column::Bool(a) => a.is_null(i),
            Column::Int32(a) => a.is_null(i),
            Column::Int64(a) => a.is_null(i),
            Column::Float64(a) => a.is_null(i),
            Column::Text(t) | Column::Json(t) => t.get(i).is_none(),
            Column::Time(a) => a.is_null(i),
            Column::List(l) => l.bounds(i).is_none(),
        }
    }

    /// How many of rows `from..to` are not null (a count of the validity's bits).
    fn valid_in(self, from: usize, to: usize) -> usize {
        let array: &dyn Array = match self {
            Column::Null => return 0,
            Column::Bool(a) => a,
            Column::Int32(a) => a,
            Column::Int64(a) => a,
            Column::Float64(a) => a,
            Column::Text(Texts::Small(a)) | Column::Json(Texts::Small(a)) => a,
            Column::Text(Texts::Large(a)) | Column::Json(Texts::Large(a)) => a,
            Column::Time(a) => a,
            Column::List(Lists::Small(a, _)) => a,
            Column::List(Lists::Large(a, _)) => a,
        };
        match array.nulls() {
            Some(nulls) => nulls.inner().slice(from, to - from).count_set_bits(),
            None => to - from,
        }
    }

    /// Calls `changed(row)` for each row of `from + 1..to` whose value is not `equal` to the row before's: a loop
    /// of its own per type, without a null's test when the block has none, and none when it holds only nulls.
    fn each_change(self, from: usize, to: usize, mut changed: impl FnMut(usize)) {
        fn scan(from: usize, to: usize, equal: impl Fn(usize, usize) -> bool, changed: &mut impl FnMut(usize)) {
            for row in from + 1..to {
                if !equal(row, row - 1) {
                    changed(row);
                }
            }
        }
        fn texts<O: OffsetSizeTrait>(
            a: &GenericStringArray<O>,
            from: usize,
            to: usize,
            changed: &mut impl FnMut(usize),
        ) {
            let (offsets, data) = (a.value_offsets(), a.value_data());
            let value = |row: usize| &data[offsets[row].as_usize()..offsets[row + 1].as_usize()];
            let mut last = value(from);
            for row in from + 1..to {
                let this = value(row);
                if !same_bytes(this, last) {
                    changed(row);
                }
                last = this;
            }
        }
        let valid = self.valid_in(from, to);
        if valid == 0 {
            return; // all null: each row equals the one before
        }
        let nulls = to - from - valid;
        match self {
            Column::Text(Texts::Small(a)) if nulls == 0 => texts(a, from, to, &mut changed),
            Column::Text(Texts::Large(a)) if nulls == 0 => texts(a, from, to, &mut changed),
            Column::Int64(a) if nulls == 0 => scan(from, to, |i, j| a.values()[i] == a.values()[j], &mut changed),
            Column::Int32(a) if nulls == 0 => scan(from, to, |i, j| a.values()[i] == a.values()[j], &mut changed),
            Column::Time(a) if nulls == 0 => scan(from, to, |i, j| a.values()[i] == a.values()[j], &mut changed),
            Column::Json(_) | Column::List(_) if nulls == 0 => (from + 1..to).for_each(changed),
            _ => scan(from, to, |i, j| self.equal(i, self, j), &mut changed),
        }
    }

    /// Whether rows `i` of `self` and `j` of `other` (the same column in another or the same batch) hold the same
    /// stored value, which a row's dict, copied from the other's, then keeps: texts by their bytes, floats by their
    /// bits (-0.0 is not 0.0 here); JSON texts and lists only when both are null, as their values are made per row
    /// (a container is the row's own).
    #[inline(always)]
    fn equal(self, i: usize, other: Column<'a>, j: usize) -> bool {
        fn eq<T: arrow_array::ArrowPrimitiveType>(
            a: &PrimitiveArray<T>,
            i: usize,
            b: &PrimitiveArray<T>,
            j: usize,
        ) -> bool
        where
            T::Native: PartialEq,
        {
            match (a.is_valid(i), b.is_valid(j)) {
                (true, true) => a.value(i) == b.value(j),
                (valid_a, valid_b) => !valid_a && !valid_b,
            }
        }
        match (self, other) {
            (Column::Null, Column::Null) => true,
            (Column::Bool(a), Column::Bool(b)) => match (a.is_valid(i), b.is_valid(j)) {
                (true, true) => a.value(i) == b.value(j),
                (valid_a, valid_b) => !valid_a && !valid_b,
            },
            (Column::Int32(a), Column::Int32(b)) => eq(a, i, b, j),
            (Column::Int64(a), Column::Int64(b)) => eq(a, i, b, j),
            (Column::Float64(a), Column::Float64(b)) => match (a.is_valid(i), b.is_valid(j)) {
                (true, true) => a.value(i).to_bits() == b.value(j).to_bits(),
                (valid_a, valid_b) => !valid_a && !valid_b,
            },
            (Column::Time(a), Column::Time(b)) => eq(a, i, b, j),
            (Column::Text(a), Column::Text(b)) => match (a.get(i), b.get(j)) {
                (Some(x), Some(y)) => same_bytes(x, y),
                (x, y) => x.is_none() && y.is_none(),
            },
            (Column::Json(_), Column::Json(_)) | (Column::List(_), Column::List(_)) => {
                self.is_null(i) && other.is_null(j)
            }
            _ => false,
        }
    }
}

/// How a parsed JSON value becomes a row's own: shared when immutable, else copied (flat) or rebuilt (nested).
#[derive(Clone, Copy, PartialEq)]
enum Copy {
    Share,
    Dict,
    List,
    Deep,
}

/// A value made once for a column, shared (or copied, per `Copy`) by the rows that hold it.
struct Made {
    value: PyObject,
    copy: Copy,
}

/// Values of one column made so far, by their bytes (texts, JSON) or microseconds (times): a cache that drops
/// itself when most lookups miss.
struct Cache<K> {
    made: Option<HashMap<K, Made, RandomState>>,
    lookups: u32,
    misses: u32,
}

impl<K: std::hash::Hash + Eq> Cache<K> {
    fn new() -> Self {
        Cache { made: Some(HashMap::with_hasher(RandomState::new())), lookups: 0, misses: 0 }
    }

    /// The value made for `key` (by `make` on a miss), cloned for one more row.
    fn get(&mut self, py: Python<'_>, key: K, make: impl FnOnce() -> PyResult<Made>) -> PyResult<(PyObject, Copy)> {
        let Some(made) = self.made.as_mut() else {
            let fresh = make()?;
            return Ok((fresh.value, fresh.copy));
        };
        self.lookups += 1;
        if let Some(found) = made.get(&key) {
            return Ok((found.value.clone_ref(py), found.copy));
        }
        self.misses += 1;
        let fresh = make()?;
        let result = (fresh.value.clone_ref(py), fresh.copy);
        made.insert(key, fresh);
        if self.lookups >= PROBE_LOOKUPS && self.lookups.is_power_of_two() && 2 * self.misses > self.lookups {
            self.made = None;
        }
        Ok(result)
    }
}

/// A JSON column's parsed values by their text, made once each (a miss costs a `json.loads` call, about 2 us, a
/// hundred lookups) and kept across the calls of one query (`JsonCache`): values that repeat, but seldom within a
/// few hundred rows (a compliance check's `details`, one of a thousand, in a tenth of the rows), are parsed once
/// each, not in every row. Dropped, as `Cache` drops itself, when most of `JSON_PROBE_LOOKUPS` lookups or more missed.
struct Parsed {
    made: Option<HashMap<Box<[u8]>, Made, RandomState>>,
    lookups: u32,
    misses: u32,
}

impl Parsed {
    fn new() -> Self {
        Parsed { made: Some(HashMap::with_hasher(RandomState::new())), lookups: 0, misses: 0 }
    }

    /// The value parsed of `bytes` (by `loads`) and how a row makes it its own; None once the cache dropped itself.
    fn get(&mut self, py: Python<'_>, bytes: &[u8], loads: &Bound<'_, PyAny>) -> PyResult<Option<(PyObject, Copy)>> {
        let Some(made) = self.made.as_mut() else {
            return Ok(None);
        };
        self.lookups += 1;
        if let Some(found) = made.get(bytes) {
            return Ok(Some((found.value.clone_ref(py), found.copy)));
        }
        self.misses += 1;
        let parsed = loads.call1((text_object(py, bytes)?,))?;
        let copy = copy_of(&parsed);
        let result = (parsed.clone().unbind(), copy);
        made.insert(bytes.into(), Made { value: parsed.unbind(), copy });
        if self.lookups >= JSON_PROBE_LOOKUPS && self.lookups.is_power_of_two() && 2 * self.misses > self.lookups {
            self.made = None;
        }
        Ok(Some(result))
    }
}

/// The JSON columns' parsed values of one query's calls of `log_dicts` (a result made in parts), by column.
#[pyclass(module = "secureml_audit_native")]
#[derive(Default)]
pub struct JsonCache {
    columns: HashMap<String, Parsed>,
}

#[pymethods]
impl JsonCache {
    #[new]
    fn new() -> Self {
        JsonCache::default()
    }
}

/// Integers below this are made once per column and shared (ints are immutable): an event's `seq` repeats in
/// every operation, and CPython itself shares only those up to 256.
const SHARED_INTS: i64 = 4096;

/// What is made for one column across the batches: its values' caches.
struct Values<'a> {
    texts: Cache<&'a [u8]>,
    /// A JSON column's parsed values, kept across the calls of a query (`JsonCache`).
    json: Parsed,
    times: Cache<i64>,
    /// Each integer in 0..SHARED_INTS made so far, at its place.
    ints: Vec<Option<PyObject>>,
}

impl<'a> Values<'a> {
    fn new(json: Parsed) -> Self {
        Values { texts: Cache::new(), json, times: Cache::new(), ints: Vec::new() }
    }

    /// `value` as a Python int, shared when it is small.
    fn int(&mut self, py: Python<'_>, value: i64) -> PyResult<PyObject> {
        if !(0..SHARED_INTS).contains(&value) {
            return Ok(value.into_pyobject(py)?.into_any().unbind());
        }
        let at = value as usize;
        if self.ints.len() <= at {
            self.ints.resize_with(at + 1, || None);
        }
        if let Some(found) = &self.ints[at] {
            return Ok(found.clone_ref(py));
        }
        let made = value.into_pyobject(py)?.into_any().unbind();
        self.ints[at] = Some(made.clone_ref(py));
        Ok(made)
    }
}

/// A new Python str of UTF-8 bytes (an error, not a panic, if they are not UTF-8).
fn text_object(py: Python<'_>, bytes: &[u8]) -> PyResult<PyObject> {
    // SAFETY: the pointer and length are those of a live slice; a NULL result carries the Python error.
    unsafe {
        let made = ffi::PyUnicode_FromStringAndSize(bytes.as_ptr().cast(), bytes.len() as ffi::Py_ssize_t);
        Ok(Bound::from_owned_ptr_or_err(py, made)?.unbind())
    }
}

/// `2026-01-12T08:10:19.200000+00:00` for microseconds since the epoch (as `_iso_utc` and `datetime.isoformat`
/// write it), or None outside years 1-9999, where the two differ and the Python path decides.
fn iso_utc(micros: i64) -> Option<[u8; 32]> {
    let seconds = micros.div_euclid(1_000_000);
    let fraction = micros.rem_euclid(1_000_000) as u32;
    let days = seconds.div_euclid(86_400);
    let second_of_day = seconds.rem_euclid(86_400) as u32;
    // Howard Hinnant's civil_from_days: the proleptic Gregorian date of a day count from 1970-01-01.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z.rem_euclid(146_097);
    let year_of_era = (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let shifted_month = (5 * day_of_year + 2) / 153;
    let day = (day_of_year - (153 * shifted_month + 2) / 5 + 1) as u32;
    let month = if shifted_month < 10 { shifted_month + 3 } else { shifted_month - 9 } as u32;
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    if !(1..=9999).contains(&year) {
        return None;
    }
    let mut out = *b"0000-00-00T00:00:00.000000+00:00";
    let mut put = |at: usize, width: usize, mut value: u32| {
        for place in (at..at + width).rev() {
            out[place] = b'0' + (value % 10) as u8;
            value /= 10;
        }
    };
    put(0, 4, year as u32);
    put(5, 2, month);
    put(8, 2, day);
    put(11, 2, second_of_day / 3600);
    put(14, 2, second_of_day / 60 % 60);
    put(17, 2, second_of_day % 60);
    put(20, 6, fraction);
    Some(out)
}

/// How `json.loads`'s value is made a row's own: the Python path's rule (`_json_column`).
fn copy_of(value: &Bound<'_, PyAny>) -> Copy {
    let container = |v: &Bound<'_, PyAny>| v.is_exact_instance_of::<PyDict>() || v.is_exact_instance_of::<PyList>();
    if let Ok(dict) = value.downcast_exact::<PyDict>() {
        if dict.values().iter().any(|v| container(&v)) {
            Copy::Deep
        } else {
            Copy::Dict
        }
    } else if let Ok(list) = value.downcast_exact::<PyList>() {
        if list.iter().any(|v| container(&v)) {
            Copy::Deep
        } else {
            Copy::List
        }
    } else {
        Copy::Share
    }
}

/// A fresh copy of a parsed JSON value: new dicts and lists at every depth, immutable values shared.
fn deep_copy<'py>(value: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
    let py = value.py();
    if let Ok(dict) = value.downcast_exact::<PyDict>() {
        let copy = PyDict::new(py);
        for (key, item) in dict.iter() {
            copy.set_item(key, deep_copy(&item)?)?;
        }
        Ok(copy.into_any())
    } else if let Ok(list) = value.downcast_exact::<PyList>() {
        let items = list.iter().map(|item| deep_copy(&item)).collect::<PyResult<Vec<_>>>()?;
        Ok(PyList::new(py, items)?.into_any())
    } else {
        Ok(value.clone())
    }
}

/// The row's own object for a value made once.
fn own(py: Python<'_>, value: PyObject, copy: Copy) -> PyResult<PyObject> {
    let bound = value.bind(py);
    Ok(match copy {
        Copy::Share => value,
        Copy::Dict => bound.downcast::<PyDict>()?.copy()?.into_any().unbind(),
        Copy::List => {
            let list = bound.downcast::<PyList>()?;
            list.get_slice(0, list.len()).into_any().unbind()
        }
        Copy::Deep => deep_copy(bound)?.unbind(),
    })
}

/// The dicts of one event type: their keys (the event type's, in order), the columns they are read from, and the last
/// dict made, which the next row of the type copies.
struct Plan<'py, 'a> {
    template: Bound<'py, PyDict>,
    keys: Vec<Bound<'py, PyString>>,
    /// The columns of the keys, as bits by column (a word per 64 columns), and each one's key (an index into
    /// `keys`; unused for the other columns).
    columns: Vec<u64>,
    key_at: Vec<usize>,
    /// Per key of a JSON column, the last text made and its value, which a row holding the same text makes its own
    /// without looking it up.
    last_json: Vec<Option<(&'a [u8], PyObject, Copy)>>,
    last: Option<Bound<'py, PyDict>>,
}

/// Stored texts shown as logged: the reveal's columns (texts), the revealed events' class, the ciphers of the
/// subjects' keys and the Python reveal of one text (`Revealer.text`) for the texts not opened here.
struct Reveal<'py> {
    columns: Vec<String>,
    class: Bound<'py, PyType>,
    ciphers: Ciphers<'py>,
    text: Bound<'py, PyAny>,
    /// The shown form of each stored text other than a ciphertext (pseudonyms: a few per query), by its bytes.
    known: HashMap<Vec<u8>, PyObject, RandomState>,
    /// The shown form of every ciphertext `Revealer.value` reads as `<erased>`, once asked of `text`.
    erased: Option<PyObject>,
    /// Scratch space for a plaintext.
    plain: Vec<u8>,
}

impl<'py> Reveal<'py> {
    /// The shown form of a marked stored text (its `bytes`), exactly `Revealer.text(stored)`: a ciphertext opened
    /// here, each unique by its nonce, or one read as `<erased>` (its subject's key gone) given the form `text` gave
    /// the first; any other text (a pseudonym, a ciphertext this path does not simply open) revealed by `text`, a
    /// pseudonym once. The stored text's str is made only for `text`.
    fn shown(&mut self, py: Python<'py>, bytes: &[u8]) -> PyResult<Bound<'py, PyAny>> {
        let Reveal { ciphers, text, known, erased, plain, .. } = self;
        let text = |bytes: &[u8]| text.call1((text_object(py, bytes)?,));
        if bytes.starts_with(ENCRYPTED_PREFIX.as_bytes()) {
            return match ciphers.open_bytes(bytes, plain)? {
                Opened::Text(value) => Ok(PyString::new(py, value).into_any()),
                Opened::Erased => match erased {
                    Some(found) => Ok(found.bind(py).clone()),
                    None => {
                        let shown = text(bytes)?;
                        *erased = Some(shown.clone().unbind());
                        Ok(shown)
                    }
                },
                Opened::Other => text(bytes),
            };
        }
        if let Some(found) = known.get(bytes) {
            return Ok(found.bind(py).clone());
        }
        let shown = text(bytes)?;
        known.insert(bytes.to_vec(), shown.clone().unbind());
        Ok(shown)
    }
}

/// The stored texts a reveal looks up: a pseudonym or a ciphertext (`reveal.py`'s `MARKS`).
fn marked(bytes: &[u8]) -> bool {
    bytes.starts_with(b"ps_") || bytes.starts_with(ENCRYPTED_PREFIX.as_bytes())
}

/// Everything the conversion holds across rows.
struct Converter<'py, 'a> {
    py: Python<'py>,
    batches: &'a [Vec<Column<'a>>],
    names: Vec<String>,
    event_type: usize,
    values: Vec<Values<'a>>,
    /// Per kind of row (`Changes`), its plan.
    plans: Vec<Plan<'py, 'a>>,
    template_of: Bound<'py, PyAny>,
    loads: Bound<'py, PyAny>,
    reveal: Option<Reveal<'py>>,
    chain: Option<Chain<'a>>,
}

/// An event's `prev_hash` is most often the hash of the row before it in storage order (files are sorted by operation
/// and time): it is given that row's `hash` str (a million 64-character strs fewer to make and free per million rows),
/// until fewer than 1 in 8 of `PROBE_LOOKUPS` rows were.
struct Chain<'a> {
    hash: usize,
    prev_hash: usize,
    /// The last row's hash: its bytes and str.
    last: Option<(&'a [u8], PyObject)>,
    looked: u32,
    shared: u32,
}

impl<'a> Chain<'a> {
    /// The last row's hash str when `prev_hash` (this row's) equals it.
    fn share(&mut self, py: Python<'_>, prev_hash: Option<&[u8]>) -> Option<PyObject> {
        self.looked += 1;
        let (last, hash) = self.last.as_ref()?;
        same_bytes(prev_hash?, last).then(|| {
            self.shared += 1;
            hash.clone_ref(py)
        })
    }
}

/// What the dicts' pass needs of each row besides its values, found a block of rows at a time, a column at a time
/// (each read in sequence, where the dicts' pass reads a row's twenty-odd columns at once): the row's kind (the place
/// of its event type among those seen) and `words` words of bits by column, in `changed` the columns whose value
/// differs from the last row of its kind (`Column::equal`; for a kind's first row, those not null, as its template
/// holds None), which its dict, copied from that row's, sets; in `marks` the reveal's columns holding a marked text
/// (a pseudonym or a ciphertext). It reads only Arrow memory: a pass of `HELPER_ROWS` rows or more finds them on a
/// helper thread, on the other core, a block or more ahead of the dicts made of them (`Found`).
struct Changes<'a> {
    batches: &'a [Vec<Column<'a>>],
    event_type: usize,
    words: usize,
    reveal_columns: Vec<usize>,
    /// The event types seen (None: null), in order of first sight.
    types: Vec<Option<&'a [u8]>>,
    /// Per kind, its last row whose changes were found: (batch, row).
    last_rows: Vec<Option<(usize, usize)>>,
    /// Per column, the blocks left whose rows make its value without comparing it (`VARYING_BLOCKS`).
    varying: Vec<u32>,
}

impl<'a> Changes<'a> {
    fn new(batches: &'a [Vec<Column<'a>>], event_type: usize, columns: usize, reveal_columns: Vec<usize>) -> Self {
        Changes {
            batches,
            event_type,
            words: columns.div_ceil(64),
            reveal_columns,
            types: vec![],
            last_rows: vec![],
            varying: vec![0; columns],
        }
    }

    /// The kinds of rows `from..to` of batch `batch`, into `kinds`.
    fn kinds(&mut self, batch: usize, from: usize, to: usize, kinds: &mut Vec<usize>) {
        kinds.clear();
        let Column::Text(types) = self.batches[batch][self.event_type] else {
            kinds.resize(to - from, 0); // not text: log_dicts returns None at the first row's plan
            return;
        };
        let mut last = None;
        for row in from..to {
            let event_type = types.get(row);
            let same = |seen: &Option<&[u8]>| match (seen, event_type) {
                (Some(x), Some(y)) => same_bytes(x, y),
                (x, y) => x.is_none() && y.is_none(),
            };
            let kind = match last {
                Some(kind) if same(&self.types[kind]) => kind,
                _ => match self.types.iter().position(same) {
                    Some(kind) => kind,
                    None => {
                        self.types.push(event_type);
                        self.last_rows.push(None);
                        self.types.len() - 1
                    }
                },
            };
            last = Some(kind);
            kinds.push(kind);
        }
    }

    /// Rows `from..to` of batch `batch`: their kinds, and their bits (`words` words a row) in `changed` and `marks`.
    fn block(
        &mut self,
        batch: usize,
        from: usize,
        to: usize,
        kinds: &mut Vec<usize>,
        changed: &mut Vec<u64>,
        marks: &mut Vec<u64>,
    ) {
        self.kinds(batch, from, to, kinds);
        let words = self.words;
        changed.clear();
        changed.resize((to - from) * words, 0);
        marks.clear();
        marks.resize((to - from) * words, 0);
        // The rows whose last row of their kind is not the row before (the block's first, and each after a row of
        // another kind), with that last row: (index in the block, (batch, row)).
        let mut boundaries = vec![];
        for (i, (row, &kind)) in (from..to).zip(kinds.iter()).enumerate() {
            if i == 0 || kinds[i - 1] != kind {
                boundaries.push((i, self.last_rows[kind]));
            }
            self.last_rows[kind] = Some((batch, row));
        }
        let columns = &self.batches[batch];
        for (c, &column) in columns.iter().enumerate() {
            let (word, bit) = (c / 64, 1u64 << (c % 64));
            let varying = &mut self.varying[c];
            if *varying > 0 {
                // Values that differ from row to row (ids, times, hashes): each row makes its own, uncompared.
                *varying -= 1;
                (0..to - from).for_each(|i| changed[i * words + word] |= bit);
                continue;
            }
            let mut changes = 0;
            column.each_change(from, to, |row| {
                changed[(row - from) * words + word] |= bit;
                changes += 1;
            });
            if 8 * changes >= 7 * (to - from - 1) && to - from > 1 {
                *varying = VARYING_BLOCKS;
            }
            for &(i, last) in &boundaries {
                let row = from + i;
                let differs = match last {
                    Some((b, r)) => !column.equal(row, self.batches[b][c], r),
                    None => !column.is_null(row),
                };
                let slot = &mut changed[i * words + word];
                *slot = if differs { *slot | bit } else { *slot & !bit };
            }
        }
        for &c in &self.reveal_columns {
            if let Column::Text(texts) = columns[c] {
                for (i, row) in (from..to).enumerate() {
                    if texts.get(row).is_some_and(marked) {
                        marks[i * words + c / 64] |= 1 << (c % 64);
                    }
                }
            }
        }
    }

    /// Every block of the batches (which start at rows `starts` of the pass), each published in `found` once found,
    /// until `stop` is set.
    fn all(&mut self, starts: &[usize], rows: usize, found: &Found, stop: &AtomicBool) {
        let (mut kinds, mut changed, mut marks) = (vec![], vec![], vec![]);
        let words = self.words;
        for (batch, &start) in starts.iter().enumerate() {
            let end = starts.get(batch + 1).copied().unwrap_or(rows);
            for from in (0..end - start).step_by(BLOCK_ROWS) {
                if stop.load(Ordering::Relaxed) {
                    return;
                }
                let to = (from + BLOCK_ROWS).min(end - start);
                self.block(batch, from, to, &mut kinds, &mut changed, &mut marks);
                for (i, &kind) in kinds.iter().enumerate() {
                    let at = start + from + i;
                    found.kinds[at].store(kind as u32, Ordering::Relaxed);
                    for w in 0..words {
                        found.bits[2 * words * at + w].store(changed[i * words + w], Ordering::Relaxed);
                        found.bits[2 * words * at + words + w].store(marks[i * words + w], Ordering::Relaxed);
                    }
                }
                found.ready.store(start + to, Ordering::Release);
            }
        }
    }
}

/// The rows' kinds and bits (`Changes`), shared by the thread that finds them and the one that makes the dicts: per
/// row its kind, its `changed` words and its `marks` words; `ready`, the rows found so far (in order).
struct Found {
    kinds: Vec<AtomicU32>,
    bits: Vec<AtomicU64>,
    ready: AtomicUsize,
}

impl Found {
    fn new(rows: usize, words: usize) -> Self {
        Found {
            kinds: (0..rows).map(|_| AtomicU32::new(0)).collect(),
            bits: (0..rows * 2 * words).map(|_| AtomicU64::new(0)).collect(),
            ready: AtomicUsize::new(0),
        }
    }

    /// The rows found once row `row` is (waiting for the helper, if it has not found it yet), or None when the
    /// helper ended without finding it (it panicked).
    fn wait(&self, row: usize, helper: Option<&std::thread::ScopedJoinHandle<'_, ()>>) -> Option<usize> {
        let mut spins = 0u32;
        loop {
            let ready = self.ready.load(Ordering::Acquire);
            if ready > row {
                return Some(ready);
            }
            if helper.is_none_or(|helper| helper.is_finished()) && self.ready.load(Ordering::Acquire) <= row {
                return None;
            }
            spins += 1;
            if spins < 64 {
                std::hint::spin_loop();
            } else {
                std::thread::yield_now();
            }
        }
    }
}

impl<'py, 'a> Converter<'py, 'a> {
    /// Makes the plan of the event type of row `row` of batch `batch`, its type's first row (the next kind `Changes`
    /// found): false when the table lacks one of the type's keys.
    fn add_plan(&mut self, batch: usize, row: usize) -> PyResult<bool> {
        let Column::Text(types) = self.batches[batch][self.event_type] else {
            return Ok(false);
        };
        let name = match types.get(row) {
            Some(bytes) => text_object(self.py, bytes)?.into_bound(self.py),
            None => self.py.None().into_bound(self.py),
        };
        let template = self.template_of.call1((name,))?.downcast_into::<PyDict>()?;
        let mut plan = Plan {
            template: template.clone(),
            keys: vec![],
            columns: vec![0; self.names.len().div_ceil(64)],
            key_at: vec![usize::MAX; self.names.len()],
            last_json: vec![],
            last: None,
        };
        for key in template.keys() {
            let key = key.downcast_into::<PyString>()?;
            let Some(column) = self.names.iter().position(|n| key.to_str().is_ok_and(|k| k == n)) else {
                return Ok(false);
            };
            plan.columns[column / 64] |= 1 << (column % 64);
            plan.key_at[column] = plan.keys.len();
            plan.keys.push(key);
            plan.last_json.push(None);
        }
        self.plans.push(plan);
        Ok(true)
    }

    /// Row `row` of batch `batch` (of kind and plan `index`) as its type's log dict, or (with a reveal, when one of the
    /// reveal's fields holds a pseudonym or a ciphertext) as a revealed event: the dict's items with each marked
    /// field's shown value, given the reveal's class (whose `sealed` finds the stored texts:
    /// `secureml.query.privacy.RevealedRows`).
    /// `changed` and `marks` are the row's bits (`Changes::block`).
    ///
    /// A row copies the last row of its type, revealed or not, and sets only the values that differ: a marked
    /// field the last row held too already shows its value. A revealed event is made as the dicts are, a copy
    /// (which keeps the template's shared keys: only its values are new), then given its class: the class adds
    /// nothing to a dict's layout (`revealed_class` checked it), as CPython requires of a `__class__` assignment.
    fn dict(
        &mut self,
        batch: usize,
        row: usize,
        index: usize,
        changed: &[u64],
        marks: &[u64],
    ) -> PyResult<Option<Bound<'py, PyDict>>> {
        let py = self.py;
        let plan = &mut self.plans[index];
        let revealing = self.reveal.is_some() && marks.iter().zip(&plan.columns).any(|(m, p)| m & p != 0);
        let dict = plan.last.as_ref().unwrap_or(&plan.template).copy()?;
        if let (Some(reveal), true) = (&self.reveal, revealing) {
            // SAFETY: `dict` is a new exact dict no other code has seen, and the class a heap subtype of dict of the
            // same layout (`revealed_class`). The instance holds a reference to its heap type, which
            // `subtype_dealloc` gives back; a dict's own type is static, never counted for its instances.
            unsafe {
                ffi::Py_INCREF(reveal.class.as_ptr());
                (*dict.as_ptr()).ob_type = reveal.class.as_ptr().cast::<ffi::PyTypeObject>();
            }
        }
        let mut row_hash = None; // the next row's last hash, whichever of the two keys comes first
        for (word, ((&changed, &marks), &columns)) in changed.iter().zip(marks).zip(&plan.columns).enumerate() {
            // The marked fields are set below, shown.
            let mut bits = changed & columns & !marks;
            while bits != 0 {
                let c = word * 64 + bits.trailing_zeros() as usize;
                bits &= bits - 1;
                let k = plan.key_at[c];
                let column = self.batches[batch][c];
                let (texts, bytes) = match column {
                    Column::Text(texts) | Column::Json(texts) => (true, texts.get(row)),
                    _ => (false, None),
                };
                let shared = match &mut self.chain {
                    Some(chain) if c == chain.prev_hash && texts => chain.share(py, bytes),
                    _ => None,
                };
                let value = match shared {
                    Some(value) => value,
                    None => match make(py, column, row, &mut self.values[c], &mut plan.last_json[k], &self.loads)? {
                        Some(value) => value,
                        None => return Ok(None),
                    },
                };
                if let Some(chain) = &self.chain {
                    if c == chain.hash && texts {
                        row_hash = bytes.map(|bytes| (bytes, value.clone_ref(py)));
                    }
                }
                dict.set_item(&plan.keys[k], value)?;
            }
        }
        if let (Some(reveal), true) = (&mut self.reveal, revealing) {
            for (word, ((&changed, &marks), &columns)) in changed.iter().zip(marks).zip(&plan.columns).enumerate() {
                let mut bits = changed & columns & marks;
                while bits != 0 {
                    let c = word * 64 + bits.trailing_zeros() as usize;
                    bits &= bits - 1;
                    let Column::Text(texts) = self.batches[batch][c] else {
                        unreachable!("a reveal's columns are texts (checked by log_dicts)");
                    };
                    dict.set_item(&plan.keys[plan.key_at[c]], reveal.shown(py, texts.get(row).unwrap_or_default())?)?;
                }
            }
        }
        if let (Some(chain), Some(hash)) = (&mut self.chain, row_hash) {
            chain.last = Some(hash);
        }
        if self.chain.as_ref().is_some_and(|chain| chain.looked >= PROBE_LOOKUPS && 8 * chain.shared < chain.looked) {
            self.chain = None; // hashes not chained row to row here
        }
        plan.last = Some(dict.clone());
        Ok(Some(dict))
    }
}

/// The dict's value of row `row` of `column`, or None (outer) when this step does not handle it; `last_json`, the
/// last JSON text made for the key and its value (`Plan::last_json`).
fn make<'a>(
    py: Python<'_>,
    column: Column<'a>,
    row: usize,
    values: &mut Values<'a>,
    last_json: &mut Option<(&'a [u8], PyObject, Copy)>,
    loads: &Bound<'_, PyAny>,
) -> PyResult<Option<PyObject>> {
    let none = || Ok(Some(py.None()));
    Ok(Some(match column {
        Column::Null => return none(),
        Column::Bool(a) => match a.is_valid(row) {
            true => PyBool::new(py, a.value(row)).to_owned().into_any().unbind(),
            false => return none(),
        },
        Column::Int32(a) => match a.is_valid(row) {
            true => values.int(py, i64::from(a.value(row)))?,
            false => return none(),
        },
        Column::Int64(a) => match a.is_valid(row) {
            true => values.int(py, a.value(row))?,
            false => return none(),
        },
        Column::Float64(a) => match a.is_valid(row) {
            true => a.value(row).into_pyobject(py)?.into_any().unbind(),
            false => return none(),
        },
        Column::Text(texts) => match texts.get(row) {
            Some(bytes) => {
                values.texts.get(py, bytes, || Ok(Made { value: text_object(py, bytes)?, copy: Copy::Share }))?.0
            }
            None => return none(),
        },
        Column::Json(texts) => match (texts.get(row), last_json) {
            // The same JSON text as the last one made for this key: its value made the row's own, without a lookup.
            (Some(bytes), Some((last, value, copy))) if same_bytes(bytes, last) => own(py, value.clone_ref(py), *copy)?,
            (Some(bytes), last_json) => match values.json.get(py, bytes, loads)? {
                Some((value, copy)) => {
                    *last_json = Some((bytes, value.clone_ref(py), copy));
                    own(py, value, copy)?
                }
                // Texts that do not repeat (the cache dropped itself): parsed straight into the row's own.
                None => loads.call1((text_object(py, bytes)?,))?.unbind(),
            },
            (None, _) => return none(),
        },
        Column::Time(a) => match a.is_valid(row) {
            true => {
                let micros = a.value(row);
                let Some(text) = iso_utc(micros) else {
                    return Ok(None);
                };
                values.times.get(py, micros, || Ok(Made { value: text_object(py, &text)?, copy: Copy::Share }))?.0
            }
            false => return none(),
        },
        Column::List(lists) => match lists.bounds(row) {
            Some((start, end, texts)) => {
                let mut items = Vec::with_capacity(end - start);
                for i in start..end {
                    items.push(match texts.get(i) {
                        Some(bytes) => {
                            values
                                .texts
                                .get(py, bytes, || Ok(Made { value: text_object(py, bytes)?, copy: Copy::Share }))?
                                .0
                        }
                        None => py.None(),
                    });
                }
                PyList::new(py, items)?.into_any().unbind()
            }
            None => return none(),
        },
    }))
}

/// Rows from which a pass has arenas faulted in ahead (`Prefault`): below, starting the helper thread costs more than
/// it saves.
const PREFAULT_ROWS: usize = 4_096;
/// New memory a row's dict and values take (1,070-1,150 bytes measured on a real lake): the arenas the helper maps.
const PREFAULT_BYTES_PER_ROW: usize = 1100;
/// Rows whose changes are found at a time (`Changes::block`): a block's columns (about 500 bytes a row) stay in the
/// CPU's caches while they are read a column at a time.
const BLOCK_ROWS: usize = 1024;
/// Rows from which a pass finds its rows' changes on a helper thread (`Changes`): below, they are found first.
const HELPER_ROWS: usize = 4_096;
/// Blocks in which a column's values are not compared with the row before's, after a block where 7 in 8 or more
/// differed (an id, a time, a hash): comparing them costs more than making the rare value that repeats.
const VARYING_BLOCKS: u32 = 15;

/// The dicts of the pass's rows (batches starting at rows `starts`), in storage order, their changes taken from
/// `found` as the helper (if any) finds them; None when a row's plan or value is not one this step handles.
fn make_all<'py>(
    converter: &mut Converter<'py, '_>,
    starts: &[usize],
    rows: usize,
    words: usize,
    found: &Found,
    helper: Option<&std::thread::ScopedJoinHandle<'_, ()>>,
) -> PyResult<Option<Vec<Bound<'py, PyDict>>>> {
    let mut dicts = Vec::with_capacity(rows);
    let (mut changed, mut marks) = (vec![0u64; words], vec![0u64; words]);
    let mut ready = 0;
    for (batch, &start) in starts.iter().enumerate() {
        let end = starts.get(batch + 1).copied().unwrap_or(rows);
        for row in 0..end - start {
            let at = start + row;
            if at >= ready {
                match found.wait(at, helper) {
                    Some(rows) => ready = rows,
                    None => return Err(PyValueError::new_err("log_dicts: the changes' thread ended early")),
                }
            }
            // Kinds are numbered in order of first sight, in the order rows are made here: a new one is the next plan.
            let kind = found.kinds[at].load(Ordering::Relaxed) as usize;
            if kind == converter.plans.len() && !converter.add_plan(batch, row)? {
                return Ok(None);
            }
            for w in 0..words {
                changed[w] = found.bits[2 * words * at + w].load(Ordering::Relaxed);
                marks[w] = found.bits[2 * words * at + words + w].load(Ordering::Relaxed);
            }
            match converter.dict(batch, row, kind, &changed, &marks)? {
                Some(dict) => dicts.push(dict),
                None => return Ok(None),
            }
        }
    }
    Ok(Some(dicts))
}

/// `log_dicts`' reveal: (text columns, revealed events' class, `key_of`, `text`).
type RevealArgs<'py> = (Vec<String>, Bound<'py, PyType>, Bound<'py, PyAny>, Bound<'py, PyAny>);

/// `class` when the native pass may give it to the dicts it makes (`Converter::dict`): a heap subtype of dict
/// adding nothing to its layout (no slots, no `__dict__`, no weak references), what CPython checks before it lets
/// an object's `__class__` change between two classes; a ValueError otherwise.
fn revealed_class<'py>(class: Bound<'py, PyType>) -> PyResult<Bound<'py, PyType>> {
    let py = class.py();
    let dict = py.get_type::<PyDict>();
    let same = |name: &str| -> PyResult<bool> { class.getattr(name)?.eq(dict.getattr(name)?) };
    let flags: u64 = class.getattr(intern!(py, "__flags__"))?.extract()?;
    let heap = flags & ffi::Py_TPFLAGS_HEAPTYPE != 0;
    if !(heap
        && class.is_subclass(&dict)?
        && same("__basicsize__")?
        && same("__itemsize__")?
        && same("__dictoffset__")?
        && same("__weakrefoffset__")?)
    {
        return Err(PyValueError::new_err(format!(
            "log_dicts: the revealed events' class {} must be a subclass of dict with __slots__ = () (a dict's layout)",
            class.name()?
        )));
    }
    Ok(class)
}

/// The log dicts of the rows of `batches` (RecordBatches of one schema, through `__arrow_c_array__`), in the
/// order of `order` (row indices across the batches, an Arrow int64 array) or as they come.
/// `template_of(event_type)` gives the dict a type's rows are copied from (its keys in order, each None),
/// `times` and `json` name the columns written as ISO text and parsed with `loads`; `reveal`, (text columns,
/// revealed events' class, `key_of(name)` giving a subject's key bytes or None, `text(stored)` giving a stored
/// text's shown form), makes the rows holding such texts revealed events (see the module's docs); `parsed`, a
/// `JsonCache` shared by the calls that make one result in parts, keeps the JSON texts parsed across them. None when a
/// column or value is not one this step handles (the caller then takes the Python path).
#[pyfunction]
#[pyo3(signature = (batches, template_of, times, json, loads, order=None, reveal=None, parsed=None))]
#[allow(clippy::too_many_arguments)]
pub fn log_dicts<'py>(
    py: Python<'py>,
    batches: &Bound<'py, PyList>,
    template_of: Bound<'py, PyAny>,
    times: Vec<String>,
    json: Vec<String>,
    loads: Bound<'py, PyAny>,
    order: Option<&Bound<'py, PyAny>>,
    reveal: Option<RevealArgs<'py>>,
    parsed: Option<&Bound<'py, JsonCache>>,
) -> PyResult<Option<Bound<'py, PyList>>> {
    let arrays = batches.iter().map(|batch| import_array(&batch)).collect::<PyResult<Vec<ArrayRef>>>()?;
    let mut names: Vec<String> = vec![];
    let mut columns = Vec::with_capacity(arrays.len());
    let mut starts = Vec::with_capacity(arrays.len() + 1);
    let mut rows = 0;
    for array in &arrays {
        let DataType::Struct(fields) = array.data_type() else {
            return Err(PyValueError::new_err("log_dicts: batches must be RecordBatches"));
        };
        let these: Vec<String> = fields.iter().map(|f| f.name().clone()).collect();
        if names.is_empty() {
            names = these;
        } else if names != these {
            return Err(PyValueError::new_err("log_dicts: batches must share one schema"));
        }
        let mut typed = Vec::with_capacity(names.len());
        for (name, column) in names.iter().zip(array.as_struct().columns()) {
            match Column::of(column.as_ref(), times.contains(name), json.contains(name)) {
                Some(c) => typed.push(c),
                None => return Ok(None),
            }
        }
        columns.push(typed);
        starts.push(rows);
        rows += array.len();
    }
    let Some(event_type) = names.iter().position(|n| n == "event_type") else {
        return Ok(None);
    };
    let order = order.map(import_array).transpose()?;
    let order = order.as_ref().map(|array| int64_order(array, "log_dicts")).transpose()?;
    let reveal = match reveal {
        Some((columns, class, key_of, text)) => Some(Reveal {
            columns,
            class: revealed_class(class)?,
            ciphers: Ciphers::new(key_of),
            text,
            known: HashMap::with_hasher(RandomState::new()),
            erased: None,
            plain: Vec::new(),
        }),
        None => None,
    };
    let mut reveal_columns = vec![];
    if let Some(reveal) = &reveal {
        for name in &reveal.columns {
            let Some(c) = names.iter().position(|n| n == name) else {
                return Err(PyValueError::new_err(format!(
                    "log_dicts: the reveal's column {name} is not in the batches"
                )));
            };
            if columns.iter().any(|typed| !matches!(typed[c], Column::Text(_))) {
                return Ok(None); // a JSON column's values are revealed once parsed, by the Python path
            }
            reveal_columns.push(c);
        }
    }
    // The JSON columns' parsed values of the query's earlier parts, given back when this part's dicts are made.
    let mut earlier = parsed.map(|cache| std::mem::take(&mut cache.borrow_mut().columns)).unwrap_or_default();
    let values = names.iter().map(|name| Values::new(earlier.remove(name).unwrap_or_else(Parsed::new))).collect();
    let chain = match (names.iter().position(|n| n == "hash"), names.iter().position(|n| n == "prev_hash")) {
        (Some(hash), Some(prev_hash)) => Some(Chain { hash, prev_hash, last: None, looked: 0, shared: 0 }),
        _ => None,
    };
    let words = names.len().div_ceil(64);
    let mut changes = Changes::new(&columns, event_type, names.len(), reveal_columns);
    let mut converter = Converter {
        py,
        batches: &columns,
        names,
        event_type,
        values,
        plans: vec![],
        template_of,
        loads,
        reveal,
        chain,
    };
    // The new dicts' memory, faulted in ahead on the other core while they are made (`arenas.rs`).
    let _prefault = (rows >= PREFAULT_ROWS).then(|| Prefault::start(rows * PREFAULT_BYTES_PER_ROW)).flatten();
    // Rows are made in storage order, where a row most often repeats the last one's values (files are sorted by
    // operation and time) and columns are read in sequence, then picked in `order`.
    let found = Found::new(rows, words);
    let stop = AtomicBool::new(false);
    let made = std::thread::scope(|scope| -> PyResult<Option<Vec<Bound<'py, PyDict>>>> {
        let helper = if rows >= HELPER_ROWS {
            let (starts, found, stop) = (&starts, &found, &stop);
            let spawned = std::thread::Builder::new()
                .name("secureml-changes".into())
                .spawn_scoped(scope, move || changes.all(starts, rows, found, stop));
            match spawned {
                Ok(helper) => Some(helper),
                Err(_) => return Ok(None), // no thread to be had: the Python path
            }
        } else {
            changes.all(&starts, rows, &found, &stop);
            None
        };
        let made = make_all(&mut converter, &starts, rows, words, &found, helper.as_ref());
        stop.store(true, Ordering::Relaxed);
        made
    })?;
    let Some(dicts) = made else {
        return Ok(None);
    };
    if let Some(cache) = parsed {
        let json_columns = converter.names.iter().zip(converter.values.iter_mut());
        cache.borrow_mut().columns = json_columns
            .filter(|(name, _)| json.contains(name))
            .map(|(name, values)| (name.clone(), std::mem::replace(&mut values.json, Parsed::new())))
            .collect();
    }
    if let Some(order) = order {
        let picked = order
            .iter()
            .map(|&row| {
                usize::try_from(row)
                    .ok()
                    .and_then(|r| dicts.get(r))
                    .cloned()
                    .ok_or_else(|| PyValueError::new_err(format!("log_dicts: order holds {row}, not a row")))
            })
            .collect::<PyResult<Vec<_>>>()?;
        return Ok(Some(PyList::new(py, picked)?));
    }
    Ok(Some(PyList::new(py, dicts)?))
}

/// The values of an `order` argument (row or item indices), which must be an Arrow int64 array without nulls: a
/// ValueError naming `call` otherwise.
fn int64_order<'o>(order: &'o ArrayRef, call: &str) -> PyResult<&'o [i64]> {
    match order.data_type() {
        DataType::Int64 if order.null_count() == 0 => Ok(order.as_primitive::<Int64Type>().values()),
        _ => Err(PyValueError::new_err(format!("{call}: order must be an int64 array without nulls"))),
    }
}

/// Items `pick` brings into the cache ahead of the one it takes.
const PICK_AHEAD: usize = 16;

/// `[items[i] for i in order]`, `order` an Arrow int64 array of indices into `items` (a ValueError for one out of
/// range): a result's dicts put in time order (`secureml.query.logs._streamed_logs`). Taking a dict writes its
/// reference count, in memory its row was made in long before and in an order of its own: a cache miss per dict (most
/// of the 119 ms `list(map(logs.__getitem__, order.tolist()))` took for 1M rows). The dict `PICK_AHEAD` places on is
/// brought into the cache meanwhile, so that the misses overlap instead of each being waited for (38 ms).
#[pyfunction]
pub fn pick<'py>(
    py: Python<'py>,
    items: &Bound<'py, PyList>,
    order: &Bound<'py, PyAny>,
) -> PyResult<Bound<'py, PyList>> {
    let order = import_array(order)?;
    let order = int64_order(&order, "pick")?;
    let len = items.len();
    if let Some(bad) = order.iter().find(|&&i| usize::try_from(i).map_or(true, |i| i >= len)) {
        return Err(PyValueError::new_err(format!("pick: order holds {bad}, not a place in a list of {len}")));
    }
    // SAFETY: every index is in range of `items` (checked above), and nothing runs meanwhile that could change it (no
    // Python code); PyList_GetItem gives a borrowed reference, which gets its own before PyList_SetItem steals it
    // into the new list, whose every place is set once.
    unsafe {
        let list = Bound::from_owned_ptr_or_err(py, ffi::PyList_New(order.len() as ffi::Py_ssize_t))?;
        let item = |index: i64| ffi::PyList_GetItem(items.as_ptr(), index as ffi::Py_ssize_t);
        for (place, &index) in order.iter().enumerate() {
            if let Some(&ahead) = order.get(place + PICK_AHEAD) {
                prefetch(item(ahead));
            }
            let taken = item(index);
            ffi::Py_INCREF(taken);
            ffi::PyList_SetItem(list.as_ptr(), place as ffi::Py_ssize_t, taken);
        }
        Ok(list.downcast_into_unchecked::<PyList>())
    }
}

/// A hint to bring the memory at `address` into the cache (nothing where the CPU has no such instruction here).
#[inline]
fn prefetch(address: *const ffi::PyObject) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a prefetch never faults, whatever the address.
    unsafe {
        std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(address.cast());
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = address;
}
