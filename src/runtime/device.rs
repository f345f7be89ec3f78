//! Device-resident input and output for sessions whose image input and output live in GPU
//! memory (CUDA/TensorRT): each call copies the caller's input to the device once, runs with an
//! `IoBinding` whose tensors stay bound, and copies the output back once.
//!
//! Bindings are pooled by input shape: a thread takes one for its shape (or makes one), uses it
//! alone, and puts it back, so concurrent `timm_infer` calls never share device buffers and a
//! repeated shape allocates nothing. The pool keeps at most `POOL_MAX` idle bindings.
//!
//! Copies use the CUDA runtime the provider itself loaded (`cudaMemcpy`), because ORT's C API has
//! no host<->device copy for the built-in CUDA provider (`CopyTensors` only serves plugin EPs).
//! Ordering: ORT runs kernels on its own non-blocking stream, which does not wait for the legacy
//! default stream `cudaMemcpy` uses, so after the host-to-device copy we synchronize that stream
//! (a pageable-memory `cudaMemcpy` may return before the DMA lands). ORT synchronizes its own
//! streams at the end of every `Run` unless told otherwise, so the output is complete when
//! `RunWithBinding` returns and the device-to-host copy can start.

use std::ffi::{c_int, c_void, CString};
use std::ptr::NonNull;
use std::sync::Mutex;

use super::providers::{cuda_error_text, symbol, CUDART};
use super::sys::{self, OwnedValue};
use crate::error::{Error, Result};

const POOL_MAX: usize = 16;
const H2D: c_int = 1;
const D2H: c_int = 2;

type Memcpy = unsafe extern "C" fn(*mut c_void, *const c_void, usize, c_int) -> c_int;
type StreamSync = unsafe extern "C" fn(*mut c_void) -> c_int;
type SetDevice = unsafe extern "C" fn(c_int) -> c_int;

struct Cuda {
    memcpy: Memcpy,
    stream_sync: StreamSync,
    set_device: SetDevice,
}

struct Binding {
    shape: Vec<i64>,
    io: NonNull<ort_sys::OrtIoBinding>,
    // Bound to `io`; released after it (field order).
    input: OwnedValue,
    output: OwnedValue,
    in_ptr: *mut c_void,
    out_ptr: *mut c_void,
}

impl Drop for Binding {
    fn drop(&mut self) {
        // SAFETY: we own the binding; the tensors it references are released after it.
        unsafe { (ort::api().ReleaseIoBinding)(self.io.as_ptr()) };
    }
}

// SAFETY: a binding is used by one thread at a time (taken out of the pool under the lock);
// the raw pointers are device addresses and ORT handles that may move between threads.
unsafe impl Send for Binding {}

pub struct DeviceIo {
    // Dropped before the allocators: every pooled tensor came from them.
    pool: Mutex<Vec<Binding>>,
    in_alloc: NonNull<ort_sys::OrtAllocator>,
    out_alloc: NonNull<ort_sys::OrtAllocator>,
    cuda: Cuda,
    device_id: c_int,
    input_name: CString,
    output_name: CString,
}

// SAFETY: allocators from CreateAllocator are thread-safe (ORT's arena locks); the pool is
// behind a mutex; the CUDA functions are thread-safe.
unsafe impl Send for DeviceIo {}
// SAFETY: as for Send above.
unsafe impl Sync for DeviceIo {}

impl Drop for DeviceIo {
    fn drop(&mut self) {
        self.pool
            .get_mut()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
        // SAFETY: created by CreateAllocator for this session, released once, before it.
        unsafe {
            (ort::api().ReleaseAllocator)(self.in_alloc.as_ptr());
            (ort::api().ReleaseAllocator)(self.out_alloc.as_ptr());
        }
    }
}

/// Whether a memory info is GPU memory.
fn is_gpu(info: *const ort_sys::OrtMemoryInfo) -> bool {
    let mut t = ort_sys::OrtMemoryInfoDeviceType::OrtMemoryInfoDeviceType_CPU;
    // SAFETY: `info` comes from the session and is valid while it lives.
    unsafe { (ort::api().MemoryInfoGetDeviceType)(info, &mut t) };
    t == ort_sys::OrtMemoryInfoDeviceType::OrtMemoryInfoDeviceType_GPU
}

impl DeviceIo {
    /// Device I/O for `session` when its first input and output live on the GPU; `Ok(None)`
    /// when they live in CPU memory (then the zero-copy host path is the right one).
    pub fn new(
        session: &ort::session::Session,
        input_name: &CString,
        output_name: &CString,
        device_id: u32,
    ) -> Result<Option<DeviceIo>> {
        use ort::AsPointer;
        let api = ort::api();
        let n_out = session.outputs().len();
        let mut in_info = [std::ptr::null::<ort_sys::OrtMemoryInfo>(); 1];
        let mut out_info = vec![std::ptr::null::<ort_sys::OrtMemoryInfo>(); n_out];
        // SAFETY: arrays sized to the session's input (1) and output counts.
        sys::check(unsafe {
            (api.SessionGetMemoryInfoForInputs)(session.ptr(), in_info.as_mut_ptr(), 1)
        })?;
        // SAFETY: a live session; `in_info` has room for its one input.
        sys::check(unsafe {
            (api.SessionGetMemoryInfoForOutputs)(session.ptr(), out_info.as_mut_ptr(), n_out)
        })?;
        if in_info[0].is_null() || out_info[0].is_null() {
            return Ok(None);
        }
        if !is_gpu(in_info[0]) || !is_gpu(out_info[0]) {
            return Ok(None);
        }
        let cuda = match (
            symbol::<Memcpy>(CUDART, "cudaMemcpy"),
            symbol::<StreamSync>(CUDART, "cudaStreamSynchronize"),
            symbol::<SetDevice>(CUDART, "cudaSetDevice"),
        ) {
            (Some(memcpy), Some(stream_sync), Some(set_device)) => Cuda {
                memcpy,
                stream_sync,
                set_device,
            },
            _ => {
                return Err(Error::runtime(
                    "the session keeps its input on the GPU but the CUDA runtime (libcudart.so.13) is not reachable from libtimm",
                ))
            }
        };
        let alloc = |info| -> Result<NonNull<ort_sys::OrtAllocator>> {
            let mut a = std::ptr::null_mut();
            // SAFETY: session and memory info are valid; released in Drop.
            sys::check(unsafe { (api.CreateAllocator)(session.ptr(), info, &mut a) })?;
            NonNull::new(a).ok_or_else(|| Error::runtime("ONNX Runtime returned no allocator"))
        };
        let in_alloc = alloc(in_info[0])?;
        let out_alloc = match alloc(out_info[0]) {
            Ok(a) => a,
            Err(e) => {
                // SAFETY: releases the allocator created just above, once, on this error path.
                unsafe { (api.ReleaseAllocator)(in_alloc.as_ptr()) };
                return Err(e);
            }
        };
        Ok(Some(DeviceIo {
            pool: Mutex::new(Vec::new()),
            in_alloc,
            out_alloc,
            cuda,
            device_id: device_id as c_int,
            input_name: input_name.clone(),
            output_name: output_name.clone(),
        }))
    }

    fn make(
        &self,
        session: &ort::session::Session,
        in_shape: &[i64],
        out_shape: &[i64],
    ) -> Result<Binding> {
        use ort::AsPointer;
        let api = ort::api();
        let tensor = |alloc: NonNull<ort_sys::OrtAllocator>,
                      shape: &[i64]|
         -> Result<(OwnedValue, *mut c_void)> {
            let mut v = std::ptr::null_mut();
            // SAFETY: a device tensor from the session's allocator for that memory.
            sys::check(unsafe {
                (api.CreateTensorAsOrtValue)(
                    alloc.as_ptr(),
                    shape.as_ptr(),
                    shape.len(),
                    sys::F32,
                    &mut v,
                )
            })?;
            let v = sys::OwnedValue::from_raw(v)?;
            let mut data = std::ptr::null_mut();
            // SAFETY: `v` is a live tensor that ORT allocated; the pointer is used while `v` lives.
            sys::check(unsafe { (api.GetTensorMutableData)(v.ptr(), &mut data) })?;
            Ok((v, data))
        };
        let (input, in_ptr) = tensor(self.in_alloc, in_shape)?;
        let (output, out_ptr) = tensor(self.out_alloc, out_shape)?;
        let mut io = std::ptr::null_mut();
        // SAFETY: the session outlives this DeviceIo (it is dropped first).
        sys::check(unsafe { (api.CreateIoBinding)(session.ptr() as *mut _, &mut io) })?;
        let io =
            NonNull::new(io).ok_or_else(|| Error::runtime("ONNX Runtime returned no IoBinding"))?;
        let b = Binding {
            shape: in_shape.to_vec(),
            io,
            input,
            output,
            in_ptr,
            out_ptr,
        };
        // SAFETY: names are NUL-terminated; the values live in `b` as long as the binding.
        sys::check(unsafe {
            (api.BindInput)(b.io.as_ptr(), self.input_name.as_ptr(), b.input.ptr())
        })?;
        // SAFETY: the binding, the NUL-terminated name and the value are live for the call.
        sys::check(unsafe {
            (api.BindOutput)(b.io.as_ptr(), self.output_name.as_ptr(), b.output.ptr())
        })?;
        Ok(b)
    }

    fn cuda(&self, what: &str, rc: c_int) -> Result<()> {
        if rc == 0 {
            Ok(())
        } else {
            Err(Error::runtime(format!(
                "{what} failed: {}",
                cuda_error_text(rc)
            )))
        }
    }

    /// One batch through device buffers; see the module comment for the copy ordering.
    pub fn run(
        &self,
        session: &ort::session::Session,
        input: &[f32],
        in_shape: &[i64],
        output: &mut [f32],
        out_shape: &[i64],
    ) -> Result<()> {
        use ort::AsPointer;
        let taken = {
            let mut pool = self.pool.lock().unwrap_or_else(|p| p.into_inner());
            pool.iter()
                .position(|b| b.shape == in_shape)
                .map(|i| pool.swap_remove(i))
        };
        let b = match taken {
            Some(b) => b,
            None => self.make(session, in_shape, out_shape)?,
        };
        let in_bytes = std::mem::size_of_val(input);
        let out_bytes = std::mem::size_of_val(output);
        // SAFETY: device buffers hold exactly the shapes' bytes (the caller checked the lengths
        // against the same shapes); host buffers are the caller's slices.
        unsafe {
            self.cuda("cudaSetDevice", (self.cuda.set_device)(self.device_id))?;
            self.cuda(
                "cudaMemcpy (input to GPU)",
                (self.cuda.memcpy)(b.in_ptr, input.as_ptr() as *const c_void, in_bytes, H2D),
            )?;
            self.cuda(
                "cudaStreamSynchronize",
                (self.cuda.stream_sync)(std::ptr::null_mut()),
            )?;
            sys::check((ort::api().RunWithBinding)(
                session.ptr() as *mut _,
                std::ptr::null(),
                b.io.as_ptr(),
            ))?;
            self.cuda(
                "cudaMemcpy (output from GPU)",
                (self.cuda.memcpy)(
                    output.as_mut_ptr() as *mut c_void,
                    b.out_ptr,
                    out_bytes,
                    D2H,
                ),
            )?;
        }
        let mut pool = self.pool.lock().unwrap_or_else(|p| p.into_inner());
        if pool.len() >= POOL_MAX {
            pool.remove(0);
        }
        pool.push(b);
        Ok(())
    }
}
