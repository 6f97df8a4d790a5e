//! One entry from a [`Document`] to the text of a format, `render(&doc, format,
//! &options)`, and one file per format: `table` (for people), `json` (the contract
//! of scripts), `junit` (CI) and `html` (the self-contained record). Adding a format
//! is a file here and a [`Format`] variant; the commands call [`render`] only.

pub mod html;
mod json;
pub mod junit;
mod table;

use super::{Document, Listing};
use html::LiveLinks;

/// The output formats of every command that writes a report.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Table,
    Json,
    Junit,
    /// One self-contained HTML page (loads nothing): the clause table, the edges, the
    /// findings by rule and a message sequence chart per edge.
    Html,
}

impl Format {
    /// The format lists every finding, so a run keeps them all (the others show
    /// groups and keep the first [`super::LISTED_FINDINGS`]).
    pub fn lists_every_finding(self) -> bool {
        match self {
            Format::Json | Format::Html => true,
            Format::Table | Format::Junit => false,
        }
    }

    /// The format charts the message sequence of each edge (a run collects it).
    pub fn charts(self) -> bool {
        match self {
            Format::Html => true,
            Format::Table | Format::Json | Format::Junit => false,
        }
    }
}

/// How a document is rendered, beyond its format.
#[derive(Debug, Clone, Copy, Default)]
pub struct Options<'a> {
    /// How the table lists findings (`--each`).
    pub listing: Listing,
    /// The proxy's live view: the page reloads and links its API.
    pub live: Option<&'a LiveLinks>,
}

impl Options<'_> {
    /// The findings listed as `listing` says.
    pub fn listing(listing: Listing) -> Options<'static> {
        Options {
            listing,
            live: None,
        }
    }
}

/// The document as `format`.
pub fn render(doc: &Document, format: Format, options: &Options) -> String {
    match format {
        Format::Table => table::render(doc, options),
        Format::Json => json::render(doc),
        Format::Junit => junit::render(doc),
        Format::Html => html::render(doc, options),
    }
}

/// A report alone as `format`, its findings listed as `listing` says (unit tests).
#[cfg(test)]
pub(crate) fn rendered(report: &super::Report, format: Format, listing: Listing) -> String {
    render(&Document::of(report), format, &Options::listing(listing))
}
