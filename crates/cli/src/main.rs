//! The `modelforge` binary: parses arguments and wires the crates together.

mod commands;
mod native;
mod progress;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

/// Build, train, register and serve neural networks from one declarative file.
#[derive(Parser)]
#[command(name = "modelforge", version, about, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Registry root folder.
    #[arg(
        long,
        global = true,
        env = "MODELFORGE_REGISTRY",
        default_value = "models"
    )]
    registry: PathBuf,
    /// Folder for run directories.
    #[arg(long, global = true, env = "MODELFORGE_RUNS", default_value = "runs")]
    runs: PathBuf,
}

/// Where and with how many threads compute runs.
#[derive(Args, Clone)]
pub struct Compute {
    /// Compute threads (default: the spec's train.threads, else every core).
    #[arg(long)]
    threads: Option<usize>,
    /// Compute device: cpu (or cuda[:N] in builds with the cuda feature).
    #[arg(long, default_value = "cpu")]
    device: String,
}

/// How training is split over data-parallel workers.
#[derive(Args, Clone)]
pub struct Parallel {
    /// Data-parallel worker threads in this process (default: the spec's train.workers, else 1).
    #[arg(long)]
    workers: Option<usize>,
    /// Gradient fusion bucket in MiB (default: train.distributed.bucket_mb, else 25).
    #[arg(long)]
    bucket_mb: Option<f64>,
    /// Seconds a collective waits for its peers before the job stops
    /// (default: train.distributed.timeout_s, else 300).
    #[arg(long)]
    collective_timeout: Option<f64>,
}

#[derive(Subcommand)]
enum Command {
    /// Validate a spec file and print the model summary.
    Check {
        /// The spec file.
        file: PathBuf,
        /// Also draw the model graph to this file (.svg or .dot).
        #[arg(long)]
        graph: Option<PathBuf>,
    },
    /// Train a spec's model into a new run (or continue one with --resume).
    Train {
        /// The spec file.
        file: PathBuf,
        #[command(flatten)]
        compute: Compute,
        #[command(flatten)]
        parallel: Parallel,
        /// Continue this run (id or folder) from its last checkpoint.
        #[arg(long)]
        resume: Option<String>,
    },
    /// The whole chain (check, data, train, evaluate, gate, publish, deploy; each stage skipped
    /// when its inputs are unchanged), then serve and answer one prediction.
    Run {
        /// The spec file.
        file: PathBuf,
        #[command(flatten)]
        compute: Compute,
        #[command(flatten)]
        parallel: Parallel,
        /// Re-run this stage and every one after it, even when cached.
        #[arg(long, value_name = "STAGE", conflicts_with = "force")]
        from: Option<modelforge_pipeline::Stage>,
        /// Re-run every stage.
        #[arg(long)]
        force: bool,
        /// Show which stages would run and why; run nothing and write nothing.
        #[arg(long)]
        dry_run: bool,
        /// Stop after the stages instead of serving.
        #[arg(long)]
        no_serve: bool,
        /// REST address to serve on afterwards.
        #[arg(long, default_value = "127.0.0.1:8000")]
        http: std::net::SocketAddr,
        /// gRPC address to serve on afterwards.
        #[arg(long, default_value = "127.0.0.1:8001")]
        grpc: std::net::SocketAddr,
    },
    /// Search the spec's [tune] space: trials in parallel, weak ones stopped early, the best
    /// evaluated, gated and published.
    Tune {
        /// A spec file with a [tune] section.
        file: PathBuf,
        /// Trials trained at once (the compute threads are shared among them).
        #[arg(long, default_value_t = 1)]
        parallel: usize,
        /// Do not publish the best trial.
        #[arg(long)]
        no_publish: bool,
        #[command(flatten)]
        compute: Compute,
    },
    /// Evaluate a published model on a test split.
    Eval {
        /// MODEL, MODEL@VERSION or MODEL@ALIAS.
        model: String,
        /// A spec file whose [data] section gives the data (default: the model's own).
        #[arg(long)]
        data: Option<PathBuf>,
        #[command(flatten)]
        compute: Compute,
    },
    /// Offline inference on a JSON file of instances.
    Predict {
        /// MODEL, MODEL@VERSION or MODEL@ALIAS.
        model: String,
        /// JSON: {"instances": [...]}, {"inputs": [...]} or a bare array of instances.
        #[arg(long)]
        input: PathBuf,
        #[command(flatten)]
        compute: Compute,
    },
    /// Explain a published model's answer: how much each input value moved the output, as
    /// attributions.json and a picture per sample (a heat map, feature bars or tokens); for
    /// a language model, how much each prompt token moved the next token's score.
    Explain {
        /// MODEL, MODEL@VERSION or MODEL@ALIAS.
        model: String,
        /// A request JSON (V2 or TF-Serving), a PNG/JPEG image, or a CSV file of rows; for a
        /// language model, a text file (the prompt) or a generate request JSON.
        #[arg(long, required_unless_present = "prompt", conflicts_with = "prompt")]
        input: Option<PathBuf>,
        /// A language model's prompt (instead of --input).
        #[arg(long)]
        prompt: Option<String>,
        /// saliency, input-x-gradient, integrated-gradients or smoothgrad.
        #[arg(long, default_value = "integrated-gradients")]
        method: String,
        /// The method SmoothGrad averages over noise (default saliency).
        #[arg(long)]
        over: Option<String>,
        /// Integration steps of integrated gradients (default 50, at most 1024).
        #[arg(long)]
        steps: Option<u64>,
        /// Integration rule: gauss-legendre (default), riemann-left, -right, -middle or
        /// -trapezoid.
        #[arg(long)]
        rule: Option<String>,
        /// Baseline of integrated gradients: zeros (default), mean, a number, or a JSON
        /// file holding a tensor of the input's shape.
        #[arg(long)]
        baseline: Option<String>,
        /// The output explained (default: the predicted class; output 0 of a regression; a
        /// language model's most likely next token). For a language model, a token id.
        #[arg(long)]
        target: Option<u64>,
        /// SmoothGrad's noisy samples (default 16).
        #[arg(long)]
        samples: Option<u64>,
        /// SmoothGrad's noise standard deviation (default 15 % of each sample's range).
        #[arg(long)]
        stdev: Option<f64>,
        /// SmoothGrad's noise seed (default 0).
        #[arg(long)]
        seed: Option<u64>,
        /// The folder written (replaced whole).
        #[arg(short, long, default_value = "explanation")]
        out: PathBuf,
        #[command(flatten)]
        compute: Compute,
    },
    /// Sample text from a language model, streamed as it comes, with tokens/s at the end.
    Generate {
        /// MODEL, MODEL@VERSION or MODEL@ALIAS.
        model: String,
        /// The text to continue.
        #[arg(long)]
        prompt: String,
        /// Tokens to generate at most.
        #[arg(long, default_value_t = 100)]
        max_tokens: usize,
        /// Divides the logits; 0 picks the most likely token (greedy).
        #[arg(long, default_value_t = 1.0)]
        temperature: f64,
        /// Sample among the k most likely tokens only (0: all).
        #[arg(long, default_value_t = 0)]
        top_k: usize,
        /// Sample among the fewest most likely tokens holding this much probability.
        #[arg(long, default_value_t = 1.0)]
        top_p: f64,
        /// Seed of the draws.
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Stop before this string (repeatable).
        #[arg(long)]
        stop: Vec<String>,
        #[command(flatten)]
        compute: Compute,
    },
    /// Serve every registry model over REST (Open Inference Protocol V2, TF-Serving v1, and for
    /// language models Triton's generate extension and the OpenAI API) and gRPC.
    Serve {
        /// REST address; port 0 picks a free port (the bound address is printed).
        #[arg(long, default_value = "127.0.0.1:8000")]
        http: std::net::SocketAddr,
        /// gRPC address; port 0 picks a free port.
        #[arg(long, default_value = "127.0.0.1:8001")]
        grpc: std::net::SocketAddr,
        /// Load only versions signed by this public key (PEM; repeatable): any other
        /// version is UNAVAILABLE with the reason.
        #[arg(long = "trust-key")]
        trust_keys: Vec<PathBuf>,
        /// TLS on both sockets: the server's certificate chain (PEM).
        #[arg(long, requires = "tls_key")]
        tls_cert: Option<PathBuf>,
        /// The private key of --tls-cert (PEM).
        #[arg(long, requires = "tls_cert")]
        tls_key: Option<PathBuf>,
        /// Mutual TLS: clients must present a certificate this CA signed (PEM).
        #[arg(long, requires = "tls_cert")]
        tls_client_ca: Option<PathBuf>,
        /// Largest batch one compute call takes.
        #[arg(long, default_value_t = 64)]
        max_batch_size: usize,
        /// How long (µs) the first request of a batch waits for others (0: batch only what
        /// queued up while the last batch ran, as Triton's default).
        #[arg(long, default_value_t = 0)]
        max_queue_delay_us: u64,
        /// How long (µs) a lightly loaded compute thread polls for the next request before
        /// it sleeps (0: never). Polling halves latency at low concurrency on small VMs;
        /// it stops by itself under load.
        #[arg(long, default_value_t = 200)]
        compute_spin_us: u64,
        /// How many of each model's newest versions are served (the default policy latest:N).
        #[arg(long, default_value_t = 1)]
        versions: usize,
        /// A version policy, for every model or one: `[MODEL=]latest:N|all|specific:1,3`
        /// (repeatable).
        #[arg(long = "version-policy", value_name = "[MODEL=]POLICY", value_parser = version_policy)]
        version_policies: Vec<(Option<String>, modelforge_serve::VersionPolicy)>,
        /// Bearer token required on repository load/unload (REST and gRPC).
        #[arg(long, env = "MODELFORGE_TOKEN", hide_env_values = true)]
        token: Option<String>,
        /// Require the token on every call.
        #[arg(long, requires = "token")]
        token_everywhere: bool,
        /// Log every request as a JSON line on stderr (failed ones are always logged).
        #[arg(long)]
        log_requests: bool,
        /// Largest request body (REST) or message (gRPC), in MiB.
        #[arg(long, default_value_t = 64)]
        max_body_mib: usize,
        /// Seconds between registry polls (new, removed and changed versions).
        #[arg(long, default_value_t = 2.0)]
        poll: f64,
        #[command(flatten)]
        generation: GenerationLimits,
        #[command(flatten)]
        compute: Compute,
    },
    /// Write a run's report: report.html (self-contained) and SVG charts beside it.
    Report {
        /// Run id or folder.
        run: String,
        /// Folder to write into (default: the run's `report/`).
        #[arg(long, short)]
        out: Option<PathBuf>,
    },
    /// Export a registry version for other tools: an ONNX graph, or PyTorch weights
    /// (safetensors) with the module definition that loads them printed on stdout.
    Export {
        /// MODEL, MODEL@VERSION or MODEL@ALIAS.
        model: String,
        /// What to write.
        #[arg(long, value_enum)]
        format: commands::ExportFormat,
        /// The file to write (a folder for `--format hf`).
        #[arg(long, short)]
        out: PathBuf,
    },
    /// Inspect and manage the registry.
    #[command(subcommand)]
    Registry(RegistryCommand),
    /// Inspect, compare and remove training runs.
    #[command(subcommand)]
    Runs(RunsCommand),
}

#[derive(Subcommand)]
enum RunsCommand {
    /// List runs, newest first, or best first by a metric.
    List {
        /// Only runs of this model.
        #[arg(long)]
        model: Option<String>,
        /// Only runs with this status: running, completed, stopped_early or failed.
        #[arg(long)]
        status: Option<String>,
        /// Sort by this metric, best first (e.g. test_accuracy, val_loss).
        #[arg(long)]
        sort: Option<String>,
        /// Show at most N runs.
        #[arg(long)]
        limit: Option<usize>,
    },
    /// Show one run: status, parameters, metrics, environment and files.
    Show {
        /// Run id or folder.
        run: String,
    },
    /// The parameters that differ between two runs and their metrics side by side.
    Compare {
        /// Run id or folder.
        a: String,
        /// Run id or folder.
        b: String,
    },
    /// Remove a run folder.
    Rm {
        /// Run id or folder.
        run: String,
        /// Also remove a run still marked running.
        #[arg(long)]
        force: bool,
    },
}

#[derive(Subcommand)]
enum RegistryCommand {
    /// List models with their versions, aliases and signatures (signed, unsigned, invalid).
    List {
        /// Check signatures against this public key (repeatable); without one, a signature
        /// is checked against the files only.
        #[arg(long = "key")]
        keys: Vec<PathBuf>,
    },
    /// Sign a version in OpenSSF model-signing's format (model.sig, a Sigstore bundle).
    Sign {
        /// MODEL@VERSION or MODEL@ALIAS (bare MODEL: the latest).
        model: String,
        /// The private key (elliptic-curve PEM, P-256 or P-384).
        #[arg(long, env = "MODELFORGE_SIGNING_KEY")]
        key: PathBuf,
    },
    /// Check a version's signature against public keys and its files.
    Verify {
        /// MODEL@VERSION or MODEL@ALIAS (bare MODEL: the latest).
        model: String,
        /// A trusted public key (PEM; repeatable).
        #[arg(long = "key", required = true)]
        keys: Vec<PathBuf>,
    },
    /// Make a signing key pair: PRIVATE (readable by you only) and PRIVATE.pub.
    Keygen {
        /// The private key file written (never replaced).
        private: PathBuf,
        /// The public key file (default: the private key's path with .pub).
        #[arg(long)]
        public: Option<PathBuf>,
        /// p256 or p384.
        #[arg(long, default_value = "p256")]
        curve: String,
    },
    /// Show one version's manifest and check its files.
    Show {
        /// MODEL, MODEL@VERSION or MODEL@ALIAS.
        model: String,
    },
    /// Point an alias at a version, or remove it with --rm.
    Alias {
        /// The model.
        model: String,
        /// The alias, e.g. production.
        alias: String,
        /// The version it points at.
        #[arg(required_unless_present = "rm")]
        version: Option<u64>,
        /// Remove the alias instead.
        #[arg(long)]
        rm: bool,
    },
    /// Import an ONNX model, or a Hugging Face folder or GGUF file of a LLaMA- or GPT-2-family
    /// language model, as the next version of a model (checked: it must load and run).
    Import {
        /// The .onnx file, a Hugging Face checkpoint folder (config.json, model.safetensors,
        /// tokenizer.json) or a .gguf file.
        file: PathBuf,
        /// Model name in the registry.
        #[arg(long)]
        name: String,
        /// Class names, one per line, one per value of the first output.
        #[arg(long)]
        labels: Option<PathBuf>,
        /// An input's shape where the file leaves axes dynamic: NAME=D1,D2,… (without the
        /// batch axis unless --no-batch); repeatable.
        #[arg(long = "shape", value_parser = input_shape)]
        shapes: Vec<(String, Vec<usize>)>,
        /// Serve a graph tensor under another name: GRAPH_NAME=NAME (inputs and outputs;
        /// repeatable).
        #[arg(long = "rename", value_parser = rename)]
        renames: Vec<(String, String)>,
        /// The first axis is a batch axis (default: when every input's first axis is dynamic).
        #[arg(long, conflicts_with = "no_batch")]
        batch: bool,
        /// The first axis is not a batch axis: requests carry whole tensors and run one by one.
        #[arg(long)]
        no_batch: bool,
    },
    /// Remove a version.
    Rm {
        /// MODEL@VERSION.
        reference: String,
        /// Also drop aliases that point at it.
        #[arg(long)]
        force: bool,
    },
}

/// Parses `--shape NAME=D1,D2,…`.
fn input_shape(text: &str) -> Result<(String, Vec<usize>), String> {
    let (name, dims) = text
        .split_once('=')
        .ok_or("expected NAME=D1,D2,… e.g. input=3,224,224")?;
    let dims = dims
        .split(',')
        .map(|d| d.trim().parse::<usize>())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{dims:?} is not a list of sizes: {e}"))?;
    Ok((name.to_string(), dims))
}

/// Parses `--rename GRAPH_NAME=NAME`.
fn rename(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((from, to)) if !from.is_empty() && !to.is_empty() => {
            Ok((from.to_string(), to.to_string()))
        }
        _ => Err("expected GRAPH_NAME=NAME, e.g. gpu_0/data_0=image".into()),
    }
}

/// Parses `--version-policy [MODEL=]POLICY`.
fn version_policy(text: &str) -> Result<(Option<String>, modelforge_serve::VersionPolicy), String> {
    match text.split_once('=') {
        Some((model, policy)) => Ok((Some(model.to_string()), policy.parse()?)),
        None => Ok((None, text.parse()?)),
    }
}

/// How the server schedules language models.
#[derive(clap::Args)]
struct GenerationLimits {
    /// Language models: sequences generating at once (the largest decode batch).
    #[arg(long, default_value_t = 32)]
    max_sequences: usize,
    /// Language models: tokens one step runs at most, one per generating sequence plus a
    /// chunk of new prompts (bounds how long a long prompt holds up running streams).
    #[arg(long, default_value_t = 256)]
    max_step_tokens: usize,
    /// Language models: key/value cache the running sequences of a version may reserve
    /// together, in MiB (a sequence reserves its prompt plus max_tokens).
    #[arg(long, default_value_t = 1024)]
    kv_cache_mib: usize,
    /// Language models: requests that wait for room before more are refused (503).
    #[arg(long, default_value_t = 256)]
    max_waiting: usize,
}

impl GenerationLimits {
    fn config(&self) -> modelforge_serve::SchedulerConfig {
        modelforge_serve::SchedulerConfig {
            max_sequences: self.max_sequences,
            max_step_tokens: self.max_step_tokens,
            cache_bytes: self.kv_cache_mib << 20,
            max_waiting: self.max_waiting,
        }
    }
}

/// The serving core's settings from the `serve` flags: `--versions N` is the default policy
/// unless a `--version-policy` without a model replaces it.
fn core_config(
    max_batch_size: usize,
    max_queue_delay_us: u64,
    versions: usize,
    policies: Vec<(Option<String>, modelforge_serve::VersionPolicy)>,
) -> modelforge_serve::CoreConfig {
    let mut config = modelforge_serve::CoreConfig {
        max_batch_size,
        max_queue_delay: std::time::Duration::from_micros(max_queue_delay_us),
        policy: modelforge_serve::VersionPolicy::Latest(versions.max(1)),
        ..Default::default()
    };
    for (model, policy) in policies {
        match model {
            Some(model) => {
                config.policies.insert(model, policy);
            }
            None => config.policy = policy,
        }
    }
    config
}

/// `--baseline`: a name or number, or a JSON file holding a tensor of the input's shape.
fn baseline_setting(text: Option<&str>) -> anyhow::Result<Option<modelforge_explain::Baseline>> {
    let Some(text) = text else { return Ok(None) };
    let path = std::path::Path::new(text);
    if !path.is_file() {
        return Ok(Some(text.parse()?));
    }
    let doc: serde_json::Value = serde_json::from_slice(&std::fs::read(path)?)
        .map_err(|e| anyhow::anyhow!("--baseline {text}: not JSON: {e}"))?;
    let mut values = Vec::new();
    let mut stack = vec![&doc];
    while let Some(v) = stack.pop() {
        match v {
            serde_json::Value::Array(items) => stack.extend(items.iter().rev()),
            serde_json::Value::Number(n) => values.push(n.as_f64().unwrap_or_default() as f32),
            other => anyhow::bail!(
                "--baseline {text}: {other} is not a number — give a nested list of numbers"
            ),
        }
    }
    Ok(Some(modelforge_explain::Baseline::Values(values)))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    modelforge_serve::heap::retain_freed_memory();
    let ctx = commands::Context {
        registry: modelforge_registry::Registry::new(cli.registry),
        runs: cli.runs,
    };
    let result = match cli.command {
        Command::Check { file, graph } => commands::check(&file, graph.as_deref()),
        Command::Train {
            file,
            compute,
            parallel,
            resume,
        } => commands::train(&ctx, &file, &compute, &parallel, resume),
        Command::Run {
            file,
            compute,
            parallel,
            from,
            force,
            dry_run,
            no_serve,
            http,
            grpc,
        } => commands::run(
            &ctx,
            &file,
            &compute,
            &parallel,
            &commands::RunFlags {
                from: if force {
                    Some(modelforge_pipeline::Stage::Check)
                } else {
                    from
                },
                dry_run,
                serve_at: (!no_serve && !dry_run).then_some((http, grpc)),
            },
        ),
        Command::Tune {
            file,
            parallel,
            no_publish,
            compute,
        } => commands::tune(&ctx, &file, parallel, !no_publish, &compute),
        Command::Eval {
            model,
            data,
            compute,
        } => commands::eval(&ctx, &model, data.as_deref(), &compute),
        Command::Predict {
            model,
            input,
            compute,
        } => commands::predict(&ctx, &model, &input, &compute),
        Command::Explain {
            model,
            input,
            prompt,
            method,
            over,
            steps,
            rule,
            baseline,
            target,
            samples,
            stdev,
            seed,
            out,
            compute,
        } => baseline_setting(baseline.as_deref()).and_then(|baseline| {
            commands::explain(
                &ctx,
                &commands::ExplainOptions {
                    model: &model,
                    input: match (&input, &prompt) {
                        (Some(path), _) => commands::ExplainInput::File(path),
                        (None, prompt) => {
                            commands::ExplainInput::Prompt(prompt.as_deref().unwrap_or_default())
                        }
                    },
                    asked: modelforge_explain::Asked {
                        method: Some(method),
                        over,
                        steps,
                        rule,
                        baseline,
                        target,
                        samples,
                        stdev,
                        seed,
                    },
                    out: &out,
                },
                &compute,
            )
        }),
        Command::Generate {
            model,
            prompt,
            max_tokens,
            temperature,
            top_k,
            top_p,
            seed,
            stop,
            compute,
        } => {
            let sampling = modelforge_generate::Sampling {
                max_tokens,
                temperature,
                top_k,
                top_p,
                seed,
                stop,
            };
            commands::generate(&ctx, &model, &prompt, &sampling, &compute)
        }
        Command::Serve {
            http,
            grpc,
            trust_keys,
            tls_cert,
            tls_key,
            tls_client_ca,
            max_batch_size,
            max_queue_delay_us,
            compute_spin_us,
            versions,
            version_policies,
            token,
            token_everywhere,
            log_requests,
            max_body_mib,
            poll,
            generation,
            compute,
        } => commands::serve(
            &ctx,
            &commands::ServeOptions {
                http,
                grpc,
                tls: tls_cert
                    .zip(tls_key)
                    .map(|(cert, key)| modelforge_server::TlsFiles {
                        cert,
                        key,
                        client_ca: tls_client_ca,
                    }),
                config: modelforge_serve::CoreConfig {
                    compute_spin: std::time::Duration::from_micros(compute_spin_us),
                    generation: generation.config(),
                    ..core_config(
                        max_batch_size,
                        max_queue_delay_us,
                        versions,
                        version_policies,
                    )
                },
                limits: modelforge_server::Limits {
                    max_body_bytes: max_body_mib << 20,
                    poll: std::time::Duration::from_secs_f64(poll.max(0.05)),
                    token,
                    token_everywhere,
                    log_requests,
                },
            },
            &trust_keys,
            &compute,
        ),
        Command::Registry(cmd) => match cmd {
            RegistryCommand::List { keys } => commands::registry_list(&ctx, &keys),
            RegistryCommand::Sign { model, key } => commands::registry_sign(&ctx, &model, &key),
            RegistryCommand::Verify { model, keys } => {
                commands::registry_verify(&ctx, &model, &keys)
            }
            RegistryCommand::Keygen {
                private,
                public,
                curve,
            } => commands::registry_keygen(&private, public, &curve),
            RegistryCommand::Show { model } => commands::registry_show(&ctx, &model),
            RegistryCommand::Alias {
                model,
                alias,
                version,
                rm,
            } => commands::registry_alias(&ctx, &model, &alias, version, rm),
            RegistryCommand::Import {
                file,
                name,
                labels,
                shapes,
                renames,
                batch,
                no_batch,
            } if modelforge_pretrained::hf::is_folder(&file)
                || modelforge_pretrained::gguf::is_file(&file) =>
            {
                if labels.is_some()
                    || !shapes.is_empty()
                    || !renames.is_empty()
                    || batch
                    || no_batch
                {
                    Err(anyhow::anyhow!(
                        "{} is a pretrained checkpoint: --labels, --shape, --rename, --batch and --no-batch apply to ONNX files only",
                        file.display()
                    ))
                } else {
                    commands::registry_import_pretrained(
                        &ctx,
                        &modelforge_pretrained::Import {
                            source: &file,
                            name: &name,
                        },
                    )
                }
            }
            RegistryCommand::Import {
                file,
                name,
                labels,
                shapes,
                renames,
                batch,
                no_batch,
            } => commands::registry_import(
                &ctx,
                &modelforge_onnx::Import {
                    file: &file,
                    name: &name,
                    labels: labels.as_deref(),
                    overrides: modelforge_onnx::Overrides {
                        shapes: shapes.into_iter().collect(),
                        batchable: (batch || no_batch).then_some(batch),
                        names: renames.into_iter().collect(),
                    },
                },
            ),
            RegistryCommand::Rm { reference, force } => {
                commands::registry_rm(&ctx, &reference, force)
            }
        },
        Command::Report { run, out } => commands::report(&ctx, &run, out),
        Command::Export { model, format, out } => commands::export(&ctx, &model, format, &out),
        Command::Runs(cmd) => match cmd {
            RunsCommand::List {
                model,
                status,
                sort,
                limit,
            } => commands::runs_list(
                &ctx,
                &modelforge_pipeline::runs::RunFilter {
                    model,
                    status,
                    sort,
                    limit,
                },
            ),
            RunsCommand::Show { run } => commands::runs_show(&ctx, &run),
            RunsCommand::Compare { a, b } => commands::runs_compare(&ctx, &a, &b),
            RunsCommand::Rm { run, force } => commands::runs_rm(&ctx, &run, force),
        },
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            // One line: the message, then each cause not already spelled out in it.
            let mut line = e.to_string();
            for cause in e.chain().skip(1) {
                let text = cause.to_string();
                if !line.contains(&text) {
                    line = format!("{line}: {text}");
                }
            }
            eprintln!("error: {line}");
            ExitCode::from(2)
        }
    }
}
