//! How an attribution is asked for — the method, its integration rule, baseline, target and
//! smoothing — as the CLI, the server and the report take it. `modelforge-explain` computes it.

use std::str::FromStr;

use crate::SpecError;

/// Integration steps one integrated-gradients explanation may take at most.
pub const MAX_STEPS: usize = 1024;
/// Noisy copies one SmoothGrad explanation may average at most.
pub const MAX_SAMPLES: usize = 256;

/// What an attribution measures, per input value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// |∂y/∂x|, Captum's `Saliency` (with `abs=True`).
    Saliency,
    /// x · ∂y/∂x, Captum's `InputXGradient`.
    InputXGradient,
    /// (x − b) · ∫₀¹ ∂y/∂x(b + α(x − b)) dα, Captum's `IntegratedGradients`.
    IntegratedGradients,
}

impl Method {
    /// Every method, by its name.
    pub const ALL: [Method; 3] = [
        Method::Saliency,
        Method::InputXGradient,
        Method::IntegratedGradients,
    ];

    /// The name requests and the CLI use.
    pub fn name(self) -> &'static str {
        match self {
            Method::Saliency => "saliency",
            Method::InputXGradient => "input-x-gradient",
            Method::IntegratedGradients => "integrated-gradients",
        }
    }
}

/// How the path integral of integrated gradients is approximated (Captum's
/// `method` argument of `IntegratedGradients.attribute`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rule {
    /// α = 0, 1/n, …, (n−1)/n, each weighing 1/n.
    RiemannLeft,
    /// α = 1/n, …, 1, each weighing 1/n.
    RiemannRight,
    /// α = (i + ½)/n, each weighing 1/n.
    RiemannMiddle,
    /// α = 0, 1/(n−1), …, 1, each weighing 1/n and the two ends half that (Captum's
    /// weights, which sum to (n−1)/n).
    RiemannTrapezoid,
    /// Gauss–Legendre nodes and weights on [0, 1] (Captum's default).
    GaussLegendre,
}

impl Rule {
    /// Every rule.
    pub const ALL: [Rule; 5] = [
        Rule::RiemannLeft,
        Rule::RiemannRight,
        Rule::RiemannMiddle,
        Rule::RiemannTrapezoid,
        Rule::GaussLegendre,
    ];

    /// The name requests and the CLI use (Captum's, with hyphens).
    pub fn name(self) -> &'static str {
        match self {
            Rule::RiemannLeft => "riemann-left",
            Rule::RiemannRight => "riemann-right",
            Rule::RiemannMiddle => "riemann-middle",
            Rule::RiemannTrapezoid => "riemann-trapezoid",
            Rule::GaussLegendre => "gauss-legendre",
        }
    }
}

/// The input integrated gradients starts from.
#[derive(Debug, Clone, PartialEq)]
pub enum Baseline {
    /// Every value 0.
    Zeros,
    /// Every value the same constant.
    Constant(f32),
    /// The training split's mean of each feature (recorded when the version was published).
    Mean,
    /// A given tensor of the input's shape.
    Values(Vec<f32>),
}

/// Which output is explained.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// The output with the highest score (the predicted class; output 0 of a regression).
    Predicted,
    /// This output index.
    Index(usize),
}

/// SmoothGrad: the attributions of noisy copies of the input, averaged.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Smoothing {
    /// Noisy copies averaged.
    pub samples: usize,
    /// Standard deviation of the Gaussian noise; None: 15 % of each sample's value range.
    pub stdev: Option<f32>,
    /// Seed of the noise.
    pub seed: u64,
}

/// One explanation request's settings.
#[derive(Debug, Clone, PartialEq)]
pub struct Explain {
    /// What is measured.
    pub method: Method,
    /// Integration steps (integrated gradients).
    pub steps: usize,
    /// Integration rule (integrated gradients).
    pub rule: Rule,
    /// Starting input (integrated gradients).
    pub baseline: Baseline,
    /// The output explained.
    pub target: Target,
    /// SmoothGrad over the method, if asked for.
    pub smoothing: Option<Smoothing>,
}

impl Default for Explain {
    fn default() -> Self {
        Explain {
            method: Method::IntegratedGradients,
            steps: 50,
            rule: Rule::GaussLegendre,
            baseline: Baseline::Zeros,
            target: Target::Predicted,
            smoothing: None,
        }
    }
}

/// A setting that is out of range: which, what is wrong and how to fix it.
fn invalid(field: &str, message: String, fix: String) -> SpecError {
    SpecError::Setting {
        field: field.to_string(),
        message,
        fix,
    }
}

/// Names of a list of choices, quoted, for a message.
fn choices(names: impl Iterator<Item = &'static str>) -> String {
    names
        .map(|n| format!("\"{n}\""))
        .collect::<Vec<_>>()
        .join(", ")
}

/// A setting that names none of the choices.
fn unknown(field: &str, got: &str, names: impl Iterator<Item = &'static str>) -> SpecError {
    invalid(
        field,
        format!("unknown {field} {got:?}"),
        format!("use one of {}", choices(names)),
    )
}

/// The name of the SmoothGrad method, which averages another method over noise.
pub const SMOOTHGRAD: &str = "smoothgrad";

impl FromStr for Method {
    type Err = SpecError;

    fn from_str(s: &str) -> Result<Method, SpecError> {
        let s = s.replace('_', "-");
        Method::ALL
            .into_iter()
            .find(|m| m.name() == s)
            .ok_or_else(|| {
                unknown(
                    "method",
                    &s,
                    Method::ALL.iter().map(|m| m.name()).chain([SMOOTHGRAD]),
                )
            })
    }
}

impl FromStr for Rule {
    type Err = SpecError;

    fn from_str(s: &str) -> Result<Rule, SpecError> {
        let s = match s.replace('_', "-").as_str() {
            "gausslegendre" => "gauss-legendre".to_string(),
            other => other.to_string(),
        };
        Rule::ALL
            .into_iter()
            .find(|r| r.name() == s)
            .ok_or_else(|| unknown("rule", &s, Rule::ALL.iter().map(|r| r.name())))
    }
}

impl FromStr for Baseline {
    type Err = SpecError;

    /// `zeros`, `mean` or a number (a constant); a tensor comes as [`Baseline::Values`].
    fn from_str(s: &str) -> Result<Baseline, SpecError> {
        match s {
            "zeros" | "zero" => Ok(Baseline::Zeros),
            "mean" => Ok(Baseline::Mean),
            other => match other.parse::<f32>() {
                Ok(v) if v.is_finite() => Ok(Baseline::Constant(v)),
                _ => Err(invalid(
                    "baseline",
                    format!("unknown baseline {other:?}"),
                    "use \"zeros\", \"mean\", a number, or a list of the input's values".into(),
                )),
            },
        }
    }
}

/// The raw settings of a request, each optional, before they are checked.
#[derive(Debug, Clone, Default)]
pub struct Asked {
    /// `saliency`, `input-x-gradient`, `integrated-gradients` or `smoothgrad`.
    pub method: Option<String>,
    /// The method SmoothGrad averages (default `saliency`).
    pub over: Option<String>,
    /// Integration steps.
    pub steps: Option<u64>,
    /// Integration rule.
    pub rule: Option<String>,
    /// Starting input.
    pub baseline: Option<Baseline>,
    /// Output index explained.
    pub target: Option<u64>,
    /// SmoothGrad's noisy copies.
    pub samples: Option<u64>,
    /// SmoothGrad's noise standard deviation.
    pub stdev: Option<f64>,
    /// SmoothGrad's noise seed.
    pub seed: Option<u64>,
}

impl Asked {
    /// The checked settings: names known, counts within their limits, fields only where
    /// their method takes them.
    pub fn check(self) -> Result<Explain, SpecError> {
        let defaults = Explain::default();
        let name = self.method.as_deref().unwrap_or(defaults.method.name());
        let smooth = name == SMOOTHGRAD;
        let method: Method = match smooth {
            true => self.over.as_deref().unwrap_or("saliency").parse()?,
            false => name.parse()?,
        };
        if !smooth {
            for (field, given) in [
                ("over", self.over.is_some()),
                ("samples", self.samples.is_some()),
                ("stdev", self.stdev.is_some()),
                ("seed", self.seed.is_some()),
            ] {
                if given {
                    return Err(invalid(
                        field,
                        format!("{field} applies to method \"smoothgrad\", not {name:?}"),
                        format!("drop {field}, or set method to \"smoothgrad\""),
                    ));
                }
            }
        }
        if method != Method::IntegratedGradients {
            for (field, given) in [
                ("steps", self.steps.is_some()),
                ("rule", self.rule.is_some()),
                ("baseline", self.baseline.is_some()),
            ] {
                if given {
                    return Err(invalid(
                        field,
                        format!(
                            "{field} applies to integrated gradients, not {:?}",
                            method.name()
                        ),
                        format!("drop {field}, or use method \"integrated-gradients\""),
                    ));
                }
            }
        }
        let steps = match self.steps {
            None => defaults.steps,
            Some(s) if (1..=MAX_STEPS as u64).contains(&s) => s as usize,
            Some(s) => {
                return Err(invalid(
                    "steps",
                    format!("steps {s} is out of range"),
                    format!("use 1 to {MAX_STEPS} steps (50 is Captum's default)"),
                ));
            }
        };
        let rule = match self.rule {
            Some(r) => r.parse()?,
            None => defaults.rule,
        };
        if rule == Rule::RiemannTrapezoid && steps < 2 {
            return Err(invalid(
                "steps",
                "the trapezoid rule needs at least 2 steps".into(),
                "use 2 or more steps".into(),
            ));
        }
        let smoothing = match smooth {
            false => None,
            true => Some(Smoothing {
                samples: match self.samples {
                    None => 16,
                    Some(s) if (1..=MAX_SAMPLES as u64).contains(&s) => s as usize,
                    Some(s) => {
                        return Err(invalid(
                            "samples",
                            format!("samples {s} is out of range"),
                            format!("use 1 to {MAX_SAMPLES} noisy samples"),
                        ));
                    }
                },
                stdev: match self.stdev {
                    None => None,
                    Some(s) if s.is_finite() && s >= 0.0 => Some(s as f32),
                    Some(s) => {
                        return Err(invalid(
                            "stdev",
                            format!("stdev {s} is not a standard deviation"),
                            "use a finite number of 0 or more".into(),
                        ));
                    }
                },
                seed: self.seed.unwrap_or(0),
            }),
        };
        Ok(Explain {
            method,
            steps,
            rule,
            baseline: self.baseline.unwrap_or(Baseline::Zeros),
            target: match self.target {
                Some(t) => Target::Index(usize::try_from(t).unwrap_or(usize::MAX)),
                None => Target::Predicted,
            },
            smoothing,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn asked(method: &str) -> Asked {
        Asked {
            method: Some(method.into()),
            ..Asked::default()
        }
    }

    #[test]
    fn names_parse_in_both_spellings() {
        assert_eq!(
            "input_x_gradient".parse::<Method>().unwrap(),
            Method::InputXGradient
        );
        assert_eq!(
            "gausslegendre".parse::<Rule>().unwrap(),
            Rule::GaussLegendre
        );
        assert_eq!(
            "riemann_trapezoid".parse::<Rule>().unwrap(),
            Rule::RiemannTrapezoid
        );
        assert_eq!("0.5".parse::<Baseline>().unwrap(), Baseline::Constant(0.5));
        let e = "lime".parse::<Method>().unwrap_err().to_string();
        assert!(e.contains("method") && e.contains("\"smoothgrad\""), "{e}");
    }

    #[test]
    fn smoothgrad_averages_another_method() {
        let e = Asked {
            over: Some("integrated-gradients".into()),
            samples: Some(4),
            stdev: Some(0.2),
            steps: Some(8),
            ..asked("smoothgrad")
        }
        .check()
        .unwrap();
        assert_eq!(e.method, Method::IntegratedGradients);
        assert_eq!(e.steps, 8);
        assert_eq!(
            e.smoothing,
            Some(Smoothing {
                samples: 4,
                stdev: Some(0.2),
                seed: 0
            })
        );
    }

    #[test]
    fn out_of_range_settings_name_their_field() {
        let cases = [
            (
                Asked {
                    steps: Some(0),
                    ..asked("integrated-gradients")
                },
                "steps",
            ),
            (
                Asked {
                    steps: Some(5000),
                    ..asked("integrated-gradients")
                },
                "steps",
            ),
            (
                Asked {
                    steps: Some(3),
                    ..asked("saliency")
                },
                "steps",
            ),
            (
                Asked {
                    samples: Some(4),
                    ..asked("saliency")
                },
                "samples",
            ),
            (
                Asked {
                    samples: Some(0),
                    ..asked("smoothgrad")
                },
                "samples",
            ),
            (
                Asked {
                    stdev: Some(-1.0),
                    ..asked("smoothgrad")
                },
                "stdev",
            ),
            (
                Asked {
                    rule: Some("simpson".into()),
                    ..asked("integrated-gradients")
                },
                "rule",
            ),
            (asked("occlusion"), "method"),
        ];
        for (asked, field) in cases {
            match asked.clone().check() {
                Err(SpecError::Setting { field: f, .. }) => assert_eq!(f, field, "{asked:?}"),
                other => panic!("{asked:?}: {other:?}"),
            }
        }
    }
}
