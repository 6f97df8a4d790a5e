//! Capture files read whole: pcap variants, a file that is no capture, a cut last
//! record, progress, short reads, random corruption, and records that claim more
//! bytes than there are.

use super::*;

#[test]
fn pcap_nanosecond_and_little_endian_variants() {
    let conv = mqtt_session("10.0.0.2:50000", "10.0.0.1:1883");
    for (res, end) in [
        (TsResolution::NanoSecond, Endianness::Little),
        (TsResolution::NanoSecond, Endianness::Big),
        (TsResolution::MicroSecond, Endianness::Little),
    ] {
        let bytes = pcap_with(DataLink::ETHERNET, &conv.frames(Link::Ethernet), res, end);
        let mut reader =
            CaptureReader::from_reader(Cursor::new(bytes), "t".into(), CaptureOptions::default())
                .unwrap();
        let mut opens = Vec::new();
        let mut client = Vec::new();
        reader
            .run(&mut |e| match e {
                FlowEvent::Open { time_us, .. } => opens.push(time_us),
                FlowEvent::Data {
                    side: Side::Client,
                    data,
                    ..
                } => client.extend_from_slice(data),
                _ => {}
            })
            .unwrap();
        assert_eq!(opens, vec![T0_US], "{res:?} {end:?}");
        assert_eq!(client, [CONNECT, PUBLISH].concat(), "{res:?} {end:?}");
    }
}

#[test]
fn not_a_capture_is_an_error_naming_the_file() {
    for (bytes, want) in [
        (b"this is not a capture file at all".to_vec(), "garbage.bin: not a pcap or pcapng capture: unknown magic number 74 68 69 73"),
        (vec![], "garbage.bin: not a pcap or pcapng capture: the file holds only 0 bytes"),
        (vec![0x1f, 0x8b, 8, 0, 0, 0], "garbage.bin: not a pcap or pcapng capture: the file is gzip-compressed; decompress it first"),
        (vec![0xd4, 0xc3, 0xb2, 0xa1, 2, 0, 4, 0], "garbage.bin: unreadable pcap file header: the file ends inside its header"),
    ] {
        let err = CaptureReader::from_reader(Cursor::new(bytes), "garbage.bin".into(), CaptureOptions::default()).err().expect("an error");
        assert_eq!(err.to_string(), want);
    }
    let err = CaptureReader::open(
        Path::new("/nonexistent/capture.pcap"),
        CaptureOptions::default(),
    )
    .err()
    .expect("an error");
    assert!(
        err.to_string()
            .starts_with("/nonexistent/capture.pcap: cannot open"),
        "{err}"
    );
}

#[test]
fn truncated_last_record_is_reported_then_flows_close() {
    let conv = mqtt_session("10.0.0.2:50000", "10.0.0.1:1883");
    let frames = conv.frames(Link::Ethernet);
    let mut bytes = pcap(DataLink::ETHERNET, &frames[..6]);
    let last_offset = bytes.len() - (16 + frames[5].len());
    bytes.truncate(bytes.len() - 5);
    let (events, stats) = read_all(bytes, CaptureOptions::default());
    let want = format!("test.pcap: frame 6 at byte offset {last_offset}: truncated pcap record: the file ends after {} of its {} bytes", 16 + frames[5].len() - 5, 16 + frames[5].len());
    assert!(
        events.contains(&Ev::Bad {
            frame: 6,
            message: want
        }),
        "{events:?}"
    );
    assert_eq!(stream(&events, 1, Side::Client), concat(&[CONNECT]));
    assert_eq!(
        events.last(),
        Some(&Ev::Close {
            conn: 1,
            frame: 5,
            reset: false
        })
    );
    assert!(stats.truncated);
    assert_eq!(stats.frames, 5);
}

#[test]
fn progress_reaches_the_file_size() {
    let conv = mqtt_session("10.0.0.2:50000", "10.0.0.1:1883");
    let bytes = pcap(DataLink::ETHERNET, &conv.frames(Link::Ethernet));
    let size = bytes.len() as u64;
    let mut reader =
        CaptureReader::from_reader(Cursor::new(bytes), "t".into(), CaptureOptions::default())
            .unwrap();
    let progress = reader.progress();
    let mut seen = Vec::new();
    let stats = reader
        .run(&mut |_| seen.push(progress.bytes_read()))
        .unwrap();
    assert!(
        seen.windows(2).all(|w| w[0] <= w[1]) && seen[0] > 24,
        "{seen:?}"
    );
    assert_eq!((reader.bytes_read(), stats.bytes), (size, size));
}

/// Whatever the bytes, the reader neither panics nor loops: a valid capture with
/// random corruption and random cuts.
#[test]
fn corrupted_captures_never_panic() {
    let mut conv = mqtt_session("10.0.0.2:50000", "10.0.0.1:1883");
    conv.c(40, b"late").s(9, b"x");
    let good = pcap(DataLink::ETHERNET, &conv.frames(Link::Ethernet));
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    for round in 0..400 {
        let mut bytes = good.clone();
        for _ in 0..(next() % 8) {
            let i = 24 + (next() as usize % (bytes.len() - 24));
            bytes[i] = next() as u8;
        }
        if round % 3 == 0 {
            bytes.truncate(24 + next() as usize % (bytes.len() - 24));
        }
        let opts = CaptureOptions {
            ports: vec![1883],
            max_reorder_bytes: (next() % 64) as usize,
        };
        if let Ok(mut reader) = CaptureReader::from_reader(Cursor::new(bytes), "fuzz".into(), opts)
        {
            let _ = reader.run(&mut |_| {});
        }
    }
}

/// A reader handing out a few bytes at a time, as a pipe may.
struct Trickle(Cursor<Vec<u8>>);

impl std::io::Read for Trickle {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = buf.len().min(7);
        self.0.read(&mut buf[..n])
    }
}

#[test]
fn short_reads_change_nothing() {
    let conv = mqtt_session("10.0.0.2:50000", "10.0.0.1:1883");
    let pcap_bytes = pcap(DataLink::ETHERNET, &conv.frames(Link::Ethernet));
    let mut w = PcapNgWriter::new(Vec::new()).unwrap();
    w.write_pcapng_block(InterfaceDescriptionBlock {
        linktype: DataLink::ETHERNET,
        snaplen: 0,
        options: vec![],
    })
    .unwrap();
    for f in conv.frames(Link::Ethernet) {
        w.write_pcapng_block(EnhancedPacketBlock {
            interface_id: 0,
            timestamp: Duration::ZERO,
            original_len: f.len() as u32,
            data: Cow::Borrowed(&f),
            options: vec![],
        })
        .unwrap();
    }
    for bytes in [pcap_bytes, w.into_inner()] {
        let whole = read_default(bytes.clone());
        let mut reader = CaptureReader::from_reader(
            Trickle(Cursor::new(bytes)),
            "pipe".into(),
            CaptureOptions::default(),
        )
        .unwrap();
        let mut trickled = Vec::new();
        reader.run(&mut |e| trickled.push(own(e))).unwrap();
        assert_eq!(trickled, whole);
        assert_eq!(stream(&whole, 1, Side::Client), concat(&[CONNECT, PUBLISH]));
    }
}

#[test]
fn a_pcap_record_claiming_gigabytes_in_a_file_bigger_than_one_read_costs_no_memory() {
    // A file (1.5 MiB) bigger than the first read chunk, so the buffer has to grow: it
    // fails if the buffer is sized from the header (the old reader held 4 GB here).
    let mut file = vec![];
    file.extend_from_slice(&0xA1B2_C3D4u32.to_le_bytes());
    file.extend_from_slice(&2u16.to_le_bytes());
    file.extend_from_slice(&4u16.to_le_bytes());
    file.extend_from_slice(&[0; 8]);
    file.extend_from_slice(&u32::MAX.to_le_bytes());
    file.extend_from_slice(&1u32.to_le_bytes());
    file.extend_from_slice(&[0; 8]);
    file.extend_from_slice(&0xFFFF_FFF0u32.to_le_bytes());
    file.extend_from_slice(&0xFFFF_FFF0u32.to_le_bytes());
    file.resize(3 << 19, 0);
    let (end, held) = read_to_end(file, "hostile.pcap");
    let (message, corrupt) = end.expect("the lying record must end the capture");
    assert!(message.contains("ends after") && !corrupt, "{message}");
    assert!(held <= 4 << 20, "{held} bytes held for a 1.5 MiB file");
}
