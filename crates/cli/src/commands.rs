//! One function per command: each reads its inputs, calls the crates and prints.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context as _, Result, bail};
use modelforge_model::burn::tensor::Device;
use modelforge_pipeline::{Plan, Stage, runs};
use modelforge_registry::{Registry, split_reference};
use modelforge_spec::Spec;
use modelforge_train::parallel::Distributed;
use modelforge_train::{TrainError, TrainOptions, Trained, evaluate_test};
use serde_json::{Value, json};

use crate::native::Native;
use crate::progress::{Bars, StageTable};
use crate::{Compute, Parallel};

/// Exit code of `run` when the model was published but failed its gate.
const GATE_FAILED: u8 = 3;

/// Settings every command shares.
pub struct Context {
    /// The model registry.
    pub registry: Registry,
    /// Where run folders go.
    pub runs: PathBuf,
}

/// The compute threads asked for: the flag, else the spec's, else one per core.
fn thread_count(compute: &Compute, spec: Option<&Spec>) -> Result<usize> {
    let n = compute
        .threads
        .or_else(|| spec.and_then(|s| s.train.threads.as_ref().map(|t| *t.get_ref())))
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    if n == 0 {
        bail!("--threads 0: use 1 or more threads");
    }
    Ok(n)
}

/// Sizes the global compute thread pool once (training and serving start their own pools
/// of that size); returns the thread count in force.
fn threads(compute: &Compute, spec: Option<&Spec>) -> Result<usize> {
    let n = thread_count(compute, spec)?;
    rayon::ThreadPoolBuilder::new()
        .num_threads(n)
        .build_global()
        .context("cannot size the compute thread pool")?;
    Ok(n)
}

/// Runs an offline command's `work` on a thread of its own compute pool: the engine's
/// parallel kernels then run there and on the pool's peers, instead of each being handed
/// from this thread to a pool and waited for (a wake-up and a sleep per kernel).
fn computing<T: Send>(compute: &Compute, work: impl FnOnce() -> Result<T> + Send) -> Result<T> {
    rayon::ThreadPoolBuilder::new()
        .num_threads(thread_count(compute, None)?)
        .build()
        .context("cannot start the compute thread pool")?
        .install(work)
}

fn device(compute: &Compute) -> Result<Device> {
    Ok(modelforge_model::device(&compute.device)?)
}

/// `modelforge generate MODEL --prompt TEXT`: the prompt, then the continuation streamed to
/// stdout as it is decoded; the figures go to stderr.
pub fn generate(
    ctx: &Context,
    model: &str,
    prompt: &str,
    sampling: &modelforge_generate::Sampling,
    compute: &Compute,
) -> Result<ExitCode> {
    use std::io::Write as _;
    computing(compute, || {
        let device = device(compute)?;
        let (manifest, lm) = Native::open_language_model(&ctx.registry, model, &device)?;
        let mut out = std::io::stdout().lock();
        let mut sequence = lm.start(prompt, sampling)?;
        write!(out, "{prompt}")?;
        out.flush()?;
        lm.prefill(&mut sequence, usize::MAX);
        while sequence.finish().is_none() {
            for piece in lm.step(&mut [&mut sequence])? {
                write!(out, "{piece}")?;
                out.flush()?;
            }
        }
        writeln!(out)?;
        let done = sequence.finished();
        eprintln!(
            "{}@{}: {} prompt + {} generated tokens ({}), first token after {:.1} ms, {:.1} tokens/s",
            manifest.name,
            manifest.version,
            done.prompt_tokens,
            done.tokens,
            done.finish.name(),
            done.time_to_first_token.as_secs_f64() * 1e3,
            done.decode_tokens_per_second()
        );
        Ok(ExitCode::SUCCESS)
    })
}

/// `modelforge check FILE [--graph out.svg|.dot]`.
pub fn check(file: &Path, graph: Option<&Path>) -> Result<ExitCode> {
    let spec = Spec::load(file)?;
    print!("{}", spec.summary());
    if let Some(out) = graph {
        let text = match out.extension().and_then(|e| e.to_str()) {
            Some("dot" | "gv") => modelforge_spec::drawing::to_dot(&spec),
            Some("svg") => modelforge_spec::drawing::to_svg(&spec),
            _ => bail!(
                "--graph {}: give a file ending in .svg or .dot",
                out.display()
            ),
        };
        std::fs::write(out, text).with_context(|| format!("cannot write {}", out.display()))?;
        println!("graph written to {}", out.display());
    }
    Ok(ExitCode::SUCCESS)
}

/// The data-parallel settings in force: flags over the spec.
fn distributed(spec: &Spec, parallel: &Parallel) -> Result<(usize, Distributed)> {
    let workers = parallel
        .workers
        .or_else(|| spec.train.workers.as_ref().map(|w| *w.get_ref()))
        .unwrap_or(1);
    if workers == 0 {
        bail!("--workers 0: use 1 or more workers");
    }
    let mut settings = spec.train.distributed.get_ref().clone();
    for (flag, given, field) in [
        ("--bucket-mb", parallel.bucket_mb, &mut settings.bucket_mb),
        (
            "--collective-timeout",
            parallel.collective_timeout,
            &mut settings.timeout_s,
        ),
    ] {
        if let Some(value) = given {
            if !(value > 0.0 && value.is_finite()) {
                bail!("{flag} {value}: use a positive number");
            }
            *field = value;
        }
    }
    Ok((workers, Distributed::from_spec(&settings)))
}

/// Whether this process was started by `mpirun`/`mpiexec` (Open MPI, MPICH, PMIx).
fn under_mpirun() -> bool {
    ["OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_RANK"]
        .iter()
        .any(|v| std::env::var_os(v).is_some())
}

/// This process's rank in an `mpirun` job (0 when not under mpirun).
fn mpi_rank() -> usize {
    ["OMPI_COMM_WORLD_RANK", "PMI_RANK", "PMIX_RANK"]
        .iter()
        .find_map(|v| std::env::var(v).ok()?.parse().ok())
        .unwrap_or(0)
}

/// How this process trains: the thread pool sized, workers and MPI settled.
struct Training {
    runs: PathBuf,
    threads: usize,
    workers: usize,
    distributed: Distributed,
    device: String,
    mpi: bool,
}

impl Training {
    /// Checks the compute settings of a spec and the flags, and sizes the thread pool.
    fn new(ctx: &Context, spec: &Spec, compute: &Compute, parallel: &Parallel) -> Result<Training> {
        let threads = threads(compute, Some(spec))?;
        let (workers, distributed) = distributed(spec, parallel)?;
        device(compute)?;
        let mpi = under_mpirun();
        Ok(Training {
            runs: ctx.runs.clone(),
            threads,
            workers,
            distributed,
            device: compute.device.clone(),
            mpi,
        })
    }

    /// Trains on this process's ranks (local workers, or one rank of an MPI job): the result
    /// on rank 0, `None` on the other MPI ranks. `report` runs once, on rank 0.
    fn train(
        &self,
        spec: &Spec,
        data: &modelforge_data::Prepared,
        resume: Option<String>,
        report: impl FnOnce(),
    ) -> Result<Option<Trained>, TrainError> {
        let mut bars = Bars::default();
        let options = TrainOptions {
            runs_dir: self.runs.clone(),
            threads: self.threads,
            workers: self.workers,
            distributed: self.distributed,
            device: self.device.clone(),
            resume,
            progress: &mut bars,
        };
        if self.mpi {
            return train_mpi(spec, data, options, report);
        }
        report();
        modelforge_train::train(spec, data, options).map(Some)
    }
}

/// One rank of an MPI job; rank 0 reports the data and returns the result.
#[cfg(feature = "mpi")]
fn train_mpi(
    spec: &Spec,
    data: &modelforge_data::Prepared,
    options: TrainOptions,
    report: impl FnOnce(),
) -> Result<Option<Trained>, TrainError> {
    use modelforge_train::parallel::Communicator as _;
    let mut world = modelforge_train::parallel::mpi::Mpi::init(options.distributed.timeout)?;
    if world.rank() == 0 {
        report();
        match options.workers {
            1 => eprintln!("MPI: {} ranks", world.size()),
            n => eprintln!(
                "MPI: {} processes × {n} workers = {} ranks",
                world.size(),
                world.size() * n
            ),
        }
    }
    if options.workers > 1 {
        return modelforge_train::train_nested(spec, data, options, world);
    }
    modelforge_train::run_guarded(&mut world, |world| {
        modelforge_train::train_rank(spec, data, options, world)
    })
}

/// Without the `mpi` feature a process under mpirun would train alone: refuse.
#[cfg(not(feature = "mpi"))]
fn train_mpi(
    _: &Spec,
    _: &modelforge_data::Prepared,
    _: TrainOptions,
    _: impl FnOnce(),
) -> Result<Option<Trained>, TrainError> {
    Err(TrainError::Settings(
        "started by mpirun, but this modelforge was built without MPI — build it with `cargo build --release --features mpi`".into(),
    ))
}

/// `modelforge train FILE [--resume RUN]`: trains a run and evaluates it on the test split.
pub fn train(
    ctx: &Context,
    file: &Path,
    compute: &Compute,
    parallel: &Parallel,
    resume: Option<String>,
) -> Result<ExitCode> {
    let spec = Spec::load(file)?;
    let training = Training::new(ctx, &spec, compute, parallel)?;
    let data = modelforge_data::prepare(&spec)?;
    let report = || {
        let sizes = data.sizes();
        eprintln!(
            "data: {} train, {} validation, {} test {} (fingerprint {})",
            sizes.train,
            sizes.validation,
            sizes.test,
            sizes.unit,
            &data.fingerprint[..12]
        )
    };
    let Some(trained) = training.train(&spec, &data, resume, report)? else {
        return Ok(ExitCode::SUCCESS);
    };
    println!(
        "run {} finished{}: {}",
        trained.run_id,
        if trained.stopped_early {
            " (stopped early)"
        } else {
            ""
        },
        modelforge_pipeline::runs::figures(&trained.final_metrics)
    );
    let test = modelforge_pipeline::evaluate_run(
        &spec,
        &trained.network,
        &data,
        &trained.run_dir,
        &device(compute)?,
    )?;
    println!(
        "test: {}",
        modelforge_pipeline::runs::figures(&test.metrics)
    );
    println!("run folder: {}", trained.run_dir.display());
    Ok(ExitCode::SUCCESS)
}

/// What `run` does besides the stages.
pub struct RunFlags {
    /// Re-run this stage and every one after it.
    pub from: Option<Stage>,
    /// Show what would run and why; run nothing.
    pub dry_run: bool,
    /// REST and gRPC addresses to serve on afterwards (None: stop after the stages).
    pub serve_at: Option<(std::net::SocketAddr, std::net::SocketAddr)>,
}

/// `modelforge run FILE`: the stages check → data → train → evaluate → gate → publish →
/// deploy, each skipped when its inputs are unchanged; then serve (unless `serve_at` is None).
pub fn run(
    ctx: &Context,
    file: &Path,
    compute: &Compute,
    parallel: &Parallel,
    flags: &RunFlags,
) -> Result<ExitCode> {
    let spec = Spec::load(file)?;
    let mpi = under_mpirun();
    if flags.serve_at.is_some() && mpi {
        bail!(
            "`run` under mpirun cannot serve: add --no-serve, then start `modelforge serve` on one host"
        );
    }
    let training = Training::new(ctx, &spec, compute, parallel)?;
    let token = std::env::var("MODELFORGE_TOKEN").ok();
    let plan = Plan {
        spec: &spec,
        registry: &ctx.registry,
        runs_dir: &ctx.runs,
        device: &compute.device,
        from: flags.from,
        dry_run: flags.dry_run,
        cache: !mpi,
        token: token.as_deref(),
    };
    let mut trainer =
        |spec: &Spec, data: &modelforge_data::Prepared| training.train(spec, data, None, || {});
    let started = std::time::Instant::now();
    let mut table = StageTable::new(mpi_rank() != 0);
    let Some(outcome) = modelforge_pipeline::stage::run(&plan, &mut trainer, &mut table)? else {
        return Ok(ExitCode::SUCCESS);
    };
    table.total(&outcome.reports, started.elapsed());
    if flags.dry_run {
        return Ok(ExitCode::SUCCESS);
    }
    if let Some(published) = &outcome.published {
        println!(
            "published {} version {} to {}",
            published.name,
            published.version,
            published.dir.display()
        );
    }
    if let Some(run_dir) = &outcome.run_dir {
        println!("run folder: {}", run_dir.display());
    }
    let language_model = spec.model.output.get_ref().task == modelforge_spec::Task::LanguageModel;
    if let Some(published) = outcome.published.as_ref().filter(|_| language_model) {
        println!(
            "sample it with: modelforge generate {}@{} --prompt TEXT",
            published.name, published.version
        );
    }
    if outcome.gate.as_ref().is_some_and(|g| !g.passed) {
        eprintln!("error: the model did not pass its gate; it is published without aliases");
        return Ok(ExitCode::from(GATE_FAILED));
    }
    let (Some((http, grpc)), Some(published), Some(run_dir)) = (
        flags.serve_at.filter(|_| spec.deploy.serve),
        &outcome.published,
        &outcome.run_dir,
    ) else {
        return Ok(ExitCode::SUCCESS);
    };
    let data = match outcome.data {
        Some(data) => data,
        None => modelforge_pipeline::stage::prepare_data(&spec, &ctx.runs)?,
    };
    let request_file = run_dir.join("request.json");
    let probe = match &data.splits {
        modelforge_data::Splits::Text(corpus) => {
            let prompt = corpus.sample_prompt()?;
            let body = json!({
                "text_input": prompt,
                "parameters": { "max_tokens": 100, "temperature": 0.8, "top_k": 40, "seed": 1 },
            });
            Probe {
                path: format!(
                    "/v2/models/{}/versions/{}/generate",
                    published.name, published.version
                ),
                body: body.to_string(),
                request_file,
                answer: Answer::Generation { prompt },
            }
        }
        modelforge_data::Splits::Examples(examples) => {
            let test = &examples.test;
            let input = spec.model.input.get_ref();
            let mut shape = vec![1];
            shape.extend(&input.shape);
            let mut data_row = Vec::new();
            test.gather_features(&[0], &mut data_row);
            let expected = match &test.targets {
                modelforge_data::Targets::Classes(c) => Some(c[0].to_string()),
                modelforge_data::Targets::Values { values, .. } => Some(format!("{}", values[0])),
            };
            let body = json!({ "inputs": [{ "name": input.name, "shape": shape, "datatype": "FP32", "data": data_row }] });
            Probe {
                path: format!(
                    "/v2/models/{}/versions/{}/infer",
                    published.name, published.version
                ),
                body: body.to_string(),
                request_file,
                answer: Answer::Prediction { expected },
            }
        }
    };
    std::fs::write(&probe.request_file, &probe.body)?;
    let options = ServeOptions {
        http,
        grpc,
        config: modelforge_serve::CoreConfig::default(),
        limits: modelforge_server::Limits {
            max_body_bytes: 64 << 20,
            poll: std::time::Duration::from_secs(2),
            token: None,
            token_everywhere: false,
            log_requests: true,
        },
        tls: None,
    };
    serve_with(ctx, &options, compute, Some(probe))
}

/// One request `run` sends to its own server once it listens: a prediction, or a
/// generation for a language model.
pub struct Probe {
    /// The V2 infer or generate path.
    path: String,
    /// The request body.
    body: String,
    /// Where the body is saved for the printed curl line.
    request_file: PathBuf,
    /// How the answer is shown.
    answer: Answer,
}

/// What a probe asks, for showing its answer.
enum Answer {
    /// A prediction for the first test example, with its label.
    Prediction {
        /// The test example's label.
        expected: Option<String>,
    },
    /// A continuation of a prompt from the held-out text.
    Generation {
        /// The prompt.
        prompt: String,
    },
}

/// Sends the probe over HTTP and prints the answer with a curl line to repeat it.
fn send_probe(addr: std::net::SocketAddr, probe: &Probe) -> Result<()> {
    let url = format!("http://{addr}{}", probe.path);
    let mut response = ureq::post(&url)
        .content_type("application/json")
        .send(&probe.body)?;
    let answer: Value = serde_json::from_str(&response.body_mut().read_to_string()?)?;
    let expected = match &probe.answer {
        Answer::Generation { prompt } => {
            let text = answer["text_output"].as_str().unwrap_or_default();
            println!("generated from the held-out line {prompt:?}:\n{prompt}{text}");
            println!(
                "try: curl -N -X POST {url}_stream -d @{}",
                probe.request_file.display()
            );
            return Ok(());
        }
        Answer::Prediction { expected } => expected,
    };
    let output = &answer["outputs"][0]["data"];
    let values: Vec<f32> = output.as_array().map_or(vec![], |a| {
        a.iter()
            .filter_map(|v| v.as_f64())
            .map(|v| v as f32)
            .collect()
    });
    let shown = if values.len() > 1 {
        format!(
            "class {}",
            modelforge_train::evaluation::predicted_class(&values)
        )
    } else {
        format!("{output}")
    };
    let expected = expected
        .as_deref()
        .map(|e| format!(" (test label {e})"))
        .unwrap_or_default();
    println!("prediction for the first test example: {shown}{expected}");
    println!(
        "try: curl -X POST {url} -d @{}",
        probe.request_file.display()
    );
    Ok(())
}

/// `modelforge eval MODEL[@V] [--data SPEC]`.
pub fn eval(
    ctx: &Context,
    model: &str,
    data_spec: Option<&Path>,
    compute: &Compute,
) -> Result<ExitCode> {
    computing(compute, || {
        let started = modelforge_train::run::unix_now();
        let device = device(compute)?;
        let (manifest, native) = Native::open(&ctx.registry, model, &device)?;
        let describe = format!("{}@{}", manifest.name, manifest.version);
        let spec = match data_spec {
            Some(path) => {
                let other = Spec::load(path)?;
                let mut spec = native.spec.clone();
                spec.data = other.data;
                spec
            }
            None => native.spec.clone(),
        };
        let data = modelforge_data::prepare(&spec)?;
        let eval = evaluate_test(&spec, &native.network, &data, &device)?;
        let run_dir = runs::record_eval(
            &ctx.runs,
            &runs::EvalRecord {
                spec: &spec,
                data: &data,
                evaluation: &eval,
                evaluated: describe.clone(),
                started,
                environment: modelforge_train::Environment::current(
                    rayon::current_num_threads(),
                    1,
                    &compute.device,
                ),
            },
        )?;
        println!("{describe} on {} test examples", eval.examples);
        for (k, v) in &eval.metrics {
            println!("  {k:<16} {v:.4}");
        }
        if !eval.confusion.is_empty() {
            let labels = &manifest.labels;
            let name = |c: usize| labels.get(c).cloned().unwrap_or_else(|| c.to_string());
            println!(
                "\n  {:<10} {:>9} {:>9} {:>9}",
                "class", "precision", "recall", "support"
            );
            for c in 0..eval.confusion.len() {
                let support: u64 = eval.confusion[c].iter().sum();
                println!(
                    "  {:<10} {:>9.4} {:>9.4} {:>9}",
                    name(c),
                    eval.precision[c],
                    eval.recall[c],
                    support
                );
            }
            println!("\n  confusion matrix (rows: actual, columns: predicted)");
            for row in &eval.confusion {
                let cells: Vec<String> = row.iter().map(|v| format!("{v:>6}")).collect();
                println!("  {}", cells.join(""));
            }
        }
        println!("\nrun folder: {}", run_dir.display());
        Ok(ExitCode::SUCCESS)
    })
}

/// The loaders of every model format this build serves: native (on the compute device)
/// and ONNX (with plans for batch 1 and `max_batch_size`).
fn loaders(compute: &Compute, max_batch_size: usize) -> Result<modelforge_serve::Formats> {
    let native = crate::native::NativeLoader {
        device: device(compute)?,
    };
    Ok(modelforge_serve::Formats::default()
        .with(crate::native::FORMAT, std::sync::Arc::new(native))
        .with(
            modelforge_onnx::FORMAT,
            std::sync::Arc::new(modelforge_onnx::OnnxLoader { max_batch_size }),
        ))
}

/// A request file: a TF-Serving body (a bare list of instances taken as `instances`) or a
/// V2 body.
fn request_file(input: &Path) -> Result<Value> {
    let text = std::fs::read_to_string(input)
        .with_context(|| format!("cannot read {}", input.display()))?;
    let doc: Value = serde_json::from_str(&text)
        .with_context(|| format!("{} is not valid JSON", input.display()))?;
    Ok(match doc {
        Value::Array(_) => json!({ "instances": doc }),
        other => other,
    })
}

/// The checked batch size and values of a request file for a version: a V2 body (inputs
/// as tensor objects with a datatype) or a TF-Serving one.
fn request_values(
    input: &Path,
    request: &Value,
    info: &modelforge_serve::ModelInfo,
) -> Result<(usize, Vec<modelforge_serve::Values>)> {
    let v2 = request["inputs"]
        .as_array()
        .and_then(|i| i.first())
        .is_some_and(|t| t.get("datatype").is_some());
    let inputs = match v2 {
        true => modelforge_server::v2_inputs(request.to_string().as_bytes(), None),
        false => {
            modelforge_server::tfserving::inputs(request, &info.manifest).map(|(inputs, _)| inputs)
        }
    }
    .map_err(|e| anyhow::anyhow!("{}: {e}", input.display()))?;
    Ok(info.check_inputs(inputs)?)
}

/// What `modelforge explain` explains.
pub enum ExplainInput<'a> {
    /// A request JSON, an image, a CSV file of rows, or a language model's prompt as a text
    /// file (its whole text) or a request JSON as the server's explain route takes it.
    File(&'a Path),
    /// A language model's prompt.
    Prompt(&'a str),
}

/// What `modelforge explain` is asked.
pub struct ExplainOptions<'a> {
    /// MODEL[@VERSION|@ALIAS].
    pub model: &'a str,
    /// What to explain.
    pub input: ExplainInput<'a>,
    /// The settings, unchecked.
    pub asked: modelforge_explain::Asked,
    /// The folder to write.
    pub out: &'a Path,
}

/// The samples of an explanation's input file for a native version: raw values, batch
/// size and, for CSV rows, the feature names.
fn explain_input(
    input: &Path,
    native: &crate::native::Native,
    info: &modelforge_serve::ModelInfo,
) -> Result<(Vec<f32>, usize, Option<Vec<String>>)> {
    let network = &native.network;
    if modelforge_data::image::is_image(input) {
        let values = modelforge_data::image::read_image(input, network.input_shape())?;
        return Ok((values, 1, None));
    }
    if input.extension().is_some_and(|e| e == "csv") {
        let table = modelforge_data::table::read_csv(input, &native.spec.data.csv)?;
        if table.width() != network.input_len() {
            bail!(
                "{}: the rows have {} features but {}@{} takes {} — give the columns of its training data (categorical columns need every training category)",
                input.display(),
                table.width(),
                info.name,
                info.version,
                network.input_len()
            );
        }
        let batch = table.features.len() / table.width();
        return Ok((table.features, batch, Some(table.feature_names)));
    }
    let (batch, values) = request_values(input, &request_file(input)?, info)?;
    let values = values
        .into_iter()
        .next()
        .map(|v| v.to_f32())
        .unwrap_or_default();
    Ok((values, batch, None))
}

/// How an explanation's samples are drawn: tokens (decoded with the version's tokenizer,
/// if it has one) for a model that embeds ids, else by the input's shape.
fn explain_look(
    native: &crate::native::Native,
    dir: &Path,
    values: &[f32],
    names: Option<Vec<String>>,
) -> modelforge_report::attribution::Look {
    use modelforge_report::attribution::Look;
    let network = &native.network;
    if !network.embeds_ids() {
        return Look::of_shape(network.input_shape(), names);
    }
    let tokenizer =
        modelforge_data::Tokenizer::from_file(&dir.join(modelforge_data::TOKENIZER)).ok();
    let piece = |id: f32| {
        tokenizer
            .as_ref()
            .and_then(|t| t.decode(&[id as u32]).ok())
            .unwrap_or_else(|| format!("#{id}"))
    };
    Look::Tokens(
        values
            .chunks_exact(network.input_len())
            .map(|ids| ids.iter().map(|&id| piece(id)).collect())
            .collect(),
    )
}

/// The prompt a language model is explained for: given, a text file's whole text, or the
/// prompt of a request JSON as the server's explain route reads it.
fn explain_prompt_text(input: &ExplainInput) -> Result<String> {
    let path = match input {
        ExplainInput::Prompt(text) => return Ok(text.to_string()),
        ExplainInput::File(path) => *path,
    };
    if modelforge_data::image::is_image(path) || path.extension().is_some_and(|e| e == "csv") {
        bail!(
            "{}: a language model explains a prompt — give --prompt TEXT, a text file, or a generate request JSON with \"text_input\"",
            path.display()
        );
    }
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read {} as UTF-8 text", path.display()))?;
    if path.extension().is_none_or(|e| e != "json") {
        return Ok(text);
    }
    let doc: Value = serde_json::from_str(&text)
        .with_context(|| format!("{} is not valid JSON", path.display()))?;
    modelforge_server::explained_prompt(&doc)
        .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
}

/// An explanation ready to be written: the attributions, the samples' inputs (values or
/// ids), how they look, and a name for each output.
struct Attributed {
    attributions: modelforge_explain::Attributions,
    values: Vec<f32>,
    look: modelforge_report::attribution::Look,
    labels: Vec<String>,
}

/// Explains a native classifier or regression for the samples of a file.
fn explain_samples(
    stored: &modelforge_registry::Version,
    info: &modelforge_serve::ModelInfo,
    input: &ExplainInput,
    settings: &modelforge_explain::Explain,
    device: &Device,
) -> Result<Attributed> {
    let ExplainInput::File(input) = input else {
        bail!(
            "{}@{} is not a language model: --prompt is for those — give --input FILE (a request JSON, an image or a CSV file)",
            info.name,
            info.version
        );
    };
    let native = crate::native::Native::load(&stored.manifest, &stored.dir, device)?;
    let (values, batch, names) = explain_input(input, &native, info)?;
    let attributions = native
        .explain(&values, batch, settings)
        .map_err(|e| anyhow::anyhow!("{}: {e}", input.display()))?;
    let look = explain_look(&native, &stored.dir, &values, names);
    Ok(Attributed {
        attributions,
        values,
        look,
        labels: stored.manifest.labels.clone(),
    })
}

/// Explains a language model's next token after a prompt.
fn explain_next_token(
    stored: &modelforge_registry::Version,
    input: &ExplainInput,
    settings: &modelforge_explain::Explain,
    device: &Device,
) -> Result<Attributed> {
    let prompt = explain_prompt_text(input)?;
    let model = crate::native::Native::load_language_model(&stored.manifest, &stored.dir, device)?;
    let explained = crate::native::explain_prompt(&model, &prompt, settings)?;
    let vocab: Vec<u32> = (0..explained.attributions.output_len as u32).collect();
    Ok(Attributed {
        attributions: explained.attributions,
        values: explained.ids,
        look: modelforge_report::attribution::Look::Tokens(vec![explained.pieces.tokens]),
        labels: model.pieces(&vocab),
    })
}

/// `modelforge explain MODEL --input FILE -o DIR`: attributions of the model's answer for
/// each sample of the file (or, for a language model, of its next token after the
/// prompt), as `attributions.json` and a picture per sample.
pub fn explain(ctx: &Context, options: &ExplainOptions, compute: &Compute) -> Result<ExitCode> {
    use modelforge_report::attribution;
    let settings = options.asked.clone().check()?;
    let out = options.out;
    if out.is_dir()
        && !out.join("attributions.json").is_file()
        && std::fs::read_dir(out).is_ok_and(|mut d| d.next().is_some())
    {
        bail!(
            "{} exists and is not an earlier explanation — give a new folder with -o (it is replaced whole)",
            out.display()
        );
    }
    computing(compute, || {
        let (name, version) = ctx.registry.resolve(options.model)?;
        let stored = ctx.registry.open(&name, version)?;
        if stored.manifest.format != crate::native::FORMAT {
            return Err(modelforge_serve::ServeError::NotExplainable {
                model: name,
                version,
                format: stored.manifest.format.clone(),
            }
            .into());
        }
        let info = modelforge_serve::ModelInfo {
            name: name.clone(),
            version,
            manifest: stored.manifest.clone(),
        };
        let device = device(compute)?;
        let Attributed {
            attributions,
            values,
            look,
            labels,
        } = match stored.manifest.task == modelforge_spec::Task::LanguageModel.name() {
            true => explain_next_token(&stored, &options.input, &settings, &device)?,
            false => explain_samples(&stored, &info, &options.input, &settings, &device)?,
        };
        let labels = &labels;
        let batch = attributions.targets.len();
        let document = attribution::document(&name, version, &attributions, &settings, labels);
        let mut files = vec![(
            "attributions.json".to_string(),
            serde_json::to_vec_pretty(&document)?,
        )];
        let pictures = attribution::pictures(&look, &values, &attributions, &settings, labels);
        files.extend(pictures.into_iter().map(|(n, svg)| (n, svg.into_bytes())));
        modelforge_report::write_folder(out, &files)?;
        let method = attribution::method_name(&settings);
        println!("{name}@{version}: {method}, {batch} sample(s)");
        for s in 0..batch {
            let t = attributions.targets[s];
            let label = labels.get(t).map_or(String::new(), |l| format!(" ({l})"));
            let mut line = format!("  sample {s}: output {t}{label}");
            if let (Some(delta), Some(gap)) = (&attributions.delta, &attributions.gap) {
                let share = 100.0 * delta[s].abs() / gap[s].abs().max(f32::MIN_POSITIVE);
                line += &format!(
                    ", convergence delta {:.3e} ({share:.3} % of the output's change {:.4})",
                    delta[s], gap[s]
                );
            }
            println!("{line}");
        }
        println!("wrote {}", out.join("attributions.json").display());
        Ok(ExitCode::SUCCESS)
    })
}

/// `modelforge predict MODEL[@V] --input FILE.json`: a TF-Serving predict request
/// (`{"instances": [...]}`, `{"inputs": ...}` or a bare list of instances) run offline.
pub fn predict(ctx: &Context, model: &str, input: &Path, compute: &Compute) -> Result<ExitCode> {
    use modelforge_serve::Loader as _;
    let request = request_file(input)?;
    computing(compute, || {
        let (name, version) = ctx.registry.resolve(model)?;
        let stored = ctx.registry.open(&name, version)?;
        // One call: the general plan and the batch-1 plan are all it may use.
        let engine = loaders(compute, 1)?
            .load(&stored.manifest, &stored.dir)
            .map_err(anyhow::Error::msg)?;
        let modelforge_serve::Engine::Predictor(mut runnable) = engine else {
            bail!(
                "{name}@{version} is a language model: sample it with `modelforge generate {name}@{version} --prompt TEXT`"
            );
        };
        let info = modelforge_serve::ModelInfo {
            name: name.clone(),
            version,
            manifest: stored.manifest.clone(),
        };
        let (batch, values) = request_values(input, &request, &info)?;
        let values = runnable.run(values, batch).map_err(anyhow::Error::msg)?;
        let all: Vec<usize> = (0..values.len()).collect();
        let outputs = info.output_tensors(batch, values, &all);
        let manifest = &stored.manifest;
        let columns: Vec<Vec<Value>> = outputs
            .iter()
            .map(modelforge_server::tfserving::rows)
            .collect();
        let predictions: Vec<Value> = (0..columns[0].len())
            .map(|r| {
                let row = &columns[0][r];
                let mut p = json!({ "outputs": row });
                if manifest.task != "regression" {
                    let scores: Vec<f32> = row
                        .as_array()
                        .map(|v| {
                            v.iter()
                                .filter_map(Value::as_f64)
                                .map(|x| x as f32)
                                .collect()
                        })
                        .unwrap_or_default();
                    let class = modelforge_train::evaluation::predicted_class(&scores);
                    p["class"] = json!(class);
                    if let Some(l) = manifest.labels.get(class) {
                        p["label"] = json!(l);
                    }
                }
                // Further outputs by name.
                for (o, column) in outputs.iter().zip(&columns).skip(1) {
                    p[o.name.as_str()] = column[r].clone();
                }
                p
            })
            .collect();
        println!(
            "{}",
            serde_json::to_string_pretty(&json!({
                "model": name,
                "version": version,
                "predictions": predictions,
            }))?
        );
        Ok(ExitCode::SUCCESS)
    })
}

/// What `modelforge serve` listens on and how it batches.
#[derive(Clone)]
pub struct ServeOptions {
    /// REST address.
    pub http: std::net::SocketAddr,
    /// gRPC address.
    pub grpc: std::net::SocketAddr,
    /// Batching and version policy.
    pub config: modelforge_serve::CoreConfig,
    /// Body limit and registry poll interval.
    pub limits: modelforge_server::Limits,
    /// TLS on both sockets, when given.
    pub tls: Option<modelforge_server::TlsFiles>,
}

/// `modelforge serve`: every registry model over REST until Ctrl-C or SIGTERM.
/// With trust keys, only versions they signed load.
pub fn serve(
    ctx: &Context,
    options: &ServeOptions,
    trust_keys: &[PathBuf],
    compute: &Compute,
) -> Result<ExitCode> {
    threads(compute, None)?;
    let mut options = options.clone();
    options.config.trust = read_public_keys(trust_keys)?;
    serve_with(ctx, &options, compute, None)
}

/// Serves until a signal; with a probe, sends it once the server listens.
fn serve_with(
    ctx: &Context,
    options: &ServeOptions,
    compute: &Compute,
    probe: Option<Probe>,
) -> Result<ExitCode> {
    // Certificates are checked before any model loads.
    let tls = options
        .tls
        .as_ref()
        .map(modelforge_server::Tls::load)
        .transpose()?;
    let scheme = if tls.is_some() { "https" } else { "http" };
    let core = std::sync::Arc::new(modelforge_serve::Core::new(
        ctx.registry.clone(),
        std::sync::Arc::new(loaders(compute, options.config.max_batch_size)?),
        options.config.clone(),
    ));
    core.refresh()?;
    let runtime = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
    runtime.block_on(async {
        let bind = |addr: std::net::SocketAddr| async move {
            tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("cannot listen on {addr} — is another server using it?"))
        };
        let listener = bind(options.http).await?;
        let grpc = bind(options.grpc).await?;
        let grpc_addr = grpc.local_addr()?;
        let addr = listener.local_addr()?;
        let index = core.index()?;
        for entry in &index {
            let why = if entry.reason.is_empty() {
                String::new()
            } else {
                format!(" ({})", entry.reason)
            };
            println!(
                "model {} version {}: {}{why}",
                entry.name, entry.version, entry.state
            );
        }
        println!(
            "REST on {scheme}://{addr} (Open Inference Protocol V2 under /v2, TF-Serving under /v1/models, OpenAI under /v1)"
        );
        println!("gRPC on {grpc_addr} (inference.GRPCInferenceService, grpc.health.v1.Health)");
        match index.iter().find(|e| e.state == modelforge_serve::ModelState::Ready) {
            Some(e) => println!("try: curl {scheme}://{addr}/v2/models/{}", e.name),
            None => println!("try: curl -X POST {scheme}://{addr}/v2/repository/index"),
        }
        use std::io::Write as _;
        std::io::stdout().flush()?;
        let shutdown = async {
            let mut term =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                    .expect("SIGTERM handler");
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            eprintln!("shutting down: finishing requests in flight");
        };
        let listeners = modelforge_server::Listeners {
            http: listener,
            grpc,
            tls,
        };
        let server = tokio::spawn(modelforge_server::serve(
            core,
            listeners,
            options.limits.clone(),
            shutdown,
        ));
        if let Some(probe) = probe {
            tokio::task::spawn_blocking(move || send_probe(addr, &probe)).await??;
            println!("serving until Ctrl-C");
            std::io::stdout().flush()?;
        }
        server.await??;
        anyhow::Ok(())
    })?;
    Ok(ExitCode::SUCCESS)
}

/// `modelforge registry list`.
pub fn registry_list(ctx: &Context, keys: &[PathBuf]) -> Result<ExitCode> {
    use modelforge_registry::SignatureState;
    let keys = read_public_keys(keys)?;
    let models = ctx.registry.models()?;
    if models.is_empty() {
        println!("no models in {}", ctx.registry.root().display());
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "{:<24} {:>8} {:<12} {:<10} {:<24} {:>10}",
        "MODEL", "VERSION", "STATE", "SIGNATURE", "ALIASES", "TEST ACC"
    );
    let mut invalid = Vec::new();
    for name in models {
        let aliases = ctx.registry.aliases(&name)?;
        for status in ctx.registry.status(&name)? {
            let here: Vec<&str> = aliases
                .iter()
                .filter(|(_, v)| **v == status.version)
                .map(|(a, _)| a.as_str())
                .collect();
            let (state, acc) = match &status.state {
                Ok(m) => (
                    "ok".to_string(),
                    m.metrics
                        .get("test_accuracy")
                        .map_or("-".into(), |a| format!("{a:.4}")),
                ),
                Err(reason) => (format!("CORRUPT: {reason}"), "-".into()),
            };
            let signature = match ctx.registry.signature_state(&name, status.version, &keys) {
                SignatureState::Unsigned => "unsigned",
                SignatureState::Signed(_) => "signed",
                SignatureState::Invalid(why) => {
                    invalid.push(format!("{name}@{}: {why}", status.version));
                    "INVALID"
                }
            };
            println!(
                "{name:<24} {:>8} {state:<12} {signature:<10} {:<24} {acc:>10}",
                status.version,
                here.join(",")
            );
        }
    }
    for line in &invalid {
        println!("invalid signature: {line}");
    }
    Ok(ExitCode::SUCCESS)
}

/// Reads public key files.
fn read_public_keys(paths: &[PathBuf]) -> Result<Vec<modelforge_registry::PublicKey>> {
    Ok(paths
        .iter()
        .map(|p| modelforge_registry::PublicKey::read(p))
        .collect::<Result<_, _>>()?)
}

/// `modelforge registry sign MODEL[@V] --key private.pem`.
pub fn registry_sign(ctx: &Context, model: &str, key: &Path) -> Result<ExitCode> {
    let key = modelforge_registry::SigningKey::read(key)?;
    let (name, version) = ctx.registry.resolve(model)?;
    let path = ctx.registry.sign(&name, version, &key)?;
    let public = key.public_key();
    println!(
        "signed {name}@{version} with {} key {} — wrote {}",
        public.curve(),
        &public.hint()[..16],
        path.display()
    );
    Ok(ExitCode::SUCCESS)
}

/// `modelforge registry verify MODEL[@V] --key public.pem…`.
pub fn registry_verify(ctx: &Context, model: &str, keys: &[PathBuf]) -> Result<ExitCode> {
    let trusted = read_public_keys(keys)?;
    let (name, version) = ctx.registry.resolve(model)?;
    let (_, signed, by) = ctx.registry.verify(&name, version, &trusted)?;
    println!(
        "{name}@{version}: signature verified — {} files, signed by {} key {}",
        signed.files(),
        by.curve(),
        &by.hint()[..16]
    );
    Ok(ExitCode::SUCCESS)
}

/// `modelforge registry keygen PRIVATE [--public PUBLIC] [--curve p256|p384]`.
pub fn registry_keygen(private: &Path, public: Option<PathBuf>, curve: &str) -> Result<ExitCode> {
    let curve: modelforge_registry::Curve = curve.parse().map_err(anyhow::Error::msg)?;
    let public = public.unwrap_or_else(|| {
        let mut p = private.as_os_str().to_owned();
        p.push(".pub");
        PathBuf::from(p)
    });
    let key = modelforge_registry::signature::keygen(private, &public, curve)?;
    println!(
        "wrote {} (private, keep it secret) and {} ({curve} public key {})",
        private.display(),
        public.display(),
        &key.hint()[..16]
    );
    Ok(ExitCode::SUCCESS)
}

/// `modelforge registry show MODEL[@V]`.
pub fn registry_show(ctx: &Context, model: &str) -> Result<ExitCode> {
    let (name, version) = ctx.registry.resolve(model)?;
    let v = ctx.registry.open(&name, version)?;
    println!("{}", serde_json::to_string_pretty(&v.manifest)?);
    println!("folder: {} (checksums verified)", v.dir.display());
    Ok(ExitCode::SUCCESS)
}

/// `modelforge registry alias MODEL ALIAS VERSION | --rm`.
pub fn registry_alias(
    ctx: &Context,
    model: &str,
    alias: &str,
    version: Option<u64>,
    rm: bool,
) -> Result<ExitCode> {
    if rm {
        if !ctx.registry.remove_alias(model, alias)? {
            bail!("{model} has no alias {alias:?}");
        }
        println!("removed alias {model}@{alias}");
    } else {
        let version = version.context("give the version the alias points at")?;
        ctx.registry.set_alias(model, alias, version)?;
        println!("{model}@{alias} → version {version}");
    }
    Ok(ExitCode::SUCCESS)
}

/// `modelforge registry import FOLDER --name NAME`: a Hugging Face checkpoint as a new version.
pub fn registry_import_pretrained(
    ctx: &Context,
    import: &modelforge_pretrained::Import,
) -> Result<ExitCode> {
    let version = modelforge_pretrained::import(&ctx.registry, import)?;
    let m = &version.manifest;
    println!(
        "imported {} as {}@{} (language model, context {}, vocabulary {})",
        import.source.display(),
        m.name,
        m.version,
        m.inputs[0].shape[0],
        m.outputs[0].shape.last().copied().unwrap_or(0)
    );
    println!(
        "  generate with: modelforge generate {}@{} --prompt TEXT",
        m.name, m.version
    );
    Ok(ExitCode::SUCCESS)
}

/// `modelforge registry import FILE --name NAME`: an ONNX model as a new version.
pub fn registry_import(ctx: &Context, import: &modelforge_onnx::Import) -> Result<ExitCode> {
    let version = modelforge_onnx::import(&ctx.registry, import)?;
    let m = &version.manifest;
    println!(
        "imported {} as {}@{}",
        import.file.display(),
        m.name,
        m.version
    );
    for (kind, tensors) in [("input", &m.inputs), ("output", &m.outputs)] {
        for t in tensors {
            println!(
                "  {kind:<6} {:<24} {:<6} {:?}",
                t.name,
                t.datatype,
                m.protocol_shape(t)
            );
        }
    }
    if !m.batchable {
        println!("  not batchable: requests carry the whole shape and run one by one");
    }
    Ok(ExitCode::SUCCESS)
}

/// What `modelforge export` writes.
#[derive(Clone, Copy, clap::ValueEnum)]
pub enum ExportFormat {
    /// An ONNX graph (opset 17) for onnxruntime, Triton and other runtimes.
    Onnx,
    /// PyTorch weights (a state dict) as safetensors.
    Safetensors,
    /// A Hugging Face checkpoint folder (LLaMA- and GPT-2-shaped language models).
    Hf,
    /// A GGUF v3 file for llama.cpp and Ollama, matrices in F16 (LLaMA- and GPT-2-shaped
    /// language models).
    Gguf,
    /// A GGUF v3 file with every tensor in F32.
    GgufF32,
}

/// `modelforge export MODEL[@V] --format onnx|safetensors -o FILE`.
pub fn export(ctx: &Context, model: &str, format: ExportFormat, out: &Path) -> Result<ExitCode> {
    let (name, version) = ctx.registry.resolve(model)?;
    let stored = ctx.registry.open(&name, version)?;
    if let ExportFormat::Hf | ExportFormat::Gguf | ExportFormat::GgufF32 = format {
        if stored.manifest.format != crate::native::FORMAT {
            bail!(
                "{name}@{version} has format {:?}; only language models of the native format export to Hugging Face and GGUF",
                stored.manifest.format
            );
        }
        use modelforge_pretrained::gguf::Precision;
        match format {
            ExportFormat::Gguf => modelforge_pretrained::export_gguf(&stored, out, Precision::F16)?,
            ExportFormat::GgufF32 => {
                modelforge_pretrained::export_gguf(&stored, out, Precision::F32)?
            }
            _ => modelforge_pretrained::export_hf(&stored, out)?,
        }
        eprintln!("wrote {} from {name}@{version}", out.display());
        return Ok(ExitCode::SUCCESS);
    }
    let bytes = match (format, stored.manifest.format.as_str()) {
        (ExportFormat::Onnx, modelforge_onnx::FORMAT) => {
            std::fs::read(stored.dir.join(modelforge_onnx::FILE))?
        }
        (_, crate::native::FORMAT) => {
            let spec = crate::native::stored_spec(&stored.dir)?;
            let weights_path = stored.dir.join(modelforge_train::run::WEIGHTS);
            let weights = std::fs::read(&weights_path)
                .with_context(|| format!("cannot read {}", weights_path.display()))?;
            match format {
                ExportFormat::Onnx => modelforge_onnx::export::to_onnx(&spec, &weights)?,
                ExportFormat::Safetensors => {
                    print!("{}", modelforge_onnx::export::torch_module(&spec)?);
                    modelforge_onnx::export::to_state_dict(&spec, &weights)?
                }
                ExportFormat::Hf | ExportFormat::Gguf | ExportFormat::GgufF32 => {
                    unreachable!("written above")
                }
            }
        }
        (_, other) => bail!(
            "{name}@{version} has format {other:?}; only models trained by modelforge export \
             to safetensors"
        ),
    };
    modelforge_registry::write_atomic(out, &bytes)?;
    eprintln!(
        "wrote {} ({} bytes) from {name}@{version}",
        out.display(),
        bytes.len()
    );
    Ok(ExitCode::SUCCESS)
}

/// `modelforge registry rm MODEL@VERSION [--force]`.
pub fn registry_rm(ctx: &Context, reference: &str, force: bool) -> Result<ExitCode> {
    let (name, which) = split_reference(reference);
    let Some(which) = which.filter(|w| w.parse::<u64>().is_ok()) else {
        bail!("give MODEL@VERSION with a version number, e.g. {name}@1");
    };
    let version: u64 = which.parse()?;
    ctx.registry.remove_version(name, version, force)?;
    println!("removed {name} version {version}");
    Ok(ExitCode::SUCCESS)
}

/// `modelforge runs list [--model M] [--status S] [--sort METRIC] [--limit N]`.
pub fn runs_list(ctx: &Context, filter: &runs::RunFilter) -> Result<ExitCode> {
    let found = runs::list(&ctx.runs, filter)?;
    if found.is_empty() {
        println!("no runs in {}", ctx.runs.display());
        return Ok(ExitCode::SUCCESS);
    }
    let metric = filter.sort.as_deref().unwrap_or("test_accuracy");
    println!(
        "{:<40} {:<16} {:<6} {:<14} {:>8} {:>9}  {:<17} {:>12}",
        "RUN", "MODEL", "KIND", "STATUS", "STEPS", "SECONDS", "STARTED (UTC)", metric
    );
    for r in found {
        let i = &r.info;
        let seconds = i
            .finished
            .map_or("-".into(), |f| f.saturating_sub(i.started).to_string());
        let value = i
            .metrics
            .get(metric)
            .map_or("-".into(), |v| format!("{v:.4}"));
        println!(
            "{:<40} {:<16} {:<6} {:<14} {:>8} {:>9}  {:<17} {:>12}",
            i.run_id,
            i.model,
            i.kind,
            i.status,
            i.steps,
            seconds,
            modelforge_train::run::utc_stamp(i.started),
            value
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// `modelforge runs show RUN`.
pub fn runs_show(ctx: &Context, run: &str) -> Result<ExitCode> {
    let r = runs::open(&ctx.runs, run)?;
    println!("{}", serde_json::to_string_pretty(&r.info)?);
    let mut files: Vec<String> = std::fs::read_dir(&r.dir)
        .with_context(|| format!("cannot read {}", r.dir.display()))?
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    files.sort();
    println!("folder: {} ({})", r.dir.display(), files.join(", "));
    Ok(ExitCode::SUCCESS)
}

/// `modelforge runs compare A B`.
pub fn runs_compare(ctx: &Context, a: &str, b: &str) -> Result<ExitCode> {
    let (ra, rb) = (runs::open(&ctx.runs, a)?, runs::open(&ctx.runs, b)?);
    let c = runs::compare(&ra, &rb)?;
    println!("A = {}\nB = {}\n", ra.info.run_id, rb.info.run_id);
    if c.params.is_empty() {
        println!("parameters: the same");
    } else {
        println!("parameters that differ (A → B):");
        for p in &c.params {
            println!("  {p}");
        }
    }
    println!("\n{:<20} {:>10} {:>10} {:>10}", "metric", "A", "B", "B − A");
    let show = |v: Option<f64>| v.map_or("-".into(), |v| format!("{v:.4}"));
    for (name, x, y) in &c.metrics {
        let delta = match (x, y) {
            (Some(x), Some(y)) => format!("{:+.4}", y - x),
            _ => "-".into(),
        };
        println!("{name:<20} {:>10} {:>10} {delta:>10}", show(*x), show(*y));
    }
    Ok(ExitCode::SUCCESS)
}

/// `modelforge runs rm RUN [--force]`.
pub fn runs_rm(ctx: &Context, run: &str, force: bool) -> Result<ExitCode> {
    let r = runs::open(&ctx.runs, run)?;
    runs::remove(&r, force)?;
    println!("removed run {}", r.info.run_id);
    Ok(ExitCode::SUCCESS)
}

/// Prints each trial as it ends.
struct TrialLines;

impl modelforge_tune::Observer for TrialLines {
    fn trial(&mut self, t: &modelforge_tune::Trial, of: usize) {
        let value = t.value.map_or("-".into(), |v| format!("{v:.4}"));
        println!(
            "trial {:>3}/{of} {:<13} {value:>8} after {:>3} epochs  {}{}",
            t.index + 1,
            t.status,
            t.epochs,
            modelforge_tune::space::describe(&t.point),
            t.error
                .as_deref()
                .map(|e| format!("  ({e})"))
                .unwrap_or_default()
        );
    }
}

/// `modelforge tune FILE [--parallel N] [--no-publish]`.
pub fn tune(
    ctx: &Context,
    file: &Path,
    parallel: usize,
    publish: bool,
    compute: &Compute,
) -> Result<ExitCode> {
    if parallel == 0 {
        bail!("--parallel 0: use 1 or more trials at once");
    }
    let spec = Spec::load(file)?;
    let threads = threads(compute, Some(&spec))?;
    device(compute)?;
    let started = std::time::Instant::now();
    let outcome = modelforge_tune::tune(
        &modelforge_tune::TuneOptions {
            spec_file: file,
            spec: &spec,
            runs_dir: &ctx.runs,
            parallel,
            threads,
            device: &compute.device,
        },
        &mut TrialLines,
    )?;
    let trials = &outcome.study.trials;
    let count = |status: &str| trials.iter().filter(|t| t.status == status).count();
    let best = &trials[outcome.best];
    println!(
        "{} trials in {:.1} s ({} finished by an earlier search): {} completed, {} pruned, {} failed",
        trials.len(),
        started.elapsed().as_secs_f64(),
        outcome.reused,
        count("completed") + count("stopped_early"),
        count("pruned"),
        count("failed"),
    );
    println!(
        "best: trial {} {} = {:.4} ({}), run {}",
        best.index + 1,
        outcome.study.metric,
        best.value.unwrap_or(f64::NAN),
        modelforge_tune::space::describe(&best.point),
        best.run_id.as_deref().unwrap_or("-")
    );
    if !publish {
        return Ok(ExitCode::SUCCESS);
    }
    let (published, gate) =
        modelforge_tune::publish_best(&outcome, &ctx.runs, &ctx.registry, &compute.device)?;
    println!(
        "published {} version {}{}",
        published.name,
        published.version,
        match published.aliases.is_empty() {
            true => String::new(),
            false => format!(", aliases {}", published.aliases.join(", ")),
        }
    );
    if let Some(g) = gate {
        println!(
            "gate {}: {} = {:.4} (needs {})",
            if g.passed { "passed" } else { "FAILED" },
            g.metric,
            g.value,
            g.rule
        );
        if !g.passed {
            eprintln!(
                "error: the best trial did not pass the gate; it is published without aliases"
            );
            return Ok(ExitCode::from(GATE_FAILED));
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `modelforge report RUN [-o DIR]`.
pub fn report(ctx: &Context, run: &str, out: Option<PathBuf>) -> Result<ExitCode> {
    let r = runs::open(&ctx.runs, run)?;
    let out = out.unwrap_or_else(|| r.dir.join("report"));
    let written = modelforge_report::write(&r.dir, &out)?;
    println!("report: {}", written.html.display());
    let names: Vec<String> = written
        .charts
        .iter()
        .filter_map(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        .collect();
    println!("charts beside it: {}", names.join(", "));
    Ok(ExitCode::SUCCESS)
}
