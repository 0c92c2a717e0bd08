//! Learning-rate schedules as pure functions of the step.

use modelforge_spec::ScheduleSpec;

/// The learning rate at a 0-based global step.
pub fn learning_rate(
    schedule: &ScheduleSpec,
    base: f64,
    step: usize,
    steps_per_epoch: usize,
    total_steps: usize,
) -> f64 {
    match schedule {
        ScheduleSpec::Constant => base,
        ScheduleSpec::Step {
            every_epochs,
            gamma,
        } => {
            let epoch = step / steps_per_epoch.max(1);
            base * gamma.powi((epoch / every_epochs) as i32)
        }
        ScheduleSpec::Cosine {
            warmup_steps,
            min_lr,
        } => {
            if step < *warmup_steps {
                return base * (step + 1) as f64 / *warmup_steps as f64;
            }
            let span = total_steps.saturating_sub(*warmup_steps).max(1);
            let progress = ((step - warmup_steps) as f64 / span as f64).min(1.0);
            min_lr + 0.5 * (base - min_lr) * (1.0 + (std::f64::consts::PI * progress).cos())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn step_decays_per_epoch_block() {
        let s = ScheduleSpec::Step {
            every_epochs: 2,
            gamma: 0.5,
        };
        assert_eq!(learning_rate(&s, 1.0, 0, 10, 100), 1.0);
        assert_eq!(learning_rate(&s, 1.0, 19, 10, 100), 1.0);
        assert_eq!(learning_rate(&s, 1.0, 20, 10, 100), 0.5);
        assert_eq!(learning_rate(&s, 1.0, 45, 10, 100), 0.25);
    }

    #[test]
    fn cosine_warms_up_then_decays_to_min() {
        let s = ScheduleSpec::Cosine {
            warmup_steps: 10,
            min_lr: 0.1,
        };
        assert!((learning_rate(&s, 1.0, 0, 10, 110) - 0.1).abs() < 1e-12);
        assert!((learning_rate(&s, 1.0, 9, 10, 110) - 1.0).abs() < 1e-12);
        assert!((learning_rate(&s, 1.0, 10, 10, 110) - 1.0).abs() < 1e-12);
        assert!((learning_rate(&s, 1.0, 60, 10, 110) - 0.55).abs() < 1e-12);
        assert!((learning_rate(&s, 1.0, 110, 10, 110) - 0.1).abs() < 1e-12);
    }
}
