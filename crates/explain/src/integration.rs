//! The points and weights on [0, 1] at which integrated gradients samples the path from the
//! baseline to the input, for each of Captum's approximation rules.

use modelforge_spec::explain::Rule;

/// `steps` points α on [0, 1] and the weight of each, for `rule`; the weights sum to 1
/// (to (n − 1)/n for Captum's trapezoid).
pub fn points(rule: Rule, steps: usize) -> Vec<(f64, f64)> {
    let n = steps as f64;
    match rule {
        Rule::RiemannLeft => (0..steps).map(|i| (i as f64 / n, 1.0 / n)).collect(),
        Rule::RiemannRight => (1..=steps).map(|i| (i as f64 / n, 1.0 / n)).collect(),
        Rule::RiemannMiddle => (0..steps)
            .map(|i| ((i as f64 + 0.5) / n, 1.0 / n))
            .collect(),
        // Captum's weights, not the textbook trapezoid's: 1/n each with the ends halved,
        // so they sum to (n − 1)/n; kept so that attributions equal Captum's.
        Rule::RiemannTrapezoid => {
            let gaps = (steps - 1) as f64;
            (0..steps)
                .map(|i| {
                    let end = i == 0 || i == steps - 1;
                    (i as f64 / gaps, if end { 0.5 / n } else { 1.0 / n })
                })
                .collect()
        }
        Rule::GaussLegendre => legendre(steps)
            .into_iter()
            .map(|(x, w)| (0.5 * (x + 1.0), 0.5 * w))
            .collect(),
    }
}

/// The `n` Gauss–Legendre nodes on [−1, 1] in ascending order, with their weights: the roots
/// of the Legendre polynomial Pₙ found by Newton's method from Tricomi's estimate.
fn legendre(n: usize) -> Vec<(f64, f64)> {
    let mut nodes = Vec::with_capacity(n);
    for i in 0..n {
        // Root i counted from +1 down.
        let k = (i + 1) as f64;
        let nf = n as f64;
        let mut x = (std::f64::consts::PI * (k - 0.25) / (nf + 0.5)).cos();
        let mut derivative = 1.0;
        for _ in 0..100 {
            let (p, d) = legendre_at(n, x);
            derivative = d;
            let dx = p / d;
            x -= dx;
            if dx.abs() < 1e-15 {
                let (_, d) = legendre_at(n, x);
                derivative = d;
                break;
            }
        }
        nodes.push((x, 2.0 / ((1.0 - x * x) * derivative * derivative)));
    }
    nodes.reverse();
    nodes
}

/// Pₙ(x) and Pₙ'(x) by the three-term recurrence.
fn legendre_at(n: usize, x: f64) -> (f64, f64) {
    let (mut p0, mut p1) = (1.0, x);
    if n == 0 {
        return (1.0, 0.0);
    }
    for k in 2..=n {
        let kf = k as f64;
        let p2 = ((2.0 * kf - 1.0) * x * p1 - (kf - 1.0) * p0) / kf;
        p0 = p1;
        p1 = p2;
    }
    let nf = n as f64;
    (p1, nf * (x * p1 - p0) / (x * x - 1.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_rule_integrates_a_line_exactly() {
        // ∫₀¹ (3α + 1) dα = 2.5: exact for the middle and Gauss rules.
        for rule in [Rule::RiemannMiddle, Rule::GaussLegendre] {
            let p = points(rule, 7);
            assert_eq!(p.len(), 7);
            let sum: f64 = p.iter().map(|(a, w)| w * (3.0 * a + 1.0)).sum();
            assert!((sum - 2.5).abs() < 1e-12, "{rule:?}: {sum}");
        }
        for rule in Rule::ALL {
            let total: f64 = points(rule, 9).iter().map(|(_, w)| w).sum();
            // Captum's trapezoid weights sum to (n − 1)/n.
            let want = if rule == Rule::RiemannTrapezoid {
                8.0 / 9.0
            } else {
                1.0
            };
            assert!((total - want).abs() < 1e-12, "{rule:?}");
        }
        let ends = points(Rule::RiemannTrapezoid, 5);
        assert_eq!((ends[0], ends[4]), ((0.0, 0.1), (1.0, 0.1)));
        assert_eq!(points(Rule::RiemannLeft, 4)[0].0, 0.0);
        assert_eq!(points(Rule::RiemannRight, 4)[3].0, 1.0);
    }

    #[test]
    fn gauss_legendre_matches_the_tabulated_nodes_and_integrates_high_degrees() {
        // n = 3 on [−1, 1]: 0, ±√(3/5); weights 8/9 and 5/9 (numpy's leggauss).
        let n3 = legendre(3);
        assert!((n3[0].0 + 0.6f64.sqrt()).abs() < 1e-15 && (n3[1].0).abs() < 1e-15);
        assert!((n3[1].1 - 8.0 / 9.0).abs() < 1e-15 && (n3[2].1 - 5.0 / 9.0).abs() < 1e-15);
        // n nodes integrate degree 2n − 1 exactly; here α⁹ on [0, 1] with 5 nodes.
        let sum: f64 = points(Rule::GaussLegendre, 5)
            .iter()
            .map(|(a, w)| w * a.powi(9))
            .sum();
        assert!((sum - 0.1).abs() < 1e-14, "{sum}");
        // Many nodes stay inside (0, 1), ascending.
        let many = points(Rule::GaussLegendre, 512);
        assert!(many.windows(2).all(|w| w[0].0 < w[1].0));
        assert!(many[0].0 > 0.0 && many[511].0 < 1.0);
    }
}
