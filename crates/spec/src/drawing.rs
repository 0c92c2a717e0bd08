//! Drawings of the model graph: Graphviz DOT text and a standalone SVG.

use crate::{Source, Spec, group_thousands, show_shape};

/// A box of the drawing: its title line and its detail line.
type Label = (String, String);

/// The boxes of the drawing and the edges between them as (from, to) box indices: box 0 is
/// the input, the last box the output.
fn boxes(spec: &Spec) -> (Vec<Label>, Vec<(usize, usize)>) {
    let input = spec.model.input.get_ref();
    let output = spec.model.output.get_ref();
    let graph = spec.graph();
    let mut nodes = vec![(
        format!("input: {}", input.name),
        format!("{:?} {}", input.dtype, show_shape(&input.shape)).to_lowercase(),
    )];
    let mut edges = Vec::new();
    for (i, node) in graph.nodes.iter().enumerate() {
        let params = if node.parameters > 0 {
            format!(" · {} params", group_thousands(node.parameters))
        } else {
            String::new()
        };
        let shapes: Vec<String> = node.input_shapes.iter().map(|s| show_shape(s)).collect();
        nodes.push((
            format!("{}: {}", node.name, node.layer.kind()),
            format!(
                "{} → {}{params}",
                shapes.join(" + "),
                show_shape(&node.output_shape)
            ),
        ));
        for source in &node.inputs {
            let from = match source {
                Source::Input => 0,
                Source::Node(j) => j + 1,
            };
            edges.push((from, i + 1));
        }
    }
    nodes.push((
        format!("output: {}", output.name),
        format!(
            "{} {}",
            output.task.name(),
            show_shape(graph.output_shape())
        ),
    ));
    edges.push((nodes.len() - 2, nodes.len() - 1));
    (nodes, edges)
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
    let (nodes, edges) = boxes(spec);
    for (i, (title, detail)) in nodes.iter().enumerate() {
        out += &format!(
            "  n{i} [label=\"{}\\n{}\"];\n",
            title.replace('"', "'"),
            detail.replace('"', "'")
        );
    }
    for (from, to) in edges {
        out += &format!("  n{from} -> n{to};\n");
    }
    out + "}\n"
}

/// The graph as a standalone SVG picture, top to bottom: each box under the one before it,
/// an edge that skips boxes (a residual or a branch) drawn as an arc on the right.
pub fn to_svg(spec: &Spec) -> String {
    let (nodes, edges) = boxes(spec);
    let (box_h, gap, margin) = (44.0, 26.0, 20.0);
    let longest = nodes
        .iter()
        .map(|(a, b)| a.chars().count().max(b.chars().count()))
        .max()
        .unwrap_or(10) as f64;
    let box_w = (longest * 7.2 + 24.0).max(180.0);
    let skips: Vec<(usize, usize)> = edges.iter().copied().filter(|(f, t)| t - f > 1).collect();
    let arc_room = if skips.is_empty() { 0.0 } else { 60.0 };
    let width = box_w + 2.0 * margin + arc_room;
    let height = nodes.len() as f64 * (box_h + gap) - gap + 2.0 * margin;
    let mut out = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width}\" height=\"{height}\" viewBox=\"0 0 {width} {height}\" font-family=\"Helvetica, Arial, sans-serif\">\n\
         <defs><marker id=\"arrow\" viewBox=\"0 0 10 10\" refX=\"10\" refY=\"5\" markerWidth=\"7\" markerHeight=\"7\" orient=\"auto\"><path d=\"M0,0 L10,5 L0,10 z\" fill=\"#555\"/></marker></defs>\n\
         <rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n"
    );
    let top = |i: usize| margin + i as f64 * (box_h + gap);
    let cx = margin + box_w / 2.0;
    for (i, (title, detail)) in nodes.iter().enumerate() {
        let y = top(i);
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
            t1 = y + 18.0,
            t2 = y + 34.0,
        );
    }
    for (from, to) in edges {
        if to == from + 1 {
            out += &format!(
                "<line x1=\"{cx}\" y1=\"{y1}\" x2=\"{cx}\" y2=\"{y2}\" stroke=\"#555\" marker-end=\"url(#arrow)\"/>\n",
                y1 = top(from) + box_h,
                y2 = top(to),
            );
        } else {
            let right = margin + box_w;
            let (y1, y2) = (top(from) + box_h / 2.0, top(to) + box_h / 2.0);
            let bulge = right + (20.0 + 8.0 * (to - from) as f64).min(arc_room - 4.0);
            out += &format!(
                "<path d=\"M{right},{y1} C{bulge},{y1} {bulge},{y2} {right},{y2}\" fill=\"none\" stroke=\"#555\" marker-end=\"url(#arrow)\"/>\n"
            );
        }
    }
    out + "</svg>\n"
}
