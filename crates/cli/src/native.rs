//! The native engine behind the inference core: a registry version's spec and
//! safetensors weights built into a burn network.

use std::path::Path;

use anyhow::{Context as _, Result, bail};
use modelforge_generate::LanguageModel;
use modelforge_model::Network;
use modelforge_model::burn::tensor::Device;
use modelforge_registry::{Manifest, Registry};
use modelforge_serve::{Loader, Runnable, Values};
use modelforge_spec::{Spec, Task};

/// The version format this engine runs.
pub const FORMAT: &str = "modelforge-native";

/// The spec stored in a native version's folder.
pub fn stored_spec(dir: &Path) -> Result<Spec> {
    let spec_path = dir.join("spec.toml");
    let text = std::fs::read_to_string(&spec_path)
        .with_context(|| format!("cannot read {}", spec_path.display()))?;
    Ok(Spec::parse_stored(&text, &spec_path)?)
}

/// A loaded native version.
pub struct Native {
    /// The spec it was built from.
    pub spec: Spec,
    /// The network, in inference mode.
    pub network: Network,
    device: Device,
}

impl Native {
    /// Builds the network of the version in `dir`.
    pub fn load(manifest: &Manifest, dir: &Path, device: &Device) -> Result<Native> {
        if manifest.format != FORMAT {
            bail!(
                "{}@{} has format {:?}, which this build cannot run",
                manifest.name,
                manifest.version,
                manifest.format
            );
        }
        let spec = stored_spec(dir)?;
        let network = Network::new(&spec, device).load_safetensors(
            &dir.join(modelforge_train::run::WEIGHTS),
            device,
            false,
        )?;
        Ok(Native {
            spec,
            network,
            device: device.clone(),
        })
    }

    /// Resolves `name[@version|@alias]`, verifies its files and loads it.
    pub fn open(
        registry: &Registry,
        reference: &str,
        device: &Device,
    ) -> Result<(Manifest, Native)> {
        let (name, version) = registry.resolve(reference)?;
        let stored = registry.open(&name, version)?;
        let native = Native::load(&stored.manifest, &stored.dir, device)?;
        Ok((stored.manifest, native))
    }

    /// Resolves `name[@version|@alias]` of a language model and pairs its network with the
    /// `tokenizer.json` published beside it.
    pub fn open_language_model(
        registry: &Registry,
        reference: &str,
        device: &Device,
    ) -> Result<(Manifest, LanguageModel)> {
        let (name, version) = registry.resolve(reference)?;
        let stored = registry.open(&name, version)?;
        if stored.manifest.task != Task::LanguageModel.name() {
            bail!(
                "{name}@{version} is a {} model, not a language model — use `modelforge predict` for it",
                stored.manifest.task
            );
        }
        let native = Native::load(&stored.manifest, &stored.dir, device)?;
        let path = stored.dir.join(modelforge_data::TOKENIZER);
        let tokenizer = modelforge_data::Tokenizer::from_file(&path)?;
        let model = LanguageModel::new(native.network, tokenizer, device)?;
        Ok((stored.manifest, model))
    }
}

impl Runnable for Native {
    fn run(&mut self, inputs: Vec<Values>, batch: usize) -> Result<Vec<Values>, String> {
        let converted;
        let input = match inputs.as_slice() {
            [Values::F32(v)] => v,
            [other] => {
                converted = other.to_f32();
                &converted
            }
            _ => {
                return Err(format!(
                    "a native model takes one input, not {}",
                    inputs.len()
                ));
            }
        };
        let x = self
            .network
            .input(input, batch, &self.device)
            .map_err(|e| e.to_string())?;
        let out = self.network.forward(x).into_data().try_to_vec::<f32>();
        Ok(vec![Values::F32(out.map_err(|e| format!("{e:?}"))?)])
    }
}

/// Loads native versions on one device for the inference core.
pub struct NativeLoader {
    /// The compute device.
    pub device: Device,
}

impl Loader for NativeLoader {
    fn load(&self, manifest: &Manifest, dir: &Path) -> Result<Box<dyn Runnable>, String> {
        if manifest.task == Task::LanguageModel.name() {
            return Err(format!(
                "{}@{} is a language model: sample it with `modelforge generate {}@{} --prompt TEXT` (the server does not stream generation yet)",
                manifest.name, manifest.version, manifest.name, manifest.version
            ));
        }
        Native::load(manifest, dir, &self.device)
            .map(|n| Box::new(n) as Box<dyn Runnable>)
            .map_err(|e| format!("{e:#}"))
    }
}
