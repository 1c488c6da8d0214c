//! Resume-condition evaluation (spec 02 §5), with the spec's recommended
//! bottom-up composite semantics: a `Single` is satisfied once an accepted
//! signal arrived on its key, a `Count` counts distinct satisfiers among the
//! accepted signals on ITS waitpoints, an `AllOf` when all members are.

use std::collections::BTreeSet;

use ff_core::suspension::{CompositeBody, CountKind, ResumeCondition};

/// Effect: the condition became satisfied.
pub const EFFECT_SATISFIED: &str = "resume_condition_satisfied";
/// Effect: recorded and counted, not yet satisfied.
pub const EFFECT_APPENDED: &str = "appended_to_waitpoint";
/// Effect: recorded, no matcher accepted it.
pub const EFFECT_NO_OP: &str = "no_op";
/// Effect: accepted but added no new satisfier.
pub const EFFECT_DUPLICATE: &str = "appended_to_waitpoint_duplicate";
/// Effect: no node listens on this waitpoint.
pub const EFFECT_NOT_IN_CONDITION: &str = "signal_ignored_not_in_condition";
/// Effect: listening nodes exist but every matcher rejected it.
pub const EFFECT_MATCHER_FAILED: &str = "signal_ignored_matcher_failed";
/// Effect: stored on a pending waitpoint for replay at activation.
pub const EFFECT_BUFFERED: &str = "buffered_for_pending_waitpoint";

/// What a delivered signal looks like to the evaluator.
#[derive(Debug, Clone, Copy)]
pub struct Arrival<'a> {
    /// The waitpoint it arrived on.
    pub waitpoint_id: &'a str,
    /// That waitpoint's key.
    pub waitpoint_key: &'a str,
    /// The signal id.
    pub signal_id: &'a str,
    /// The signal name.
    pub signal_name: &'a str,
    /// Source type.
    pub source_type: &'a str,
    /// Source identity.
    pub source_identity: &'a str,
}

/// The result of evaluating one arrival.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Evaluation {
    /// The effect string.
    pub effect: &'static str,
    /// Whether the signal counted toward the condition.
    pub matched: bool,
    /// Whether the condition is now satisfied.
    pub satisfied: bool,
}

fn child_path(parent: &str, i: usize) -> String {
    if parent.is_empty() { format!("members[{i}]") } else { format!("{parent}.members[{i}]") }
}

/// A non-composite condition: `Single` resumes on its first accepted signal;
/// operator-only and timeout-only conditions never resume by a signal.
fn evaluate_simple(condition: &ResumeCondition, arrival: &Arrival<'_>) -> Evaluation {
    match condition {
        ResumeCondition::Single { matcher, .. } if matcher.accepts(arrival.signal_name) => {
            Evaluation { effect: EFFECT_SATISFIED, matched: true, satisfied: true }
        }
        _ => Evaluation { effect: EFFECT_NO_OP, matched: false, satisfied: false },
    }
}

/// Evaluates an arrival, adding its tokens to `tokens` (the suspension's satisfier set).
pub fn evaluate(
    condition: &ResumeCondition,
    tokens: &mut BTreeSet<String>,
    arrival: &Arrival<'_>,
) -> Evaluation {
    let ResumeCondition::Composite(_) = condition else { return evaluate_simple(condition, arrival) };
    let mut candidates = 0;
    let mut accepted = 0;
    let mut added = false;
    visit(condition, "", &mut |node, path| {
        let token = match node {
            ResumeCondition::Single { waitpoint_key, matcher } if waitpoint_key == arrival.waitpoint_key => {
                candidates += 1;
                if !matcher.accepts(arrival.signal_name) {
                    return;
                }
                format!("leaf:{path}")
            }
            ResumeCondition::Composite(CompositeBody::Count { count_kind, matcher, waitpoints, .. })
                if waitpoints.iter().any(|k| k == arrival.waitpoint_key) =>
            {
                candidates += 1;
                if matcher.as_ref().is_some_and(|m| !m.accepts(arrival.signal_name)) {
                    return;
                }
                match count_kind {
                    CountKind::DistinctWaitpoints => format!("{path}/wp:{}", arrival.waitpoint_id),
                    CountKind::DistinctSignals => format!("{path}/sig:{}", arrival.signal_id),
                    CountKind::DistinctSources => {
                        format!("{path}/src:{}:{}", arrival.source_type, arrival.source_identity)
                    }
                }
            }
            _ => return,
        };
        accepted += 1;
        added |= tokens.insert(token);
    });
    let (effect, matched) = if candidates == 0 {
        (EFFECT_NOT_IN_CONDITION, false)
    } else if accepted == 0 {
        (EFFECT_MATCHER_FAILED, false)
    } else if !added {
        (EFFECT_DUPLICATE, true)
    } else if satisfied(condition, "", tokens) {
        return Evaluation { effect: EFFECT_SATISFIED, matched: true, satisfied: true };
    } else {
        (EFFECT_APPENDED, true)
    };
    Evaluation { effect, matched, satisfied: false }
}

/// Visits `Single` and `Count` nodes reachable through `AllOf` nodes.
fn visit(node: &ResumeCondition, path: &str, f: &mut dyn FnMut(&ResumeCondition, &str)) {
    match node {
        ResumeCondition::Composite(CompositeBody::AllOf { members }) => {
            for (i, m) in members.iter().enumerate() {
                visit(m, &child_path(path, i), f);
            }
        }
        other => f(other, path),
    }
}

/// Whether a node is satisfied by the tokens (bottom-up, per node).
pub fn satisfied(node: &ResumeCondition, path: &str, tokens: &BTreeSet<String>) -> bool {
    match node {
        ResumeCondition::Single { .. } => tokens.contains(&format!("leaf:{path}")),
        ResumeCondition::Composite(CompositeBody::AllOf { members }) => {
            members.iter().enumerate().all(|(i, m)| satisfied(m, &child_path(path, i), tokens))
        }
        ResumeCondition::Composite(CompositeBody::Count { n, .. }) => {
            let prefix = format!("{path}/");
            tokens.iter().filter(|t| t.starts_with(&prefix)).count() >= *n as usize
        }
        ResumeCondition::OperatorOnly | ResumeCondition::TimeoutOnly => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ff_core::suspension::SignalMatcher;

    fn single(key: &str, m: SignalMatcher) -> ResumeCondition {
        ResumeCondition::Single { waitpoint_key: key.into(), matcher: m }
    }

    fn count(n: u32, kind: CountKind, keys: &[&str]) -> ResumeCondition {
        ResumeCondition::Composite(CompositeBody::Count {
            n,
            count_kind: kind,
            matcher: None,
            waitpoints: keys.iter().map(|k| k.to_string()).collect(),
        })
    }

    fn all(members: Vec<ResumeCondition>) -> ResumeCondition {
        ResumeCondition::Composite(CompositeBody::AllOf { members })
    }

    fn arrive<'a>(wp: &'a str, sig: &'a str, name: &'a str, src: &'a str) -> Arrival<'a> {
        Arrival {
            waitpoint_id: wp,
            waitpoint_key: wp,
            signal_id: sig,
            signal_name: name,
            source_type: "t",
            source_identity: src,
        }
    }

    /// Feeds arrivals in order; returns each effect.
    fn run(c: &ResumeCondition, arrivals: &[Arrival<'_>]) -> Vec<&'static str> {
        let mut tokens = BTreeSet::new();
        arrivals.iter().map(|a| evaluate(c, &mut tokens, a).effect).collect()
    }

    #[test]
    fn composite_table() {
        use SignalMatcher::Wildcard as W;
        let both = all(vec![single("a", W), single("b", W)]);
        assert_eq!(
            run(&both, &[arrive("a", "1", "x", "s"), arrive("a", "2", "x", "s"), arrive("b", "3", "x", "s")]),
            [EFFECT_APPENDED, EFFECT_DUPLICATE, EFFECT_SATISFIED]
        );
        assert_eq!(run(&both, &[arrive("z", "1", "x", "s")]), [EFFECT_NOT_IN_CONDITION]);
        let named = all(vec![single("a", SignalMatcher::ByName("ok".into())), single("b", W)]);
        assert_eq!(run(&named, &[arrive("a", "1", "no", "s")]), [EFFECT_MATCHER_FAILED]);
        // Distinct signals: a duplicate signal id is not counted twice.
        let sigs = count(2, CountKind::DistinctSignals, &["a"]);
        assert_eq!(
            run(&sigs, &[arrive("a", "1", "x", "s"), arrive("a", "1", "x", "s"), arrive("a", "2", "x", "s")]),
            [EFFECT_APPENDED, EFFECT_DUPLICATE, EFFECT_SATISFIED]
        );
        // Distinct sources: the same source twice does not satisfy 2.
        let srcs = count(2, CountKind::DistinctSources, &["a"]);
        assert_eq!(
            run(
                &srcs,
                &[arrive("a", "1", "x", "s1"), arrive("a", "2", "x", "s1"), arrive("a", "3", "x", "s2")]
            ),
            [EFFECT_APPENDED, EFFECT_DUPLICATE, EFFECT_SATISFIED]
        );
        // Distinct waitpoints.
        let wps = count(2, CountKind::DistinctWaitpoints, &["a", "b", "c"]);
        assert_eq!(
            run(&wps, &[arrive("a", "1", "x", "s"), arrive("a", "2", "x", "s"), arrive("c", "3", "x", "s")]),
            [EFFECT_APPENDED, EFFECT_DUPLICATE, EFFECT_SATISFIED]
        );
    }

    #[test]
    fn counts_are_per_node_not_shared() {
        // The reference shares counts across nodes; per-node counting needs both.
        let c = all(vec![
            count(2, CountKind::DistinctSignals, &["a"]),
            count(2, CountKind::DistinctSignals, &["b"]),
        ]);
        let effects =
            run(&c, &[arrive("a", "1", "x", "s"), arrive("a", "2", "x", "s"), arrive("b", "3", "x", "s")]);
        assert_eq!(effects, [EFFECT_APPENDED, EFFECT_APPENDED, EFFECT_APPENDED]);
    }

    #[test]
    fn nested_allof_with_a_count_can_be_satisfied() {
        use SignalMatcher::Wildcard as W;
        // The reference can never satisfy this tree; bottom-up evaluation can.
        let c = all(vec![
            all(vec![single("a", W), count(1, CountKind::DistinctSignals, &["c"])]),
            single("b", W),
        ]);
        let effects =
            run(&c, &[arrive("a", "1", "x", "s"), arrive("b", "2", "x", "s"), arrive("c", "3", "x", "s")]);
        assert_eq!(effects, [EFFECT_APPENDED, EFFECT_APPENDED, EFFECT_SATISFIED]);
    }

    #[test]
    fn simple_conditions() {
        let by_name = single("a", SignalMatcher::ByName("go".into()));
        assert_eq!(run(&by_name, &[arrive("a", "1", "stop", "s")]), [EFFECT_NO_OP]);
        assert_eq!(run(&by_name, &[arrive("a", "1", "go", "s")]), [EFFECT_SATISFIED]);
        assert_eq!(
            run(&ResumeCondition::OperatorOnly, &[arrive("a", "1", "__operator_only__", "s")]),
            [EFFECT_NO_OP]
        );
    }
}
