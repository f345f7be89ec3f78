//! Hostile inputs that would hang, exhaust memory, abort or write where they should not: each
//! runs through the C ABI in a child process (this test binary re-run for one case) under an
//! address-space limit and a time limit, so a regression shows up as a killed or timed-out
//! child instead of a hung or dead test run. Special files behind links (config, weights,
//! model.onnx, external data, cache refs, images), reads of devices and huge files, an ONNX
//! Runtime allocation failure, unreadable folders, truncated and non-PNG/JPEG images, and a
//! check that nothing is written outside the configured cache.

mod common;
use common::*;

use std::ffi::CString;
use std::os::unix::fs::symlink;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use timm::ffi::*;
use timm::TimmStatus::{self, *};

const CASE_VAR: &str = "TIMM_HOSTILE_LIMITS_CASE";
const DIR_VAR: &str = "TIMM_HOSTILE_LIMITS_DIR";
const GIB: u64 = 1 << 30;
/// What one case may take: ONNX Runtime and the test harness reserve ~1 GiB of address space
/// before any model exists; the rest is the "2 GiB over the model's needs" the library allows.
const DEFAULT_AS: u64 = 3 * GIB;
const TIME_LIMIT: Duration = Duration::from_secs(60);
const C: &str = "0123456789abcdef0123456789abcdef01234567";

struct Case {
    name: &'static str,
    want: TimmStatus,
    needles: &'static [&'static str],
    /// Text the message must not contain (content of files outside the model folder).
    forbidden: &'static [&'static str],
    address_space: u64,
    /// Run as an unprivileged user when the suite runs as root (permission cases).
    unprivileged: bool,
}

const fn case(name: &'static str, want: TimmStatus, needles: &'static [&'static str]) -> Case {
    Case {
        name,
        want,
        needles,
        forbidden: &[],
        address_space: DEFAULT_AS,
        unprivileged: false,
    }
}

fn cases() -> Vec<Case> {
    vec![
        case(
            "config_fifo_via_link",
            TIMM_ERR_INVALID_MODEL,
            &["config.json", "a FIFO"],
        ),
        case(
            "weights_fifo_via_link",
            TIMM_ERR_INVALID_MODEL,
            &["model.safetensors", "a FIFO"],
        ),
        // The listing fallback only takes regular files, so a linked FIFO is no candidate.
        case(
            "listed_weights_fifo_via_link",
            TIMM_ERR_NOT_FOUND,
            &["has no weights file"],
        ),
        case(
            "onnx_fifo_via_link",
            TIMM_ERR_INVALID_MODEL,
            &["model.onnx", "a FIFO"],
        ),
        case(
            "external_data_fifo_via_link",
            TIMM_ERR_INVALID_MODEL,
            &["external data", "a FIFO"],
        ),
        case(
            "cache_ref_fifo_via_link",
            TIMM_ERR_INVALID_MODEL,
            &["refs/main", "a FIFO"],
        ),
        case(
            "cache_ref_dev_zero",
            TIMM_ERR_INVALID_MODEL,
            &["outside the cache folder"],
        ),
        case(
            "cache_ref_3gib",
            TIMM_ERR_INVALID_MODEL,
            &["over the limit of 256 bytes"],
        ),
        Case {
            forbidden: &["root:", "secret-first-line"],
            ..case(
                "cache_ref_outside_cache",
                TIMM_ERR_INVALID_MODEL,
                &["outside the cache folder"],
            )
        },
        case("snapshot_files_fifo", TIMM_ERR_NOT_FOUND, &["offline"]),
        case(
            "image_fifo_via_link",
            TIMM_ERR_INVALID_ARGUMENT,
            &["a FIFO"],
        ),
        case(
            "image_dev_zero",
            TIMM_ERR_INVALID_ARGUMENT,
            &["a character device"],
        ),
        case(
            "image_3gib_jpeg_head",
            TIMM_ERR_INVALID_ARGUMENT,
            &["over the limit of 1073741824 bytes"],
        ),
        case(
            "image_truncated_jpeg",
            TIMM_ERR_INVALID_ARGUMENT,
            &["image file is truncated"],
        ),
        case("image_truncated_jpeg_allowed", TIMM_OK, &[]),
        case("image_bmp_gif_tiff", TIMM_OK, &[]),
        Case {
            unprivileged: true,
            ..case(
                "folder_without_permission",
                TIMM_ERR_IO,
                &["config.json", "Permission denied"],
            )
        },
        // A 2 GiB classifier weight under a 1.5 GiB limit: ONNX Runtime's allocator throws
        // std::bad_alloc, which must come back as a status instead of aborting the host.
        Case {
            address_space: 3 * GIB / 2,
            ..case(
                "ort_allocation_fails",
                TIMM_ERR_RUNTIME,
                &["could not allocate", "bad_alloc"],
            )
        },
        // A one-block ViT whose qkv weight alone needs 3.2 GB of seeded random weights, under a
        // 1.5 GiB limit: the builder's own allocations must fail as a status too (a failed Rust
        // allocation would abort the host).
        Case {
            address_space: 3 * GIB / 2,
            ..case(
                "random_weights_allocation_fails",
                TIMM_ERR_RUNTIME,
                &["cannot allocate memory for parameter"],
            )
        },
        case("nothing_written_outside_the_cache", TIMM_OK, &[]),
    ]
}

// ---------------------------------------------------------------------------------------
// Parent: one child per case, limited.

#[test]
fn hostile_inputs_are_refused_within_time_and_memory_limits() {
    let exe = std::env::current_exe().unwrap();
    let mut failures = Vec::new();
    for c in cases() {
        let dir = tempfile::tempdir().unwrap();
        let mut cmd = Command::new(&exe);
        cmd.args(["--exact", "child_case", "--nocapture", "--test-threads=1"])
            .env(CASE_VAR, c.name)
            .env(DIR_VAR, dir.path())
            .env("HOME", dir.path().join("home"))
            .env("TMPDIR", dir.path().join("tmp"))
            .env_remove("XDG_CACHE_HOME")
            .env_remove("HF_HOME")
            .env_remove("HF_HUB_CACHE")
            .current_dir(dir.path().join("cwd"))
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for sub in ["home", "tmp", "cwd", "cache"] {
            std::fs::create_dir_all(dir.path().join(sub)).unwrap();
        }
        let unprivileged = c.unprivileged && unsafe { libc::geteuid() } == 0;
        if unprivileged {
            // The child must reach its temp folder as `nobody`.
            std::fs::set_permissions(
                dir.path(),
                std::os::unix::fs::PermissionsExt::from_mode(0o777),
            )
            .unwrap();
        }
        let limit = c.address_space;
        // SAFETY: only async-signal-safe calls between fork and exec.
        unsafe {
            cmd.pre_exec(move || {
                let r = libc::rlimit {
                    rlim_cur: limit,
                    rlim_max: limit,
                };
                if libc::setrlimit(libc::RLIMIT_AS, &r) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                if unprivileged && (libc::setgid(65534) != 0 || libc::setuid(65534) != 0) {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let start = Instant::now();
        let mut child = cmd.spawn().unwrap();
        let status = loop {
            if let Some(s) = child.try_wait().unwrap() {
                break Some(s);
            }
            if start.elapsed() > TIME_LIMIT {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let out = child.wait_with_output().unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        let problem = match status {
            None => Some(format!("still running after {TIME_LIMIT:?} (hangs)")),
            Some(s) if !s.success() => Some(format!(
                "child died ({s}); stderr: {}",
                stderr.lines().rev().take(5).collect::<Vec<_>>().join(" | ")
            )),
            Some(_) => judge(&c, &stdout, dir.path()),
        };
        if let Some(p) = problem {
            failures.push(format!("{}: {p}", c.name));
        }
    }
    assert!(
        failures.is_empty(),
        "{} case(s) failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

fn judge(c: &Case, stdout: &str, dir: &Path) -> Option<String> {
    let Some(line) = stdout
        .lines()
        .find_map(|l| l.find("RESULT ").map(|i| &l[i + 7..]))
    else {
        return Some(format!("the child printed no result: {stdout}"));
    };
    let (status, message) = line.split_once(' ').unwrap_or((line, ""));
    if status != c.want.name() {
        return Some(format!(
            "status {status}, want {}: {message}",
            c.want.name()
        ));
    }
    if let Some(n) = c.needles.iter().find(|n| !message.contains(**n)) {
        return Some(format!("message lacks `{n}`: {message}"));
    }
    if let Some(n) = c.forbidden.iter().find(|n| message.contains(**n)) {
        return Some(format!("message quotes `{n}`: {message}"));
    }
    // Nothing may appear in the child's home, temp folder or working folder.
    for sub in ["home", "tmp", "cwd"] {
        let written = files_under(&dir.join(sub));
        if !written.is_empty() {
            return Some(format!("wrote outside the cache: {written:?}"));
        }
    }
    None
}

fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(rd) = std::fs::read_dir(dir) else {
        return out;
    };
    for e in rd.flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(files_under(&p));
            out.push(p);
        } else {
            out.push(p);
        }
    }
    out
}

// ---------------------------------------------------------------------------------------
// Child: builds the case's inputs in its temp folder and prints `RESULT <status> <message>`.

#[test]
fn child_case() {
    let Ok(name) = std::env::var(CASE_VAR) else {
        return; // run directly by the harness: only the parent test does anything
    };
    let dir = PathBuf::from(std::env::var(DIR_VAR).unwrap());
    let (status, message) = match run_case(&name, &dir) {
        Ok(()) => (TIMM_OK, String::new()),
        Err(e) => (e.status, e.message),
    };
    println!("RESULT {} {}", status.name(), message.replace('\n', " "));
}

fn fifo(path: &Path) {
    let c = CString::new(path.to_str().unwrap()).unwrap();
    // SAFETY: a valid NUL-terminated path.
    assert_eq!(
        unsafe { libc::mkfifo(c.as_ptr(), 0o666) },
        0,
        "mkfifo {}",
        path.display()
    );
}

/// A FIFO in `dir/specials/` and a link to it at `at`.
fn fifo_link(dir: &Path, at: &Path) {
    let target = dir.join("specials").join(at.file_name().unwrap());
    std::fs::create_dir_all(target.parent().unwrap()).unwrap();
    fifo(&target);
    let _ = std::fs::remove_file(at);
    symlink(&target, at).unwrap();
}

/// A copy of a fixture folder (files copied, so they can be replaced).
fn folder_copy(dir: &Path, fixture_name: &str, mode: &str) -> PathBuf {
    let src = fixture(fixture_name).folder(mode).unwrap();
    let dst = dir.join("model");
    std::fs::create_dir_all(&dst).unwrap();
    for e in std::fs::read_dir(&src).unwrap().flatten() {
        std::fs::copy(e.path(), dst.join(e.file_name())).unwrap();
    }
    dst
}

fn create(spec: &str, options: &[(&str, &str)]) -> Result<CModel, CError> {
    CModel::create(spec, true, options)
}

fn local(dir: &Path) -> String {
    format!("local:{}", dir.display())
}

/// A Hugging Face cache holding `timm/x` with a `main` ref made by `make_ref`.
fn hub_case(dir: &Path, make_ref: impl FnOnce(&Path)) -> Result<(), CError> {
    let cache = dir.join("cache");
    let refs = cache.join("models--timm--x/refs");
    std::fs::create_dir_all(&refs).unwrap();
    make_ref(&refs.join("main"));
    let cache = cache.to_str().unwrap().to_string();
    create(
        "hf-hub:timm/x",
        &[("cache_dir", &cache), ("offline", "true")],
    )
    .map(drop)
}

fn classify(model: &CModel, path: &Path) -> Result<(), CError> {
    let p = CString::new(path.to_str().unwrap()).unwrap();
    let mut top = [TimmClass {
        index: 0,
        probability: 0.0,
        logit: 0.0,
        label: std::ptr::null(),
        description: std::ptr::null(),
    }; 3];
    let st = timm_classify_file(model.0, p.as_ptr(), 3, top.as_mut_ptr());
    if st == TIMM_OK {
        Ok(())
    } else {
        Err(CError {
            status: st,
            message: last_error(),
        })
    }
}

fn image_model(options: &[(&str, &str)]) -> CModel {
    create(&fixture("test_resnet").spec("native"), options).unwrap()
}

fn images() -> PathBuf {
    fixtures_dir().join("images")
}

fn sparse(path: &Path, head: &[u8], len: u64) {
    std::fs::write(path, head).unwrap();
    std::fs::OpenOptions::new()
        .write(true)
        .open(path)
        .unwrap()
        .set_len(len)
        .unwrap();
}

fn run_case(name: &str, dir: &Path) -> Result<(), CError> {
    match name {
        "config_fifo_via_link" => {
            let m = folder_copy(dir, "test_resnet", "native");
            fifo_link(dir, &m.join("config.json"));
            create(&local(&m), &[]).map(drop)
        }
        "weights_fifo_via_link" => {
            let m = folder_copy(dir, "test_resnet", "native");
            fifo_link(dir, &m.join("model.safetensors"));
            create(&local(&m), &[("graph", "native")]).map(drop)
        }
        "listed_weights_fifo_via_link" => {
            let m = folder_copy(dir, "test_resnet", "native");
            std::fs::remove_file(m.join("model.safetensors")).unwrap();
            let _ = std::fs::remove_file(m.join("model.onnx"));
            fifo_link(dir, &m.join("a.safetensors"));
            create(&local(&m), &[]).map(drop)
        }
        "onnx_fifo_via_link" => {
            let m = folder_copy(dir, "test_resnet", "native");
            fifo_link(dir, &m.join("model.onnx"));
            create(&local(&m), &[]).map(drop)
        }
        "external_data_fifo_via_link" => {
            let m = folder_copy(dir, "test_resnet", "onnx_external");
            fifo_link(dir, &m.join("model.onnx.data"));
            create(&local(&m), &[]).map(drop)
        }
        // The FIFO inside the repo's cache folder, so the link passes the inside-the-cache check.
        "cache_ref_fifo_via_link" => hub_case(dir, |r| {
            let repo = r.parent().unwrap().parent().unwrap();
            fifo_link(repo, r)
        }),
        "cache_ref_dev_zero" => hub_case(dir, |r| symlink("/dev/zero", r).unwrap()),
        "cache_ref_3gib" => hub_case(dir, |r| sparse(r, C.as_bytes(), 3 * GIB)),
        "cache_ref_outside_cache" => hub_case(dir, |r| {
            let outside = dir.join("outside.txt");
            std::fs::write(&outside, "secret-first-line\nmore\n").unwrap();
            symlink(&outside, r).unwrap();
        }),
        "snapshot_files_fifo" => hub_case(dir, |r| {
            std::fs::write(r, C).unwrap();
            let snap = r
                .parent()
                .unwrap()
                .parent()
                .unwrap()
                .join("snapshots")
                .join(C);
            std::fs::create_dir_all(&snap).unwrap();
            fifo_link(dir, &snap.join("config.json"));
            fifo_link(dir, &snap.join("model.safetensors"));
        }),
        "image_fifo_via_link" => {
            let link = dir.join("cat.jpg");
            fifo_link(dir, &link);
            classify(&image_model(&[]), &link)
        }
        "image_dev_zero" => classify(&image_model(&[]), Path::new("/dev/zero")),
        "image_3gib_jpeg_head" => {
            let p = dir.join("big.jpg");
            sparse(
                &p,
                &std::fs::read(images().join("rocket.jpg")).unwrap(),
                3 * GIB,
            );
            classify(&image_model(&[]), &p)
        }
        "image_truncated_jpeg" | "image_truncated_jpeg_allowed" => {
            let jpeg = std::fs::read(images().join("rocket.jpg")).unwrap();
            let p = dir.join("half.jpg");
            std::fs::write(&p, &jpeg[..jpeg.len() / 2]).unwrap();
            let opts: &[(&str, &str)] = if name.ends_with("allowed") {
                &[("load_truncated_images", "true")]
            } else {
                &[]
            };
            classify(&image_model(opts), &p)
        }
        "image_bmp_gif_tiff" => {
            let m = image_model(&[]);
            for f in [
                "rgb24.bmp",
                "palette8.bmp",
                "two_frames.gif",
                "lzw.tif",
                "rgba.tif",
            ] {
                classify(&m, &images().join("formats").join(f))?;
            }
            Ok(())
        }
        "folder_without_permission" => {
            let m = folder_copy(dir, "test_resnet", "native");
            std::fs::set_permissions(&m, std::os::unix::fs::PermissionsExt::from_mode(0o000))
                .unwrap();
            create(&local(&m), &[]).map(drop)
        }
        "ort_allocation_fails" => {
            let m = huge_classifier(dir);
            // Without the optimised-model cache, whose key would first hash the 2 GiB.
            create(&local(&m), &[("graph", "native"), ("graph_cache", "false")]).map(drop)
        }
        "random_weights_allocation_fails" => {
            let m = folder_copy(dir, "test_vit", "native");
            let p = m.join("config.json");
            let mut c: serde_json::Value =
                serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap();
            c["model_args"]["embed_dim"] = (1 << 14).into();
            c["model_args"]["depth"] = 1.into();
            std::fs::write(&p, c.to_string()).unwrap();
            CModel::create(&local(&m), false, &[]).map(drop)
        }
        "nothing_written_outside_the_cache" => {
            let cache = dir.join("cache");
            let cache = cache.to_str().unwrap();
            let m = create(
                &fixture("test_resnet").spec("native"),
                &[("cache_dir", cache)],
            )?;
            let chw = [3usize, 64, 64];
            m.infer(&vec![0.5; chw.iter().product()], &[1, 3, 64, 64])?;
            classify(&m, &images().join("chelsea.png"))?;
            let e = create(
                "hf-hub:timm/absent",
                &[("cache_dir", cache), ("offline", "true")],
            )
            .err()
            .expect("an absent repo offline must fail");
            assert_eq!(e.status, TIMM_ERR_NOT_FOUND, "{}", e.message);
            let e = create(&local(&dir.join("no-such-folder")), &[])
                .err()
                .unwrap();
            assert_eq!(e.status, TIMM_ERR_NOT_FOUND, "{}", e.message);
            Ok(())
        }
        other => panic!("unknown case {other}"),
    }
}

/// effnet_mnv3_small with as many classes as make a 2 GiB `classifier.weight`, stored sparse.
fn huge_classifier(dir: &Path) -> PathBuf {
    let m = folder_copy(dir, "effnet_mnv3_small", "native");
    let _ = std::fs::remove_file(m.join("model.onnx"));
    let st = std::fs::read(m.join("model.safetensors")).unwrap();
    let n = u64::from_le_bytes(st[..8].try_into().unwrap()) as usize;
    let header: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(&st[8..8 + n]).unwrap();
    // A 2 GiB classifier whatever the fixture's width (within config.json's class limit).
    let features = header["classifier.weight"]["shape"][1].as_u64().unwrap();
    let classes: u64 = (1 << 29) / features;
    assert!(
        classes <= 1 << 20,
        "effnet_mnv3_small's {features} features are too few for a 2 GiB classifier"
    );
    let cfg_path = m.join("config.json");
    let mut cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&cfg_path).unwrap()).unwrap();
    cfg["num_classes"] = classes.into();
    cfg["model_args"]["num_classes"] = classes.into();
    if let Some(p) = cfg
        .get_mut("pretrained_cfg")
        .and_then(|p| p.as_object_mut())
    {
        p.remove("label_names");
        p.insert("num_classes".into(), classes.into());
    }
    let cfg = cfg.as_object_mut().unwrap();
    cfg.remove("label_names");
    cfg.remove("label_descriptions");
    std::fs::write(&cfg_path, serde_json::to_vec(cfg).unwrap()).unwrap();

    let data = &st[8 + n..];
    // Keep every other tensor's bytes; fc.* go after them, at their new sizes.
    let mut out = serde_json::Map::new();
    let mut body = Vec::new();
    for (k, v) in &header {
        if k == "__metadata__" {
            out.insert(k.clone(), v.clone());
            continue;
        }
        if k.starts_with("classifier.") {
            continue;
        }
        let o = v["data_offsets"].as_array().unwrap();
        let (b, e) = (
            o[0].as_u64().unwrap() as usize,
            o[1].as_u64().unwrap() as usize,
        );
        let mut t = v.clone();
        t["data_offsets"] = serde_json::json!([body.len(), body.len() + (e - b)]);
        body.extend_from_slice(&data[b..e]);
        out.insert(k.clone(), t);
    }
    let w0 = body.len() as u64;
    let w1 = w0 + classes * features * 4;
    let b1 = w1 + classes * 4;
    out.insert(
        "classifier.weight".into(),
        serde_json::json!({"dtype": "F32", "shape": [classes, features], "data_offsets": [w0, w1]}),
    );
    out.insert(
        "classifier.bias".into(),
        serde_json::json!({"dtype": "F32", "shape": [classes], "data_offsets": [w1, b1]}),
    );
    let mut h = serde_json::to_vec(&out).unwrap();
    while !h.len().is_multiple_of(8) {
        h.push(b' ');
    }
    let mut head = (h.len() as u64).to_le_bytes().to_vec();
    head.extend_from_slice(&h);
    head.extend_from_slice(&body);
    let total = head.len() as u64 + (b1 - w0);
    sparse(&m.join("model.safetensors"), &head, total);
    m
}
