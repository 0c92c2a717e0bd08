//! What a generation is asked for (how each token is chosen, when it stops) and why it
//! ended: the settings the CLI, the server and the engine share.

use crate::TextError;

/// How the next token is chosen, and when generation stops.
#[derive(Debug, Clone, PartialEq)]
pub struct Sampling {
    /// Ids to generate at most.
    pub max_tokens: usize,
    /// Logits are divided by it; 0 picks the most likely token (greedy).
    pub temperature: f64,
    /// Keep only the k most likely tokens (0: all).
    pub top_k: usize,
    /// Keep the fewest most likely tokens whose probability reaches p (1: all).
    pub top_p: f64,
    /// Seed of the draws.
    pub seed: u64,
    /// Strings that end the generation (not included in the text).
    pub stop: Vec<String>,
}

impl Default for Sampling {
    fn default() -> Sampling {
        Sampling {
            max_tokens: 100,
            temperature: 1.0,
            top_k: 0,
            top_p: 1.0,
            seed: 0,
            stop: Vec::new(),
        }
    }
}

impl Sampling {
    /// Refuses settings that cannot work, naming the fix.
    pub fn check(&self) -> Result<(), TextError> {
        let bad = |m: String| Err(TextError::Settings(m));
        if self.max_tokens == 0 {
            return bad("max_tokens is 0 — generate 1 or more tokens".into());
        }
        if !(self.temperature >= 0.0 && self.temperature.is_finite()) {
            return bad(format!(
                "temperature {} — use 0 (greedy) or a positive number such as 0.8",
                self.temperature
            ));
        }
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            return bad(format!("top_p {} — use a value in (0, 1]", self.top_p));
        }
        if self.stop.iter().any(String::is_empty) {
            return bad("an empty stop string would stop at once — remove it".into());
        }
        Ok(())
    }
}

/// Why a generation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Finish {
    /// `max_tokens` were generated.
    Length,
    /// A stop string was generated (it is not part of the text).
    Stop,
}

impl Finish {
    /// The OpenAI `finish_reason` name.
    pub fn name(self) -> &'static str {
        match self {
            Finish::Length => "length",
            Finish::Stop => "stop",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_out_of_range_are_refused() {
        for f in [
            |s: &mut Sampling| s.max_tokens = 0,
            |s: &mut Sampling| s.temperature = -1.0,
            |s: &mut Sampling| s.top_p = 0.0,
            |s: &mut Sampling| s.stop = vec![String::new()],
        ] {
            let mut s = Sampling::default();
            f(&mut s);
            assert!(s.check().is_err(), "{s:?}");
        }
    }
}
