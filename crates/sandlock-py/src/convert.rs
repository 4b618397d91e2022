//! Python values to and from JSON values.
//!
//! Python keyword arguments reach the core as `serde_json::Value`s, so that the core's own parser
//! ([`sandlock_core::Policy::set_field`]) validates them and words the errors the same way for
//! every face. This module only translates types; it never judges a value.

use pyo3::exceptions::PyTypeError;
use pyo3::prelude::*;
use pyo3::types::{
    PyBool, PyByteArray, PyBytes, PyDict, PyFloat, PyFrozenSet, PyInt, PyList, PySet, PyString,
    PyTuple,
};
use sandlock_core::PolicyError;
use serde_json::{Map, Number, Value};

/// Converts a Python value to JSON; `field` names it in the error if it has no JSON form.
///
/// Accepted: `None`, `bool`, `int`, `float`, `str`, `os.PathLike` (as its path), `bytes` holding
/// UTF-8, `datetime.timedelta` (as seconds), mappings with `str` keys, and lists, tuples and sets.
pub(crate) fn to_json(obj: &Bound<'_, PyAny>, field: &str) -> Result<Value, PolicyError> {
    let bad = |why: &str| PolicyError::new(field, repr(obj), why);
    if obj.is_none() {
        return Ok(Value::Null);
    }
    if let Ok(b) = obj.cast::<PyBool>() {
        return Ok(Value::Bool(b.is_true()));
    }
    if obj.is_instance_of::<PyInt>() {
        if let Ok(v) = obj.extract::<i64>() {
            return Ok(Value::from(v));
        }
        if let Ok(v) = obj.extract::<u64>() {
            return Ok(Value::from(v));
        }
        return Err(bad("integer out of range"));
    }
    if let Ok(f) = obj.cast::<PyFloat>() {
        return Number::from_f64(f.value())
            .map(Value::Number)
            .ok_or_else(|| bad("not a finite number"));
    }
    if let Ok(s) = obj.cast::<PyString>() {
        return s
            .to_cow()
            .map(|s| Value::String(s.into_owned()))
            .map_err(|_| bad("not valid Unicode"));
    }
    if obj.is_instance_of::<PyBytes>() || obj.is_instance_of::<PyByteArray>() {
        let bytes: Vec<u8> = obj.extract().map_err(|_| bad("unreadable bytes"))?;
        return String::from_utf8(bytes)
            .map(Value::String)
            .map_err(|_| bad("bytes that are not UTF-8; pass a str"));
    }
    if let Ok(d) = obj.cast::<PyDict>() {
        let mut map = Map::new();
        for (k, v) in d.iter() {
            let key: String = k
                .extract()
                .map_err(|_| PolicyError::new(field, repr(&k), "keys must be str"))?;
            let value = to_json(&v, &format!("{field}[{key:?}]"))?;
            map.insert(key, value);
        }
        return Ok(Value::Object(map));
    }
    let is_seq = obj.is_instance_of::<PyList>()
        || obj.is_instance_of::<PyTuple>()
        || obj.is_instance_of::<PySet>()
        || obj.is_instance_of::<PyFrozenSet>();
    if is_seq {
        let mut out = Vec::new();
        let iter = obj.try_iter().map_err(|_| bad("not iterable"))?;
        for (i, item) in iter.enumerate() {
            let item = item.map_err(|_| bad("iteration failed"))?;
            out.push(to_json(&item, &format!("{field}[{i}]"))?);
        }
        return Ok(Value::Array(out));
    }
    if obj.hasattr("__fspath__").unwrap_or(false) {
        let path = obj
            .call_method0("__fspath__")
            .map_err(|_| bad("os.fspath() failed"))?;
        return to_json(&path, field);
    }
    if obj.hasattr("total_seconds").unwrap_or(false) && obj.hasattr("days").unwrap_or(false) {
        let secs = obj
            .call_method0("total_seconds")
            .map_err(|_| bad("timedelta.total_seconds() failed"))?;
        return to_json(&secs, field);
    }
    if let Ok(items) = obj.call_method0("items") {
        // Any other mapping (MappingProxyType, OrderedDict subclasses, ...).
        let d = PyDict::new(obj.py());
        for pair in items.try_iter().map_err(|_| bad("unreadable mapping"))? {
            let pair = pair.map_err(|_| bad("unreadable mapping"))?;
            let (k, v): (Bound<'_, PyAny>, Bound<'_, PyAny>) =
                pair.extract().map_err(|_| bad("unreadable mapping"))?;
            d.set_item(k, v).map_err(|_| bad("unhashable key"))?;
        }
        return to_json(d.as_any(), field);
    }
    let type_name = obj
        .get_type()
        .name()
        .map(|n| n.to_string())
        .unwrap_or_else(|_| "?".into());
    Err(bad(&format!(
        "a {type_name} cannot be used here; expected str, int, float, bool, None, a path, or a \
         list or dict of those"
    )))
}

/// Converts a JSON value to the plain Python object it stands for.
pub(crate) fn to_py<'py>(py: Python<'py>, value: &Value) -> PyResult<Bound<'py, PyAny>> {
    Ok(match value {
        Value::Null => py.None().into_bound(py),
        Value::Bool(b) => PyBool::new(py, *b).to_owned().into_any(),
        Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                i.into_pyobject(py)?.into_any()
            } else if let Some(u) = n.as_u64() {
                u.into_pyobject(py)?.into_any()
            } else {
                n.as_f64().unwrap_or(f64::NAN).into_pyobject(py)?.into_any()
            }
        }
        Value::String(s) => PyString::new(py, s).into_any(),
        Value::Array(items) => {
            let list = PyList::empty(py);
            for item in items {
                list.append(to_py(py, item)?)?;
            }
            list.into_any()
        }
        Value::Object(map) => {
            let dict = PyDict::new(py);
            for (k, v) in map {
                dict.set_item(k, to_py(py, v)?)?;
            }
            dict.into_any()
        }
    })
}

/// Serializes `value` and converts the result to Python.
pub(crate) fn serialize_to_py<'py, T: serde::Serialize>(
    py: Python<'py>,
    value: &T,
) -> PyResult<Bound<'py, PyAny>> {
    let json = serde_json::to_value(value)
        .map_err(|e| PyTypeError::new_err(format!("cannot serialize: {e}")))?;
    to_py(py, &json)
}

/// `repr(obj)`, shortened for error messages.
pub(crate) fn repr(obj: &Bound<'_, PyAny>) -> String {
    let r = obj
        .repr()
        .map(|r| r.to_string())
        .unwrap_or_else(|_| "<unprintable>".into());
    if r.chars().count() > 200 {
        let cut: String = r.chars().take(200).collect();
        format!("{cut}...")
    } else {
        r
    }
}
