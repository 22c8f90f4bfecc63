//! Status conditions of Sites and Frontends: the three condition types, a typed reason for
//! each, and [`set_condition`], which moves `lastTransitionTime` only when a status flips.

use std::fmt;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

/// The condition types Causeway writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ConditionType {
    /// The resource serves traffic.
    Ready,
    /// The operator is changing something: scaling, rolling out, waiting for pods.
    Progressing,
    /// The resource serves traffic, but worse than its spec asks.
    Degraded,
}

impl ConditionType {
    /// The name written in `type`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Ready => "Ready",
            Self::Progressing => "Progressing",
            Self::Degraded => "Degraded",
        }
    }
}

impl fmt::Display for ConditionType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A condition's `status`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ConditionStatus {
    /// The condition holds.
    True,
    /// The condition does not hold.
    False,
    /// Not known yet.
    Unknown,
}

impl ConditionStatus {
    /// The value written in `status`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::True => "True",
            Self::False => "False",
            Self::Unknown => "Unknown",
        }
    }

    /// `True` when `holds`, else `False`.
    pub const fn from_bool(holds: bool) -> Self {
        if holds { Self::True } else { Self::False }
    }
}

/// A reason that belongs to exactly one condition type, so a Ready condition cannot be
/// written with a Degraded reason.
pub trait ConditionReason: Copy {
    /// The condition type this reason explains.
    const TYPE: ConditionType;

    /// The CamelCase value written in `reason`.
    fn as_str(self) -> &'static str;
}

macro_rules! reasons {
    ($(#[$meta:meta])* $name:ident for $ty:ident { $($(#[$vmeta:meta])* $variant:ident,)+ }) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub enum $name {
            $($(#[$vmeta])* $variant,)+
        }

        impl ConditionReason for $name {
            const TYPE: ConditionType = ConditionType::$ty;

            fn as_str(self) -> &'static str {
                match self {
                    $(Self::$variant => stringify!($variant),)+
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

reasons! {
    /// Why a resource is or is not `Ready`.
    ReadyReason for Ready {
        /// True: enough pods are ready to serve.
        Available,
        /// False: no pod is ready to serve yet, or none is any more.
        Unavailable,
        /// False: the spec cannot be served as written (for example a Service that does not
        /// exist or a TLS Secret without a key); the message says what to fix.
        InvalidSpec,
        /// False: a Frontend's sites do not exist, or its selector matches none.
        NoSites,
        /// Unknown: the operator has not looked at this generation yet.
        Pending,
    }
}

reasons! {
    /// Why a resource is or is not `Progressing`.
    ProgressingReason for Progressing {
        /// True: pods are being added or removed.
        Scaling,
        /// True: pods are being replaced with a new configuration.
        RollingOut,
        /// False: every pod runs the current configuration and the count is where it should be.
        Stable,
    }
}

reasons! {
    /// Why a resource is or is not `Degraded`.
    DegradedReason for Degraded {
        /// True: fewer pods are ready than wanted.
        ReplicasUnavailable,
        /// True: the 99th-percentile response time is over `qos.latencyP99`.
        LatencyGoalMissed,
        /// True: the release queues' 99th-percentile wait is over `qos.maxQueueWait`.
        QueueWaitGoalMissed,
        /// True: a front-end's TMP link loses more than `qos.maxLoss`.
        LinkLossGoalMissed,
        /// True: a front-end's TMP link round trip is over `qos.maxLinkRtt`.
        LinkRttGoalMissed,
        /// True: some of the Site's origins fail their health checks or are ejected.
        OriginsUnhealthy,
        /// True: some TMP links between front-ends and back-ends are down.
        LinksDown,
        /// False: everything works as the spec asks.
        Healthy,
    }
}

/// A condition of the reason's type, stamped `now`.
///
/// `observed_generation` is the `metadata.generation` the condition was computed from.
pub fn condition<R: ConditionReason>(
    reason: R,
    status: ConditionStatus,
    message: impl Into<String>,
    observed_generation: Option<i64>,
    now: Time,
) -> Condition {
    Condition {
        type_: R::TYPE.as_str().to_owned(),
        status: status.as_str().to_owned(),
        reason: reason.as_str().to_owned(),
        message: message.into(),
        observed_generation,
        last_transition_time: now,
    }
}

/// The condition of type `type_`, if present.
pub fn find_condition(conditions: &[Condition], type_: ConditionType) -> Option<&Condition> {
    conditions.iter().find(|c| c.type_ == type_.as_str())
}

/// Whether the condition of type `type_` is present with status `True`.
pub fn is_true(conditions: &[Condition], type_: ConditionType) -> bool {
    find_condition(conditions, type_).is_some_and(|c| c.status == ConditionStatus::True.as_str())
}

/// Puts `update` into `conditions`, replacing the condition of the same type.
///
/// When the existing condition has the same status, its `lastTransitionTime` is kept: the
/// time says when the status last flipped, not when it was last confirmed. Returns whether
/// anything changed, so that a caller can skip a status write that would change nothing.
pub fn set_condition(conditions: &mut Vec<Condition>, mut update: Condition) -> bool {
    match conditions.iter_mut().find(|c| c.type_ == update.type_) {
        Some(existing) => {
            if existing.status == update.status {
                update.last_transition_time = existing.last_transition_time.clone();
            }
            if *existing == update {
                false
            } else {
                *existing = update;
                true
            }
        }
        None => {
            conditions.push(update);
            true
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::jiff::Timestamp;

    fn at(seconds: i64) -> Time {
        Time(Timestamp::from_second(seconds).expect("a valid timestamp"))
    }

    #[test]
    fn a_new_type_is_added() {
        let mut conditions = Vec::new();
        let ready = condition(
            ReadyReason::Available,
            ConditionStatus::True,
            "2 of 2 back-ends ready",
            Some(1),
            at(100),
        );
        assert!(set_condition(&mut conditions, ready.clone()));
        assert_eq!(conditions, [ready]);
        assert!(is_true(&conditions, ConditionType::Ready));
        assert!(!is_true(&conditions, ConditionType::Degraded));
    }

    #[test]
    fn the_same_status_keeps_its_transition_time() {
        let mut conditions = vec![condition(
            DegradedReason::LatencyGoalMissed,
            ConditionStatus::True,
            "p99 120ms above goal 100ms",
            Some(3),
            at(100),
        )];
        let changed = set_condition(
            &mut conditions,
            condition(
                DegradedReason::QueueWaitGoalMissed,
                ConditionStatus::True,
                "p99 150ms above goal 100ms at 10 back-ends",
                Some(4),
                at(200),
            ),
        );
        assert!(changed, "reason, message and generation changed");
        let degraded = find_condition(&conditions, ConditionType::Degraded).expect("present");
        assert_eq!(degraded.last_transition_time, at(100));
        assert_eq!(degraded.reason, "QueueWaitGoalMissed");
        assert_eq!(degraded.observed_generation, Some(4));
    }

    #[test]
    fn a_flip_moves_the_transition_time() {
        let mut conditions = vec![condition(
            ReadyReason::Unavailable,
            ConditionStatus::False,
            "0 of 2 back-ends ready",
            Some(1),
            at(100),
        )];
        assert!(set_condition(
            &mut conditions,
            condition(
                ReadyReason::Available,
                ConditionStatus::True,
                "2 of 2 back-ends ready",
                Some(1),
                at(200),
            ),
        ));
        assert_eq!(conditions.len(), 1);
        assert_eq!(conditions[0].last_transition_time, at(200));
        assert_eq!(conditions[0].status, "True");
    }

    #[test]
    fn an_identical_update_changes_nothing() {
        let stable = |now| {
            condition(
                ProgressingReason::Stable,
                ConditionStatus::False,
                "nothing to do",
                Some(2),
                now,
            )
        };
        let mut conditions = vec![stable(at(100))];
        assert!(!set_condition(&mut conditions, stable(at(300))));
        assert_eq!(conditions, [stable(at(100))]);
    }

    #[test]
    fn other_types_are_left_alone() {
        let ready = condition(
            ReadyReason::Available,
            ConditionStatus::True,
            "ok",
            None,
            at(1),
        );
        let mut conditions = vec![ready.clone()];
        set_condition(
            &mut conditions,
            condition(
                DegradedReason::Healthy,
                ConditionStatus::False,
                "ok",
                None,
                at(2),
            ),
        );
        assert_eq!(conditions.len(), 2);
        assert_eq!(conditions[0], ready);
        assert_eq!(conditions[1].type_, "Degraded");
    }

    #[test]
    fn reasons_are_camel_case_and_typed() {
        assert_eq!(ReadyReason::InvalidSpec.as_str(), "InvalidSpec");
        assert_eq!(
            <DegradedReason as ConditionReason>::TYPE,
            ConditionType::Degraded
        );
        assert_eq!(ProgressingReason::RollingOut.to_string(), "RollingOut");
        assert_eq!(ConditionStatus::from_bool(false).as_str(), "False");
    }
}
