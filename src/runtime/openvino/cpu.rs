//! Whether this CPU computes bf16 / fp16 natively, so reduced precision is never emulated.
//!
//! `TIMM_TEST_HIDE_CPU_FEATURES` (a comma list of `bf16`, `fp16`) hides features from this
//! check. It exists only so tests can take the refusal path on any CI machine; it cannot turn
//! a feature on.

/// The test-only override described above.
pub const HIDE_VAR: &str = "TIMM_TEST_HIDE_CPU_FEATURES";

fn hidden(feature: &str) -> bool {
    std::env::var(HIDE_VAR).is_ok_and(|v| v.split(',').any(|f| f.trim() == feature))
}

/// The native bf16 units found: `Some("AMX")`, `Some("AVX512_BF16")`, or `None`.
pub fn native_bf16() -> Option<&'static str> {
    if hidden("bf16") {
        return None;
    }
    detect::bf16()
}

/// The native fp16 units found: `Some("AMX-FP16")`, `Some("AVX512_FP16")`, or `None`.
pub fn native_fp16() -> Option<&'static str> {
    if hidden("fp16") {
        return None;
    }
    detect::fp16()
}

#[cfg(target_arch = "x86_64")]
mod detect {
    use std::arch::x86_64::{__cpuid_count, _xgetbv};

    /// AMX tiles are usable only when the OS enabled their state (XCR0 bits 17 and 18).
    fn amx_os_enabled() -> bool {
        if !std::arch::is_x86_feature_detected!("xsave") {
            return false;
        }
        // SAFETY: xgetbv(0) is valid when the CPU has XSAVE and the OS set OSXSAVE, which the
        // xsave detection above checks.
        let xcr0 = unsafe { _xgetbv(0) };
        xcr0 & (0b11 << 17) == 0b11 << 17
    }

    fn leaf7(sub: u32) -> (u32, u32) {
        // cpuid exists on every x86_64 CPU; leaf 7 reads as zeros where it is not implemented.
        let r = __cpuid_count(7, sub);
        (r.eax, r.edx)
    }

    pub fn bf16() -> Option<&'static str> {
        let (_, edx) = leaf7(0);
        if edx & (1 << 22) != 0 && amx_os_enabled() {
            return Some("AMX");
        }
        if std::arch::is_x86_feature_detected!("avx512bf16") {
            return Some("AVX512_BF16");
        }
        None
    }

    pub fn fp16() -> Option<&'static str> {
        let (eax1, _) = leaf7(1);
        if eax1 & (1 << 21) != 0 && amx_os_enabled() {
            return Some("AMX-FP16");
        }
        if std::arch::is_x86_feature_detected!("avx512fp16") {
            return Some("AVX512_FP16");
        }
        None
    }
}

#[cfg(not(target_arch = "x86_64"))]
mod detect {
    // OpenVINO's ARM CPU plugin runs fp16 natively on ARMv8.2+, but this build is only
    // tested on x86_64: refuse rather than guess.
    pub fn bf16() -> Option<&'static str> {
        None
    }
    pub fn fp16() -> Option<&'static str> {
        None
    }
}
