//! Which providers really run the model: ORT's record of how it partitioned the graph.

use std::ffi::{c_char, CStr};

use super::Provider;
use crate::error::Result;
use crate::runtime::sys;

/// ORT provider names that received nodes, in the order the providers were requested (CPU last).
pub(super) fn assignment(
    session: &ort::session::Session,
    requested: &[Provider],
) -> Result<Vec<String>> {
    use ort::AsPointer;
    let api = ort::api();
    let mut subgraphs: *const *const ort_sys::OrtEpAssignedSubgraph = std::ptr::null();
    let mut n = 0usize;
    // SAFETY: the session is alive; the returned array is owned by the session.
    sys::check(unsafe {
        (api.Session_GetEpGraphAssignmentInfo)(session.ptr(), &mut subgraphs, &mut n)
    })?;
    let mut names: Vec<String> = Vec::new();
    if !subgraphs.is_null() {
        for i in 0..n {
            // SAFETY: `n` entries, each valid while the session lives.
            let sg = unsafe { *subgraphs.add(i) };
            if sg.is_null() {
                continue;
            }
            let mut ep: *const c_char = std::ptr::null();
            // SAFETY: `sg` is a live subgraph of the session; ORT writes one pointer.
            sys::check(unsafe { (api.EpAssignedSubgraph_GetEpName)(sg, &mut ep) })?;
            let mut nodes: *const *const ort_sys::OrtEpAssignedNode = std::ptr::null();
            let mut count = 0usize;
            // SAFETY: as above; ORT writes the array pointer and its length.
            sys::check(unsafe { (api.EpAssignedSubgraph_GetNodes)(sg, &mut nodes, &mut count) })?;
            if ep.is_null() || count == 0 {
                continue;
            }
            // SAFETY: `ep` is non-null here and NUL-terminated, owned by the session.
            let name = unsafe { CStr::from_ptr(ep) }.to_string_lossy().into_owned();
            if !names.contains(&name) {
                names.push(name);
            }
        }
    }
    let rank = |n: &String| {
        requested.iter().position(|p| p.ort_name() == n).unwrap_or(
            if n == Provider::Cpu.ort_name() {
                usize::MAX
            } else {
                requested.len()
            },
        )
    };
    names.sort_by_key(rank);
    Ok(names)
}
