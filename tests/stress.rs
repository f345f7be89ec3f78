//! Concurrency stress through the C ABI: 16 threads share ONE model handle and call
//! `timm_infer` and `timm_classify` on it, while 2 more threads keep creating, using and
//! freeing other models. Every result must be bit-identical to the single-threaded one: a
//! data race in the session, the handle registry or the per-thread error slot shows up as a
//! differing bit, a wrong status or a crash.
//!
//! `cargo test` runs 16 × 100 calls (7-14 s in a debug build on 2 busy cores); the full
//! 16 × 1,000 run (~2 min debug, same machine) is `#[ignore]`d
//! and run by `scripts/stress` (release build).

mod common;
use common::*;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Instant;

use timm::ffi::*;
use timm::TimmStatus;

const THREADS: usize = 16;
const CHURN_THREADS: usize = 2;
/// Every CLASSIFY_EVERY-th iteration also classifies an image.
const CLASSIFY_EVERY: usize = 4;
const TOP_K: usize = 3;

/// The smallest fixture (96×96 input), so the run stays short in debug builds.
const SHARED: &str = "test_convnext-transformers";
/// Models the churn threads create and free while the shared one is in use.
const CHURNED: [&str; 2] = ["test_resnet", "test_vit"];

/// A synthetic RGB image (deterministic gradient) as the C caller would pass it.
fn image_pixels(w: usize, h: usize) -> Vec<u8> {
    (0..w * h * 3)
        .map(|i| ((i * 7 + (i / (w * 3)) * 13) % 251) as u8)
        .collect()
}

/// (index, probability bits, logit bits) of the top-k classes.
type Top = Vec<(usize, u32, u32)>;

/// A churned model's spec, one input image, its shape and its single-threaded logit bits.
type ChurnRef = (String, Vec<f32>, [i64; 4], Vec<u32>);

fn classify(m: &CModel, pixels: &[u8], w: u32, h: u32) -> Result<Top, TimmStatus> {
    let img = TimmImage {
        data: pixels.as_ptr(),
        width: w,
        height: h,
        stride: 0,
        format: TimmPixelFormat::TIMM_PIXEL_RGB8,
    };
    let mut out: Vec<TimmClass> = (0..TOP_K)
        .map(|_| TimmClass {
            index: usize::MAX,
            probability: 0.0,
            logit: 0.0,
            label: std::ptr::null(),
            description: std::ptr::null(),
        })
        .collect();
    let st = timm_classify(m.0, &img, 1, TOP_K, out.as_mut_ptr());
    if st != TimmStatus::TIMM_OK {
        return Err(st);
    }
    Ok(out
        .iter()
        .map(|c| (c.index, c.probability.to_bits(), c.logit.to_bits()))
        .collect())
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

/// One image of a fixture's reference batch, its shape, and the model's single-threaded logits.
fn single_image(m: &CModel, name: &str) -> (Vec<f32>, [i64; 4], Vec<u32>) {
    let r = reference(&fixture(name));
    let per: usize = r.input_shape[1..].iter().product::<i64>() as usize;
    let shape = [1, r.input_shape[1], r.input_shape[2], r.input_shape[3]];
    let input = r.input[..per].to_vec();
    let logits = m.infer(&input, &shape).expect("single-threaded infer");
    (input, shape, bits(&logits))
}

fn stress(iters: usize) {
    let t0 = Instant::now();
    let shared =
        CModel::create(&fixture(SHARED).spec("onnx_stripped"), true, &[]).expect("shared model");
    let (input, shape, want_logits) = single_image(&shared, SHARED);
    let (w, h) = (40u32, 30u32);
    let pixels = image_pixels(w as usize, h as usize);
    let want_top = classify(&shared, &pixels, w, h).expect("single-threaded classify");

    // Each churned model's single-threaded answer, from a model freed before the stress starts.
    let churn_refs: Vec<ChurnRef> = CHURNED
        .iter()
        .map(|name| {
            let spec = fixture(name).spec("onnx_stripped");
            let m = CModel::create(&spec, true, &[]).expect("churned model");
            let (input, shape, logits) = single_image(&m, name);
            (spec, input, shape, logits)
        })
        .collect();

    let mismatches = AtomicUsize::new(0);
    let failures = AtomicUsize::new(0);
    let churned = AtomicUsize::new(0);
    let done = AtomicBool::new(false);
    let t1 = Instant::now();
    std::thread::scope(|s| {
        for t in 0..CHURN_THREADS {
            let (churn_refs, done, churned, failures, mismatches) =
                (&churn_refs, &done, &churned, &failures, &mismatches);
            s.spawn(move || {
                let mut i = t;
                // At least one cycle each, then until the workers finish.
                while i < CHURN_THREADS || !done.load(Ordering::Relaxed) {
                    let (spec, input, shape, want) = &churn_refs[i % churn_refs.len()];
                    match CModel::create(spec, true, &[]) {
                        Ok(m) => match m.infer(input, shape) {
                            Ok(out) if bits(&out) == *want => {}
                            Ok(_) => {
                                mismatches.fetch_add(1, Ordering::Relaxed);
                            }
                            Err(e) => {
                                eprintln!("churn infer: {e:?}");
                                failures.fetch_add(1, Ordering::Relaxed);
                            }
                        },
                        Err(e) => {
                            eprintln!("churn create: {e:?}");
                            failures.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    churned.fetch_add(1, Ordering::Relaxed);
                    i += CHURN_THREADS;
                }
            });
        }
        let workers: Vec<_> = (0..THREADS)
            .map(|_| {
                let (shared, input, want_logits, want_top, pixels) =
                    (&shared, &input, &want_logits, &want_top, &pixels);
                let (failures, mismatches) = (&failures, &mismatches);
                s.spawn(move || {
                    let mut out = vec![0f32; want_logits.len()];
                    for i in 0..iters {
                        match shared.infer_into(input, &shape, &mut out) {
                            Ok(()) if bits(&out) == *want_logits => {}
                            Ok(()) => {
                                mismatches.fetch_add(1, Ordering::Relaxed);
                            }
                            Err(e) => {
                                eprintln!("infer: {e:?}");
                                failures.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                        if i % CLASSIFY_EVERY == 0 {
                            match classify(shared, pixels, w, h) {
                                Ok(top) if top == *want_top => {}
                                Ok(_) => {
                                    mismatches.fetch_add(1, Ordering::Relaxed);
                                }
                                Err(st) => {
                                    eprintln!("classify: {} {}", st.name(), last_error());
                                    failures.fetch_add(1, Ordering::Relaxed);
                                }
                            }
                        }
                    }
                })
            })
            .collect();
        for w in workers {
            w.join().expect("worker panicked");
        }
        done.store(true, Ordering::Relaxed);
    });
    let secs = t1.elapsed().as_secs_f64();
    let calls = THREADS * (iters + iters.div_ceil(CLASSIFY_EVERY));
    eprintln!(
        "stress: {THREADS} threads x {iters} infers (+ classify every {CLASSIFY_EVERY}th) = {calls} calls on one handle \
         in {secs:.1} s ({:.0} calls/s), {} models created and freed by {CHURN_THREADS} churn threads; \
         {} mismatches, {} failures; total {:.1} s",
        calls as f64 / secs,
        churned.load(Ordering::Relaxed),
        mismatches.load(Ordering::Relaxed),
        failures.load(Ordering::Relaxed),
        t0.elapsed().as_secs_f64()
    );
    assert_eq!(
        failures.load(Ordering::Relaxed),
        0,
        "calls failed under load"
    );
    assert_eq!(
        mismatches.load(Ordering::Relaxed),
        0,
        "results differ from single-threaded ones"
    );
    assert!(churned.load(Ordering::Relaxed) >= CHURN_THREADS);
}

#[test]
fn sixteen_threads_x_100_share_one_handle_while_models_churn() {
    stress(100);
}

/// The full run: `scripts/stress` (or `cargo test --release --test stress -- --ignored`).
#[test]
#[ignore = "16 x 1000 calls; run by scripts/stress"]
fn sixteen_threads_x_1000_share_one_handle_while_models_churn() {
    stress(1000);
}
