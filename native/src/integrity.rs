//! The integrity hashing of lake rows: what `verify` and the checkpointer spend their time on.
//!
//! `Canonical` re-encodes rows of the lake (a pyarrow RecordBatch, read through `arrow_ffi`) into the
//! canonical Avro bytes every event's hash covers, byte for byte `integrity/canonical.py` (which equals
//! the producer's message prefix), and compares each row's SHA-256 with its stored `hash`. In Python the
//! column-wise encoding cost ~4.5 us an event and the digests ~1 us (bench/RESULTS.md, wave 2c); here one
//! pass over the columns encodes each row into one reused buffer and hashes it.
//!
//! `leaf_hashes` and `extend_frontier` are `integrity/merkle.py`'s RFC 6962 leaf and node hashing over a
//! block of leaves (32 bytes each, concatenated) instead of a Python object per leaf and per node.
//!
//! Everything past reading the arguments runs with the GIL released: the checkpointer hashes on the
//! materializer's maintenance thread, beside the thread that commits.

use arrow_array::builder::LargeBinaryBuilder;
use arrow_array::{Array, ArrayRef, BooleanArray, StructArray};
use arrow_data::ArrayData;
use arrow_schema::DataType;
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyList};
use sha2::{Digest, Sha256};

use crate::arrow_ffi::{export_array, import_array};

const HEX: &[u8; 16] = b"0123456789abcdef";
const LEAF: usize = 32;

/// The Avro types the event schema uses (`canonical._PRIMITIVE`, plus arrays of strings).
#[derive(Clone, Copy)]
enum Kind {
    String,
    Long,
    Double,
    Boolean,
    Strings,
}

/// Offsets of a variable-width column, 32- or 64-bit, already starting at the column's offset.
enum Offsets<'a> {
    Small(&'a [i32]),
    Large(&'a [i64]),
}

impl Offsets<'_> {
    fn range(&self, i: usize) -> (usize, usize) {
        match self {
            Offsets::Small(o) => (o[i] as usize, o[i + 1] as usize),
            Offsets::Large(o) => (o[i] as usize, o[i + 1] as usize),
        }
    }
}

/// A string (or binary) column's bytes, row by row; a null row reads as empty (as `canonical._strings` fills it).
struct Text<'a> {
    data: &'a ArrayData,
    offsets: Offsets<'a>,
    values: &'a [u8],
}

impl<'a> Text<'a> {
    fn of(data: &'a ArrayData) -> Option<Self> {
        let offsets = match data.data_type() {
            DataType::Utf8 | DataType::Binary => Offsets::Small(data.buffer::<i32>(0)),
            DataType::LargeUtf8 | DataType::LargeBinary => Offsets::Large(data.buffer::<i64>(0)),
            _ => return None,
        };
        Some(Text { data, offsets, values: data.buffers()[1].as_slice() })
    }

    fn get(&self, i: usize) -> &'a [u8] {
        if self.data.is_null(i) {
            return b"";
        }
        let (start, end) = self.offsets.range(i);
        &self.values[start..end]
    }
}

/// One schema field's column, typed.
enum Values<'a> {
    Null,
    Text(Text<'a>),
    Int32(&'a [i32]),
    Int64(&'a [i64]),
    Double(&'a [f64]),
    Boolean(&'a [u8], usize), // bitmap and its bit offset
    List(Offsets<'a>, Text<'a>),
}

struct Column<'a> {
    data: &'a ArrayData,
    values: Values<'a>,
    kind: Kind,
    optional: bool,
}

impl<'a> Column<'a> {
    /// `data` read as the field's kind; None when its Arrow type cannot hold that kind.
    fn of(data: &'a ArrayData, kind: Kind, optional: bool) -> Option<Self> {
        let values = match (kind, data.data_type()) {
            (_, DataType::Null) => Values::Null,
            (Kind::String, _) => Values::Text(Text::of(data)?),
            (Kind::Long, DataType::Int32) => Values::Int32(data.buffer::<i32>(0)),
            (Kind::Long, DataType::Int64 | DataType::Timestamp(_, _)) => Values::Int64(data.buffer::<i64>(0)),
            (Kind::Double, DataType::Float64) => Values::Double(data.buffer::<f64>(0)),
            (Kind::Boolean, DataType::Boolean) => Values::Boolean(data.buffers()[0].as_slice(), data.offset()),
            (Kind::Strings, DataType::List(_)) => {
                Values::List(Offsets::Small(data.buffer::<i32>(0)), Text::of(&data.child_data()[0])?)
            }
            (Kind::Strings, DataType::LargeList(_)) => {
                Values::List(Offsets::Large(data.buffer::<i64>(0)), Text::of(&data.child_data()[0])?)
            }
            _ => return None,
        };
        Some(Column { data, values, kind, optional })
    }

    /// Appends row `i`'s encoding. A null in an optional field is the union's branch 0; a null elsewhere (only a
    /// tampered row has one: `scan` judges such a row not intact whatever its hash) encodes as zero or empty.
    fn encode(&self, i: usize, out: &mut Vec<u8>) {
        let null = matches!(self.values, Values::Null) || self.data.is_null(i);
        if self.optional {
            out.push(if null { 0 } else { 2 });
            if null {
                return;
            }
        }
        match (&self.values, self.kind) {
            (Values::Text(text), _) => push_bytes(out, text.get(i)),
            (Values::Int32(v), _) => push_long(out, if null { 0 } else { v[i] as i64 }),
            (Values::Int64(v), _) => push_long(out, if null { 0 } else { v[i] }),
            (Values::Double(v), _) => out.extend_from_slice(&(if null { 0.0 } else { v[i] }).to_le_bytes()),
            (Values::Boolean(bits, offset), _) => {
                let k = offset + i;
                out.push(u8::from(!null && bits[k >> 3] >> (k & 7) & 1 == 1));
            }
            (Values::List(offsets, items), _) => {
                let (start, end) = if null { (0, 0) } else { offsets.range(i) };
                if end > start {
                    push_long(out, (end - start) as i64);
                    for j in start..end {
                        push_bytes(out, items.get(j));
                    }
                }
                out.push(0);
            }
            (Values::Null, Kind::String | Kind::Strings) => out.push(0), // an empty string, an empty array
            (Values::Null, Kind::Long) => out.push(0),
            (Values::Null, Kind::Double) => out.extend_from_slice(&0f64.to_le_bytes()),
            (Values::Null, Kind::Boolean) => out.push(0),
        }
    }
}

/// Avro's zigzag varint.
fn push_long(out: &mut Vec<u8>, value: i64) {
    let mut zigzag = ((value << 1) ^ (value >> 63)) as u64;
    while zigzag >= 0x80 {
        out.push((zigzag as u8) | 0x80);
        zigzag >>= 7;
    }
    out.push(zigzag as u8);
}

fn push_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    push_long(out, bytes.len() as i64);
    out.extend_from_slice(bytes);
}

fn hex(digest: &[u8]) -> [u8; 64] {
    let mut text = [0u8; 64];
    for (k, byte) in digest.iter().enumerate() {
        text[2 * k] = HEX[(byte >> 4) as usize];
        text[2 * k + 1] = HEX[(byte & 0xf) as usize];
    }
    text
}

/// The canonical encoding of one schema version: `Canonical([(field, kind, optional), ...])` for every field
/// before `hash`, kind one of "string", "long", "double", "boolean", "strings" (an array of strings).
#[pyclass(frozen, module = "secureml_audit_native")]
pub struct Canonical {
    fields: Vec<(String, Kind, bool)>,
}

impl Canonical {
    /// The batch's columns in field order, then `hash` when asked for (their arrays, kept alive while the
    /// columns borrow them).
    fn arrays(&self, batch: &Bound<'_, PyAny>, with_hash: bool) -> PyResult<Vec<ArrayRef>> {
        let imported = import_array(batch)?;
        let rows = imported
            .as_any()
            .downcast_ref::<StructArray>()
            .ok_or_else(|| PyValueError::new_err("Canonical: expected a RecordBatch (a struct array)"))?;
        self.fields
            .iter()
            .map(|(name, _, _)| {
                rows.column_by_name(name)
                    .cloned()
                    .ok_or_else(|| PyValueError::new_err(format!("Canonical: the batch has no column {name:?}")))
            })
            .collect::<PyResult<_>>()
            .and_then(|mut columns: Vec<ArrayRef>| {
                if with_hash {
                    columns.push(
                        rows.column_by_name("hash")
                            .cloned()
                            .ok_or_else(|| PyValueError::new_err("Canonical: the batch has no column \"hash\""))?,
                    );
                }
                Ok(columns)
            })
    }

    fn columns<'a>(&self, data: &'a [ArrayData]) -> PyResult<Vec<Column<'a>>> {
        self.fields
            .iter()
            .zip(data)
            .map(|((name, kind, optional), data)| {
                Column::of(data, *kind, *optional).ok_or_else(|| {
                    PyValueError::new_err(format!(
                        "Canonical: column {name:?} is {}, which cannot hold the schema's {} values",
                        data.data_type(),
                        kind_name(*kind)
                    ))
                })
            })
            .collect()
    }
}

fn kind_name(kind: Kind) -> &'static str {
    match kind {
        Kind::String => "string",
        Kind::Long => "long",
        Kind::Double => "double",
        Kind::Boolean => "boolean",
        Kind::Strings => "array-of-string",
    }
}

fn encode_row(columns: &[Column<'_>], i: usize, out: &mut Vec<u8>) {
    out.clear();
    for column in columns {
        column.encode(i, out);
    }
}

#[pymethods]
impl Canonical {
    #[new]
    fn new(fields: Vec<(String, String, bool)>) -> PyResult<Self> {
        let fields = fields
            .into_iter()
            .map(|(name, kind, optional)| {
                let kind = match kind.as_str() {
                    "string" => Kind::String,
                    "long" => Kind::Long,
                    "double" => Kind::Double,
                    "boolean" => Kind::Boolean,
                    "strings" => Kind::Strings,
                    other => {
                        return Err(PyValueError::new_err(format!(
                            "Canonical: field {name:?} has kind {other:?}, not one of string, long, double, \
                             boolean, strings"
                        )))
                    }
                };
                Ok((name, kind, optional))
            })
            .collect::<PyResult<_>>()?;
        Ok(Canonical { fields })
    }

    /// The canonical bytes of every row of `batch` (a pyarrow large_binary array).
    fn encode(&self, py: Python<'_>, batch: &Bound<'_, PyAny>) -> PyResult<PyObject> {
        let data: Vec<ArrayData> = self.arrays(batch, false)?.iter().map(|a| a.to_data()).collect();
        let columns = self.columns(&data)?;
        let rows = data.first().map_or(0, |d| d.len());
        let encoded = py.allow_threads(|| {
            let mut builder = LargeBinaryBuilder::with_capacity(rows, rows * 256);
            let mut row = Vec::with_capacity(1024);
            for i in 0..rows {
                encode_row(&columns, i, &mut row);
                builder.append_value(&row);
            }
            builder.finish()
        });
        export_array(py, &encoded)
    }

    /// Whether each row's `hash` is the lowercase hex SHA-256 of its canonical bytes (False where it is null),
    /// as a pyarrow boolean array.
    fn matches(&self, py: Python<'_>, batch: &Bound<'_, PyAny>) -> PyResult<PyObject> {
        let data: Vec<ArrayData> = self.arrays(batch, true)?.iter().map(|a| a.to_data()).collect();
        let columns = self.columns(&data)?;
        let stored = data.last().expect("arrays() appends the hash column");
        let stored = Text::of(stored).ok_or_else(|| {
            PyValueError::new_err(format!("Canonical: column \"hash\" is {}, not a string", stored.data_type()))
        })?;
        let matched = py.allow_threads(|| {
            let mut row = Vec::with_capacity(1024);
            let matched: Vec<bool> = (0..stored.data.len())
                .map(|i| {
                    if stored.data.is_null(i) {
                        return false;
                    }
                    encode_row(&columns, i, &mut row);
                    stored.get(i) == hex(&Sha256::digest(&row))
                })
                .collect();
            BooleanArray::from(matched)
        });
        export_array(py, &matched)
    }
}

/// The RFC 6962 leaf hash of every event hash in `hashes` (a pyarrow string array): SHA-256(0x00 || the hex
/// text), concatenated, 32 bytes a leaf.
#[pyfunction]
pub fn leaf_hashes<'py>(py: Python<'py>, hashes: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyBytes>> {
    let array = import_array(hashes)?;
    let data = array.to_data();
    let text = Text::of(&data)
        .ok_or_else(|| PyValueError::new_err(format!("leaf_hashes: hashes are {}, not strings", data.data_type())))?;
    if data.null_count() > 0 {
        return Err(PyValueError::new_err("leaf_hashes: an event hash is null (every lake row has one)"));
    }
    let block = py.allow_threads(|| {
        let mut block = Vec::with_capacity(data.len() * LEAF);
        for i in 0..data.len() {
            let mut hasher = Sha256::new();
            hasher.update([0u8]);
            hasher.update(text.get(i));
            block.extend_from_slice(&hasher.finalize());
        }
        block
    });
    Ok(PyBytes::new(py, &block))
}

fn node_hash(left: &[u8], right: &[u8]) -> [u8; LEAF] {
    let mut hasher = Sha256::new();
    hasher.update([1u8]);
    hasher.update(left);
    hasher.update(right);
    hasher.finalize().into()
}

/// The frontier (perfect subtree roots, largest first) after appending `leaves` to a tree of `size` leaves.
fn extend(frontier: &mut Vec<[u8; LEAF]>, mut size: u64, leaves: &[u8]) {
    for leaf in leaves.chunks_exact(LEAF) {
        let mut node: [u8; LEAF] = leaf.try_into().expect("chunks of LEAF bytes");
        let mut carry = size;
        while carry & 1 == 1 {
            let left = frontier.pop().expect("a tree of odd size has a last perfect subtree");
            node = node_hash(&left, &node);
            carry >>= 1;
        }
        frontier.push(node);
        size += 1;
    }
}

/// `merkle.extend_frontier` over a block of leaves (32 bytes each): the frontier of the tree of `size` leaves
/// with `frontier` after `leaves` are appended, each leaf carried in as a binary counter adds one.
#[pyfunction]
pub fn extend_frontier<'py>(
    py: Python<'py>,
    frontier: Vec<Vec<u8>>,
    size: u64,
    leaves: &[u8],
) -> PyResult<Bound<'py, PyList>> {
    if leaves.len() % LEAF != 0 {
        return Err(PyValueError::new_err(format!(
            "extend_frontier: leaves must be 32-byte hashes end to end, got {} bytes",
            leaves.len()
        )));
    }
    if frontier.len() != size.count_ones() as usize || frontier.iter().any(|n| n.len() != LEAF) {
        return Err(PyValueError::new_err(format!(
            "extend_frontier: a tree of {size} leaves has {} perfect subtrees of 32-byte hashes, got {} nodes",
            size.count_ones(),
            frontier.len()
        )));
    }
    let mut nodes: Vec<[u8; LEAF]> = frontier.iter().map(|n| n.as_slice().try_into().expect("checked")).collect();
    py.allow_threads(|| extend(&mut nodes, size, leaves));
    PyList::new(py, nodes.iter().map(|n| PyBytes::new(py, n)))
}
