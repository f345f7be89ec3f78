//! NVIDIA's libraries reached through the dynamic loader, so this build links none of them.

use std::ffi::{c_void, CString};

/// A symbol from a library that is already loaded, or loaded now with the default search path.
/// The handle is never closed: CUDA libraries must stay for the process.
pub(crate) fn symbol<T: Copy>(libs: &[&str], name: &str) -> Option<T> {
    let cname = CString::new(name).ok()?;
    for lib in libs {
        let clib = CString::new(*lib).ok()?;
        // SAFETY: dlopen/dlsym only read the strings; RTLD_NOLOAD first reuses the copy ORT's
        // provider loaded, so we talk to the same CUDA runtime instance.
        unsafe {
            let mut h = libc::dlopen(clib.as_ptr(), libc::RTLD_NOW | libc::RTLD_NOLOAD);
            if h.is_null() {
                h = libc::dlopen(clib.as_ptr(), libc::RTLD_NOW | libc::RTLD_LOCAL);
            }
            if h.is_null() {
                continue;
            }
            let s = libc::dlsym(h, cname.as_ptr());
            if !s.is_null() {
                assert_eq!(std::mem::size_of::<T>(), std::mem::size_of::<*mut c_void>());
                return Some(std::mem::transmute_copy::<*mut c_void, T>(&s));
            }
        }
    }
    None
}
