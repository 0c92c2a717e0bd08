//! Generation against a small random GPT: the cached session picks exactly what a full
//! pass over the whole prefix picks, prompts are checked, stop strings cut the stream.

use modelforge_model::Network;
use modelforge_model::burn::tensor::{Device, Int, Tensor, TensorData};
use modelforge_text::Tokenizer;

use super::*;

const CORPUS: &str = "ROMEO:\nBut soft, what light through yonder window breaks?\n";

fn model(context: usize) -> LanguageModel {
    let tokenizer = Tokenizer::chars(CORPUS);
    let vocab = tokenizer.vocab_size();
    let text = format!(
        r#"
name = "tiny"
input = {{ shape = [{context}], dtype = "i64" }}
output = {{ task = "language_model" }}
layers = [
  {{ embedding = {{ vocab = {vocab}, dim = 16 }}, name = "wte" }},
  {{ positional_embedding = {{ context = {context} }} }},
  {{ block = "b", repeat = 2, name = "h" }},
  {{ layer_norm = {{}} }},
  {{ tied_head = {{ embedding = "wte" }} }},
]
[blocks.b]
layers = [
  {{ layer_norm = {{}} }},
  {{ self_attention = {{ heads = 2 }}, name = "attn" }},
  {{ add = {{}}, inputs = ["input", "attn"], name = "mid" }},
  {{ dense = {{ units = 16 }}, name = "mlp" }},
  {{ add = {{}}, inputs = ["mid", "mlp"] }},
]
"#
    );
    let spec: modelforge_spec::ModelSpec = toml::from_str(&text).unwrap();
    let graph = modelforge_spec::graph::build(&spec).unwrap();
    let device = Device::flex();
    device.seed(3);
    let network = Network::from_graph(&graph, spec.input.get_ref(), &device);
    LanguageModel::new(network, tokenizer, &device).unwrap()
}

fn greedy(max_tokens: usize) -> Sampling {
    Sampling {
        max_tokens,
        temperature: 0.0,
        ..Sampling::default()
    }
}

/// The greedy continuation by running the whole prefix through the network at every step.
fn greedy_without_cache(m: &LanguageModel, prompt: &str, n: usize) -> String {
    let mut ids: Vec<i64> = m
        .tokenizer
        .encode(prompt)
        .unwrap()
        .into_iter()
        .map(i64::from)
        .collect();
    let start = ids.len();
    for _ in 0..n {
        let len = ids.len();
        let x = Tensor::<2, Int>::from_data(TensorData::new(ids.clone(), [1, len]), &m.device);
        let logits = m.network.forward_tokens(x, None);
        let row: Vec<f32> = logits
            .slice([0..1, len - 1..len, 0..m.vocab])
            .into_data()
            .try_to_vec()
            .unwrap();
        ids.push(Sampler::new(&greedy(1)).sample(&row) as i64);
    }
    let new: Vec<u32> = ids[start..].iter().map(|&i| i as u32).collect();
    m.tokenizer.decode(&new).unwrap()
}

#[test]
fn the_cached_session_generates_what_full_passes_generate() {
    let m = model(32);
    let mut streamed = String::new();
    let out = m
        .generate("ROMEO:", &greedy(20), &mut |t| streamed.push_str(t))
        .unwrap();
    assert_eq!(out.tokens, 20);
    assert_eq!(out.prompt_tokens, 6);
    assert_eq!(out.finish, Finish::Length);
    assert_eq!(streamed, out.text);
    assert_eq!(out.text, greedy_without_cache(&m, "ROMEO:", 20));
}

#[test]
fn generation_runs_past_the_context_by_sliding_the_window() {
    let m = model(8);
    let out = m.generate("ROMEO:", &greedy(30), &mut |_| {}).unwrap();
    assert_eq!(out.tokens, 30);
    assert_eq!(out.text.chars().count(), 30);
}

#[test]
fn sampling_repeats_with_its_seed() {
    let m = model(32);
    let s = Sampling {
        max_tokens: 25,
        temperature: 0.9,
        top_k: 5,
        seed: 11,
        ..Sampling::default()
    };
    let a = m.generate("But", &s, &mut |_| {}).unwrap().text;
    let b = m.generate("But", &s, &mut |_| {}).unwrap().text;
    assert_eq!(a, b);
}

#[test]
fn a_stop_string_ends_the_text_before_it_and_is_never_streamed() {
    let m = model(32);
    let full = m.generate("ROMEO:", &greedy(20), &mut |_| {}).unwrap().text;
    // Stop at the piece that starts at the fourth character of the greedy text.
    let stop: String = full.chars().skip(3).take(2).collect();
    let cut = full.find(&stop).unwrap();
    let s = Sampling {
        stop: vec![stop.clone()],
        ..greedy(20)
    };
    let mut streamed = String::new();
    let out = m
        .generate("ROMEO:", &s, &mut |t| streamed.push_str(t))
        .unwrap();
    assert_eq!(out.finish, Finish::Stop);
    assert_eq!(out.text, full[..cut]);
    assert_eq!(streamed, out.text);
}

#[test]
fn bad_prompts_are_refused_with_the_fix() {
    let m = model(8);
    let long = m.start("But soft, what light", &greedy(5)).err().unwrap();
    assert!(matches!(
        long,
        GenerateError::PromptTooLong {
            tokens: 20,
            context: 8
        }
    ));
    assert!(long.to_string().contains("shorten the prompt"));
    let foreign = m.start("Zounds", &greedy(5)).err().unwrap();
    assert!(foreign.to_string().contains("'Z'"), "{foreign}");
    assert!(matches!(
        m.start("", &greedy(5)),
        Err(GenerateError::EmptyPrompt)
    ));
}

/// Three generations that join at different steps (their prompts prefilled two ids at a
/// time), run past the context and stop at different lengths, stepped together: each gets
/// exactly the text it gets alone.
#[test]
fn sequences_stepped_together_generate_what_each_generates_alone() {
    let m = model(16);
    let requests = [
        ("ROMEO:", greedy(20)),
        (
            "But soft, what",
            Sampling {
                max_tokens: 12,
                temperature: 0.9,
                top_k: 5,
                seed: 4,
                ..Sampling::default()
            },
        ),
        ("light", greedy(25)),
    ];
    let alone: Vec<String> = requests
        .iter()
        .map(|(p, s)| m.generate(p, s, &mut |_| {}).unwrap().text)
        .collect();
    let mut sequences: Vec<Sequence> = requests
        .iter()
        .map(|(p, s)| m.start(p, s).unwrap())
        .collect();
    let mut texts = vec![String::new(); sequences.len()];
    while sequences.iter().any(|s| s.finish().is_none()) {
        let mut ready = Vec::new();
        for (i, s) in sequences.iter_mut().enumerate() {
            if s.is_prefilled() {
                ready.push((i, s));
            } else {
                m.prefill(s, 2);
            }
        }
        let (index, mut batch): (Vec<usize>, Vec<&mut Sequence>) = ready.into_iter().unzip();
        for (i, piece) in index.into_iter().zip(m.step(&mut batch).unwrap()) {
            texts[i].push_str(&piece);
        }
    }
    assert_eq!(texts, alone);
    let done: Vec<Generated> = sequences.into_iter().map(Sequence::finished).collect();
    assert_eq!(
        done.iter().map(|d| d.tokens).collect::<Vec<_>>(),
        [20, 12, 25]
    );
}
