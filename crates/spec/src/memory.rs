//! What training a model needs in memory — its parameters, their gradients, the
//! optimiser's state and the activations of one batch — so that a size no machine holds
//! is refused when the spec is checked, with the figure, instead of aborting the process
//! when the weights are allocated.

use crate::graph::Graph;
use crate::layer::LayerSpec;
use crate::train::OptimizerSpec;

/// Bytes of one f32 value.
const F32: u128 = 4;

/// Bytes training needs, by what holds them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Need {
    /// The weights.
    pub parameters: u128,
    /// One gradient per weight.
    pub gradients: u128,
    /// Optimiser state: two moments per weight for Adam and AdamW, one for SGD with
    /// momentum.
    pub optimizer: u128,
    /// Every node's output for one batch, kept for the backward pass, and its gradient
    /// (attention adds its score matrices).
    pub activations: u128,
    /// The node holding the most (weights and activations), by name.
    pub largest: Option<String>,
}

impl Need {
    /// Everything together.
    pub fn total(&self) -> u128 {
        self.parameters + self.gradients + self.optimizer + self.activations
    }
}

/// What training `graph` with `optimizer` at `batch` samples per step needs.
pub fn need(graph: &Graph, optimizer: &OptimizerSpec, batch: usize) -> Need {
    let batch = batch as u128;
    let mut largest = (0u128, None);
    let (mut parameters, mut activations) = (0u128, 0u128);
    for node in &graph.nodes {
        let weights = match node.shares {
            Some(_) => 0,
            None => node.parameters as u128 * F32,
        };
        let values: u128 = node.output_shape.iter().map(|&d| d as u128).product();
        // Attention keeps a [positions × positions] score and weight matrix per head.
        let scores = match &node.layer {
            LayerSpec::SelfAttention { heads, .. } => {
                let positions = node.output_shape.first().copied().unwrap_or(1) as u128;
                2 * *heads as u128 * positions * positions
            }
            _ => 0,
        };
        // The output and its gradient.
        let held = 2 * (values + scores) * batch * F32;
        parameters += weights;
        activations += held;
        if weights + held > largest.0 {
            largest = (weights + held, Some(node.name.clone()));
        }
    }
    let input: u128 = graph.input_shape.iter().map(|&d| d as u128).product();
    activations += input * batch * F32;
    let moments = match optimizer {
        OptimizerSpec::Adam { .. } | OptimizerSpec::Adamw { .. } => 2,
        OptimizerSpec::Sgd { momentum, .. } if *momentum != 0.0 => 1,
        OptimizerSpec::Sgd { .. } => 0,
    };
    Need {
        parameters,
        gradients: parameters,
        optimizer: moments * parameters,
        activations,
        largest: largest.1,
    }
}

/// The machine's memory in bytes (`MemTotal` of `/proc/meminfo`), where it can be read.
pub fn machine() -> Option<u128> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: u128 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// Bytes for a person: `812 KiB`, `1.4 GiB`, `3.6e5 TiB`.
pub fn human(bytes: u128) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    match (unit, value) {
        (0, v) => format!("{v} B"),
        (_, v) if v >= 1e5 => format!("{v:.1e} {}", UNITS[unit]),
        (_, v) if v >= 100.0 => format!("{v:.0} {}", UNITS[unit]),
        (_, v) => format!("{v:.1} {}", UNITS[unit]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn graph(layers: &str, input: &str) -> Graph {
        let spec: crate::ModelSpec = toml::from_str(&format!(
            "name = \"m\"\ninput = {{ shape = {input} }}\noutput = {{ task = \"regression\" }}\nlayers = {layers}\n"
        ))
        .unwrap();
        crate::graph::build(&spec).unwrap()
    }

    #[test]
    fn an_mlp_needs_its_weights_four_times_with_adam_plus_its_activations() {
        let g = graph("[{ dense = { units = 10 } }]", "[4]");
        let adam: OptimizerSpec = toml::from_str("kind = \"adam\"\nlr = 0.001").unwrap();
        let n = need(&g, &adam, 8);
        assert_eq!(n.parameters, 50 * 4);
        assert_eq!((n.gradients, n.optimizer), (200, 400));
        // The output (10 values) and its gradient, and the input, for 8 samples.
        assert_eq!(n.activations, (2 * 10 + 4) * 8 * 4);
        assert_eq!(n.largest.as_deref(), Some("layers.0"));
        let sgd: OptimizerSpec = toml::from_str("kind = \"sgd\"\nlr = 0.1").unwrap();
        assert_eq!(need(&g, &sgd, 8).optimizer, 0);
    }

    #[test]
    fn an_absurd_layer_is_counted_without_overflow() {
        let g = graph("[{ dense = { units = 100000000000 } }]", "[784]");
        let adam: OptimizerSpec = toml::from_str("kind = \"adam\"\nlr = 0.001").unwrap();
        let n = need(&g, &adam, 64);
        assert!(n.total() > 1 << 50, "{}", human(n.total()));
        assert_eq!(human(1536), "1.5 KiB");
        assert_eq!(human(3 << 30), "3.0 GiB");
    }
}
