//! Capture files (pcap, pcapng): frames → link/IP/TCP → per-flow reassembled bytes.
//! The only module that uses pcap-file.
//!
//! [`CaptureReader`] streams a capture once, in file order, and reports what it finds
//! through [`FlowEvent`]s. What it guarantees:
//!
//! * **Streaming.** Records are read through one reusable buffer and dropped once
//!   handled; memory grows with the number of open flows (and their out-of-order
//!   segments, at most [`CaptureOptions::max_reorder_bytes`] per direction), never with
//!   the file size. Flow state is dropped at `Close`.
//! * **Each byte once, in order.** For every MQTT flow and each direction, the `Data`
//!   events concatenated give the TCP stream exactly once, in sequence order, whatever
//!   the retransmissions, overlaps and reordering in the capture. Bytes the capture does
//!   not hold are reported as a `Gap` of the exact length where they would have been:
//!   as soon as the peer's acknowledgement shows they were sent (and bytes after them
//!   are there), else when the reorder budget is exceeded, else at the flow's end.
//! * **No waiting.** Bytes are emitted as soon as they are contiguous; in-order segments
//!   are passed straight from the frame buffer, without a copy.
//! * **Event order.** Events come in frame order, except that `Open` carries the time
//!   and frame of the flow's first segment while it is only emitted once the flow is
//!   known to be MQTT (at its first payload bytes). For one flow the order is always
//!   `Open`, then `Data`/`Gap`, then exactly one `Close`; or a lone `NotDecodable`.
//!   A flow without a single payload byte (refused connection, health check) yields
//!   no event.
//! * **No panic, no give-up on bad frames.** A frame that cannot be read is reported as
//!   [`FlowEvent::BadFrame`] and reading goes on. A file that ends inside a record (a
//!   partial capture) yields a `BadFrame` naming the frame and byte offset, then every
//!   open flow is flushed and closed normally. Only a file that is not a capture at all,
//!   or an I/O error, is a [`CaptureError`].
//!
//! Layout: `source` reads pcap/pcapng records, `link` slices a frame down to its TCP
//! segment, `reassembly` puts one direction of a TCP stream back in order and `flow`
//! keeps the table of flows, decides which are MQTT and emits the events.

mod flow;
mod link;
mod reassembly;
mod source;

#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Read;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use crate::finding::{ConnId, Side};

use flow::FlowTable;
use source::{Record, RecordSource};

/// What to decode, and how much to hold per flow.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CaptureOptions {
    /// TCP ports of MQTT servers. A flow with either port in this list is decoded as
    /// MQTT (unless its first client bytes are a TLS ClientHello). Flows on other ports
    /// are decoded when their first client bytes are an MQTT CONNECT.
    pub ports: Vec<u16>,
    /// Out-of-order bytes held per flow direction while waiting for a missing segment.
    /// When exceeded, the hole is given up: a `Gap` is emitted and decoding resumes
    /// at the held bytes.
    pub max_reorder_bytes: usize,
}

impl Default for CaptureOptions {
    fn default() -> Self {
        CaptureOptions {
            ports: vec![1883],
            max_reorder_bytes: 4 << 20,
        }
    }
}

/// The server port of MQTT over TLS: flows to it are reported as not decodable unless
/// the port is listed explicitly in [`CaptureOptions::ports`].
pub const MQTT_TLS_PORT: u16 = 8883;

/// What the reader found, in capture order. See the module documentation for the
/// ordering guarantees.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FlowEvent<'a> {
    /// A new TCP flow that will be decoded as MQTT. `client` is the TCP client (the SYN
    /// sender; if the capture starts mid-stream: the side whose port is not an MQTT
    /// port; else the higher port). Time and frame are those of the flow's first
    /// segment in the capture. `midstream`: the capture holds neither the SYN nor the
    /// SYN-ACK, so each direction starts at its first segment seen, likely in the
    /// middle of an MQTT packet or session.
    Open {
        conn: ConnId,
        client: SocketAddr,
        server: SocketAddr,
        time_us: i64,
        frame: u64,
        midstream: bool,
    },
    /// In-order reassembled bytes of one direction, emitted as soon as they are
    /// contiguous. Time and frame are those of the segment that made them contiguous.
    Data {
        conn: ConnId,
        side: Side,
        time_us: i64,
        frame: u64,
        data: &'a [u8],
    },
    /// `lost` bytes of this direction are missing from the capture (capture loss, snap
    /// length, or the reorder buffer gave up on a hole). Data resumes right after them.
    Gap {
        conn: ConnId,
        side: Side,
        time_us: i64,
        frame: u64,
        lost: u64,
    },
    /// The next file of a rotation (`tcpdump -C/-G`) continues flow `from` of the
    /// previous file: from now on it is `conn` of this file; its reassembly and
    /// MQTT state carry on ([`CaptureReader::continue_from`]).
    Continued { from: ConnId, conn: ConnId },
    /// The flow is finished: both FINs seen (with all bytes before them), a RST, a new
    /// connection on the same addresses and ports, or the end of the capture (then
    /// `frame` is the last frame number and `reset` is false).
    Close {
        conn: ConnId,
        time_us: i64,
        frame: u64,
        reset: bool,
        /// The capture ended with the connection still open (no FIN or RST seen):
        /// the input stopped, not the connection.
        input_ended: bool,
    },
    /// A flow that will not be decoded: TLS (server port 8883, or the first client
    /// bytes are a TLS ClientHello). The flow's only event; its bytes are not emitted.
    NotDecodable {
        conn: ConnId,
        client: SocketAddr,
        server: SocketAddr,
        time_us: i64,
        frame: u64,
        reason: String,
    },
    /// A frame that could not be read (truncated headers, unsupported link type, a
    /// record cut by the end of the file...). `message` names the file, the frame, its
    /// byte offset and what was wrong. Reading continues with the next frame.
    BadFrame {
        frame: u64,
        time_us: i64,
        message: String,
    },
}

/// Counters of one run, for summaries and progress reports.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Frames (packet records) in the capture, readable or not.
    pub frames: u64,
    /// TCP segments found in those frames.
    pub tcp_segments: u64,
    /// TCP flows seen (MQTT or not).
    pub flows: u64,
    /// Flows decoded as MQTT (`Open` events).
    pub mqtt_flows: u64,
    /// Flows reported as not decodable (TLS).
    pub not_decodable_flows: u64,
    /// `BadFrame` events.
    pub bad_frames: u64,
    /// Frames skipped because their link type is unsupported (only the first of each
    /// link type is a `BadFrame`, naming it).
    pub unsupported_frames: u64,
    /// IP fragments (not reassembled; a fragmented TCP segment shows up as a `Gap`).
    pub ip_fragments: u64,
    /// `Gap` events.
    pub gaps: u64,
    /// Bytes the `Gap` events report missing.
    pub lost_bytes: u64,
    /// Bytes of the file consumed.
    pub bytes: u64,
    /// The capture ended inside a record, or became unreadable before its end.
    pub truncated: bool,
    /// Where and why reading stopped before the end of the file (with `truncated`).
    pub stopped: Option<ReadStop>,
    /// MQTT flows whose capture holds neither SYN nor SYN-ACK (`Open` with `midstream`).
    pub midstream_flows: u64,
    /// Traffic per server port of every TCP flow, MQTT or not: where to look when
    /// nothing was found on the MQTT ports.
    pub ports: BTreeMap<u16, PortTraffic>,
}

/// Where reading stopped before the end of a capture.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReadStop {
    /// The number the record would have had.
    pub frame: u64,
    /// The byte offset of that record.
    pub offset: u64,
    /// Names the file, the frame, the byte offset and what was wrong.
    pub message: String,
    /// The framing is broken before the end of the file: the bytes after `offset` are
    /// not read. False when the file merely ends inside a record (a partial capture).
    pub corrupt: bool,
}

/// TCP traffic to or from one server port.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PortTraffic {
    pub flows: u64,
    /// TCP payload bytes, both directions.
    pub bytes: u64,
}

impl Stats {
    /// At most `n` server ports, the most payload bytes first (then the most flows).
    pub fn busiest_ports(&self, n: usize) -> Vec<(u16, PortTraffic)> {
        let mut ports: Vec<(u16, PortTraffic)> = self.ports.iter().map(|(p, t)| (*p, *t)).collect();
        ports.sort_by_key(|(port, t)| (std::cmp::Reverse((t.bytes, t.flows)), *port));
        ports.truncate(n);
        ports
    }

    /// Reading stopped on broken framing, or before a single frame could be read: the
    /// input cannot be trusted as a record of the traffic (exit code 2).
    pub fn unreadable(&self) -> Option<&ReadStop> {
        self.stopped
            .as_ref()
            .filter(|s| s.corrupt || self.frames == 0)
    }
}

/// A capture that cannot be read at all. Frame-level problems are not errors: they are
/// [`FlowEvent::BadFrame`]s.
#[derive(thiserror::Error, Debug)]
pub enum CaptureError {
    #[error("{file}: cannot open: {source}")]
    Open {
        file: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{file}: not a pcap or pcapng capture: {detail}")]
    NotACapture { file: String, detail: String },
    #[error("{file}: unreadable {format} file header: {detail}")]
    BadHeader {
        file: String,
        format: &'static str,
        detail: String,
    },
    #[error("{file}: frame {frame} at byte offset {offset}: read error: {source}")]
    Read {
        file: String,
        frame: u64,
        offset: u64,
        #[source]
        source: std::io::Error,
    },
}

/// How far a [`CaptureReader`] has got: shareable with a progress bar (clone it into
/// the event callback, or another thread) while [`CaptureReader::run`] holds the reader.
#[derive(Clone, Debug, Default)]
pub struct Progress {
    bytes: Arc<AtomicU64>,
    total: Option<u64>,
}

impl Progress {
    /// Bytes of the capture handled so far (end of the last record read).
    pub fn bytes_read(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed)
    }
    /// Size of the capture file, when known (not for pipes).
    pub fn total_bytes(&self) -> Option<u64> {
        self.total
    }
}

/// Streams a pcap or pcapng capture and turns it into [`FlowEvent`]s.
pub struct CaptureReader {
    source: RecordSource,
    flows: FlowTable,
    progress: Progress,
    done: bool,
}

impl CaptureReader {
    /// Opens a capture file; pcap or pcapng is told by its magic number.
    pub fn open(path: &Path, opts: CaptureOptions) -> Result<CaptureReader, CaptureError> {
        let name = path.display().to_string();
        if path.is_dir() {
            return Err(CaptureError::NotACapture {
                file: name,
                detail: "a directory; name the capture files in it (e.g. DIR/*.pcap)".into(),
            });
        }
        let file = File::open(path).map_err(|source| CaptureError::Open {
            file: name.clone(),
            source,
        })?;
        let total = file
            .metadata()
            .ok()
            .filter(|m| m.is_file())
            .map(|m| m.len());
        Self::with_total(Box::new(file), name, total, opts)
    }

    /// Reads a capture from any byte stream (stdin, a buffer in tests). `name` is used
    /// in messages in place of the file name.
    pub fn from_reader<R: Read + 'static>(
        r: R,
        name: String,
        opts: CaptureOptions,
    ) -> Result<CaptureReader, CaptureError> {
        Self::with_total(Box::new(r), name, None, opts)
    }

    fn with_total(
        r: Box<dyn Read>,
        name: String,
        total: Option<u64>,
        opts: CaptureOptions,
    ) -> Result<CaptureReader, CaptureError> {
        let progress = Progress {
            bytes: Arc::new(AtomicU64::new(0)),
            total,
        };
        let source = RecordSource::new(r, name.clone(), progress.bytes.clone())?;
        Ok(CaptureReader {
            source,
            flows: FlowTable::new(opts, name),
            progress,
            done: false,
        })
    }

    /// Streams the whole capture, calling `f` for each event. Returns the counters of
    /// the run. A second call returns the same counters without events.
    pub fn run(&mut self, f: &mut dyn FnMut(FlowEvent<'_>)) -> Result<Stats, CaptureError> {
        self.run_until(true, f)
    }

    /// The flows still open at the end of the previous file of a rotation carry on in
    /// this one (a `Continued` event each, before this file's first frame), instead
    /// of being cut at the file boundary. Call before [`Self::run_until`].
    pub fn continue_from(&mut self, prev: CaptureReader, f: &mut dyn FnMut(FlowEvent<'_>)) {
        self.flows.continue_from(prev.flows, f);
    }

    /// [`Self::run`]; with `last` false, the flows still open at the end stay open
    /// for the next file ([`Self::continue_from`]) instead of being closed.
    pub fn run_until(
        &mut self,
        last: bool,
        f: &mut dyn FnMut(FlowEvent<'_>),
    ) -> Result<Stats, CaptureError> {
        if self.done {
            return Ok(self.flows.stats.clone());
        }
        let Self { source, flows, .. } = self;
        loop {
            match source.next_record()? {
                None => break,
                Some(Record::NotAFrame) => {}
                Some(Record::Frame {
                    frame,
                    offset,
                    link,
                    time_us,
                    data,
                }) => {
                    flows.stats.frames += 1;
                    flows.on_frame(frame, offset, link, time_us, data, f);
                }
                Some(Record::Unreadable {
                    frame,
                    time_us,
                    message,
                }) => {
                    flows.stats.frames += 1;
                    flows.bad_frame(frame, time_us, message, f);
                }
                Some(Record::End {
                    frame,
                    offset,
                    time_us,
                    message,
                    corrupt,
                }) => {
                    flows.stats.truncated = true;
                    flows.stats.stopped = Some(ReadStop {
                        frame,
                        offset,
                        message: message.clone(),
                        corrupt,
                    });
                    flows.bad_frame(frame, time_us, message, f);
                    break;
                }
            }
        }
        flows.stats.bytes = source.offset();
        if last {
            flows.finish(source.frame(), source.last_time_us(), f);
        }
        self.done = true;
        Ok(self.flows.stats.clone())
    }

    /// Size of the capture file, when known (not for pipes).
    pub fn total_bytes(&self) -> Option<u64> {
        self.progress.total
    }

    /// Bytes of the capture handled so far.
    pub fn bytes_read(&self) -> u64 {
        self.progress.bytes_read()
    }

    /// A handle to follow [`Self::bytes_read`] while [`Self::run`] is going.
    pub fn progress(&self) -> Progress {
        self.progress.clone()
    }
}

/// The time (µs since the epoch) of the first frame of the capture file at `path`,
/// `None` when it holds none. Reads the header and the records up to that frame.
pub fn first_frame_time(path: &Path) -> Result<Option<i64>, CaptureError> {
    let name = path.display().to_string();
    let file = File::open(path).map_err(|source| CaptureError::Open {
        file: name.clone(),
        source,
    })?;
    let mut source = RecordSource::new(Box::new(file), name, Arc::new(AtomicU64::new(0)))?;
    loop {
        match source.next_record()? {
            Some(Record::NotAFrame) => {}
            Some(Record::Frame { time_us, .. }) | Some(Record::Unreadable { time_us, .. }) => {
                return Ok(Some(time_us))
            }
            Some(Record::End { .. }) | None => return Ok(None),
        }
    }
}
