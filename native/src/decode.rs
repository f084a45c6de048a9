//! Sealed Avro events decoded column by column into Arrow, the seal checked in the same pass.
//!
//! The Python path joins the messages into an Avro container for Polars (a copy of every byte),
//! checks each seal with `hashlib` beforehand (1.3 us a message, most of it the interpreter), and
//! when one sealed message does not decode, the whole block fails and is decoded again one message
//! at a time. Here each message is read once, straight into the column buffers, with the GIL
//! released; a message that is not sealed or does not decode is rolled back out of the columns and
//! reported by index, so the caller dead-letters it and keeps the rest.
//!
//! The writer schema comes from Python as `(name, kind, nullable)` per field (`decode.py` derives it
//! from the `.avsc`), so a schema version is data here, not code.

use std::sync::Arc;

use arrow_array::types::TimestampMicrosecondType;
use arrow_array::{
    Array, ArrayRef, BooleanArray, Float64Array, Int32Array, Int64Array, LargeListArray, LargeStringArray,
    PrimitiveArray, StructArray,
};
use arrow_buffer::{BooleanBuffer, Buffer, NullBuffer, OffsetBuffer, ScalarBuffer};
use arrow_schema::{DataType, Field, Fields};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyList};
use sha2::{Digest, Sha256};

use crate::arrow_ffi::export_array;

/// `codec._HASH_MARK` and the hex digest after it: what a sealed message ends with.
const HASH_MARK: [u8; 2] = [0x80, 0x01];
const HASH_TAIL: usize = HASH_MARK.len() + 64;

#[derive(Clone, Copy, PartialEq)]
enum Kind {
    String,
    Long,
    Int,
    Double,
    Boolean,
    Timestamp,
    StringArray,
}

impl Kind {
    fn parse(name: &str) -> Option<Kind> {
        Some(match name {
            "string" => Kind::String,
            "long" => Kind::Long,
            "int" => Kind::Int,
            "double" => Kind::Double,
            "boolean" => Kind::Boolean,
            "timestamp" => Kind::Timestamp,
            "string_array" => Kind::StringArray,
            _ => return None,
        })
    }
}

/// One column being filled: only the buffers of its kind are used. Rows are appended as messages
/// decode and cut back to `rows` when a message fails half way.
struct Column {
    name: String,
    kind: Kind,
    nullable: bool,
    valid: Vec<bool>,
    longs: Vec<i64>,
    ints: Vec<i32>,
    doubles: Vec<f64>,
    booleans: Vec<bool>,
    offsets: Vec<i64>, // strings: into `data`; string arrays: of the items, into `data`
    data: Vec<u8>,
    lists: Vec<i64>, // string arrays: into the items (`offsets`)
}

impl Column {
    /// An empty column with room for `rows` rows (the vectors of other kinds stay unallocated).
    fn new(name: String, kind: Kind, nullable: bool, rows: usize) -> Column {
        let room = |wanted: bool| if wanted { rows } else { 0 };
        let mut offsets = Vec::with_capacity(room(kind == Kind::String) + 1);
        offsets.push(0);
        let mut lists = Vec::with_capacity(room(kind == Kind::StringArray) + 1);
        lists.push(0);
        Column {
            name,
            kind,
            nullable,
            valid: Vec::with_capacity(room(nullable)),
            longs: Vec::with_capacity(room(matches!(kind, Kind::Long | Kind::Timestamp))),
            ints: Vec::with_capacity(room(kind == Kind::Int)),
            doubles: Vec::with_capacity(room(kind == Kind::Double)),
            booleans: Vec::with_capacity(room(kind == Kind::Boolean)),
            offsets,
            data: Vec::new(),
            lists,
        }
    }

    fn read(&mut self, reader: &mut Reader<'_>) -> Result<(), String> {
        if self.nullable {
            match reader.long()? {
                0 => {
                    self.valid.push(false);
                    self.push_default();
                    return Ok(());
                }
                1 => self.valid.push(true),
                other => return Err(format!("union index {other} of field {:?} is not 0 (null) or 1", self.name)),
            }
        }
        match self.kind {
            Kind::String => {
                let text = reader.string()?;
                self.data.extend_from_slice(text);
                self.offsets.push(self.data.len() as i64);
            }
            Kind::Long | Kind::Timestamp => self.longs.push(reader.long()?),
            Kind::Int => {
                let value = reader.long()?;
                let value = i32::try_from(value)
                    .map_err(|_| format!("int {value} of field {:?} is out of the 32-bit range", self.name))?;
                self.ints.push(value);
            }
            Kind::Double => self.doubles.push(f64::from_le_bytes(reader.take(8)?.try_into().expect("8 bytes"))),
            Kind::Boolean => match reader.take(1)?[0] {
                0 => self.booleans.push(false),
                1 => self.booleans.push(true),
                other => return Err(format!("boolean byte {other} of field {:?} is not 0 or 1", self.name)),
            },
            Kind::StringArray => {
                loop {
                    let mut count = reader.long()?;
                    if count == 0 {
                        break;
                    }
                    if count < 0 {
                        count = count.checked_neg().ok_or("array block count out of range")?;
                        reader.long()?; // the block's size in bytes, which a reader of every item does not need
                    }
                    if count as u64 > reader.remaining() as u64 {
                        return Err(format!(
                            "array block of {count} items in field {:?} overruns the message",
                            self.name
                        ));
                    }
                    for _ in 0..count {
                        let text = reader.string()?;
                        self.data.extend_from_slice(text);
                        self.offsets.push(self.data.len() as i64);
                    }
                }
                self.lists.push(self.offsets.len() as i64 - 1);
            }
        }
        Ok(())
    }

    fn push_default(&mut self) {
        match self.kind {
            Kind::String => self.offsets.push(self.data.len() as i64),
            Kind::Long | Kind::Timestamp => self.longs.push(0),
            Kind::Int => self.ints.push(0),
            Kind::Double => self.doubles.push(0.0),
            Kind::Boolean => self.booleans.push(false),
            Kind::StringArray => self.lists.push(self.offsets.len() as i64 - 1),
        }
    }

    /// Back to `rows` rows: what a message that failed half way appended is dropped.
    fn truncate(&mut self, rows: usize) {
        if self.nullable {
            self.valid.truncate(rows);
        }
        match self.kind {
            Kind::String => {
                self.offsets.truncate(rows + 1);
                self.data.truncate(self.offsets[rows] as usize);
            }
            Kind::Long | Kind::Timestamp => self.longs.truncate(rows),
            Kind::Int => self.ints.truncate(rows),
            Kind::Double => self.doubles.truncate(rows),
            Kind::Boolean => self.booleans.truncate(rows),
            Kind::StringArray => {
                self.lists.truncate(rows + 1);
                self.offsets.truncate(self.lists[rows] as usize + 1);
                self.data.truncate(self.offsets[self.offsets.len() - 1] as usize);
            }
        }
    }

    fn finish(self) -> (Field, ArrayRef) {
        let nulls =
            if self.nullable && self.valid.contains(&false) { Some(NullBuffer::from(self.valid)) } else { None };
        let strings = |offsets: Vec<i64>, data: Vec<u8>, nulls: Option<NullBuffer>| {
            // SAFETY: the offsets grow from 0 to data.len(), and every string between them passed from_utf8.
            unsafe {
                LargeStringArray::new_unchecked(
                    OffsetBuffer::new_unchecked(ScalarBuffer::from(offsets)),
                    Buffer::from_vec(data),
                    nulls,
                )
            }
        };
        let (data_type, array): (DataType, ArrayRef) = match self.kind {
            Kind::String => (DataType::LargeUtf8, Arc::new(strings(self.offsets, self.data, nulls))),
            Kind::Long => (DataType::Int64, Arc::new(Int64Array::new(ScalarBuffer::from(self.longs), nulls))),
            Kind::Timestamp => {
                let array = PrimitiveArray::<TimestampMicrosecondType>::new(ScalarBuffer::from(self.longs), nulls)
                    .with_timezone("UTC");
                (array.data_type().clone(), Arc::new(array))
            }
            Kind::Int => (DataType::Int32, Arc::new(Int32Array::new(ScalarBuffer::from(self.ints), nulls))),
            Kind::Double => (DataType::Float64, Arc::new(Float64Array::new(ScalarBuffer::from(self.doubles), nulls))),
            Kind::Boolean => {
                let values = BooleanBuffer::from(self.booleans);
                (DataType::Boolean, Arc::new(BooleanArray::new(values, nulls)))
            }
            Kind::StringArray => {
                let item = Arc::new(Field::new("item", DataType::LargeUtf8, true));
                // SAFETY: as for strings; the list offsets grow from 0 to the number of items.
                let lists = unsafe { OffsetBuffer::new_unchecked(ScalarBuffer::from(self.lists)) };
                let items = Arc::new(strings(self.offsets, self.data, None));
                let array = LargeListArray::new(item.clone(), lists, items, nulls);
                (DataType::LargeList(item), Arc::new(array))
            }
        };
        (Field::new(self.name, data_type, self.nullable), array)
    }
}

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn remaining(&self) -> usize {
        self.bytes.len() - self.at
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        if n > self.remaining() {
            return Err(format!("{n} bytes needed at byte {}, {} left", self.at, self.remaining()));
        }
        let taken = &self.bytes[self.at..self.at + n];
        self.at += n;
        Ok(taken)
    }

    /// A zigzag varint (Avro int and long), at most ten bytes.
    fn long(&mut self) -> Result<i64, String> {
        let mut value: u64 = 0;
        for shift in (0..70).step_by(7) {
            let byte = *self.bytes.get(self.at).ok_or_else(|| format!("varint cut short at byte {}", self.at))?;
            self.at += 1;
            if shift == 63 && byte > 1 {
                return Err(format!("varint longer than 64 bits at byte {}", self.at - 1));
            }
            value |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Ok((value >> 1) as i64 ^ -((value & 1) as i64));
            }
        }
        Err(format!("varint longer than ten bytes at byte {}", self.at))
    }

    fn string(&mut self) -> Result<&'a [u8], String> {
        let length = self.long()?;
        let length = usize::try_from(length).map_err(|_| format!("negative string length {length}"))?;
        let bytes = self.take(length)?;
        std::str::from_utf8(bytes).map_err(|e| format!("string at byte {} is not UTF-8: {e}", self.at - length))?;
        Ok(bytes)
    }
}

/// True when the message ends in `\x80\x01` and the hex SHA-256 of everything before it (`codec.is_sealed`).
fn is_sealed(message: &[u8]) -> bool {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    if message.len() <= HASH_TAIL {
        return false;
    }
    let (prefix, tail) = message.split_at(message.len() - HASH_TAIL);
    if tail[..2] != HASH_MARK {
        return false;
    }
    let digest = Sha256::digest(prefix);
    digest
        .iter()
        .zip(tail[2..].chunks_exact(2))
        .all(|(byte, hex)| hex[0] == HEX[(byte >> 4) as usize] && hex[1] == HEX[(byte & 0xf) as usize])
}

/// A message that is not kept: not sealed (`None`), or sealed yet not decodable (why).
type Failure = (usize, Option<String>);

fn decode_all(messages: &[&[u8]], columns: &mut [Column], check_seal: bool) -> Vec<Failure> {
    let mut failures = Vec::new();
    let mut rows = 0;
    for (index, message) in messages.iter().enumerate() {
        if check_seal && !is_sealed(message) {
            failures.push((index, None));
            continue;
        }
        let mut reader = Reader { bytes: message, at: 0 };
        let mut outcome = columns.iter_mut().try_for_each(|column| column.read(&mut reader));
        if outcome.is_ok() && reader.remaining() != 0 {
            outcome = Err(format!("{} bytes left after the last field", reader.remaining()));
        }
        match outcome {
            Ok(()) => rows += 1,
            Err(why) => {
                columns.iter_mut().for_each(|column| column.truncate(rows));
                failures.push((index, Some(why)));
            }
        }
    }
    failures
}

/// Decodes `messages` (a list of `bytes`) of the writer schema `fields` (`(name, kind, nullable)`), checking
/// each seal first when `check_seal`. Returns a pyarrow StructArray of the messages kept, in order, and
/// `(index, reason)` of the others: reason None when not sealed, else why it does not decode.
#[pyfunction]
pub fn decode_events<'py>(
    py: Python<'py>,
    messages: &Bound<'py, PyList>,
    fields: Vec<(String, String, bool)>,
    check_seal: bool,
) -> PyResult<(PyObject, Vec<Failure>)> {
    let mut columns = Vec::with_capacity(fields.len());
    for (name, kind, nullable) in fields {
        let parsed = Kind::parse(&kind)
            .ok_or_else(|| PyValueError::new_err(format!("decode_events: field {name:?} has unknown kind {kind:?}")))?;
        columns.push(Column::new(name, parsed, nullable, messages.len()));
    }
    // Strong references held for the whole call: the list may change once the GIL is released.
    let held: Vec<Bound<'py, PyBytes>> = messages
        .iter()
        .map(|m| {
            m.downcast_into::<PyBytes>().map_err(|_| PyValueError::new_err("decode_events: messages must be bytes"))
        })
        .collect::<PyResult<_>>()?;
    let slices: Vec<&[u8]> = held.iter().map(|m| m.as_bytes()).collect();
    let (failures, array) = py.allow_threads(|| {
        let failures = decode_all(&slices, &mut columns, check_seal);
        let (fields, arrays): (Vec<Field>, Vec<ArrayRef>) = columns.into_iter().map(Column::finish).unzip();
        let rows = slices.len() - failures.len();
        (failures, StructArray::try_new_with_length(Fields::from(fields), arrays, None, rows))
    });
    let array = array.map_err(|e| PyValueError::new_err(format!("decode_events: {e}")))?;
    Ok((export_array(py, &array)?, failures))
}
