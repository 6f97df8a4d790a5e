//! edgetap: conformance checks for the MQTT protocol of T/YQDEIF 003-2022.
//!
//! One sans-IO pipeline serves every front end (pcap reader, proxy, replayer):
//! TCP bytes → [`mqtt`] packets → [`protocol`] messages → [`rules`] engine → findings.
//! [`pipeline::Analyzer`] ties the stages together: a front end hands it every input
//! through [`pipeline::Analyzer::push`], collects what it emits through a
//! [`pipeline::Sink`], and takes the summary from [`pipeline::Analyzer::finish`].

pub mod analyze;
pub mod broker;
pub mod bus;
pub mod capture;
pub mod demo;
pub mod eve;
pub mod finding;
pub mod fuzzcheck;
pub mod mqtt;
pub mod pipeline;
pub mod protocol;
pub mod proxy;
pub mod redact;
pub mod replay;
pub mod report;
pub mod rules;
pub mod sim;
pub mod store;
pub mod watch;

pub use finding::{Finding, Severity};
