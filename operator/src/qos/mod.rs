//! The QoS loop: the operator fetches every gateway pod's QoS report (`/qos/pod`, typed by
//! [`causeway_api::contract::qos`]), folds the figures into
//! the Sites' and Frontends' status ([`collector`]), judges them against each Site's goals
//! ([`goals`]) and adds or gives back pods ([`scaling`]).
//!
//! Why the operator gathers the figures rather than each pod writing its own status entry:
//! one writer per object means no write conflicts and a write rate bounded per object (one
//! per interval at most, none when nothing moved), pods need no write access to the API, and
//! a pod that is gone simply stops appearing instead of leaving a stale entry to clean up.

pub mod collector;
pub mod figures;
pub mod goals;
pub mod scaling;
