//! Property tests for the statistics: whatever the inputs, scores stay in their ranges,
//! symmetric measures are symmetric and p-values are probabilities.

use proptest::prelude::*;

use provenance::compare::calibration::{null_test, DefaultNull};
use provenance::compare::logits::{jaccard, jsd, mean_abs_delta, spearman, TopK};
use provenance::compare::refusal::{cohen_kappa, RefusalLabel};
use provenance::compare::stats::{fisher, normal_sf, student_t_sf};
use provenance::compare::style::{normalized_edit_distance, rouge_l, shared_ngram_rate};
use provenance::compare::Verdict;
use provenance::zoo::score::score;
use provenance::zoo::Class;

/// A top-k list: up to 8 distinct short byte strings with log-probabilities that sum to
/// at most one in probability.
fn topk() -> impl Strategy<Value = TopK> {
    prop::collection::btree_map(prop::collection::vec(97u8..103, 1..3), 0.0f64..1.0, 1..8).prop_map(
        |m| {
            let total: f64 = m.values().sum::<f64>() + 1e-3;
            TopK::from_entries(m.into_iter().map(|(k, w)| (k, (w / total).max(1e-9).ln())))
        },
    )
}

fn label() -> impl Strategy<Value = RefusalLabel> {
    prop_oneof![
        Just(RefusalLabel::Refuse),
        Just(RefusalLabel::Comply),
        Just(RefusalLabel::Partial)
    ]
}

proptest! {
    #[test]
    fn logit_measures_are_bounded_and_symmetric(p in topk(), q in topk()) {
        let d = jsd(&p, &q);
        prop_assert!((0.0..=std::f64::consts::LN_2 + 1e-9).contains(&d), "jsd {d}");
        prop_assert!((d - jsd(&q, &p)).abs() < 1e-9);
        prop_assert!(jsd(&p, &p).abs() < 1e-9);
        let j = jaccard(&p, &q);
        prop_assert!((0.0..=1.0).contains(&j));
        prop_assert!((j - jaccard(&q, &p)).abs() < 1e-12);
        if let Some(r) = spearman(&p, &q) {
            prop_assert!((-1.0 - 1e-9..=1.0 + 1e-9).contains(&r), "spearman {r}");
        }
        if let Some(m) = mean_abs_delta(&p, &p) {
            prop_assert!(m.abs() < 1e-12);
        }
    }

    #[test]
    fn text_measures_are_bounded(a in ".{0,60}", b in ".{0,60}") {
        for v in [rouge_l(&a, &b), normalized_edit_distance(&a, &b), shared_ngram_rate(&a, &b, 3)] {
            prop_assert!((0.0..=1.0).contains(&v), "{v}");
        }
        prop_assert!((rouge_l(&a, &b) - rouge_l(&b, &a)).abs() < 1e-12);
        prop_assert!((normalized_edit_distance(&a, &b) - normalized_edit_distance(&b, &a)).abs() < 1e-12);
    }

    #[test]
    fn p_values_are_probabilities(
        score_value in -2.0f64..3.0,
        se in 0.0f64..1.0,
        controls in prop::collection::vec(0.0f64..1.0, 0..40),
        alpha in 0.001f64..0.2,
        ps in prop::collection::vec(0.0f64..=1.0, 1..10),
        z in -50.0f64..50.0,
        df in 1.0f64..200.0,
    ) {
        let t = null_test(score_value, se, &controls, alpha, DefaultNull { mean: 0.5, sd: 0.1 });
        prop_assert!((0.0..=1.0).contains(&t.p), "{t:?}");
        if let Some(e) = t.empirical {
            prop_assert!(e > 0.0 && e <= 1.0);
        }
        let f = fisher(&ps).expect("some p-values");
        prop_assert!((0.0..=1.0).contains(&f), "fisher {f}");
        for v in [normal_sf(z), student_t_sf(z, df)] {
            prop_assert!((0.0..=1.0).contains(&v), "{v}");
        }
        // A more similar score is never less surprising.
        let higher = null_test(score_value + 0.5, se, &controls, alpha, DefaultNull { mean: 0.5, sd: 0.1 });
        prop_assert!(higher.p <= t.p + 1e-12);
    }

    #[test]
    fn kappa_is_at_most_one_and_symmetric(pairs in prop::collection::vec((label(), label()), 1..40)) {
        if let Some(k) = cohen_kappa(&pairs) {
            prop_assert!(k <= 1.0 + 1e-12, "kappa {k}");
            let swapped: Vec<_> = pairs.iter().map(|(a, b)| (*b, *a)).collect();
            let k2 = cohen_kappa(&swapped).expect("defined when the original is");
            prop_assert!((k - k2).abs() < 1e-12);
        }
    }

    #[test]
    fn confusion_counts_every_pair(results in prop::collection::vec((0usize..4, 0usize..5), 0..60)) {
        let verdicts = [Verdict::Identical, Verdict::Derived, Verdict::Distilled, Verdict::Unrelated, Verdict::Inconclusive];
        let results: Vec<(Class, Verdict)> = results.iter().map(|(c, v)| (Class::ALL[*c], verdicts[*v])).collect();
        let s = score(&results);
        let total: usize = s.confusion.values().flat_map(|row| row.values()).sum();
        prop_assert_eq!(total, results.len());
        prop_assert!((0.0..=1.0).contains(&s.accuracy));
        if let Some(f) = s.false_accusation_rate {
            prop_assert!((0.0..=1.0).contains(&f));
        }
    }
}
