//! One case's figures, printed as the one `FAULT ...` line the long form collects, and the
//! assertions every case makes on them.

use std::io::Write;
use std::time::{Duration, Instant};

use crate::load::{Kind, Outcomes};

/// A case's figures.
#[derive(Clone, Debug)]
pub struct Fault {
    /// The case's name.
    pub case: String,
    /// Requests sent.
    pub requests: usize,
    /// GETs that failed.
    pub idempotent_failed: usize,
    /// POSTs that failed.
    pub non_idempotent_failed: usize,
    /// Requests in flight on the broken component when it broke (the bound on lost POSTs).
    pub in_flight_at_fault: usize,
    /// Answers holding another request's body.
    pub wrong_body: usize,
    /// From the fault until service was whole again: no more failures, and the repaired
    /// component (if any) taking traffic again.
    pub recovery: Duration,
}

/// What a case allows.
#[derive(Clone, Debug)]
pub struct Expect {
    /// Whether another origin, link or front-end could serve every GET (then none may fail).
    pub idempotent_survive: bool,
    /// Failed POSTs allowed (those in flight on the broken component).
    pub non_idempotent_max: usize,
    /// Longest recovery allowed.
    pub recovery_max: Duration,
}

impl Fault {
    /// The figures of `outcomes` for a fault that began at `fault_at`; `restored` is when
    /// the repaired component was seen serving again, if the case repairs one.
    pub fn new(
        case: &str,
        outcomes: &Outcomes,
        in_flight_at_fault: usize,
        fault_at: Instant,
        restored: Option<Instant>,
    ) -> Self {
        let settled = outcomes.last_bad().into_iter().chain(restored).max();
        Self {
            case: case.to_owned(),
            requests: outcomes.records.len(),
            idempotent_failed: outcomes.failed(Kind::Idempotent),
            non_idempotent_failed: outcomes.failed(Kind::NonIdempotent),
            in_flight_at_fault,
            wrong_body: outcomes.wrong_bodies(),
            recovery: settled.map_or(Duration::ZERO, |t| t.saturating_duration_since(fault_at)),
        }
    }

    /// `FAULT case=... idempotent_failed=... non_idempotent_failed=... in_flight_at_fault=...
    /// wrong_body=... recovery_s=... requests=...`
    pub fn line(&self) -> String {
        format!(
            "FAULT case={} idempotent_failed={} non_idempotent_failed={} in_flight_at_fault={} wrong_body={} recovery_s={:.2} requests={}",
            self.case,
            self.idempotent_failed,
            self.non_idempotent_failed,
            self.in_flight_at_fault,
            self.wrong_body,
            self.recovery.as_secs_f64(),
            self.requests
        )
    }

    /// Prints the line on stdout and stderr (one survives cargo's capture), and appends it to
    /// `$CAUSEWAY_FAULTS_OUT` when set.
    pub fn print(&self) {
        let line = self.line();
        println!("{line}");
        eprintln!("{line}");
        if let Some(path) = std::env::var_os("CAUSEWAY_FAULTS_OUT") {
            let file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path);
            if let Ok(mut file) = file {
                let _ = writeln!(file, "{line}");
            }
        }
    }

    /// Prints the line, then asserts what every case asserts: no wrong body, no failed GET
    /// where something else could serve, failed POSTs within those in flight on the broken
    /// component, recovery in time, and some load actually ran.
    pub fn check(&self, outcomes: &Outcomes, expect: &Expect) {
        self.print();
        let samples = outcomes.samples(12);
        assert!(
            self.requests >= 50,
            "{}: only {} requests ran\n{samples}",
            self.case,
            self.requests
        );
        assert_eq!(
            self.wrong_body, 0,
            "{}: answers carried another request's body\n{samples}",
            self.case
        );
        if expect.idempotent_survive {
            assert_eq!(
                self.idempotent_failed, 0,
                "{}: GETs failed although another component could serve them\n{samples}",
                self.case
            );
        }
        assert!(
            self.non_idempotent_failed <= expect.non_idempotent_max,
            "{}: {} POSTs failed, more than the {} in flight on the broken component\n{samples}",
            self.case,
            self.non_idempotent_failed,
            expect.non_idempotent_max
        );
        assert!(
            self.recovery <= expect.recovery_max,
            "{}: recovery took {:?}, more than {:?}\n{samples}",
            self.case,
            self.recovery,
            expect.recovery_max
        );
    }
}
