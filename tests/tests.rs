//! The integration tests, one binary: each file of `tests/` is a module of it, so the
//! crate is linked once for all of them (ripgrep's layout). `common` holds the
//! helpers they share. Run one file's tests with `cargo test --test tests proxy::`.

mod common;

mod bus;
mod capture_reader;
mod cli;
mod decode_roundtrip;
mod exit_codes;
mod final_reports;
mod findings_stream;
mod fuzz_seeds;
mod golden;
mod html;
mod judge_cpu;
mod live_limits;
mod numbering;
mod orders;
mod pipeline;
mod pipeline_messages;
mod proxy;
mod proxy_runtime;
mod proxy_ws_tls;
mod records;
mod replay;
mod replay_again;
mod replay_cli;
mod replay_online;
mod reports;
mod robustness;
mod rule_cases;
mod rule_schema;
mod rules_page;
mod sim;
mod store;
mod store_files;
mod store_loss;
mod store_secrets;
mod verdicts;
mod watch;
