//! The modelforge inference core, free of HTTP, gRPC and engine types.
//!
//! A [`Core`] keeps the served versions of every registry model. A predicting version
//! runs behind a [`queue`] on its own compute thread: requests wait at most the queue
//! delay to be batched together, are concatenated along the batch axis, run once, and
//! split back. A generating version (a language model) runs behind a [`scheduler`]:
//! requests join and leave a running batch between decode steps and stream their text.
//! The engine comes in through a [`Loader`].

pub mod explanation;
pub mod generator;
pub mod heap;
pub mod policy;
pub mod queue;
pub mod request;
pub mod scheduler;
pub mod tensor;

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

pub use modelforge_registry::{Manifest, PublicKey, TensorInfo};
use modelforge_registry::{Registry, RegistryError};

pub use explanation::{ExplainRequest, Explained, Explanation, Pieces};
pub use generator::{
    Event, Explainer, Finish, GenerateRequest, Generation, Generator, Message, Prompt, Sampling,
    SequenceId, Summary, Token,
};
pub use policy::VersionPolicy;
pub use queue::{Histogram, Statistics};
use queue::{Queue, QueueConfig};
pub use request::{InferRequest, Inference, InputTensor, OutputTensor};
pub use scheduler::{GenerationStatistics, Scheduler, SchedulerConfig};
pub use tensor::Values;

/// Everything a request or a load can fail with.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The registry has no such model.
    #[error("model {0:?} is not in the repository")]
    NoModel(String),
    /// The model has no such version or alias being served.
    #[error("model {model:?} has no ready version {version:?}")]
    NoVersion {
        /// The model.
        model: String,
        /// The version or alias asked for.
        version: String,
    },
    /// The version exists but could not be loaded.
    #[error("model {model:?} version {version} is unavailable: {reason}")]
    Unavailable {
        /// The model.
        model: String,
        /// The version.
        version: u64,
        /// Why it did not load.
        reason: String,
    },
    /// The request does not fit the model.
    #[error("{0}")]
    BadRequest(String),
    /// An inference request went to a language model.
    #[error(
        "model {0:?} is a language model: it generates text (POST /v2/models/{0}/generate, /v1/completions or /v1/chat/completions) and takes no inference requests"
    )]
    NotAPredictor(String),
    /// A generation request went to a model that does not generate.
    #[error(
        "model {0:?} is not a language model: send it inference requests (POST /v2/models/{0}/infer)"
    )]
    NotAGenerator(String),
    /// The request's deadline passed before it was answered.
    #[error(
        "the request's deadline of {0:?} passed before it was answered — allow more time or retry"
    )]
    DeadlineExceeded(Duration),
    /// The model's queue is full.
    #[error("model {0:?} is overloaded: its queue is full, retry later")]
    Overloaded(String),
    /// An explanation went to a version whose engine has no gradients.
    #[error(
        "model {model:?} version {version} is a {format:?} model, and explanations need gradients, which only a native modelforge model has here — explain a native version (one trained or imported by modelforge)"
    )]
    NotExplainable {
        /// The model.
        model: String,
        /// The version.
        version: u64,
        /// Its format.
        format: String,
    },
    /// The compute thread failed on the request.
    #[error("inference failed: {0}")]
    Compute(String),
    /// The compute thread panicked on the request; the version is rebuilt, or listed
    /// unavailable when that fails.
    #[error(
        "model {model:?} version {version} crashed on this request ({message}) — report the input that caused it; the version is rebuilt for the requests after it (or listed unavailable with the reason if that fails)"
    )]
    Crashed {
        /// The model.
        model: String,
        /// The version.
        version: u64,
        /// The panic's message.
        message: String,
    },
    /// The registry could not be read.
    #[error(transparent)]
    Registry(#[from] RegistryError),
}

/// What a loaded version computes.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelInfo {
    /// Model name.
    pub name: String,
    /// Version number.
    pub version: u64,
    /// The manifest it was loaded from.
    pub manifest: Manifest,
}

/// A loaded model version that computes outputs for a batch of inputs.
pub trait Runnable: Send {
    /// The outputs, in the manifest's order and datatypes, each `batch` samples long, for
    /// `batch` samples of each input (in the manifest's order, checked against it).
    fn run(&mut self, inputs: Vec<Values>, batch: usize) -> Result<Vec<Values>, String>;

    /// Attributions of `batch` samples (checked as for [`Runnable::run`]) with the model's
    /// outputs; `None` where the engine has no gradients.
    fn explain(
        &mut self,
        _inputs: Vec<Values>,
        _batch: usize,
        _settings: &modelforge_spec::explain::Explain,
    ) -> Option<Result<Explained, ServeError>> {
        None
    }
}

/// A loaded version, of either kind.
pub enum Engine {
    /// Maps a batch of tensors to a batch of tensors.
    Predictor(Box<dyn Runnable>),
    /// Generates text step by step.
    Generator(Box<dyn Generator>),
}

/// Turns a verified registry version into an engine (the engine lives behind this).
pub trait Loader: Send + Sync {
    /// Loads the version whose files are in `dir`.
    fn load(&self, manifest: &Manifest, dir: &std::path::Path) -> Result<Engine, String>;
}

/// Loaders by manifest format: each version goes to the loader of its format.
#[derive(Default)]
pub struct Formats(BTreeMap<String, Arc<dyn Loader>>);

impl Formats {
    /// Adds the loader of a format.
    pub fn with(mut self, format: &str, loader: Arc<dyn Loader>) -> Formats {
        self.0.insert(format.to_string(), loader);
        self
    }
}

impl Loader for Formats {
    fn load(&self, manifest: &Manifest, dir: &std::path::Path) -> Result<Engine, String> {
        match self.0.get(&manifest.format) {
            Some(loader) => loader.load(manifest, dir),
            None => Err(format!(
                "format {:?} is not served by this build (it serves {})",
                manifest.format,
                self.0.keys().cloned().collect::<Vec<_>>().join(", ")
            )),
        }
    }
}

/// How the core batches and which versions it serves.
#[derive(Debug, Clone)]
pub struct CoreConfig {
    /// Largest batch one compute call takes.
    pub max_batch_size: usize,
    /// How long the first request of a batch waits for others.
    pub max_queue_delay: Duration,
    /// Requests a version's queue holds before refusing more.
    pub max_queue_len: usize,
    /// How long an idle compute thread polls for the next request before it parks.
    pub compute_spin: Duration,
    /// Which versions of each model are served, unless `policies` names the model.
    pub policy: VersionPolicy,
    /// Per-model version policies.
    pub policies: BTreeMap<String, VersionPolicy>,
    /// Limits of each generating version's scheduler.
    pub generation: SchedulerConfig,
    /// Public keys a version's signature must verify against before it loads; empty:
    /// every version loads, signed or not.
    pub trust: Vec<PublicKey>,
}

impl CoreConfig {
    /// The version policy of a model.
    pub fn policy_for(&self, model: &str) -> &VersionPolicy {
        self.policies.get(model).unwrap_or(&self.policy)
    }
}

impl Default for CoreConfig {
    fn default() -> Self {
        CoreConfig {
            max_batch_size: 64,
            max_queue_delay: Duration::ZERO,
            max_queue_len: 1024,
            compute_spin: Duration::from_micros(200),
            policy: VersionPolicy::default(),
            policies: BTreeMap::new(),
            generation: SchedulerConfig::default(),
            trust: Vec::new(),
        }
    }
}

/// A loaded version behind its compute thread.
#[derive(Clone)]
pub enum Served {
    /// Answers inference requests through a batching queue.
    Predictor(Arc<Queue>),
    /// Generates text through a continuous-batching scheduler.
    Generator(Arc<Scheduler>),
}

impl Served {
    /// What the version is.
    pub fn info(&self) -> &ModelInfo {
        match self {
            Served::Predictor(q) => q.info(),
            Served::Generator(g) => g.info(),
        }
    }

    /// A snapshot of its counters.
    pub fn statistics(&self) -> Statistics {
        match self {
            Served::Predictor(q) => q.statistics(),
            Served::Generator(g) => g.statistics(),
        }
    }

    /// Whether it generates text.
    pub fn is_generator(&self) -> bool {
        matches!(self, Served::Generator(_))
    }

    /// Why it stopped answering, when a panic on its compute thread could not be healed.
    pub fn failed(&self) -> Option<String> {
        match self {
            Served::Predictor(q) => q.failed(),
            Served::Generator(g) => g.failed(),
        }
    }
}

/// The state of one version in the core.
#[derive(Clone)]
pub enum VersionState {
    /// Loaded and taking requests.
    Ready(Served),
    /// Listed in the registry but not servable, with the reason.
    Unavailable(String),
}

/// Whether a listed version answers, as the repository index says it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModelState {
    /// Loaded and answering.
    Ready,
    /// Listed but not answering (the entry says why).
    Unavailable,
}

impl ModelState {
    /// Triton's name for the state.
    pub fn name(self) -> &'static str {
        match self {
            ModelState::Ready => "READY",
            ModelState::Unavailable => "UNAVAILABLE",
        }
    }
}

impl std::fmt::Display for ModelState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// A model's index entry: its versions and their states.
#[derive(Debug, Clone, PartialEq)]
pub struct IndexEntry {
    /// Model name.
    pub name: String,
    /// Version number.
    pub version: u64,
    /// Whether it answers.
    pub state: ModelState,
    /// Why it is unavailable.
    pub reason: String,
}

/// One model as the core serves it: its versions' states and its aliases, both read from
/// the registry at refresh.
#[derive(Clone, Default)]
struct ModelEntry {
    versions: BTreeMap<u64, VersionState>,
    /// `None` when the aliases file could not be read (a request by alias then reads it
    /// again and reports why).
    aliases: Option<BTreeMap<String, u64>>,
}

/// Opens a version after checking its checksums and, when `trust` names keys, that one of
/// them signed it as it is.
fn open_checked(
    registry: &Registry,
    trust: &[PublicKey],
    name: &str,
    version: u64,
) -> Result<modelforge_registry::Version, RegistryError> {
    match trust.is_empty() {
        true => registry.open(name, version),
        false => registry
            .verify(name, version, trust)
            .map(|(opened, _, _)| opened),
    }
}

/// The shared inference core behind every protocol.
pub struct Core {
    registry: Registry,
    loader: Arc<dyn Loader>,
    config: CoreConfig,
    models: RwLock<BTreeMap<String, ModelEntry>>,
    unloaded: RwLock<std::collections::BTreeSet<String>>,
    untrusted: std::sync::Mutex<Untrusted>,
}

/// A version refused because no trusted key signed it as it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// The model.
    pub model: String,
    /// The version.
    pub version: u64,
    /// Why: unsigned, signed by another key, or files changed since signing.
    pub reason: String,
}

/// Versions refused for trust: counts per model, and the refusals not yet logged.
#[derive(Debug, Default)]
struct Untrusted {
    counts: BTreeMap<String, u64>,
    unlogged: Vec<Refusal>,
}

impl Core {
    /// A core serving `registry` through `loader`; call [`Core::refresh`] to load models.
    pub fn new(registry: Registry, loader: Arc<dyn Loader>, config: CoreConfig) -> Core {
        Core {
            registry,
            loader,
            config,
            models: RwLock::new(BTreeMap::new()),
            unloaded: RwLock::new(Default::default()),
            untrusted: Default::default(),
        }
    }

    /// Batching limits and version policy in force.
    pub fn config(&self) -> &CoreConfig {
        &self.config
    }

    /// Brings the served set in line with the registry: new versions are loaded (and warmed)
    /// before they take traffic, versions that left the policy are dropped after their queued
    /// requests finish, broken versions are listed as unavailable.
    pub fn refresh(&self) -> Result<(), ServeError> {
        for name in self.registry.models()? {
            // Unloaded models stay unloaded until the repository API loads them again.
            if !self.unloaded.read().expect("lock").contains(&name) {
                self.sync_model(&name, false)?;
            }
        }
        let known = self.registry.models()?;
        self.models
            .write()
            .expect("lock")
            .retain(|name, _| known.contains(name));
        Ok(())
    }

    /// Loads the policy's versions of one model (the repository API's load, which also retries
    /// versions that failed before).
    pub fn load_model(&self, name: &str) -> Result<(), ServeError> {
        self.unloaded.write().expect("lock").remove(name);
        self.sync_model(name, true)
    }

    /// Serves the versions the model's policy names: the newest N that load (newer broken
    /// ones are listed as unavailable with their reason, so a broken new version never takes
    /// the model down) plus those aliases point at, all of them, or specific ones (those
    /// missing are listed too).
    fn sync_model(&self, name: &str, retry: bool) -> Result<(), ServeError> {
        let versions = match self.registry.versions(name) {
            Ok(v) => v,
            Err(RegistryError::NoModel { .. }) => return Err(ServeError::NoModel(name.into())),
            Err(e) => return Err(e.into()),
        };
        let current = self
            .models
            .read()
            .expect("lock")
            .get(name)
            .map(|m| m.versions.clone())
            .unwrap_or_default();
        let aliases = self.registry.aliases(name).ok();
        let state_of = |version: u64| match current.get(&version) {
            // A version that a panic left without a runnable is listed with the reason.
            Some(VersionState::Ready(q)) => match q.failed() {
                None => VersionState::Ready(q.clone()),
                Some(reason) if !retry => VersionState::Unavailable(reason),
                Some(_) => self.load_version(name, version),
            },
            Some(VersionState::Unavailable(reason)) if !retry => {
                VersionState::Unavailable(reason.clone())
            }
            _ => self.load_version(name, version),
        };
        let mut next = BTreeMap::new();
        match self.config.policy_for(name) {
            VersionPolicy::Latest(n) => {
                let mut ready = 0;
                for &version in versions.iter().rev() {
                    if ready == *n {
                        break;
                    }
                    let state = state_of(version);
                    ready += usize::from(matches!(state, VersionState::Ready(_)));
                    next.insert(version, state);
                }
                // A version an alias points at (`@production`) stays served even when newer
                // ones push it out of the latest N: a new version that failed its gate must
                // not take production down.
                // (A damaged aliases.json is reported where an alias is used.)
                for &version in aliases.iter().flat_map(|a| a.values()) {
                    if versions.contains(&version) && !next.contains_key(&version) {
                        next.insert(version, state_of(version));
                    }
                }
            }
            VersionPolicy::All => {
                for &version in &versions {
                    next.insert(version, state_of(version));
                }
            }
            VersionPolicy::Specific(wanted) => {
                for &version in wanted {
                    let state = match versions.contains(&version) {
                        true => state_of(version),
                        false => VersionState::Unavailable(format!(
                            "the version policy names version {version}, which is not in the registry"
                        )),
                    };
                    next.insert(version, state);
                }
            }
        }
        self.models.write().expect("lock").insert(
            name.to_string(),
            ModelEntry {
                versions: next,
                aliases,
            },
        );
        Ok(())
    }

    /// What rebuilds a version after its compute or scheduler thread panicked: the version
    /// opened and checked (checksums, and the signature when keys are trusted) and loaded
    /// again.
    fn reloader(
        &self,
        name: &str,
        version: u64,
    ) -> Box<dyn FnMut() -> Result<Engine, String> + Send> {
        let (registry, trust) = (self.registry.clone(), self.config.trust.clone());
        let (loader, name) = (self.loader.clone(), name.to_string());
        Box::new(move || {
            let opened =
                open_checked(&registry, &trust, &name, version).map_err(|e| e.to_string())?;
            loader.load(&opened.manifest, &opened.dir)
        })
    }

    /// Opens a version, checking its signature against the trusted keys when there are
    /// any; a version no trusted key signed as it is counts as refused.
    fn open_trusted(
        &self,
        name: &str,
        version: u64,
    ) -> Result<modelforge_registry::Version, String> {
        match open_checked(&self.registry, &self.config.trust, name, version) {
            Ok(opened) => Ok(opened),
            Err(
                e @ (RegistryError::Unsigned { .. }
                | RegistryError::BadSignature { .. }
                | RegistryError::Tampered { .. }),
            ) => {
                let reason = format!("untrusted: {e}");
                let mut untrusted = self.untrusted.lock().expect("lock");
                *untrusted.counts.entry(name.to_string()).or_default() += 1;
                untrusted.unlogged.push(Refusal {
                    model: name.to_string(),
                    version,
                    reason: reason.clone(),
                });
                Err(reason)
            }
            Err(e) => Err(e.to_string()),
        }
    }

    /// Versions refused for trust so far, per model.
    pub fn untrusted_counts(&self) -> BTreeMap<String, u64> {
        self.untrusted.lock().expect("lock").counts.clone()
    }

    /// The refusals since the last call, for the log.
    pub fn take_refusals(&self) -> Vec<Refusal> {
        std::mem::take(&mut self.untrusted.lock().expect("lock").unlogged)
    }

    fn load_version(&self, name: &str, version: u64) -> VersionState {
        let opened = match self.open_trusted(name, version) {
            Ok(v) => v,
            Err(reason) => return VersionState::Unavailable(reason),
        };
        let engine = match self.loader.load(&opened.manifest, &opened.dir) {
            Ok(e) => e,
            Err(reason) => return VersionState::Unavailable(reason),
        };
        let info = ModelInfo {
            name: name.to_string(),
            version,
            manifest: opened.manifest,
        };
        let config = QueueConfig {
            max_batch_size: self.config.max_batch_size,
            max_queue_delay: self.config.max_queue_delay,
            max_queue_len: self.config.max_queue_len,
            spin: self.config.compute_spin,
        };
        let served = match engine {
            Engine::Predictor(runnable) => {
                let mut reload = self.reloader(name, version);
                let reload: queue::Reload = Box::new(move || match reload()? {
                    Engine::Predictor(runnable) => Ok(runnable),
                    Engine::Generator(_) => Err("it reloaded as a language model".into()),
                });
                Queue::start(info, runnable, config, Some(reload))
                    .map(|q| Served::Predictor(Arc::new(q)))
            }
            Engine::Generator(generator) => {
                let info = generator::described(info);
                let mut reload = self.reloader(name, version);
                let reload: scheduler::Reload = Box::new(move || match reload()? {
                    Engine::Generator(generator) => Ok(generator),
                    Engine::Predictor(_) => Err("it reloaded as a predicting model".into()),
                });
                Scheduler::start(
                    info,
                    generator,
                    self.config.generation.clone(),
                    Some(reload),
                )
                .map(|g| Served::Generator(Arc::new(g)))
            }
        };
        match served {
            Ok(served) => VersionState::Ready(served),
            Err(reason) => VersionState::Unavailable(reason),
        }
    }

    /// Stops serving a model (the repository API's unload).
    pub fn unload(&self, name: &str) -> Result<(), ServeError> {
        match self.models.write().expect("lock").remove(name) {
            Some(_) => {
                self.unloaded
                    .write()
                    .expect("lock")
                    .insert(name.to_string());
                Ok(())
            }
            None => Err(ServeError::NoModel(name.into())),
        }
    }

    /// Every registry model version with its state.
    pub fn index(&self) -> Result<Vec<IndexEntry>, ServeError> {
        let models = self.models.read().expect("lock");
        let mut out = Vec::new();
        for name in self.registry.models()? {
            let served = models.get(&name);
            // The registry's versions, and those a specific policy names that it lacks.
            let mut versions: std::collections::BTreeSet<u64> =
                self.registry.versions(&name)?.into_iter().collect();
            versions.extend(served.into_iter().flat_map(|m| m.versions.keys().copied()));
            for version in versions {
                let (state, reason) = match served.and_then(|m| m.versions.get(&version)) {
                    Some(VersionState::Ready(_)) => (ModelState::Ready, String::new()),
                    Some(VersionState::Unavailable(r)) => (ModelState::Unavailable, r.clone()),
                    None => (
                        ModelState::Unavailable,
                        "not loaded (outside the version policy or unloaded)".to_string(),
                    ),
                };
                out.push(IndexEntry {
                    name: name.clone(),
                    version,
                    state,
                    reason,
                });
            }
        }
        Ok(out)
    }

    /// Whether every served version is ready.
    pub fn ready(&self) -> bool {
        self.models
            .read()
            .expect("lock")
            .values()
            .flat_map(|m| m.versions.values())
            .all(|s| matches!(s, VersionState::Ready(_)))
    }

    /// The queue of a ready predicting version: `version` is a number, an alias, or None
    /// for the newest.
    pub fn version(&self, name: &str, version: Option<&str>) -> Result<Arc<Queue>, ServeError> {
        match self.served(name, version)? {
            Served::Predictor(q) => Ok(q),
            Served::Generator(_) => Err(ServeError::NotAPredictor(name.into())),
        }
    }

    /// The scheduler of a ready generating version (`version` as for [`Core::version`]).
    pub fn generator(
        &self,
        name: &str,
        version: Option<&str>,
    ) -> Result<Arc<Scheduler>, ServeError> {
        match self.served(name, version)? {
            Served::Generator(g) => Ok(g),
            Served::Predictor(_) => Err(ServeError::NotAGenerator(name.into())),
        }
    }

    /// Every model with a ready generating version, by name, with its newest such version.
    pub fn generators(&self) -> Vec<(String, u64)> {
        let models = self.models.read().expect("lock");
        models
            .iter()
            .filter_map(|(name, model)| {
                model.versions.iter().rev().find_map(|(v, s)| match s {
                    VersionState::Ready(Served::Generator(_)) => Some((name.clone(), *v)),
                    _ => None,
                })
            })
            .collect()
    }

    /// A ready version of either kind (`version` as for [`Core::version`]).
    pub fn served(&self, name: &str, version: Option<&str>) -> Result<Served, ServeError> {
        let models = self.models.read().expect("lock");
        let served = models
            .get(name)
            .ok_or_else(|| ServeError::NoModel(name.into()))?;
        let number = match version {
            None => served
                .versions
                .iter()
                .rev()
                .find(|(_, s)| matches!(s, VersionState::Ready(_)))
                .map(|(v, _)| *v),
            Some(v) => match (v.parse::<u64>(), &served.aliases) {
                (Ok(n), _) => Some(n),
                (Err(_), Some(aliases)) => aliases.get(v).copied(),
                (Err(_), None) => self.registry.aliases(name)?.get(v).copied(),
            },
        };
        let missing = || ServeError::NoVersion {
            model: name.into(),
            version: version.unwrap_or("latest").into(),
        };
        match number.and_then(|n| served.versions.get(&n).map(|s| (n, s))) {
            Some((_, VersionState::Ready(q))) => Ok(q.clone()),
            Some((n, VersionState::Unavailable(reason))) => Err(ServeError::Unavailable {
                model: name.into(),
                version: n,
                reason: reason.clone(),
            }),
            None => Err(missing()),
        }
    }

    /// Statistics of every ready version: (model, version, counters).
    pub fn statistics(&self) -> Vec<(String, u64, Statistics)> {
        let models = self.models.read().expect("lock");
        let mut out = Vec::new();
        for (name, model) in models.iter() {
            for (version, state) in &model.versions {
                if let VersionState::Ready(served) = state {
                    out.push((name.clone(), *version, served.statistics()));
                }
            }
        }
        out
    }

    /// Statistics of the ready versions: all models, one model, or one version of it
    /// (a number or an alias). An unknown model or version is an error.
    pub fn statistics_of(
        &self,
        name: Option<&str>,
        version: Option<&str>,
    ) -> Result<Vec<(String, u64, Statistics)>, ServeError> {
        let Some(name) = name else {
            return Ok(self.statistics());
        };
        let wanted = match version {
            Some(v) => Some(self.served(name, Some(v))?.info().version),
            None => {
                self.versions(name)?;
                None
            }
        };
        Ok(self
            .statistics()
            .into_iter()
            .filter(|(n, v, _)| n == name && wanted.is_none_or(|w| w == *v))
            .collect())
    }

    /// Version numbers of a model that are ready to answer (unavailable ones are in the index).
    pub fn versions(&self, name: &str) -> Result<Vec<u64>, ServeError> {
        let models = self.models.read().expect("lock");
        let served = models
            .get(name)
            .ok_or_else(|| ServeError::NoModel(name.into()))?;
        Ok(served
            .versions
            .iter()
            .filter(|(_, state)| matches!(state, VersionState::Ready(_)))
            .map(|(v, _)| *v)
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::queue::tests::{Fragile, info};

    /// Loads every version as a [`Fragile`] runnable.
    struct FragileLoader;

    impl Loader for FragileLoader {
        fn load(&self, _: &Manifest, dir: &std::path::Path) -> Result<Engine, String> {
            match dir.join("weights.bin").is_file() {
                true => Ok(Engine::Predictor(Box::new(Fragile))),
                false => Err("weights.bin is missing".into()),
            }
        }
    }

    fn ask(core: &Core, version: &str, v: f32) -> Result<Inference, ServeError> {
        let queue = core.version("m", Some(version))?;
        let request = InferRequest {
            inputs: vec![InputTensor {
                name: Some("x".into()),
                datatype: "FP32".into(),
                shape: vec![1, 2],
                data: Ok(Values::F32(vec![v, 1.0])),
            }],
            outputs: Vec::new(),
            timeout: None,
        };
        block_on(queue.infer(request))
    }

    /// Runs a future to completion on a fresh runtime.
    fn block_on<T>(f: impl std::future::Future<Output = T>) -> T {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(f)
    }

    #[test]
    fn a_crash_heals_its_version_and_leaves_the_others_alone() {
        let dir = tempfile::tempdir().unwrap();
        let registry = Registry::new(dir.path());
        let weights = [modelforge_registry::Artifact {
            name: "weights.bin".into(),
            bytes: vec![1, 2, 3],
        }];
        for _ in 0..2 {
            registry.publish(info().manifest, &weights).unwrap();
        }
        let config = CoreConfig {
            policy: VersionPolicy::All,
            ..Default::default()
        };
        let core = Core::new(registry, Arc::new(FragileLoader), config);
        core.refresh().unwrap();
        let crashed = ask(&core, "1", 13.0).unwrap_err();
        assert!(
            matches!(crashed, ServeError::Crashed { version: 1, .. }),
            "{crashed}"
        );
        // Reloaded: version 1 answers again; version 2 never noticed.
        assert!(ask(&core, "1", 2.0).is_ok());
        assert!(ask(&core, "2", 2.0).is_ok());
        // A crash whose reload fails (the version's files were damaged since it loaded):
        // version 1 becomes unavailable with the reason, version 2 keeps answering.
        std::fs::remove_file(dir.path().join("m/1/weights.bin")).unwrap();
        assert!(matches!(
            ask(&core, "1", 13.0),
            Err(ServeError::Crashed { .. })
        ));
        let later = ask(&core, "1", 2.0).unwrap_err();
        assert!(matches!(later, ServeError::Unavailable { .. }), "{later}");
        core.refresh().unwrap();
        let index = core.index().unwrap();
        let one = index.iter().find(|e| e.version == 1).unwrap();
        assert_eq!(one.state, ModelState::Unavailable);
        assert!(
            one.reason.contains("thirteen") && one.reason.contains("weights.bin"),
            "{}",
            one.reason
        );
        assert!(ask(&core, "2", 2.0).is_ok());
    }
}
