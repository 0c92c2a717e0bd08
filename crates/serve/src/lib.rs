//! The modelforge inference core: a published registry version, checked and
//! loaded into a [`Runnable`] that turns input batches into outputs.

use modelforge_model::burn::tensor::Device;
use modelforge_model::{ModelError, Network};
use modelforge_registry::{Manifest, Registry, RegistryError};
use modelforge_spec::{Spec, SpecError};

/// The weights file of a native version.
pub const WEIGHTS: &str = "weights.safetensors";
/// The resolved spec of a native version.
pub const SPEC: &str = "spec.toml";

/// Everything that can go wrong loading or running a version.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The registry could not find or verify the version.
    #[error(transparent)]
    Registry(#[from] RegistryError),
    /// The stored spec does not parse.
    #[error(transparent)]
    Spec(#[from] SpecError),
    /// The network could not load or run.
    #[error(transparent)]
    Model(#[from] ModelError),
    /// The version's format is not one this build serves.
    #[error("{name} version {version} has format {format:?}, which this build cannot run")]
    Format {
        /// The model.
        name: String,
        /// The version.
        version: u64,
        /// Its format.
        format: String,
    },
}

/// A model version ready for inference (no autodiff).
pub struct Runnable {
    /// Its manifest.
    pub manifest: Manifest,
    /// The spec it was built from.
    pub spec: Spec,
    network: Network,
    device: Device,
}

impl Runnable {
    /// Resolves `name[@version|@alias]`, checks its files and loads it.
    pub fn load(
        registry: &Registry,
        reference: &str,
        device: &Device,
    ) -> Result<Runnable, ServeError> {
        let (name, version) = registry.resolve(reference)?;
        let stored = registry.open(&name, version)?;
        let manifest = stored.manifest;
        if manifest.format != "modelforge-native" {
            return Err(ServeError::Format {
                name,
                version,
                format: manifest.format,
            });
        }
        let spec_path = stored.dir.join(SPEC);
        let text = std::fs::read_to_string(&spec_path).map_err(|source| SpecError::Io {
            path: spec_path.clone(),
            source,
        })?;
        let spec = Spec::parse_stored(&text, &spec_path)?;
        let network = Network::new(&spec, device).load_safetensors(
            &stored.dir.join(WEIGHTS),
            device,
            false,
        )?;
        Ok(Runnable {
            manifest,
            spec,
            network,
            device: device.clone(),
        })
    }

    /// The network, for evaluation.
    pub fn network(&self) -> &Network {
        &self.network
    }

    /// The device it runs on.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// Outputs `[batch, width]` (row-major) for `batch` raw input samples.
    pub fn predict(&self, values: &[f32], batch: usize) -> Result<(Vec<f32>, usize), ServeError> {
        let x = self.network.input(values, batch, &self.device)?;
        let out = self.network.forward(x);
        let width = out.dims()[1];
        let values = out.into_data().try_to_vec::<f32>().expect("f32 outputs");
        Ok((values, width))
    }

    /// Where the version's files are (for messages).
    pub fn describe(&self) -> String {
        format!("{}@{}", self.manifest.name, self.manifest.version)
    }
}
