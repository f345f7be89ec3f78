//! The part of OpenVINO's C API (`openvino/c/openvino.h`) the backend calls, as function
//! pointers resolved from `libopenvino_c.so` with dlsym: nothing links against OpenVINO.

use std::ffi::{c_char, c_void, CStr, CString};
use std::path::Path;

/// Opaque handles.
#[repr(C)]
pub struct OvCore(c_void);
#[repr(C)]
pub struct OvModel(c_void);
#[repr(C)]
pub struct OvCompiled(c_void);
#[repr(C)]
pub struct OvRequest(c_void);
#[repr(C)]
pub struct OvTensor(c_void);

/// `ov_status_e`: 0 is OK, errors are negative.
pub type Status = i32;
pub const OK: Status = 0;

/// `ov_element_type_e::F32`: 4 from OpenVINO 2025 on (UNDEFINED and DYNAMIC merged), 5
/// before; the backend reads the value from the compiled model's float input instead of
/// trusting either (see `Compiled::f32_code`).
pub const F32_CANDIDATES: [i32; 2] = [4, 5];

#[repr(C)]
pub struct OvPort(c_void);

/// `ov_shape_t`: rank and a dims array owned by OpenVINO when it filled it.
#[repr(C)]
pub struct Shape {
    pub rank: i64,
    pub dims: *mut i64,
}

/// `ov_available_devices_t`.
#[repr(C)]
pub struct Devices {
    pub devices: *mut *mut c_char,
    pub size: usize,
}

/// Resolved entry points, valid for the life of the process (the library is never closed).
pub struct Api {
    pub core_create: unsafe extern "C" fn(*mut *mut OvCore) -> Status,
    pub core_free: unsafe extern "C" fn(*mut OvCore),
    pub core_read_model_from_memory_buffer: unsafe extern "C" fn(
        *const OvCore,
        *const c_char,
        usize,
        *const OvTensor,
        *mut *mut OvModel,
    ) -> Status,
    /// Variadic: `property_args_size` counts keys and values (two per property), then
    /// `const char*` key, `const char*` value, ...
    pub core_compile_model: unsafe extern "C" fn(
        *const OvCore,
        *const OvModel,
        *const c_char,
        usize,
        *mut *mut OvCompiled,
        ...
    ) -> Status,
    pub core_get_property: unsafe extern "C" fn(
        *const OvCore,
        *const c_char,
        *const c_char,
        *mut *mut c_char,
    ) -> Status,
    pub core_get_available_devices: unsafe extern "C" fn(*const OvCore, *mut Devices) -> Status,
    pub available_devices_free: unsafe extern "C" fn(*mut Devices),
    pub model_free: unsafe extern "C" fn(*mut OvModel),
    pub compiled_create_infer_request:
        unsafe extern "C" fn(*const OvCompiled, *mut *mut OvRequest) -> Status,
    pub compiled_get_property:
        unsafe extern "C" fn(*const OvCompiled, *const c_char, *mut *mut c_char) -> Status,
    pub compiled_free: unsafe extern "C" fn(*mut OvCompiled),
    pub compiled_input_by_index:
        unsafe extern "C" fn(*const OvCompiled, usize, *mut *mut OvPort) -> Status,
    pub port_get_element_type: unsafe extern "C" fn(*const OvPort, *mut i32) -> Status,
    pub port_free: unsafe extern "C" fn(*mut OvPort),
    pub request_set_input_tensor_by_index:
        unsafe extern "C" fn(*mut OvRequest, usize, *const OvTensor) -> Status,
    pub request_infer: unsafe extern "C" fn(*mut OvRequest) -> Status,
    pub request_get_output_tensor_by_index:
        unsafe extern "C" fn(*const OvRequest, usize, *mut *mut OvTensor) -> Status,
    pub request_free: unsafe extern "C" fn(*mut OvRequest),
    pub shape_create: unsafe extern "C" fn(i64, *const i64, *mut Shape) -> Status,
    pub shape_free: unsafe extern "C" fn(*mut Shape) -> Status,
    pub tensor_create_from_host_ptr:
        unsafe extern "C" fn(i32, Shape, *mut c_void, *mut *mut OvTensor) -> Status,
    pub tensor_get_shape: unsafe extern "C" fn(*const OvTensor, *mut Shape) -> Status,
    pub tensor_get_element_type: unsafe extern "C" fn(*const OvTensor, *mut i32) -> Status,
    pub tensor_data: unsafe extern "C" fn(*const OvTensor, *mut *mut c_void) -> Status,
    pub tensor_free: unsafe extern "C" fn(*mut OvTensor),
    pub free: unsafe extern "C" fn(*const c_char),
    pub get_error_info: unsafe extern "C" fn(Status) -> *const c_char,
    pub get_last_err_msg: unsafe extern "C" fn() -> *const c_char,
}

/// `dlerror()`'s text, for messages.
fn dlerror_text() -> String {
    // SAFETY: dlerror returns null or a NUL-terminated string valid until the next dl call.
    unsafe {
        let e = libc::dlerror();
        if e.is_null() {
            "unknown dynamic loader error".into()
        } else {
            CStr::from_ptr(e).to_string_lossy().into_owned()
        }
    }
}

/// A symbol address as the function pointer type `T` (pointer-sized, checked).
///
/// # Safety
/// `p` must be a function whose C signature is `T`.
unsafe fn fn_ptr<T: Copy>(p: *mut c_void) -> T {
    assert_eq!(std::mem::size_of::<T>(), std::mem::size_of::<*mut c_void>());
    // SAFETY: sizes match (asserted); the caller vouches for the signature.
    unsafe { std::mem::transmute_copy::<*mut c_void, T>(&p) }
}

impl Api {
    /// Opens `path` (a path, or a bare name for the system loader) and resolves every entry
    /// point; the error says what failed.
    pub fn open(path: &Path) -> Result<Api, String> {
        let c = CString::new(path.as_os_str().as_encoded_bytes())
            .map_err(|_| format!("`{}` has a NUL byte", path.display()))?;
        // SAFETY: dlopen reads the string; RTLD_LOCAL keeps OpenVINO's symbols (and its TBB)
        // out of the global namespace, so they cannot clash with the application's.
        let h = unsafe { libc::dlopen(c.as_ptr(), libc::RTLD_NOW | libc::RTLD_LOCAL) };
        if h.is_null() {
            return Err(format!(
                "failed to load `{}`: {}",
                path.display(),
                dlerror_text()
            ));
        }
        let sym = |name: &str| -> Result<*mut c_void, String> {
            let n = CString::new(name).expect("static name");
            // SAFETY: `h` is a live handle from dlopen; dlsym reads the name.
            let s = unsafe { libc::dlsym(h, n.as_ptr()) };
            if s.is_null() {
                Err(format!(
                    "`{}` has no `{name}` (is it OpenVINO's C API library, 2024.2 or newer?)",
                    path.display()
                ))
            } else {
                Ok(s)
            }
        };
        macro_rules! f {
            ($name:literal) => {{
                let p = sym($name)?;
                // SAFETY: the symbol is the C API function of that name, whose signature is
                // the field's type (openvino/c headers).
                unsafe { fn_ptr(p) }
            }};
        }
        Ok(Api {
            core_create: f!("ov_core_create"),
            core_free: f!("ov_core_free"),
            core_read_model_from_memory_buffer: f!("ov_core_read_model_from_memory_buffer"),
            core_compile_model: f!("ov_core_compile_model"),
            core_get_property: f!("ov_core_get_property"),
            core_get_available_devices: f!("ov_core_get_available_devices"),
            available_devices_free: f!("ov_available_devices_free"),
            model_free: f!("ov_model_free"),
            compiled_create_infer_request: f!("ov_compiled_model_create_infer_request"),
            compiled_get_property: f!("ov_compiled_model_get_property"),
            compiled_free: f!("ov_compiled_model_free"),
            compiled_input_by_index: f!("ov_compiled_model_input_by_index"),
            port_get_element_type: f!("ov_port_get_element_type"),
            port_free: f!("ov_output_const_port_free"),
            request_set_input_tensor_by_index: f!("ov_infer_request_set_input_tensor_by_index"),
            request_infer: f!("ov_infer_request_infer"),
            request_get_output_tensor_by_index: f!("ov_infer_request_get_output_tensor_by_index"),
            request_free: f!("ov_infer_request_free"),
            shape_create: f!("ov_shape_create"),
            shape_free: f!("ov_shape_free"),
            tensor_create_from_host_ptr: f!("ov_tensor_create_from_host_ptr"),
            tensor_get_shape: f!("ov_tensor_get_shape"),
            tensor_get_element_type: f!("ov_tensor_get_element_type"),
            tensor_data: f!("ov_tensor_data"),
            tensor_free: f!("ov_tensor_free"),
            free: f!("ov_free"),
            get_error_info: f!("ov_get_error_info"),
            get_last_err_msg: f!("ov_get_last_err_msg"),
        })
    }

    /// The text of a failed call: OpenVINO's last error message (thread-local in its C API),
    /// else the status's name.
    pub fn error_text(&self, status: Status) -> String {
        // SAFETY: both return null or a NUL-terminated string owned by OpenVINO.
        unsafe {
            let m = (self.get_last_err_msg)();
            let msg = if m.is_null() {
                String::new()
            } else {
                CStr::from_ptr(m).to_string_lossy().trim().to_string()
            };
            if !msg.is_empty() {
                return msg;
            }
            let i = (self.get_error_info)(status);
            if i.is_null() {
                format!("status {status}")
            } else {
                format!("{} (status {status})", CStr::from_ptr(i).to_string_lossy())
            }
        }
    }
}
