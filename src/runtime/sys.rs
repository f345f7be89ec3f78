//! Thin safe wrappers over the few ONNX Runtime C calls that the `ort` crate does not expose
//! the way we need them: tensors over memory we own (zero-copy inputs, outputs and weights),
//! and thread-safe `Run` on a shared session.

use std::ffi::CStr;
use std::ptr::NonNull;

use once_cell::sync::OnceCell;
use ort_sys::{ONNXTensorElementDataType, OrtStatusPtr, OrtValue};

use crate::error::{Error, Result};

/// Turns an `OrtStatus` into our error, releasing it.
pub fn check(status: OrtStatusPtr) -> Result<()> {
    if status.0.is_null() {
        return Ok(());
    }
    let api = ort::api();
    // SAFETY: a non-null status from ORT is valid until released; the message is copied first.
    let msg = unsafe {
        let m = (api.GetErrorMessage)(status.0);
        let s = if m.is_null() {
            String::from("unknown error")
        } else {
            CStr::from_ptr(m).to_string_lossy().into_owned()
        };
        (api.ReleaseStatus)(status.0);
        s
    };
    Err(Error::runtime(format!("ONNX Runtime: {msg}")))
}

/// An `OrtValue` we own and release on drop.
pub struct OwnedValue(NonNull<OrtValue>);

// SAFETY: an OrtValue is plain data plus a pointer to its buffer; ORT allows using one from any
// thread, and we never mutate one that is shared.
unsafe impl Send for OwnedValue {}
// SAFETY: as for Send above.
unsafe impl Sync for OwnedValue {}

impl OwnedValue {
    pub fn ptr(&self) -> *mut OrtValue {
        self.0.as_ptr()
    }
    /// Takes ownership of a value ORT just created.
    pub fn from_raw(p: *mut OrtValue) -> Result<Self> {
        NonNull::new(p)
            .map(OwnedValue)
            .ok_or_else(|| Error::runtime("ONNX Runtime returned no tensor"))
    }
    /// Gives up ownership (for APIs that take it, like AddInitializerToGraph).
    pub fn into_raw(self) -> *mut OrtValue {
        let p = self.0.as_ptr();
        std::mem::forget(self);
        p
    }
}

impl Drop for OwnedValue {
    fn drop(&mut self) {
        // SAFETY: we own the value.
        unsafe { (ort::api().ReleaseValue)(self.0.as_ptr()) };
    }
}

struct MemInfo(NonNull<ort_sys::OrtMemoryInfo>);
// SAFETY: an OrtMemoryInfo is immutable after creation and ORT allows sharing it across threads.
unsafe impl Send for MemInfo {}
// SAFETY: as for Send above.
unsafe impl Sync for MemInfo {}

fn cpu_memory_info() -> Result<*const ort_sys::OrtMemoryInfo> {
    static INFO: OnceCell<MemInfo> = OnceCell::new();
    let api = super::loader::api()?;
    INFO.get_or_try_init(|| {
        let mut p = std::ptr::null_mut();
        // SAFETY: plain constructor; the info lives for the process.
        check(unsafe {
            (api.CreateCpuMemoryInfo)(
                ort_sys::OrtAllocatorType::OrtDeviceAllocator,
                ort_sys::OrtMemType::OrtMemTypeDefault,
                &mut p,
            )
        })?;
        NonNull::new(p)
            .map(MemInfo)
            .ok_or_else(|| Error::runtime("ONNX Runtime returned no memory info"))
    })
    .map(|m| m.0.as_ptr() as *const _)
}

/// A tensor that views `len` bytes at `data` without copying.
///
/// # Safety
/// The memory must stay valid, and unchanged unless ORT writes it as an output, for as long as
/// ORT uses the value. `data` must be aligned for `elem`.
pub unsafe fn tensor_over(
    data: *const u8,
    len: usize,
    shape: &[i64],
    elem: ONNXTensorElementDataType,
) -> Result<OwnedValue> {
    let info = cpu_memory_info()?;
    let mut out = std::ptr::null_mut();
    check((super::loader::api()?.CreateTensorWithDataAsOrtValue)(
        info,
        data as *mut std::ffi::c_void,
        len,
        shape.as_ptr(),
        shape.len(),
        elem,
        &mut out,
    ))?;
    NonNull::new(out)
        .map(OwnedValue)
        .ok_or_else(|| Error::runtime("ONNX Runtime returned no tensor"))
}

/// A tensor allocated by ONNX Runtime (so APIs that take ownership can free it), filled by
/// `fill` with exactly `bytes` bytes.
pub fn tensor_filled(
    shape: &[i64],
    elem: ONNXTensorElementDataType,
    bytes: usize,
    fill: impl FnOnce(&mut [u8]) -> Result<()>,
) -> Result<OwnedValue> {
    let api = super::loader::api()?;
    let mut alloc = std::ptr::null_mut();
    // SAFETY: the default allocator is process-global and never freed.
    check(unsafe { (api.GetAllocatorWithDefaultOptions)(&mut alloc) })?;
    let mut out = std::ptr::null_mut();
    // SAFETY: ORT writes the new value's pointer; `alloc` is the process-global default allocator.
    check(unsafe {
        (api.CreateTensorAsOrtValue)(alloc, shape.as_ptr(), shape.len(), elem, &mut out)
    })?;
    let value = NonNull::new(out)
        .map(OwnedValue)
        .ok_or_else(|| Error::runtime("ONNX Runtime returned no tensor"))?;
    if bytes == 0 {
        return Ok(value);
    }
    let mut dst = std::ptr::null_mut();
    // SAFETY: `value` is a live tensor; ORT writes its data pointer.
    check(unsafe { (api.GetTensorMutableData)(value.ptr(), &mut dst) })?;
    // SAFETY: ORT allocated prod(shape) x element size bytes; callers pass exactly that size.
    fill(unsafe { std::slice::from_raw_parts_mut(dst as *mut u8, bytes) })?;
    Ok(value)
}

/// Like `tensor_filled`, but the bytes come from ORT's default allocator and the value owns them
/// through a deleter (`CreateTensorWithDataAndDeleterAsOrtValue`). Handed to the Model Editor as
/// external data, ORT then neither copies them into its graph (a transient second copy of every
/// weight) nor keeps them once an optimizer has replaced the initializer (e.g. the NCHWc
/// transformer's reordered conv weights): it frees them as soon as nothing uses them.
/// Must hold at least 128 bytes (ORT's minimum for external initializers).
pub fn tensor_filled_owned(
    shape: &[i64],
    elem: ONNXTensorElementDataType,
    bytes: usize,
    fill: impl FnOnce(&mut [u8]) -> Result<()>,
) -> Result<OwnedValue> {
    let api = super::loader::api()?;
    let mut alloc: *mut ort_sys::OrtAllocator = std::ptr::null_mut();
    // SAFETY: the default allocator is process-global and never freed.
    check(unsafe { (api.GetAllocatorWithDefaultOptions)(&mut alloc) })?;
    // Through the API's AllocatorAlloc, never the struct's raw `Alloc` pointer: that one is
    // ORT's C++ allocator itself, and its std::bad_alloc (a large model under a memory limit)
    // would unwind into Rust frames and abort the host. The API function turns it into a status.
    let mut data: *mut std::ffi::c_void = std::ptr::null_mut();
    // SAFETY: a valid allocator; the block is released through the same allocator (below on
    // error, else by ORT through the value's deleter).
    check(unsafe { (api.AllocatorAlloc)(alloc, bytes.max(1), &mut data) })
        .map_err(|e| e.context(format!("ONNX Runtime could not allocate {bytes} bytes")))?;
    if data.is_null() {
        return Err(Error::runtime(format!(
            "ONNX Runtime could not allocate {bytes} bytes"
        )));
    }
    let free = || {
        // SAFETY: `data` came from this allocator and is not used after; a failing free only leaks.
        let _ = check(unsafe { (api.AllocatorFree)(alloc, data) });
    };
    // SAFETY: `data` holds `bytes` bytes just allocated.
    if let Err(e) = fill(unsafe { std::slice::from_raw_parts_mut(data as *mut u8, bytes) }) {
        free();
        return Err(e);
    }
    let mut out = std::ptr::null_mut();
    // SAFETY: frees what `alloc_fn` returned, once, with the same allocator.
    let status = unsafe {
        (api.CreateTensorWithDataAndDeleterAsOrtValue)(
            alloc,
            data,
            bytes,
            shape.as_ptr(),
            shape.len(),
            elem,
            &mut out,
        )
    };
    if let Err(e) = check(status) {
        free();
        return Err(e);
    }
    NonNull::new(out)
        .map(OwnedValue)
        .ok_or_else(|| Error::runtime("ONNX Runtime returned no tensor"))
}

/// A tensor allocated by ONNX Runtime holding a copy of `bytes`.
pub fn tensor_copy(
    bytes: &[u8],
    shape: &[i64],
    elem: ONNXTensorElementDataType,
) -> Result<OwnedValue> {
    tensor_filled(shape, elem, bytes.len(), |dst| {
        dst.copy_from_slice(bytes);
        Ok(())
    })
}

pub const F32: ONNXTensorElementDataType =
    ONNXTensorElementDataType::ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT;
pub const F16: ONNXTensorElementDataType =
    ONNXTensorElementDataType::ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT16;
pub const BF16: ONNXTensorElementDataType =
    ONNXTensorElementDataType::ONNX_TENSOR_ELEMENT_DATA_TYPE_BFLOAT16;
pub const F64: ONNXTensorElementDataType =
    ONNXTensorElementDataType::ONNX_TENSOR_ELEMENT_DATA_TYPE_DOUBLE;
pub const I64: ONNXTensorElementDataType =
    ONNXTensorElementDataType::ONNX_TENSOR_ELEMENT_DATA_TYPE_INT64;

/// The bytes of a CPU tensor (for hashing).
pub fn tensor_bytes(value: &OwnedValue) -> Result<&[u8]> {
    let api = super::loader::api()?;
    let mut len = 0usize;
    // SAFETY: a live tensor; the slice borrows `value`, which owns or views the data.
    check(unsafe { (api.GetTensorSizeInBytes)(value.ptr(), &mut len) })?;
    let mut data = std::ptr::null_mut();
    // SAFETY: `value` is a live tensor; ORT writes its data pointer.
    check(unsafe { (api.GetTensorMutableData)(value.ptr(), &mut data) })?;
    if len == 0 || data.is_null() {
        return Ok(&[]);
    }
    // SAFETY: ORT's buffer of `len` bytes lives as long as `value`, which the slice borrows.
    Ok(unsafe { std::slice::from_raw_parts(data as *const u8, len) })
}

/// Hands the C heap's free memory back to the system (glibc keeps freed blocks for reuse).
pub fn trim_heap() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only releases free heap pages; it touches no live allocation.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Runs `f` while another thread hands the C heap's free pages back to the system every few
/// milliseconds. For ORT's graph optimiser: each tensor it rewrites passes through short-lived
/// buffers as large as the tensor, and the holes they leave between the kept copies would
/// otherwise stay resident until the optimiser ends (resnet50: half the weights' size again).
/// Where no thread can be started, `f` runs without it.
pub fn trimming_heap<T>(f: impl FnOnce() -> T) -> T {
    use std::sync::atomic::{AtomicBool, Ordering};
    /// Stops the trimmer however `f` ends (a panic unwinding through the scope included, which
    /// would otherwise wait for the trimmer forever).
    struct Stop<'a>(&'a AtomicBool);
    impl Drop for Stop<'_> {
        fn drop(&mut self) {
            self.0.store(true, Ordering::Relaxed);
        }
    }
    let done = AtomicBool::new(false);
    std::thread::scope(|s| {
        let _trimmer = std::thread::Builder::new()
            .name("timm-heap-trim".into())
            .spawn_scoped(s, || {
                while !done.load(Ordering::Relaxed) {
                    trim_heap();
                    std::thread::sleep(std::time::Duration::from_millis(2));
                }
            });
        let _stop = Stop(&done);
        f()
    })
}
