//! Arrow arrays across the C Data Interface, shared by every native step that reads or writes columns.
//!
//! `import_array` takes any object with `__arrow_c_array__` (a pyarrow Array or RecordBatch, Polars and
//! DuckDB results through pyarrow) without copying its buffers; `export_array` hands an arrow-rs array to
//! pyarrow (`pyarrow.Array._import_from_c`), again without a copy. A RecordBatch comes in and goes out as
//! a StructArray (`pyarrow.RecordBatch.from_struct_array` on the Python side).

use arrow_array::ffi::{from_ffi, to_ffi, FFI_ArrowArray, FFI_ArrowSchema};
use arrow_array::{make_array, Array, ArrayRef};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::PyCapsule;

/// The array behind `obj.__arrow_c_array__()`, its buffers shared with the exporter (kept alive by the
/// release callback the exporter gave).
pub fn import_array(obj: &Bound<'_, PyAny>) -> PyResult<ArrayRef> {
    let (schema, array): (Bound<'_, PyCapsule>, Bound<'_, PyCapsule>) =
        obj.call_method0("__arrow_c_array__")?.extract()?;
    if schema.name()?.map(|n| n.to_bytes() != b"arrow_schema").unwrap_or(true)
        || array.name()?.map(|n| n.to_bytes() != b"arrow_array").unwrap_or(true)
    {
        return Err(PyValueError::new_err("__arrow_c_array__ did not return (arrow_schema, arrow_array) capsules"));
    }
    // SAFETY: the capsules hold an ArrowSchema and an ArrowArray (checked by name above). The array is moved
    // out (its release callback now belongs to us; the capsule's destructor sees a released struct), the
    // schema is only read.
    let data = unsafe {
        let moved = FFI_ArrowArray::from_raw(array.pointer() as *mut FFI_ArrowArray);
        from_ffi(moved, &*(schema.pointer() as *const FFI_ArrowSchema))
    }
    .map_err(|e| PyValueError::new_err(format!("cannot import the Arrow array: {e}")))?;
    Ok(make_array(data))
}

/// A pyarrow Array sharing `array`'s buffers.
pub fn export_array(py: Python<'_>, array: &dyn Array) -> PyResult<PyObject> {
    let (ffi_array, ffi_schema) =
        to_ffi(&array.to_data()).map_err(|e| PyValueError::new_err(format!("cannot export the Arrow array: {e}")))?;
    let ffi_array = Box::new(ffi_array);
    let ffi_schema = Box::new(ffi_schema);
    let array_address = &*ffi_array as *const FFI_ArrowArray as usize;
    let schema_address = &*ffi_schema as *const FFI_ArrowSchema as usize;
    // pyarrow moves both structs out (marking them released), so dropping the boxes afterwards frees only the
    // empty shells.
    let imported =
        py.import("pyarrow")?.getattr("Array")?.call_method1("_import_from_c", (array_address, schema_address))?;
    Ok(imported.unbind())
}

/// Round trip for the tests: import an array and export it again (same values, same buffers).
#[pyfunction]
pub fn arrow_roundtrip(py: Python<'_>, obj: &Bound<'_, PyAny>) -> PyResult<PyObject> {
    let array = import_array(obj)?;
    export_array(py, array.as_ref())
}
