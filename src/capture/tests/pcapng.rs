//! pcapng: interfaces with their own link types and time resolutions, simple packet
//! blocks, option lists, sections of both byte orders, a packet of an unknown
//! interface, cut and corrupted blocks, and blocks that lie about their length.

use super::*;

#[test]
fn pcapng_interfaces_with_own_link_types_and_time_resolutions() {
    let eth = mqtt_session("10.0.0.2:50000", "10.0.0.1:1883");
    let raw = mqtt_session("10.0.0.3:50000", "10.0.0.1:1883");
    let mut w = PcapNgWriter::new(Vec::new()).unwrap();
    // Interface 0: Ethernet, nanoseconds. Interface 1: raw IP, default microseconds,
    // offset by 10 s. Interface 2 (SPB only uses interface 0).
    w.write_pcapng_block(InterfaceDescriptionBlock {
        linktype: DataLink::ETHERNET,
        snaplen: 0,
        options: vec![InterfaceDescriptionOption::IfTsResol(9)],
    })
    .unwrap();
    w.write_pcapng_block(InterfaceDescriptionBlock {
        linktype: DataLink::RAW,
        snaplen: 0,
        options: vec![InterfaceDescriptionOption::IfTsOffset(10)],
    })
    .unwrap();
    let (ef, rf) = (eth.frames(Link::Ethernet), raw.frames(Link::Raw));
    for i in 0..ef.len() {
        // pcap-file writes the raw timestamp units through Duration::as_nanos.
        let ns = Duration::from_nanos((T0_US as u64 + i as u64) * 1000 + 999);
        w.write_pcapng_block(EnhancedPacketBlock {
            interface_id: 0,
            timestamp: ns,
            original_len: ef[i].len() as u32,
            data: Cow::Borrowed(&ef[i]),
            options: vec![],
        })
        .unwrap();
        let us = Duration::from_nanos(T0_US as u64 + i as u64);
        w.write_pcapng_block(EnhancedPacketBlock {
            interface_id: 1,
            timestamp: us,
            original_len: rf[i].len() as u32,
            data: Cow::Borrowed(&rf[i]),
            options: vec![],
        })
        .unwrap();
    }
    // A Simple Packet Block (interface 0, no timestamp): a retransmission, odd length.
    w.write_pcapng_block(SimplePacketBlock {
        original_len: ef[3].len() as u32,
        data: Cow::Borrowed(&ef[3]),
    })
    .unwrap();
    let mut reader = CaptureReader::from_reader(
        Cursor::new(w.into_inner()),
        "t.pcapng".into(),
        CaptureOptions::default(),
    )
    .unwrap();
    let mut events = Vec::new();
    let mut opens = Vec::new();
    let stats = reader
        .run(&mut |e| {
            if let FlowEvent::Open { time_us, .. } = e {
                opens.push(time_us);
            }
            events.push(own(e))
        })
        .unwrap();
    assert_eq!(opens, vec![T0_US, T0_US + 10_000_000]);
    assert_eq!(stats.frames, 19);
    for conn in [1, 2] {
        assert_eq!(
            stream(&events, conn, Side::Client),
            concat(&[CONNECT, PUBLISH]),
            "{events:?}"
        );
        assert_eq!(stream(&events, conn, Side::Server), concat(&[CONNACK]));
    }
    assert_eq!(
        count(&events, |e| matches!(e, Ev::Bad { .. })),
        0,
        "{events:?}"
    );
}

#[test]
fn pcapng_simple_packet_block_data_excludes_padding() {
    let mut conv = Conv::new("10.0.0.2:50000", "10.0.0.1:1883");
    conv.c(0, b"\xc0\x00\x01"); // odd length: the block is padded
    let f = &conv.frames(Link::Raw)[0];
    let mut w = PcapNgWriter::new(Vec::new()).unwrap();
    w.write_pcapng_block(InterfaceDescriptionBlock {
        linktype: DataLink::RAW,
        snaplen: 0,
        options: vec![],
    })
    .unwrap();
    w.write_pcapng_block(SimplePacketBlock {
        original_len: f.len() as u32,
        data: Cow::Borrowed(f),
    })
    .unwrap();
    let events = read_default(w.into_inner());
    assert_eq!(stream(&events, 1, Side::Client), "\u{fffd}\x00\x01");
}

#[test]
fn truncated_pcapng_block_is_reported() {
    let conv = mqtt_session("10.0.0.2:50000", "10.0.0.1:1883");
    let mut w = PcapNgWriter::new(Vec::new()).unwrap();
    w.write_pcapng_block(InterfaceDescriptionBlock {
        linktype: DataLink::ETHERNET,
        snaplen: 0,
        options: vec![],
    })
    .unwrap();
    for f in &conv.frames(Link::Ethernet)[..5] {
        w.write_pcapng_block(EnhancedPacketBlock {
            interface_id: 0,
            timestamp: Duration::from_nanos(T0_US as u64),
            original_len: f.len() as u32,
            data: Cow::Borrowed(f),
            options: vec![],
        })
        .unwrap();
    }
    let mut bytes = w.into_inner();
    bytes.truncate(bytes.len() - 3);
    let (events, stats) = read_all(bytes, CaptureOptions::default());
    assert!(events.iter().any(|e| matches!(e, Ev::Bad { frame: 5, message } if message.contains("frame 5 at byte offset") && message.contains("truncated pcapng block"))), "{events:?}");
    assert!(stats.truncated);
    assert_eq!(stream(&events, 1, Side::Client), concat(&[CONNECT]));
    assert_eq!(
        events.last(),
        Some(&Ev::Close {
            conn: 1,
            frame: 4,
            reset: false
        })
    );
}

/// A pcapng block, little-endian: type, length, body padded to 4 bytes, length.
fn block_le(type_: u32, body: &[u8]) -> Vec<u8> {
    let padded = (body.len() + 3) & !3;
    let len = (12 + padded) as u32;
    let mut b = type_.to_le_bytes().to_vec();
    b.extend_from_slice(&len.to_le_bytes());
    b.extend_from_slice(body);
    b.resize(8 + padded, 0);
    b.extend_from_slice(&len.to_le_bytes());
    b
}

fn epb_le(interface: u32, ts_units: u64, data: &[u8]) -> Vec<u8> {
    let mut body = interface.to_le_bytes().to_vec();
    body.extend_from_slice(&((ts_units >> 32) as u32).to_le_bytes());
    body.extend_from_slice(&(ts_units as u32).to_le_bytes());
    body.extend_from_slice(&(data.len() as u32).to_le_bytes());
    body.extend_from_slice(&(data.len() as u32).to_le_bytes());
    body.extend_from_slice(data);
    block_le(6, &body)
}

#[test]
fn pcapng_option_lists_without_end_marker_are_read() {
    // The specification lets a writer end an option list at the end of the block,
    // without opt_endofopt; pcap-file 2.0's reader rejects that, this one must not.
    let conv = mqtt_session("10.0.0.2:50000", "10.0.0.1:1883");
    let mut shb = vec![0x4D, 0x3C, 0x2B, 0x1A, 1, 0, 0, 0];
    shb.extend_from_slice(&(-1i64).to_le_bytes());
    shb.extend_from_slice(&[1, 0, 5, 0]); // opt_comment, 5 bytes, not UTF-8
    shb.extend_from_slice(&[0xff, 0xfe, 0xfd, 0xfc, 0xfb, 0, 0, 0]);
    let mut bytes = block_le(0x0A0D_0D0A, &shb);
    let mut idb = vec![1, 0, 0, 0, 0, 0, 4, 0]; // Ethernet, snaplen 262144
    idb.extend_from_slice(&[9, 0, 1, 0, 3, 0, 0, 0]); // if_tsresol = 3 (milliseconds)
    bytes.extend(block_le(1, &idb));
    bytes.extend(block_le(0x0000_0BAD, b"an unknown block type")); // skipped
    for (i, f) in conv.frames(Link::Ethernet).iter().enumerate() {
        bytes.extend(epb_le(0, 1_700_000_000_000 + i as u64, f));
    }
    let mut reader = CaptureReader::from_reader(
        Cursor::new(bytes),
        "t.pcapng".into(),
        CaptureOptions::default(),
    )
    .unwrap();
    let mut events = Vec::new();
    let mut open_time = None;
    reader
        .run(&mut |e| {
            if let FlowEvent::Open { time_us, .. } = e {
                open_time = Some(time_us);
            }
            events.push(own(e))
        })
        .unwrap();
    assert_eq!(open_time, Some(T0_US));
    assert_eq!(
        stream(&events, 1, Side::Client),
        concat(&[CONNECT, PUBLISH]),
        "{events:?}"
    );
    assert!(
        matches!(
            events.last(),
            Some(Ev::Close {
                conn: 1,
                frame: 8,
                reset: false
            })
        ),
        "{events:?}"
    );
}

#[test]
fn pcapng_sections_of_both_byte_orders_follow_each_other() {
    let first = mqtt_session("10.0.0.2:50000", "10.0.0.1:1883");
    let second = mqtt_session("10.0.0.3:50000", "10.0.0.1:1883");
    let mut bytes = Vec::new();
    for (conv, endianness) in [(&first, Endianness::Little), (&second, Endianness::Big)] {
        let mut w = PcapNgWriter::with_endianness(Vec::new(), endianness).unwrap();
        w.write_pcapng_block(InterfaceDescriptionBlock {
            linktype: DataLink::ETHERNET,
            snaplen: 0,
            options: vec![],
        })
        .unwrap();
        for f in conv.frames(Link::Ethernet) {
            w.write_pcapng_block(EnhancedPacketBlock {
                interface_id: 0,
                timestamp: Duration::from_nanos(T0_US as u64),
                original_len: f.len() as u32,
                data: Cow::Borrowed(&f),
                options: vec![],
            })
            .unwrap();
        }
        bytes.extend(w.into_inner());
    }
    let (events, stats) = read_all(bytes, CaptureOptions::default());
    assert_eq!(stats.frames, 18);
    for conn in [1, 2] {
        assert_eq!(
            stream(&events, conn, Side::Client),
            concat(&[CONNECT, PUBLISH]),
            "{events:?}"
        );
    }
}

#[test]
fn pcapng_packet_naming_an_unknown_interface_is_a_bad_frame() {
    let conv = mqtt_session("10.0.0.2:50000", "10.0.0.1:1883");
    let mut w = PcapNgWriter::new(Vec::new()).unwrap();
    w.write_pcapng_block(InterfaceDescriptionBlock {
        linktype: DataLink::ETHERNET,
        snaplen: 0,
        options: vec![],
    })
    .unwrap();
    let mut bytes = w.into_inner();
    let frames = conv.frames(Link::Ethernet);
    bytes.extend(epb_le(3, 0, &frames[0]));
    let (events, _) = read_all(bytes, CaptureOptions::default());
    assert!(
        matches!(&events[..], [Ev::Bad { frame: 1, message }] if message.contains("names interface 3, but the section describes 1")),
        "{events:?}"
    );
}

#[test]
fn corrupted_pcapng_never_panics() {
    let mut conv = mqtt_session("10.0.0.2:50000", "10.0.0.1:1883");
    conv.c(40, b"late").s(9, b"x");
    let mut w = PcapNgWriter::new(Vec::new()).unwrap();
    w.write_pcapng_block(InterfaceDescriptionBlock {
        linktype: DataLink::ETHERNET,
        snaplen: 0,
        options: vec![InterfaceDescriptionOption::IfTsResol(9)],
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
    let good = w.into_inner();
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    for round in 0..400 {
        let mut bytes = good.clone();
        for _ in 0..(next() % 6) {
            let i = next() as usize % bytes.len();
            bytes[i] = next() as u8;
        }
        if round % 3 == 0 {
            bytes.truncate(next() as usize % bytes.len());
        }
        if let Ok(mut reader) =
            CaptureReader::from_reader(Cursor::new(bytes), "fuzz".into(), CaptureOptions::default())
        {
            let _ = reader.run(&mut |_| {});
        }
    }
}

/// A little-endian pcapng section header and one Ethernet interface: 48 bytes.
fn pcapng_head_le() -> Vec<u8> {
    let block = |kind: u32, body: &[u8]| {
        let len = (12 + body.len()) as u32;
        let mut b = kind.to_le_bytes().to_vec();
        b.extend_from_slice(&len.to_le_bytes());
        b.extend_from_slice(body);
        b.extend_from_slice(&len.to_le_bytes());
        b
    };
    let mut shb = 0x1A2B_3C4Du32.to_le_bytes().to_vec();
    shb.extend_from_slice(&[1, 0, 0, 0]);
    shb.extend_from_slice(&(-1i64).to_le_bytes());
    let mut idb = 1u16.to_le_bytes().to_vec();
    idb.extend_from_slice(&[0, 0]);
    idb.extend_from_slice(&65535u32.to_le_bytes());
    let mut file = block(0x0A0D_0D0A, &shb);
    file.extend(block(1, &idb));
    assert_eq!(file.len(), 48);
    file
}

#[test]
fn a_pcapng_block_claiming_sixteen_megabytes_costs_no_memory() {
    // Just under the largest block accepted (16 MiB): framing is not refused, so only
    // the read-ahead buffer's growth bound keeps memory near what was read. The file
    // holds 1.5 MiB, more than the first read chunk, so the buffer has to grow.
    let mut file = pcapng_head_le();
    file.extend_from_slice(&6u32.to_le_bytes());
    file.extend_from_slice(&((16u32 << 20) - 4).to_le_bytes());
    file.resize(3 << 19, 0);
    let (end, held) = read_to_end(file, "hostile.pcapng");
    let (message, corrupt) = end.expect("the lying block must end the capture");
    assert!(message.contains("ends after") && !corrupt, "{message}");
    assert!(held <= 4 << 20, "{held} bytes held for a 1.5 MiB file");
}

#[test]
fn a_pcapng_block_claiming_a_gigabyte_is_broken_framing_named_by_offset() {
    let mut file = pcapng_head_le();
    file.extend_from_slice(&6u32.to_le_bytes());
    file.extend_from_slice(&(1u32 << 30).to_le_bytes());
    file.extend_from_slice(&[0; 200]);
    let (end, held) = read_to_end(file, "hostile.pcapng");
    let (message, corrupt) = end.expect("the lying block must end the capture");
    assert!(corrupt, "{message}");
    assert!(
        message.starts_with("hostile.pcapng: frame 1 at byte offset 48: ")
            && message.contains("1073741824"),
        "{message}"
    );
    assert!(held <= 1 << 20, "{held} bytes held");
}

#[test]
fn a_capture_cut_inside_its_last_record_is_cut_not_corrupt() {
    let mut file = pcapng_head_le();
    // An enhanced packet block of 64 bytes, of which the file holds 40.
    file.extend_from_slice(&6u32.to_le_bytes());
    file.extend_from_slice(&64u32.to_le_bytes());
    file.extend_from_slice(&[0; 32]);
    let (end, _) = read_to_end(file, "cut.pcapng");
    let (message, corrupt) = end.expect("the cut block ends the capture");
    assert!(
        !corrupt && message.contains("ends after 40 of its 64 bytes"),
        "{message}"
    );
}

#[test]
fn stats_say_where_reading_stopped_and_which_ports_carried_traffic() {
    let mut file = pcapng_head_le();
    file.extend_from_slice(&[0xFF; 64]);
    let mut reader =
        CaptureReader::from_reader(Cursor::new(file), "bad.pcapng".into(), Default::default())
            .unwrap();
    let stats = reader.run(&mut |_| {}).unwrap();
    let stop = stats
        .unreadable()
        .expect("broken framing makes it unreadable");
    assert_eq!((stop.frame, stop.offset, stop.corrupt), (1, 48, true));
    assert!(stop
        .message
        .contains("bad.pcapng: frame 1 at byte offset 48"));
}
