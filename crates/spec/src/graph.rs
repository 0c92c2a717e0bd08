//! Drawings of the model graph: Graphviz DOT text and a standalone SVG.

use crate::{Spec, group_thousands, show_shape};

/// One box of the drawing: a title line and a detail line.
fn nodes(spec: &Spec) -> Vec<(String, String)> {
    let input = spec.model.input.get_ref();
    let output = spec.model.output.get_ref();
    let mut nodes = vec![(
        format!("input: {}", input.name),
        format!("{:?} {}", input.dtype, show_shape(&input.shape)).to_lowercase(),
    )];
    for info in spec.layer_infos() {
        let params = if info.parameters > 0 {
            format!(" · {} params", group_thousands(info.parameters))
        } else {
            String::new()
        };
        nodes.push((
            format!("{}: {}", info.index, info.kind),
            format!(
                "{} → {}{params}",
                show_shape(&info.input_shape),
                show_shape(&info.output_shape)
            ),
        ));
    }
    nodes.push((
        format!("output: {}", output.name),
        format!(
            "{} {}",
            output.task.name(),
            show_shape(&spec.output_shape())
        ),
    ));
    nodes
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// The graph in Graphviz DOT.
pub fn to_dot(spec: &Spec) -> String {
    let mut out = format!(
        "digraph \"{}\" {{\n  rankdir=TB;\n  node [shape=box, style=rounded, fontname=\"Helvetica\"];\n",
        spec.name()
    );
    let nodes = nodes(spec);
    for (i, (title, detail)) in nodes.iter().enumerate() {
        out += &format!(
            "  n{i} [label=\"{}\\n{}\"];\n",
            title.replace('"', "'"),
            detail.replace('"', "'")
        );
    }
    for i in 1..nodes.len() {
        out += &format!("  n{} -> n{i};\n", i - 1);
    }
    out + "}\n"
}

/// The graph as a standalone SVG picture, top to bottom.
pub fn to_svg(spec: &Spec) -> String {
    let nodes = nodes(spec);
    let (box_h, gap, margin) = (44.0, 26.0, 20.0);
    let longest = nodes
        .iter()
        .map(|(a, b)| a.chars().count().max(b.chars().count()))
        .max()
        .unwrap_or(10) as f64;
    let box_w = (longest * 7.2 + 24.0).max(180.0);
    let width = box_w + 2.0 * margin;
    let height = nodes.len() as f64 * (box_h + gap) - gap + 2.0 * margin;
    let mut out = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width}\" height=\"{height}\" viewBox=\"0 0 {width} {height}\" font-family=\"Helvetica, Arial, sans-serif\">\n\
         <defs><marker id=\"arrow\" viewBox=\"0 0 10 10\" refX=\"10\" refY=\"5\" markerWidth=\"7\" markerHeight=\"7\" orient=\"auto\"><path d=\"M0,0 L10,5 L0,10 z\" fill=\"#555\"/></marker></defs>\n\
         <rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n"
    );
    for (i, (title, detail)) in nodes.iter().enumerate() {
        let y = margin + i as f64 * (box_h + gap);
        let fill = if i == 0 || i + 1 == nodes.len() {
            "#e8f0fe"
        } else {
            "#f5f5f5"
        };
        out += &format!(
            "<rect x=\"{margin}\" y=\"{y}\" width=\"{box_w}\" height=\"{box_h}\" rx=\"8\" fill=\"{fill}\" stroke=\"#555\"/>\n\
             <text x=\"{cx}\" y=\"{t1}\" text-anchor=\"middle\" font-size=\"13\" font-weight=\"bold\">{}</text>\n\
             <text x=\"{cx}\" y=\"{t2}\" text-anchor=\"middle\" font-size=\"11\" fill=\"#333\">{}</text>\n",
            escape(title),
            escape(detail),
            cx = margin + box_w / 2.0,
            t1 = y + 18.0,
            t2 = y + 34.0,
        );
        if i + 1 < nodes.len() {
            out += &format!(
                "<line x1=\"{cx}\" y1=\"{y1}\" x2=\"{cx}\" y2=\"{y2}\" stroke=\"#555\" marker-end=\"url(#arrow)\"/>\n",
                cx = margin + box_w / 2.0,
                y1 = y + box_h,
                y2 = y + box_h + gap,
            );
        }
    }
    out + "</svg>\n"
}
