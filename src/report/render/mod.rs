//! The renderers of a report, one file per format: `table` (for people), `junit`
//! and `html` (the self-contained record).

pub mod html;
pub mod junit;
mod table;
