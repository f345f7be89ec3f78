//! `timm`: classify images, inspect, export and benchmark timm models from the command line,
//! on the crate's Rust API. Exit codes are the C ABI's status values (`TIMM_ERR_*`), and error
//! messages start with the status name, as `timm_last_error()` does.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use serde_json::json;
use timm::export::{self, onnx_writer::Dim};
use timm::model::Model;
use timm::options::Options;
use timm::preprocess::decode_file;
use timm::{Error, Result};

const USAGE: &str = "\
usage: timm <command> [options]

commands:
  classify SPEC IMAGE...   top-k classes of each image   [--k N] [--json]
  info SPEC                architecture, family, input size, data config, classes, outputs, providers [--json]
  export SPEC [OUT.onnx]   write the model's graph as ONNX [--output logits|features]
                           [--triton REPO --name NAME [--max-batch N]]
  bench SPEC               latency and throughput at batch 1 and N [--batch N] [--iters N] [--json]

options for every command:
  --opt key=value          a creation option (repeatable; an unknown key lists them all)
  --random                 seeded random weights instead of the pretrained ones

SPEC: local:<folder>, hf-hub:org/name[@rev], or a timm name (arch.tag).
Exit status: 0, or the C ABI's status value (1 invalid argument, 2 not found, 3 invalid model,
4 unsupported, 5 runtime, 6 io, ...).";

/// Parsed command line: positional arguments and flags.
struct Args {
    positional: Vec<String>,
    opts: Vec<(String, String)>,
    k: usize,
    json: bool,
    random: bool,
    output: Option<String>,
    triton: Option<PathBuf>,
    name: Option<String>,
    max_batch: u32,
    batch: usize,
    iters: usize,
}

fn usage_error(msg: impl Into<String>) -> Error {
    Error::invalid_argument(format!("{}\n\n{USAGE}", msg.into()))
}

fn parse(mut it: impl Iterator<Item = String>) -> Result<Args> {
    let mut a = Args {
        positional: vec![],
        opts: vec![],
        k: 5,
        json: false,
        random: false,
        output: None,
        triton: None,
        name: None,
        max_batch: 32,
        batch: 8,
        iters: 20,
    };
    let number = |flag: &str, v: Option<String>| -> Result<usize> {
        v.as_deref()
            .and_then(|s| s.parse().ok())
            .filter(|&n: &usize| n > 0)
            .ok_or_else(|| usage_error(format!("{flag} takes a positive number")))
    };
    while let Some(arg) = it.next() {
        let (flag, inline) = match arg.split_once('=') {
            Some((f, v)) if f.starts_with("--") && f != "--opt" => {
                (f.to_string(), Some(v.to_string()))
            }
            _ => (arg.clone(), None),
        };
        let mut value = |name: &str| -> Result<String> {
            inline
                .clone()
                .or_else(|| it.next())
                .ok_or_else(|| usage_error(format!("{name} needs a value")))
        };
        match flag.as_str() {
            "--k" => a.k = number("--k", Some(value("--k")?))?,
            "--json" => a.json = true,
            "--random" => a.random = true,
            "--opt" => {
                let kv = value("--opt")?;
                let (k, v) = kv
                    .split_once('=')
                    .ok_or_else(|| usage_error(format!("--opt `{kv}`: expected key=value")))?;
                a.opts.push((k.to_string(), v.to_string()));
            }
            "--output" => a.output = Some(value("--output")?),
            "--triton" => a.triton = Some(PathBuf::from(value("--triton")?)),
            "--name" => a.name = Some(value("--name")?),
            "--max-batch" => {
                let v = value("--max-batch")?;
                a.max_batch = v
                    .parse()
                    .map_err(|_| usage_error("--max-batch takes a number (0 = no batching)"))?
            }
            "--batch" => a.batch = number("--batch", Some(value("--batch")?))?,
            "--iters" => a.iters = number("--iters", Some(value("--iters")?))?,
            "-h" | "--help" => return Err(usage_error("")),
            f if f.starts_with("--") => return Err(usage_error(format!("unknown flag `{f}`"))),
            _ => a.positional.push(arg),
        }
    }
    Ok(a)
}

/// The model the arguments name, with ONNX Runtime found next to an installed `timm`.
fn load(a: &Args, spec: &str) -> Result<Model> {
    let mut o = Options::new();
    for (k, v) in &a.opts {
        o.set(k, v)?;
    }
    if let Some(out) = &a.output {
        o.set("output", out)?;
    }
    if o.get("ort_library").is_none() && std::env::var_os("TIMM_ORT_LIBRARY").is_none() {
        if let Some(lib) = bundled_ort() {
            o.set("ort_library", &lib.to_string_lossy())?;
        }
    }
    Model::create(spec, !a.random, &o.parse()?)
}

/// `scripts/install` puts ONNX Runtime in `<prefix>/lib`, beside `<prefix>/bin/timm`.
fn bundled_ort() -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?.canonicalize().ok()?;
    let name = format!("libonnxruntime.so.{}", timm::runtime::loader::ORT_VERSION);
    let lib = exe.parent()?.parent()?.join("lib").join(name);
    lib.is_file().then_some(lib)
}

fn spec_arg(a: &Args) -> Result<&str> {
    a.positional
        .get(1)
        .map(String::as_str)
        .ok_or_else(|| usage_error(format!("`timm {}` needs a SPEC", a.positional[0])))
}

fn label(m: &Model, i: usize) -> String {
    m.label(i)
        .map(|l| format!("{} ({i})", l.to_string_lossy()))
        .unwrap_or_else(|| format!("class {i}"))
}

fn classify(a: &Args) -> Result<()> {
    let spec = spec_arg(a)?;
    let images = &a.positional[2..];
    if images.is_empty() {
        return Err(usage_error("`timm classify` needs at least one IMAGE"));
    }
    let m = load(a, spec)?;
    let mut results = Vec::new();
    for path in images {
        let img = decode_file(Path::new(path))?;
        let top = m.classify(&[img], a.k)?.remove(0);
        results.push((path, top));
    }
    let mut out = std::io::stdout().lock();
    if a.json {
        let v: Vec<_> = results
            .iter()
            .map(|(p, top)| {
                json!({"image": p, "top": top.iter().map(|c| json!({
                    "index": c.index, "label": m.label(c.index).map(|l| l.to_string_lossy()),
                    "probability": c.probability, "logit": c.logit,
                })).collect::<Vec<_>>()})
            })
            .collect();
        let _ = writeln!(
            out,
            "{}",
            serde_json::to_string_pretty(&v).unwrap_or_default()
        );
    } else {
        for (p, top) in &results {
            let _ = writeln!(out, "{p}");
            for c in top {
                let _ = writeln!(
                    out,
                    "  {:>6.2}%  {} ({})",
                    c.probability * 100.0,
                    label(&m, c.index),
                    c.index
                );
            }
        }
    }
    Ok(())
}

fn info(a: &Args) -> Result<()> {
    let m = load(a, spec_arg(a)?)?;
    let cfg = m.config();
    let dc = m.data_config();
    let family = timm::graph::family_for(&cfg.architecture).map_or("none", |f| f.name);
    let graph = match m.graph_kind() {
        timm::model::GraphKind::Native => "native",
        timm::model::GraphKind::Onnx => "onnx",
    };
    let labels = cfg.label_names.iter().filter(|l| l.is_some()).count();
    let v = json!({
        "architecture": cfg.architecture,
        "family": family,
        "graph": graph,
        "input_size": m.input_size(),
        "data_config": {
            "input_size": dc.input_size, "mean": dc.mean, "std": dc.std, "crop_pct": dc.crop_pct,
            "crop_mode": dc.crop_mode.as_str(), "interpolation": dc.interpolation.as_str(),
        },
        "num_classes": m.num_classes(),
        "labels": labels,
        "output": export::output_kind_name(m.output_kind()),
        "output_dim": m.output_dim(),
        "providers": m.providers().to_string_lossy(),
    });
    if a.json {
        println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
        return Ok(());
    }
    println!("architecture  {}", cfg.architecture);
    println!("family        {family} (graph: {graph})");
    println!("input size    {:?}", m.input_size());
    println!(
        "data config   mean {:?} std {:?} crop_pct {} crop_mode {} interpolation {}",
        dc.mean,
        dc.std,
        dc.crop_pct,
        dc.crop_mode.as_str(),
        dc.interpolation.as_str()
    );
    println!("classes       {} ({labels} labelled)", m.num_classes());
    println!(
        "outputs       {} [N, {}]",
        export::output_kind_name(m.output_kind()),
        m.output_dim()
    );
    println!("providers     {}", m.providers().to_string_lossy());
    Ok(())
}

fn export_cmd(a: &Args) -> Result<()> {
    let spec = spec_arg(a)?;
    let out = a.positional.get(2);
    if out.is_none() && a.triton.is_none() {
        return Err(usage_error(
            "`timm export` needs OUT.onnx or --triton REPO --name NAME",
        ));
    }
    if a.triton.is_some() != a.name.is_some() {
        return Err(usage_error("--triton and --name go together"));
    }
    let m = load(a, spec)?;
    if let Some(out) = out {
        let e = export::export_onnx(&m, Path::new(out))?;
        let dims = |d: &[Dim]| {
            d.iter()
                .map(|x| match x {
                    Dim::Fixed(v) => v.to_string(),
                    Dim::Symbolic(s) => s.clone(),
                })
                .collect::<Vec<_>>()
                .join(", ")
        };
        eprintln!("wrote {out}: {} [{}]", e.input.name, dims(&e.input.dims));
        for o in &e.outputs {
            eprintln!("  output {} [{}]", o.name, dims(&o.dims));
        }
        if e.external_data {
            eprintln!(
                "  weights in {}",
                export::onnx_writer::external_path(Path::new(out)).display()
            );
        }
    }
    if let (Some(repo), Some(name)) = (&a.triton, &a.name) {
        let dir = export::triton::export(&m, repo, name, a.max_batch)?;
        eprintln!("wrote Triton model {}", dir.display());
    }
    Ok(())
}

/// Progress on stderr, only when it is a terminal.
struct Progress {
    tty: bool,
    label: String,
    total: usize,
}

impl Progress {
    fn tick(&self, done: usize) {
        if !self.tty {
            return;
        }
        let width = 30;
        let filled = done * width / self.total.max(1);
        eprint!(
            "\r{:<10} [{}{}] {done}/{}",
            self.label,
            "#".repeat(filled),
            " ".repeat(width - filled),
            self.total
        );
        if done == self.total {
            eprint!("\r{}\r", " ".repeat(width + 30));
        }
        let _ = std::io::stderr().flush();
    }
}

fn bench(a: &Args) -> Result<()> {
    let m = load(a, spec_arg(a)?)?;
    let [c, h, w] = m.input_size();
    let tty = std::io::stderr().is_terminal();
    let mut rows = Vec::new();
    let mut batches = vec![1];
    if a.batch > 1 {
        batches.push(a.batch);
    }
    for n in batches {
        let input = vec![0.5f32; n * c * h * w];
        let shape = [n as i64, c as i64, h as i64, w as i64];
        let mut output = vec![0f32; n * m.output_dim()];
        m.infer(&input, &shape, &mut output)?; // warm-up
        let p = Progress {
            tty,
            label: format!("batch {n}"),
            total: a.iters,
        };
        let mut times = Vec::with_capacity(a.iters);
        for i in 0..a.iters {
            let t = Instant::now();
            m.infer(&input, &shape, &mut output)?;
            times.push(t.elapsed());
            p.tick(i + 1);
        }
        times.sort();
        let mean = times.iter().sum::<Duration>().as_secs_f64() / times.len() as f64;
        let p50 = times[times.len() / 2].as_secs_f64();
        rows.push(json!({
            "batch": n, "iters": a.iters, "mean_ms": mean * 1e3, "p50_ms": p50 * 1e3,
            "images_per_s": n as f64 / mean,
        }));
    }
    if a.json {
        let v = json!({"architecture": m.config().architecture, "input_size": m.input_size(),
                       "providers": m.providers().to_string_lossy(), "results": rows});
        println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
    } else {
        println!(
            "{} {:?} on {}",
            m.config().architecture,
            m.input_size(),
            m.providers().to_string_lossy()
        );
        for r in &rows {
            println!(
                "batch {:>4}: mean {:>9.3} ms  p50 {:>9.3} ms  {:>9.1} images/s",
                r["batch"],
                r["mean_ms"].as_f64().unwrap_or(0.0),
                r["p50_ms"].as_f64().unwrap_or(0.0),
                r["images_per_s"].as_f64().unwrap_or(0.0)
            );
        }
    }
    Ok(())
}

fn run() -> Result<()> {
    let a = parse(std::env::args().skip(1))?;
    match a.positional.first().map(String::as_str) {
        Some("classify") => classify(&a),
        Some("info") => info(&a),
        Some("export") => export_cmd(&a),
        Some("bench") => bench(&a),
        Some(other) => Err(usage_error(format!("unknown command `{other}`"))),
        None => Err(usage_error("no command given")),
    }
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let status = e.status();
            eprintln!("timm: {}: {}", status.name(), e.message());
            ExitCode::from(u8::try_from(status as i32).unwrap_or(1))
        }
    }
}
