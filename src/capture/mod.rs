//! Capture files (pcap, pcapng): frames → link/IP/TCP → per-flow reassembled bytes.
//! The only module that uses pcap-file. Written by the capture helper.
