//! Pictures of attributions a person would rather look at than read: a heat map over an
//! image (positive red, negative blue, over the image in grey), the top features as bars,
//! and tokens on backgrounds coloured by their attribution. Plain SVG, no fonts needed.

use std::fmt::Write as _;

use modelforge_explain::{Attributions, Explain, Method};
use serde_json::{Value, json};

use crate::escape;

/// How a model's input is shown.
#[derive(Debug, Clone, PartialEq)]
pub enum Look {
    /// An image of this per-sample shape (`[channels,] height, width`).
    Image(Vec<usize>),
    /// Named features (a table's columns).
    Features(Vec<String>),
    /// Text: each sample's tokens as pieces of text.
    Tokens(Vec<Vec<String>>),
}

impl Look {
    /// The look of a per-sample input shape: an image when it has rows and columns, else
    /// features named `names` (or numbered).
    pub fn of_shape(shape: &[usize], names: Option<Vec<String>>) -> Look {
        match (shape, names) {
            ([_, h, w] | [h, w], None) if *h > 1 && *w > 1 => Look::Image(shape.to_vec()),
            (_, Some(names)) => Look::Features(names),
            (_, None) => Look::Features(
                (0..shape.iter().product())
                    .map(|i| format!("feature {i}"))
                    .collect(),
            ),
        }
    }
}

/// The name of an explanation's method as people read it.
pub fn method_name(settings: &Explain) -> String {
    let base = match settings.method {
        Method::Saliency => "saliency".to_string(),
        Method::InputXGradient => "input × gradient".to_string(),
        Method::IntegratedGradients => format!(
            "integrated gradients ({} steps, {})",
            settings.steps,
            settings.rule.name()
        ),
    };
    match settings.smoothing {
        Some(s) => format!("SmoothGrad of {base} over {} samples", s.samples),
        None => base,
    }
}

/// The line under a sample's picture: method, target and its score, and the delta.
fn caption(settings: &Explain, a: &Attributions, sample: usize, labels: &[String]) -> String {
    let t = a.targets[sample];
    let label = labels
        .get(t)
        .map_or(format!("output {t}"), |l| format!("{l:?} (output {t})"));
    let score = a.outputs[sample * a.output_len + t];
    let mut text = format!("{} of {label}, score {score:.4}", method_name(settings));
    if let (Some(delta), Some(gap)) = (&a.delta, &a.gap) {
        let _ = write!(
            text,
            "; convergence delta {:.2e} of {:.4}",
            delta[sample], gap[sample]
        );
    }
    text
}

/// One picture per sample: `attributions.svg` for the first, `attributions-N.svg` for
/// sample N; `inputs` are the samples' raw values.
pub fn pictures(
    look: &Look,
    inputs: &[f32],
    a: &Attributions,
    settings: &Explain,
    labels: &[String],
) -> Vec<(String, String)> {
    let batch = a.targets.len();
    let per = a.values.len() / batch.max(1);
    let per_input = inputs.len() / batch.max(1);
    (0..batch)
        .map(|s| {
            let values = &a.values[s * per..(s + 1) * per];
            let text = caption(settings, a, s, labels);
            let svg = match look {
                Look::Image(shape) => heat_map(
                    values,
                    &inputs[s * per_input..(s + 1) * per_input],
                    shape,
                    &text,
                ),
                Look::Features(names) => bars(names, values, 12, &text),
                Look::Tokens(pieces) => tokens(&pieces[s], values, &text),
            };
            let name = match s {
                0 => "attributions.svg".to_string(),
                n => format!("attributions-{n}.svg"),
            };
            (name, svg)
        })
        .collect()
}

/// `attributions.json`: the settings, and per sample the target, outputs, attributions
/// (in the per-sample shape) and, for integrated gradients, the delta.
pub fn document(
    model: &str,
    version: u64,
    a: &Attributions,
    settings: &Explain,
    labels: &[String],
) -> Value {
    let batch = a.targets.len();
    let per = a.values.len() / batch.max(1);
    let samples: Vec<Value> = (0..batch)
        .map(|s| {
            let t = a.targets[s];
            let mut sample = json!({
                "target": t,
                "outputs": &a.outputs[s * a.output_len..(s + 1) * a.output_len],
                "attributions": &a.values[s * per..(s + 1) * per],
            });
            if let Some(label) = labels.get(t) {
                sample["label"] = json!(label);
            }
            if let (Some(delta), Some(gap)) = (&a.delta, &a.gap) {
                sample["convergence_delta"] = json!(delta[s]);
                sample["output_change"] = json!(gap[s]);
            }
            sample
        })
        .collect();
    json!({
        "model": model,
        "version": version,
        "method": settings.method.name(),
        "steps": (settings.method == Method::IntegratedGradients).then_some(settings.steps),
        "rule": (settings.method == Method::IntegratedGradients).then_some(settings.rule.name()),
        "smoothing": settings.smoothing.map(|s| json!({"samples": s.samples, "stdev": s.stdev, "seed": s.seed})),
        "shape": a.shape,
        "samples": samples,
    })
}

/// Red for positive attributions, blue for negative ones.
const POSITIVE: (u8, u8, u8) = (0xd6, 0x27, 0x28);
const NEGATIVE: (u8, u8, u8) = (0x1f, 0x77, 0xb4);

/// The colour and opacity of an attribution relative to the largest magnitude.
fn shade(value: f32, scale: f32) -> (String, f32) {
    let (r, g, b) = if value >= 0.0 { POSITIVE } else { NEGATIVE };
    let alpha = if scale > 0.0 {
        (value.abs() / scale).min(1.0)
    } else {
        0.0
    };
    (format!("#{r:02x}{g:02x}{b:02x}"), alpha)
}

/// The largest magnitude among the values.
fn magnitude(values: &[f32]) -> f32 {
    values.iter().fold(0f32, |m, v| m.max(v.abs()))
}

/// A heat map of `[channels,] height, width` attributions (summed over channels) over the
/// image they explain, drawn in grey beneath; `caption` goes below.
pub fn heat_map(attributions: &[f32], image: &[f32], shape: &[usize], caption: &str) -> String {
    let (channels, height, width) = match *shape {
        [h, w] => (1, h, w),
        [c, h, w] => (c, h, w),
        _ => (1, 1, attributions.len()),
    };
    let plane = height * width;
    let summed: Vec<f32> = (0..plane)
        .map(|i| (0..channels).map(|c| attributions[c * plane + i]).sum())
        .collect();
    let grey: Vec<f32> = (0..plane)
        .map(|i| (0..channels).map(|c| image[c * plane + i]).sum::<f32>() / channels as f32)
        .collect();
    let (lo, hi) = grey
        .iter()
        .fold((f32::INFINITY, f32::NEG_INFINITY), |(l, h), &v| {
            (l.min(v), h.max(v))
        });
    let scale = magnitude(&summed);
    let cell = (280 / height.max(width)).max(2);
    let (w, h) = (cell * width, cell * height);
    let mut svg = String::new();
    let _ = write!(
        svg,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{}\" height=\"{}\" viewBox=\"0 0 {} {}\">",
        w + 20,
        h + 44,
        w + 20,
        h + 44
    );
    svg.push_str(
        "<rect width=\"100%\" height=\"100%\" fill=\"white\"/><g transform=\"translate(10,10)\">",
    );
    for (i, (&a, &p)) in summed.iter().zip(&grey).enumerate() {
        let (x, y) = ((i % width) * cell, (i / width) * cell);
        // The image: dark strokes on white, as digits are drawn.
        let level = match hi > lo {
            true => 255 - (((p - lo) / (hi - lo)) * 200.0) as u8,
            false => 255,
        };
        let _ = write!(
            svg,
            "<rect x=\"{x}\" y=\"{y}\" width=\"{cell}\" height=\"{cell}\" fill=\"rgb({level},{level},{level})\"/>"
        );
        let (colour, alpha) = shade(a, scale);
        if alpha > 0.02 {
            let _ = write!(
                svg,
                "<rect x=\"{x}\" y=\"{y}\" width=\"{cell}\" height=\"{cell}\" fill=\"{colour}\" fill-opacity=\"{alpha:.3}\"/>"
            );
        }
    }
    let _ = write!(
        svg,
        "</g><text x=\"10\" y=\"{}\" font-family=\"sans-serif\" font-size=\"12\">{}</text>\
         <text x=\"10\" y=\"{}\" font-family=\"sans-serif\" font-size=\"11\" fill=\"#555\">red raises the output, blue lowers it (max |a| = {scale:.3e})</text></svg>",
        h + 26,
        escape(caption),
        h + 40
    );
    svg
}

/// Horizontal bars of the `top` features with the largest attributions, by name.
pub fn bars(names: &[String], attributions: &[f32], top: usize, caption: &str) -> String {
    let mut order: Vec<usize> = (0..attributions.len()).collect();
    order.sort_by(|&a, &b| attributions[b].abs().total_cmp(&attributions[a].abs()));
    order.truncate(top);
    let scale = magnitude(attributions);
    let (label_w, bar_w, row) = (180usize, 260usize, 22usize);
    let height = order.len() * row + 50;
    let mut svg = String::new();
    let _ = write!(
        svg,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{}\" height=\"{height}\" font-family=\"sans-serif\" font-size=\"12\">\
         <rect width=\"100%\" height=\"100%\" fill=\"white\"/>",
        label_w + 2 * bar_w + 90
    );
    let zero = label_w + bar_w + 10;
    for (r, &i) in order.iter().enumerate() {
        let y = 10 + r * row;
        let a = attributions[i];
        let len = match scale > 0.0 {
            true => ((a.abs() / scale) * bar_w as f32) as usize,
            false => 0,
        };
        let (colour, _) = shade(a, scale);
        let x = if a >= 0.0 { zero } else { zero - len };
        let name = names
            .get(i)
            .cloned()
            .unwrap_or_else(|| format!("feature {i}"));
        let _ = write!(
            svg,
            "<text x=\"{}\" y=\"{}\" text-anchor=\"end\">{}</text>\
             <rect x=\"{x}\" y=\"{y}\" width=\"{len}\" height=\"{}\" fill=\"{colour}\"/>\
             <text x=\"{}\" y=\"{}\" fill=\"#333\">{a:+.4}</text>",
            label_w,
            y + 15,
            escape(&name),
            row - 6,
            zero + bar_w + 12,
            y + 15
        );
    }
    let _ = write!(
        svg,
        "<line x1=\"{zero}\" y1=\"6\" x2=\"{zero}\" y2=\"{}\" stroke=\"#888\"/>\
         <text x=\"10\" y=\"{}\">{}</text></svg>",
        order.len() * row + 12,
        height - 12,
        escape(caption)
    );
    svg
}

/// Tokens in a row, each on a background coloured by its attribution.
pub fn tokens(pieces: &[String], attributions: &[f32], caption: &str) -> String {
    let scale = magnitude(attributions);
    let (char_w, line_h, max_w) = (8usize, 26usize, 760usize);
    let mut svg = String::new();
    let (mut x, mut y) = (10usize, 10usize);
    let mut body = String::new();
    for (piece, &a) in pieces.iter().zip(attributions) {
        let shown = piece.replace('\n', "⏎");
        let w = shown.chars().count().max(1) * char_w + 6;
        if x + w > max_w {
            x = 10;
            y += line_h;
        }
        let (colour, alpha) = shade(a, scale);
        let _ = write!(
            body,
            "<rect x=\"{x}\" y=\"{y}\" width=\"{w}\" height=\"20\" rx=\"3\" fill=\"{colour}\" fill-opacity=\"{alpha:.3}\"><title>{a:+.4}</title></rect>\
             <text x=\"{}\" y=\"{}\" xml:space=\"preserve\">{}</text>",
            x + 3,
            y + 15,
            escape(&shown)
        );
        x += w + 2;
    }
    let height = y + line_h + 30;
    let _ = write!(
        svg,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{max_w}\" height=\"{height}\" font-family=\"monospace\" font-size=\"13\">\
         <rect width=\"100%\" height=\"100%\" fill=\"white\"/>{body}\
         <text x=\"10\" y=\"{}\" font-family=\"sans-serif\" font-size=\"12\">{}</text></svg>",
        height - 10,
        escape(caption)
    );
    svg
}

/// The report's attributions: integrated gradients (32 Gauss–Legendre steps; from black for
/// images, from the training mean for tables) of the first test sample of each class (the
/// first four of a regression), one picture each. An error says why there are none.
pub fn of_test_samples(
    spec: &modelforge_spec::Spec,
    weights: &std::path::Path,
) -> Result<(String, Vec<(String, String)>), String> {
    use modelforge_data::{Splits, Targets};
    use modelforge_explain::{Baseline, Setting};
    use modelforge_model::Network;
    use modelforge_model::burn::tensor::Device;
    use modelforge_spec::Task;

    let task = spec.model.output.get_ref().task;
    if task == Task::LanguageModel {
        return Err("a language model is explained per prompt, not in the report".into());
    }
    let prepared = modelforge_data::prepare(spec)
        .map_err(|e| format!("the test data cannot be read ({e})"))?;
    let Splits::Examples(examples) = prepared.splits else {
        return Err("the data holds no examples".into());
    };
    let test = &examples.test;
    let width = test.sample_len();
    let picked: Vec<usize> = match &test.targets {
        Targets::Classes(classes) => {
            let n = classes
                .iter()
                .copied()
                .max()
                .map_or(0, |m| m as usize + 1)
                .min(12);
            (0..n as u32)
                .filter_map(|c| classes.iter().position(|&k| k == c))
                .collect()
        }
        Targets::Values { .. } => (0..test.len().min(4)).collect(),
    };
    if picked.is_empty() {
        return Err("the test split is empty".into());
    }
    let device = Device::flex();
    let network = Network::new(spec, &device)
        .load_safetensors(weights, &device, false)
        .map_err(|e| e.to_string())?;
    let inputs: Vec<f32> = picked
        .iter()
        .flat_map(|&i| test.features[i * width..(i + 1) * width].iter().copied())
        .collect();
    let look = Look::of_shape(&test.sample_shape, None);
    let image = matches!(look, Look::Image(_));
    let train = &examples.train;
    let mean: Vec<f32> = (0..width)
        .map(|j| {
            let sum: f64 = (0..train.len())
                .map(|r| train.features[r * width + j] as f64)
                .sum();
            (sum / train.len().max(1) as f64) as f32
        })
        .collect();
    let settings = Explain {
        steps: 32,
        baseline: if image {
            Baseline::Zeros
        } else {
            Baseline::Mean
        },
        ..Explain::default()
    };
    let setting = Setting {
        device: &device,
        mean: Some(&mean),
        budget_bytes: modelforge_explain::BUDGET_BYTES,
        classifies: task != Task::Regression,
    };
    let a = modelforge_explain::explain(&network, &inputs, picked.len(), &settings, &setting)
        .map_err(|e| e.to_string())?;
    let labels = &spec.model.output.get_ref().labels;
    let pictures = pictures(&look, &inputs, &a, &settings, labels)
        .into_iter()
        .enumerate()
        .map(|(i, (_, svg))| (format!("attribution-{i}.svg"), svg))
        .collect();
    let from = if image {
        "a black image"
    } else {
        "the training mean"
    };
    let what = match task {
        Task::Regression => "the first test samples",
        _ => "the first test sample of each class",
    };
    Ok((
        format!(
            "{} from {from}, for {what} (each explains the model's predicted output)",
            method_name(&settings)
        ),
        pictures,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_heat_map_colours_each_pixel_by_sign_and_size() {
        let a = [1.0, -0.5, 0.0, 0.25];
        let svg = heat_map(&a, &[0.0, 1.0, 1.0, 0.0], &[1, 2, 2], "digit <7>");
        assert!(svg.starts_with("<svg") && svg.ends_with("</svg>"));
        assert!(
            svg.contains("fill=\"#d62728\" fill-opacity=\"1.000\""),
            "{svg}"
        );
        assert!(
            svg.contains("fill=\"#1f77b4\" fill-opacity=\"0.500\""),
            "{svg}"
        );
        assert!(svg.contains("digit &lt;7&gt;"));
        // The zero attribution draws no overlay: 4 pixels, 3 overlays, 1 background.
        assert_eq!(svg.matches("<rect").count(), 1 + 4 + 3);
    }

    #[test]
    fn bars_show_the_largest_features_first_by_name() {
        let names: Vec<String> = ["a", "b", "c"].map(String::from).to_vec();
        let svg = bars(&names, &[0.1, -0.9, 0.4], 2, "why");
        let b = svg.find(">b<").unwrap();
        let c = svg.find(">c<").unwrap();
        assert!(b < c && !svg.contains(">a<"), "{svg}");
        let t = tokens(&["to".into(), " be".into()], &[0.5, -1.0], "tokens");
        assert!(
            t.contains("xml:space=\"preserve\"> be<") && t.contains("-1.0000"),
            "{t}"
        );
    }
}
