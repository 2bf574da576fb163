use super::*;

const MIN: u64 = 60_000_000_000;
const HOUR: u64 = 60 * MIN;

fn auto(after: Duration) -> Option<Settings> {
    Some(Settings { after })
}

fn day() -> Option<Settings> {
    auto(DEFAULT_AFTER)
}

fn seen(mode: Mode) -> Observation<'static> {
    Observation {
        mode,
        ..Observation::default()
    }
}

fn annotations(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

#[test]
fn settings_come_from_the_annotations_and_bad_values_are_reported_with_the_default_used() {
    assert_eq!(settings("shop", None), (None, vec![]));
    assert_eq!(settings("shop", Some(&annotations(&[]))), (None, vec![]));
    assert_eq!(
        settings("shop", Some(&annotations(&[(PROMOTE_ANNOTATION, "auto")]))),
        (Some(Settings::default()), vec![])
    );
    assert_eq!(
        settings("shop", Some(&annotations(&[(PROMOTE_ANNOTATION, "off")]))),
        (None, vec![])
    );
    assert_eq!(
        settings(
            "shop",
            Some(&annotations(&[
                (PROMOTE_ANNOTATION, "auto"),
                (AFTER_ANNOTATION, "3s")
            ]))
        ),
        (auto(Duration::from_secs(3)), vec![])
    );

    let (got, warnings) = settings(
        "shop",
        Some(&annotations(&[(PROMOTE_ANNOTATION, "yes please")])),
    );
    assert_eq!(got, None);
    assert_eq!(
        warnings,
        [
            "namespace shop: annotation weir.dev/promote=\"yes please\" is not auto or off; \
          using the default off"
        ]
    );
    for bad in ["soon", "0", "-1h", ""] {
        let (got, warnings) = settings(
            "shop",
            Some(&annotations(&[
                (PROMOTE_ANNOTATION, "auto"),
                (AFTER_ANNOTATION, bad),
            ])),
        );
        assert_eq!(got, day(), "{bad}");
        assert_eq!(
            warnings,
            [format!(
                "namespace shop: annotation weir.dev/promote-after={bad:?} is not a positive \
                 duration (24h, 30m); using the default 1day"
            )],
            "{bad}"
        );
    }
}

#[test]
fn without_the_annotation_nothing_is_promoted_and_no_clock_kept() {
    let clock = Some(Clock {
        mode: Mode::Audit,
        since: 0,
    });
    assert_eq!(
        decide(clock, None, &seen(Mode::Audit), 100 * HOUR),
        (None, Decision::Off)
    );
    assert_eq!(
        decide(None, None, &seen(Mode::Observe), 0),
        (None, Decision::Off)
    );
}

#[test]
fn observe_goes_to_audit_once_ready_and_waits_naming_why_before() {
    let not_ready = Observation {
        not_ready: Some("its last new edge appeared 3s ago, within the quiet period of 60s"),
        ..seen(Mode::Observe)
    };
    let (clock, decision) = decide(None, day(), &not_ready, 10 * MIN);
    assert_eq!(
        clock,
        Some(Clock {
            mode: Mode::Observe,
            since: 10 * MIN
        })
    );
    assert_eq!(
        decision,
        Decision::Wait {
            to: Mode::Audit,
            at: None,
            why: "not ready: its last new edge appeared 3s ago, within the quiet period of 60s"
                .to_owned()
        }
    );
    let (clock, decision) = decide(clock, day(), &seen(Mode::Observe), 11 * MIN);
    assert_eq!(clock.map(|c| c.since), Some(10 * MIN));
    assert_eq!(decision, Decision::Promote(Mode::Audit));
}

#[test]
fn audit_goes_to_enforce_at_the_end_of_the_period_not_a_nanosecond_before() {
    // Seen entering audit at hour 1: the clock starts then.
    let (clock, _) = decide(
        Some(Clock {
            mode: Mode::Observe,
            since: 0,
        }),
        day(),
        &seen(Mode::Audit),
        HOUR,
    );
    let end = HOUR + 24 * HOUR;
    let (kept, before) = decide(clock, day(), &seen(Mode::Audit), end - 1);
    assert_eq!(kept, clock);
    assert!(
        matches!(before, Decision::Wait { to: Mode::Enforce, at: Some(at), .. } if at == end),
        "{before:?}"
    );
    assert_eq!(
        decide(clock, day(), &seen(Mode::Audit), end).1,
        Decision::Promote(Mode::Enforce)
    );
    // The clock survives a restart because it is saved: the same clock
    // decides the same.
    let saved: Promote = serde_json::from_str(
        &serde_json::to_string(&Promote {
            clocks: BTreeMap::from([("shop".to_owned(), clock.unwrap())]),
            promoted: BTreeMap::new(),
        })
        .unwrap(),
    )
    .unwrap();
    assert_eq!(
        decide(
            saved.clocks.get("shop").copied(),
            day(),
            &seen(Mode::Audit),
            end
        )
        .1,
        Decision::Promote(Mode::Enforce)
    );
}

#[test]
fn a_would_drop_of_learned_traffic_restarts_the_audit_period() {
    let clock = Some(Clock {
        mode: Mode::Audit,
        since: 0,
    });
    let marked = Observation {
        last_would_drop: Some(20 * HOUR),
        ..seen(Mode::Audit)
    };
    let (clock, decision) = decide(clock, day(), &marked, 21 * HOUR);
    assert_eq!(clock.map(|c| c.since), Some(20 * HOUR));
    assert!(
        matches!(decision, Decision::Wait { at: Some(at), .. } if at == 44 * HOUR),
        "{decision:?}"
    );
    // The would-drop's edge left the queue (approved): the clock kept it.
    assert!(matches!(
        decide(clock, day(), &seen(Mode::Audit), 43 * HOUR).1,
        Decision::Wait { .. }
    ));
    assert_eq!(
        decide(clock, day(), &seen(Mode::Audit), 44 * HOUR).1,
        Decision::Promote(Mode::Enforce)
    );
    // A would-drop from before the period (enforce dropped it before the
    // namespace went to audit) does not move it.
    let older = Observation {
        last_would_drop: Some(HOUR),
        ..seen(Mode::Audit)
    };
    assert_eq!(decide(clock, day(), &older, 44 * HOUR).0, clock);
}

#[test]
fn a_namespace_not_ready_at_the_end_of_the_period_waits_for_readiness() {
    let clock = Some(Clock {
        mode: Mode::Audit,
        since: 0,
    });
    let not_ready = Observation {
        not_ready: Some("the suggestion covers 3 of its 4 recent connections"),
        ..seen(Mode::Audit)
    };
    assert_eq!(
        decide(clock, day(), &not_ready, 25 * HOUR).1,
        Decision::Wait {
            to: Mode::Enforce,
            at: None,
            why: "not ready: the suggestion covers 3 of its 4 recent connections".to_owned()
        }
    );
}

#[test]
fn after_a_guard_revert_the_namespace_waits_a_new_full_period() {
    // Promoted to enforce at hour 24; the guard reverted it at hour 25.
    let enforced = Some(Clock {
        mode: Mode::Enforce,
        since: 24 * HOUR,
    });
    assert_eq!(
        decide(enforced, day(), &seen(Mode::Enforce), 24 * HOUR + 1).1,
        Decision::Done
    );
    let reverted = Observation {
        reverted_at: Some(25 * HOUR),
        ..seen(Mode::Audit)
    };
    // Seen in audit one sweep later: the period runs from the revert.
    let (clock, decision) = decide(enforced, day(), &reverted, 25 * HOUR + MIN);
    assert_eq!(clock.map(|c| c.since), Some(25 * HOUR + MIN));
    assert!(
        matches!(
            decision,
            Decision::Wait {
                to: Mode::Enforce,
                ..
            }
        ),
        "{decision:?}"
    );
    // A clock saved before the revert (the agent restarted in between and
    // its last check saw audit already): the revert still restarts it.
    let (clock, _) = decide(
        Some(Clock {
            mode: Mode::Audit,
            since: 0,
        }),
        day(),
        &reverted,
        26 * HOUR,
    );
    assert_eq!(clock.map(|c| c.since), Some(25 * HOUR));
    assert!(matches!(
        decide(clock, day(), &reverted, 49 * HOUR - 1).1,
        Decision::Wait { .. }
    ));
    // The edge the guard saw dropped is used again under audit: a
    // would-drop, the period starts again.
    let used = Observation {
        last_would_drop: Some(30 * HOUR),
        ..reverted
    };
    let (clock, decision) = decide(clock, day(), &used, 49 * HOUR);
    assert_eq!(clock.map(|c| c.since), Some(30 * HOUR));
    assert!(matches!(decision, Decision::Wait { .. }), "{decision:?}");
    assert_eq!(
        decide(clock, day(), &used, 54 * HOUR).1,
        Decision::Promote(Mode::Enforce)
    );
}

#[test]
fn a_mode_set_by_a_person_starts_the_clock_of_that_mode() {
    // In audit since hour 0; a person sets observe, then audit again at
    // hour 23: the period counts from hour 23.
    let clock = Some(Clock {
        mode: Mode::Audit,
        since: 0,
    });
    let (clock, _) = decide(clock, day(), &seen(Mode::Observe), 22 * HOUR);
    let (clock, decision) = decide(clock, day(), &seen(Mode::Audit), 23 * HOUR);
    assert_eq!(clock.map(|c| c.since), Some(23 * HOUR));
    assert!(
        matches!(decision, Decision::Wait { at: Some(at), .. } if at == 47 * HOUR),
        "{decision:?}"
    );
}
