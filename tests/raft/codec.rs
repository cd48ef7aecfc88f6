//! Property tests of the wire codec: arbitrary messages round-trip, and arbitrary or
//! truncated bytes decode to an error (never a panic); decoded garbage fed to a node is
//! dropped and counted, never a panic.

use proptest::prelude::*;
use ringway::raft::codec::{decode, encode};
use ringway::raft::{
    ConfChange, ConfChangeKind, ConfState, Config, Entry, EntryPayload, FounderVote, MemStorage,
    Message, MessageBody, Node, Snapshot, SnapshotMeta, VoteKind,
};

fn payload() -> impl Strategy<Value = EntryPayload> {
    prop_oneof![
        Just(EntryPayload::Empty),
        proptest::collection::vec(any::<u8>(), 0..40).prop_map(EntryPayload::Normal),
        (0u8..3, any::<u64>()).prop_map(|(k, node)| {
            let kind = [
                ConfChangeKind::AddLearner,
                ConfChangeKind::PromoteLearner,
                ConfChangeKind::RemoveNode,
            ][k as usize];
            EntryPayload::ConfChange(ConfChange { kind, node })
        }),
        proptest::collection::vec((any::<u64>(), any::<u64>()), 0..6).prop_map(|votes| {
            let votes = votes
                .into_iter()
                .map(|(node, life)| FounderVote { node, life });
            EntryPayload::Formed(votes.collect())
        }),
    ]
}

fn entry() -> impl Strategy<Value = Entry> {
    (any::<u64>(), any::<u64>(), payload()).prop_map(|(term, index, payload)| Entry {
        term,
        index,
        payload,
    })
}

fn vote_kind() -> impl Strategy<Value = VoteKind> {
    prop_oneof![Just(VoteKind::PreVote), Just(VoteKind::Vote)]
}

fn snapshot() -> impl Strategy<Value = Snapshot> {
    (
        any::<u64>(),
        any::<u64>(),
        proptest::collection::vec(any::<u64>(), 0..6),
        proptest::collection::vec(any::<u64>(), 0..4),
        proptest::collection::vec(any::<u8>(), 0..64),
    )
        .prop_map(|(index, term, voters, learners, data)| Snapshot {
            meta: SnapshotMeta {
                index,
                term,
                conf: ConfState { voters, learners },
            },
            data,
        })
}

fn body() -> impl Strategy<Value = MessageBody> {
    prop_oneof![
        (
            any::<u64>(),
            any::<u64>(),
            any::<u64>(),
            proptest::collection::vec(entry(), 0..5)
        )
            .prop_map(
                |(prev_index, prev_term, commit, entries)| MessageBody::Append {
                    prev_index,
                    prev_term,
                    commit,
                    entries
                }
            ),
        (any::<bool>(), any::<u64>(), any::<u64>(), any::<u64>()).prop_map(
            |(success, index, hint_index, hint_term)| {
                MessageBody::AppendResponse {
                    success,
                    index,
                    hint_index,
                    hint_term,
                }
            }
        ),
        any::<u64>().prop_map(|commit| MessageBody::Heartbeat { commit }),
        Just(MessageBody::HeartbeatResponse),
        (
            vote_kind(),
            any::<u64>(),
            any::<u64>(),
            any::<bool>(),
            prop_oneof![Just(0), any::<u64>()]
        )
            .prop_map(|(kind, last_index, last_term, transfer, life)| {
                MessageBody::Vote {
                    kind,
                    last_index,
                    last_term,
                    transfer,
                    life,
                }
            }),
        (
            vote_kind(),
            any::<bool>(),
            prop_oneof![Just(0), any::<u64>()]
        )
            .prop_map(|(kind, granted, life)| MessageBody::VoteResponse {
                kind,
                granted,
                life,
            }),
        snapshot().prop_map(|snapshot| MessageBody::Snapshot { snapshot }),
        Just(MessageBody::TimeoutNow),
    ]
}

fn message() -> impl Strategy<Value = Message> {
    (any::<u64>(), any::<u64>(), any::<u64>(), body()).prop_map(|(from, to, term, body)| Message {
        from,
        to,
        term,
        body,
    })
}

fn fresh_node() -> Node {
    let storage = MemStorage::new_with_conf(ConfState::with_voters(&[1, 2, 3]));
    Node::try_new(Config::try_new(1).unwrap(), &storage).unwrap()
}

/// Every message kind with every number at the edge of `u64`.
#[test]
fn extreme_numbers_are_dropped_not_panicked_on() {
    let max = u64::MAX;
    let snap = Snapshot {
        meta: SnapshotMeta {
            index: max,
            term: 1,
            conf: ConfState::with_voters(&[1, 2, 3]),
        },
        data: vec![],
    };
    let bodies = vec![
        MessageBody::Append {
            prev_index: max,
            prev_term: 1,
            commit: max,
            entries: vec![],
        },
        MessageBody::Append {
            prev_index: max - 1,
            prev_term: 1,
            commit: max,
            entries: vec![Entry {
                term: 1,
                index: max,
                payload: EntryPayload::Empty,
            }],
        },
        MessageBody::AppendResponse {
            success: true,
            index: max,
            hint_index: max,
            hint_term: max,
        },
        MessageBody::Heartbeat { commit: max },
        MessageBody::Vote {
            kind: VoteKind::PreVote,
            last_index: max,
            last_term: 1,
            transfer: true,
            life: 0,
        },
        MessageBody::Snapshot { snapshot: snap },
        MessageBody::TimeoutNow,
    ];
    for term in [1, max - 1, max] {
        for body in bodies.clone() {
            let mut node = fresh_node();
            node.step(Message {
                from: 2,
                to: 1,
                term,
                body,
            });
            for _ in 0..30 {
                node.tick();
            }
            let _ = node.ready();
        }
    }
}

proptest! {
    #[test]
    fn arbitrary_messages_round_trip(m in message()) {
        prop_assert_eq!(decode(&encode(&m)), Ok(m));
    }

    #[test]
    fn truncated_encodings_are_errors(m in message(), cut in any::<prop::sample::Index>()) {
        let bytes = encode(&m);
        let len = cut.index(bytes.len());
        prop_assert!(decode(&bytes[..len]).is_err());
    }

    #[test]
    fn garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
        let _ = decode(&bytes);
        let mut versioned = vec![ringway::raft::codec::WIRE_VERSION];
        versioned.extend_from_slice(&bytes);
        let _ = decode(&versioned);
    }

    #[test]
    fn arbitrary_peer_messages_never_panic_a_node(msgs in proptest::collection::vec(message(), 1..20)) {
        let mut node = fresh_node();
        let mut storage = MemStorage::new_with_conf(ConfState::with_voters(&[1, 2, 3]));
        for mut m in msgs {
            m.to = 1;
            m.from = 1 + m.from % 4;
            m.term = if m.term % 16 == 0 { m.term } else { m.term % 8 };
            node.step(m);
            node.tick();
            if let Some(rd) = node.ready() {
                let done = rd.persist(&mut storage);
                prop_assert!(done.is_ok(), "the core produced a batch storage refused: {:?}", done.err());
                if let Ok(done) = done {
                    prop_assert!(node.advance(done).is_ok());
                }
            }
        }
        let s = node.stats();
        prop_assert!(s.stepped >= 1);
    }
}

/// The messages that carry a founder's life have tags of their own (a vote request 9, a
/// grant 8, entry 2's payload 3), so every other message keeps its encoding; these bytes
/// are also in the fuzz corpus.
#[test]
fn messages_naming_a_founders_life_have_a_fixed_encoding() {
    let life = 0x1234_5678_9abc_def0;
    let cases = [
        (
            "010102050901010100f0bdf3d589cf959a12",
            Message {
                from: 1,
                to: 2,
                term: 5,
                body: MessageBody::Vote {
                    kind: VoteKind::Vote,
                    last_index: 1,
                    last_term: 1,
                    transfer: false,
                    life,
                },
            },
        ),
        (
            "01020105080101f0bdf3d589cf959a12",
            Message {
                from: 2,
                to: 1,
                term: 5,
                body: MessageBody::VoteResponse {
                    kind: VoteKind::Vote,
                    granted: true,
                    life,
                },
            },
        ),
        (
            "0101020500010101010502030202f0bdf3d589cf959a120307",
            Message {
                from: 1,
                to: 2,
                term: 5,
                body: MessageBody::Append {
                    prev_index: 1,
                    prev_term: 1,
                    commit: 1,
                    entries: vec![Entry {
                        term: 5,
                        index: 2,
                        payload: EntryPayload::Formed(vec![
                            FounderVote { node: 2, life },
                            FounderVote { node: 3, life: 7 },
                        ]),
                    }],
                },
            },
        ),
        // Without a life, a vote request and a grant keep their version 1 tags.
        (
            "0101020504010101 00",
            Message {
                from: 1,
                to: 2,
                term: 5,
                body: MessageBody::Vote {
                    kind: VoteKind::Vote,
                    last_index: 1,
                    last_term: 1,
                    transfer: false,
                    life: 0,
                },
            },
        ),
        (
            "0102010505 0101",
            Message {
                from: 2,
                to: 1,
                term: 5,
                body: MessageBody::VoteResponse {
                    kind: VoteKind::Vote,
                    granted: true,
                    life: 0,
                },
            },
        ),
    ];
    for (hex, msg) in cases {
        let hex: String = hex.split_whitespace().collect();
        let bytes: Vec<u8> = (0..hex.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
            .collect();
        assert_eq!(encode(&msg), bytes, "{msg:?}");
        assert_eq!(decode(&bytes), Ok(msg));
    }
}
