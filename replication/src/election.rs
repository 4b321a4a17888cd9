//! Promotion: the rule by which a standby becomes primary of a new epoch without losing an
//! acknowledged input (docs/design.md, "Replication", has the proof sketch).
//!
//! With N nodes and a policy that waits for k standbys, an acknowledged input is held by
//! k + 1 nodes. A candidate for epoch e + 1 collects promises from N − k nodes (itself
//! included); any N − k nodes and any k + 1 nodes share at least one, so some promiser holds
//! every acknowledged input. Each promiser reports its log's last (epoch, sequence); the
//! candidate takes the log that is longest in the highest epoch, fetches what it lacks from
//! that promiser, and only then serves. A promiser refuses anything of a lower epoch from
//! then on, which leaves the old primary fewer than k nodes to acknowledge with.

use std::collections::BTreeMap;

use crate::message::{LogPosition, Message};

/// What a recovering node answers a candidate's `Prepare` (see [`on_prepare`]).
pub const RECOVERING_REFUSAL: &str = "recovering: this node's log was rebuilt (or started empty) and has not yet \
     caught up with a primary, so it may lack inputs it once acknowledged; it promises nothing and is not promoted \
     until a primary's heartbeat shows it holds everything that primary has";

/// The acceptor's rule, on every node: promise a higher epoch (after persisting it), tell
/// a lower or equal one about the epoch already promised. A `recovering` node (its log was
/// rebuilt and has not caught up with a primary since) promises nothing: the rule counts
/// each promiser as a holder of every input it acknowledged, and its log may lack some.
pub fn on_prepare(current_epoch: u32, position: LogPosition, epoch: u32, recovering: bool) -> Prepared {
    if holds_back(recovering) {
        return Prepared::Refuse(Message::Refused { reason: RECOVERING_REFUSAL.into() });
    }
    if epoch <= current_epoch {
        return Prepared::Refuse(Message::NewerEpoch { epoch: current_epoch });
    }
    Prepared::Promise { persist_epoch: epoch, reply: Message::Promise { epoch, position } }
}

/// What a node asked for a pre-vote knows of a live primary.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PrimaryContact {
    /// This node is the primary of its epoch and serves.
    Serving,
    /// This node last heard a primary (or promised a candidate) this long ago.
    Silent(std::time::Duration),
}

/// The pre-vote rule (Raft's pre-vote with leader stickiness, docs/design.md §7a): what a
/// node holding `own` answers an automatic candidate holding `candidate` that asks for
/// `epoch` with the timeout `after`. The serving primary vetoes (`PrimaryServing`), before
/// anything else: it is alive and the candidate reaches it. Otherwise the node grants only
/// what it would promise ([`on_prepare`]: not recovering, no epoch as new), only without a
/// sign of a live primary (it has heard none for at least `after / 2`), and, when it
/// `stands` for promotion itself (it runs the watch), only if its own log is not ahead of
/// the candidate's (a higher last epoch, or longer in the same one): it will stand with the
/// better log. A node that never stands grants whatever its log, else a better log held
/// by a node without a watch would stop every automatic failover. Nothing is persisted and
/// no role changes, whatever the answer: a candidate cut off from the rest asks, is
/// refused, and returns with the epoch it had, so it fences nobody when the partition heals.
#[allow(clippy::too_many_arguments)]
pub fn on_pre_vote(
    current_epoch: u32,
    own: LogPosition,
    epoch: u32,
    candidate: LogPosition,
    recovering: bool,
    stands: bool,
    contact: PrimaryContact,
    after: std::time::Duration,
) -> Message {
    if contact == PrimaryContact::Serving {
        return Message::PrimaryServing { epoch: current_epoch };
    }
    if holds_back(recovering) {
        return Message::Refused { reason: RECOVERING_REFUSAL.into() };
    }
    if epoch <= current_epoch {
        return Message::NewerEpoch { epoch: current_epoch };
    }
    if stands && (own.last_epoch, own.last_sequence) > (candidate.last_epoch, candidate.last_sequence) {
        return Message::Refused {
            reason: format!(
                "this node's log (to sequence {} of epoch {}) is ahead of the candidate's (to sequence {} of epoch {}): \
                 it stands itself",
                own.last_sequence, own.last_epoch, candidate.last_sequence, candidate.last_epoch
            ),
        };
    }
    match contact {
        PrimaryContact::Silent(silence) if silence < after / 2 => {
            Message::Refused { reason: format!("this node heard its primary {} ms ago", silence.as_millis()) }
        }
        _ => Message::PreVoteGranted { epoch },
    }
}

/// How long a pre-vote that already carries still waits for the answers not yet in: the
/// serving primary's veto ([`Message::PrimaryServing`]) comes within milliseconds from a
/// live primary, while a dead machine's connection can take the whole timeout to fail.
pub const PRE_VOTE_VETO_GRACE: std::time::Duration = std::time::Duration::from_millis(200);

/// An automatic candidate's pre-vote for `epoch`: it goes on to the election (which
/// persists the epoch and stops its standby) only once N − k nodes, itself included,
/// would promise, the count the election itself needs.
pub struct PreVote {
    epoch: u32,
    needed: usize,
    granted: std::collections::BTreeSet<String>,
    /// A serving primary answered: it is alive and reached, whatever others grant.
    vetoed: bool,
}

impl PreVote {
    /// A candidate holding `own` whose auto-promotion timeout is `after`, in a replica set of `nodes`,
    /// under a policy that waits for `replicas` standbys; send the returned `PreVote` to
    /// every peer.
    pub fn start(
        epoch: u32,
        own: LogPosition,
        nodes: usize,
        replicas: usize,
        after: std::time::Duration,
    ) -> (PreVote, Message) {
        let needed = nodes.saturating_sub(replicas).max(1);
        let after_ms = u32::try_from(after.as_millis()).unwrap_or(u32::MAX);
        let message = Message::PreVote { epoch, after_ms, position: own };
        (PreVote { epoch, needed, granted: std::collections::BTreeSet::new(), vetoed: false }, message)
    }

    /// A peer's answer; a grant for another epoch (a stale answer) counts for nothing, a
    /// serving primary's answer vetoes.
    pub fn on_message(&mut self, peer: &str, message: &Message) {
        match *message {
            Message::PreVoteGranted { epoch } if epoch == self.epoch => {
                self.granted.insert(peer.to_owned());
            }
            Message::PrimaryServing { .. } => self.vetoed = true,
            _ => {}
        }
    }

    /// Whether a serving primary answered.
    pub fn vetoed(&self) -> bool {
        self.vetoed
    }

    /// Nodes that would promise, the candidate included.
    pub fn granted(&self) -> usize {
        self.granted.len() + 1
    }

    pub fn needed(&self) -> usize {
        self.needed
    }

    pub fn carried(&self) -> bool {
        !self.vetoed && self.granted() >= self.needed
    }
}

/// Whether a recovering node holds back from promising and from standing for promotion:
/// always, unless the planted bug is switched on.
pub fn holds_back(recovering: bool) -> bool {
    #[cfg(feature = "sim-bugs")]
    if crate::planted::on(crate::planted::Planted::RecoveringPromises) {
        return false;
    }
    recovering
}

/// How many of its `peers` a node that lost its epoch file (a new node, a replaced disk)
/// waits to hear the epochs of before it follows anyone, taking the highest: k + 1, or all
/// of them when there are fewer. Every promotion it missed had N − k promises, at least
/// N − k − 1 of them from these peers (it was perhaps one itself), and any N − k − 1 and
/// any k + 1 of the N − 1 peers share a node: so the answers include a promiser of the
/// newest promotion, and this node then refuses the primary that promotion deposed, whose
/// k acknowledgements it could otherwise complete. The argument counts on the other
/// nodes keeping their epochs (a second node without one answers 0), and on a promiser
/// other than this node (with N − k = 1 the candidate alone promised, and if that was
/// this node nothing can restore its promise).
pub fn epoch_answers_needed(replicas: usize, peers: usize) -> usize {
    #[cfg(feature = "sim-bugs")]
    if crate::planted::on(crate::planted::Planted::OneEpochAnswer) {
        return peers.min(1);
    }
    replicas.saturating_add(1).min(peers)
}

/// The epoch a candidate at position `index` of a replica set of `nodes` (`--cluster`, in
/// the same order on every node) asks for when the highest epoch it knows is `known`: the
/// smallest above it that is `index` modulo `nodes`. Each epoch has one owner, so no two
/// candidates ever ask for the same one, forced or not: two promotions forced on both
/// sides of a partition take different epochs, and the higher fences the lower when they
/// meet. With one candidate per epoch, which persists the epoch before it asks anyone and
/// never goes back to it, at most one node is ever primary of an epoch (invariant 6). At
/// most `nodes` above `known`; `None` past `u32::MAX`.
pub fn candidate_epoch(known: u32, index: usize, nodes: usize) -> Option<u32> {
    let nodes = u64::try_from(nodes.max(1)).ok()?;
    let index = u64::try_from(index).ok()? % nodes;
    let next = u64::from(known) + 1;
    let epoch = next + (index + nodes - next % nodes) % nodes;
    u32::try_from(epoch).ok()
}

/// The node that may be candidate for (and so primary of) `epoch`: its position in
/// `--cluster`. Epoch 0 is the first primary's, started with `tally serve`.
pub fn epoch_owner(epoch: u32, nodes: usize) -> usize {
    usize::try_from(u64::from(epoch) % u64::try_from(nodes.max(1)).unwrap_or(1)).unwrap_or(0)
}

#[derive(Debug, PartialEq, Eq)]
pub enum Prepared {
    /// Persist (fsync) `persist_epoch`, stop acting in any older epoch, then send `reply`.
    Promise {
        persist_epoch: u32,
        reply: Message,
    },
    Refuse(Message),
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ElectionError {
    #[error("a node already holds epoch {epoch}, at least as new as the one asked for")]
    Superseded { epoch: u32 },
    #[error("only {promised} of the {needed} nodes needed promised epoch {epoch}")]
    NotEnoughPromises { epoch: u32, promised: usize, needed: usize },
    #[error(
        "this node's log (to sequence {own} of epoch {own_epoch}) is not a prefix of the longest log in the highest \
         epoch (to sequence {target} of epoch {target_epoch}): promote that log's holder instead"
    )]
    Diverged { own: u64, own_epoch: u32, target: u64, target_epoch: u32 },
}

/// What the candidate does once the rule is met.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decision {
    pub epoch: u32,
    /// The promiser whose log to fetch from, or `None` when the candidate's own log is the
    /// longest in the highest epoch.
    pub source: Option<String>,
    /// The log the new primary must hold before it serves.
    pub target: LogPosition,
}

impl Decision {
    /// Whether a candidate whose log ended at `own` when it decided can serve after
    /// fetching `own.last_sequence + 1..=target` from the source. A source's log beats
    /// `own` by a higher last epoch or by more records in the same epoch; if it is no
    /// longer than `own`, its last record is of a newer epoch than the record `own` holds
    /// at that sequence, so `own` diverged from it (and may lack acknowledged inputs it
    /// holds): nothing to fetch would mend that, and serving `own` would lose them.
    pub fn check_own(&self, own: LogPosition) -> Result<(), ElectionError> {
        if self.source.is_some() && self.target.last_sequence <= own.last_sequence {
            return Err(ElectionError::Diverged {
                own: own.last_sequence,
                own_epoch: own.last_epoch,
                target: self.target.last_sequence,
                target_epoch: self.target.last_epoch,
            });
        }
        Ok(())
    }
}

pub struct Election {
    epoch: u32,
    needed: usize,
    own: LogPosition,
    promises: BTreeMap<String, LogPosition>,
}

impl Election {
    /// A candidate holding `own`, in a replica set of `nodes`, asks for `epoch` under a
    /// policy that waits for `replicas` standbys. Send the returned `Prepare` to every peer.
    pub fn start(epoch: u32, own: LogPosition, nodes: usize, replicas: usize) -> (Election, Message) {
        let needed = nodes.saturating_sub(replicas).max(1);
        (Election { epoch, needed, own, promises: BTreeMap::new() }, Message::Prepare { epoch })
    }

    pub fn needed(&self) -> usize {
        self.needed
    }

    /// Promises so far, the candidate's own included.
    pub fn promised(&self) -> usize {
        self.promises.len() + 1
    }

    /// A peer's answer to the `Prepare`.
    pub fn on_message(&mut self, peer: &str, message: &Message) -> Result<(), ElectionError> {
        match *message {
            Message::Promise { epoch, position } if epoch == self.epoch => {
                self.promises.insert(peer.to_owned(), position);
                Ok(())
            }
            Message::NewerEpoch { epoch } if epoch >= self.epoch => Err(ElectionError::Superseded { epoch }),
            // A stale answer to an older election: ignored.
            _ => Ok(()),
        }
    }

    /// The decision once N − k nodes have promised; `None` until then.
    pub fn decision(&self) -> Option<Decision> {
        #[cfg(feature = "sim-bugs")]
        if crate::planted::on(crate::planted::Planted::PromoteWithoutPromises) {
            return Some(self.decide());
        }
        (self.promised() >= self.needed).then(|| self.decide())
    }

    /// `--force`: decide with whatever promises arrived, and say how many of the nodes
    /// the rule needs did not promise. Any input acknowledged after the decided log's
    /// last sequence may be held only by those nodes, and is lost by forcing.
    pub fn force(&self) -> (Decision, usize) {
        (self.decide(), self.needed.saturating_sub(self.promised()))
    }

    /// Refusal without `--force`.
    pub fn refuse(&self) -> ElectionError {
        ElectionError::NotEnoughPromises { epoch: self.epoch, promised: self.promised(), needed: self.needed }
    }

    fn decide(&self) -> Decision {
        let mut best = (None, self.own);
        for (peer, position) in &self.promises {
            let longer = (position.last_epoch, position.last_sequence) > (best.1.last_epoch, best.1.last_sequence);
            if longer {
                best = (Some(peer.clone()), *position);
            }
        }
        Decision { epoch: self.epoch, source: best.0, target: best.1 }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pre_vote_is_granted_only_by_a_node_without_a_live_primary_and_changes_nothing() {
        use std::time::Duration;
        let after = Duration::from_millis(1_000);
        let silent = PrimaryContact::Silent(Duration::from_millis(600));
        let at = |last_epoch, last_sequence| LogPosition { last_epoch, last_sequence, last_chain: [0; 16] };
        let vote = |current, own, contact, recovering| {
            on_pre_vote(current, own, 3, at(2, 50), recovering, true, contact, after)
        };
        assert_eq!(vote(2, at(2, 50), silent, false), Message::PreVoteGranted { epoch: 3 });
        assert_eq!(vote(2, at(1, 90), silent, false), Message::PreVoteGranted { epoch: 3 }, "longer, but older");
        let heard = PrimaryContact::Silent(Duration::from_millis(400));
        assert!(matches!(vote(2, at(2, 50), heard, false), Message::Refused { .. }), "heard its primary lately");
        assert_eq!(vote(2, at(2, 50), PrimaryContact::Serving, false), Message::PrimaryServing { epoch: 2 });
        assert_eq!(
            vote(2, at(2, 60), PrimaryContact::Serving, false),
            Message::PrimaryServing { epoch: 2 },
            "a serving primary vetoes also when its log is ahead (it usually is)"
        );
        assert_eq!(
            vote(3, at(3, 60), PrimaryContact::Serving, false),
            Message::PrimaryServing { epoch: 3 },
            "and when it holds the epoch asked"
        );
        assert!(matches!(vote(2, at(2, 51), silent, false), Message::Refused { .. }), "its log is longer");
        assert!(matches!(vote(2, at(3, 1), silent, false), Message::Refused { .. }), "its log is of a newer epoch");
        assert_eq!(
            on_pre_vote(2, at(3, 1), 3, at(2, 50), false, false, silent, after),
            Message::PreVoteGranted { epoch: 3 },
            "a node that never stands itself grants whatever its log"
        );
        assert_eq!(vote(3, at(2, 50), silent, false), Message::NewerEpoch { epoch: 3 });
        assert_eq!(
            vote(2, at(2, 50), silent, true),
            Message::Refused { reason: RECOVERING_REFUSAL.into() },
            "a recovering node would not promise, so it does not pre-vote either"
        );
    }

    #[test]
    fn a_pre_vote_carries_with_the_count_the_election_needs() {
        use std::time::Duration;
        // Three nodes under replicated:1: the candidate and one more.
        let own = LogPosition { last_epoch: 2, last_sequence: 9, last_chain: [1; 16] };
        let (mut vote, message) = PreVote::start(4, own, 3, 1, Duration::from_millis(1_500));
        assert_eq!(message, Message::PreVote { epoch: 4, after_ms: 1_500, position: own });
        assert!(!vote.carried());
        vote.on_message("b", &Message::PreVoteGranted { epoch: 3 });
        vote.on_message("b", &Message::Refused { reason: "heard".into() });
        assert!(!vote.carried(), "a grant of another epoch and a refusal count for nothing");
        vote.on_message("c", &Message::PreVoteGranted { epoch: 4 });
        assert!(vote.carried());
        // Five nodes under replicated:1 need four: the same peer twice counts once.
        let (mut vote, _) = PreVote::start(4, own, 5, 1, Duration::from_millis(1_500));
        for _ in 0..3 {
            vote.on_message("b", &Message::PreVoteGranted { epoch: 4 });
        }
        assert_eq!((vote.granted(), vote.needed()), (2, 4));
        // Two nodes under replicated:1 need the candidate alone, unless the primary it
        // reaches says it serves.
        let (mut vote, _) = PreVote::start(4, own, 2, 1, Duration::from_millis(1_500));
        assert!(vote.carried());
        vote.on_message("a", &Message::PrimaryServing { epoch: 3 });
        assert!(!vote.carried() && vote.vetoed());
    }

    /// Every way the answers can fall: for N up to 7 and every k < N, every set of N − k
    /// promisers (perhaps including the node that lost its epoch, node 0) and every set of
    /// `epoch_answers_needed` answering peers share a node other than node 0. Left out:
    /// node 0 as the only promiser (N − k = 1), whose lost promise nothing can restore.
    #[test]
    fn the_epoch_answers_a_node_waits_for_always_include_a_promiser_of_the_last_promotion() {
        for nodes in 2..=7usize {
            for replicas in 0..nodes {
                let needed = epoch_answers_needed(replicas, nodes - 1);
                let sets = |size: usize| (0u32..1 << nodes).filter(move |set| set.count_ones() as usize == size);
                for promisers in sets(nodes - replicas).filter(|set| set & !1 != 0) {
                    for answered in sets(needed).filter(|set| set & 1 == 0) {
                        assert_ne!(
                            promisers & answered & !1,
                            0,
                            "N = {nodes}, k = {replicas}: promisers {promisers:b}, answers {answered:b}"
                        );
                    }
                }
            }
        }
        assert_eq!(epoch_answers_needed(1, 0), 0, "a lone node waits for no one");
    }

    fn at(last_epoch: u32, last_sequence: u64) -> LogPosition {
        LogPosition { last_epoch, last_sequence, last_chain: [last_sequence as u8; 16] }
    }

    #[test]
    fn each_epoch_has_one_candidate_and_it_is_above_every_epoch_known() {
        for nodes in 1..=7usize {
            for known in 0..60u32 {
                let epochs: Vec<u32> =
                    (0..nodes).map(|index| candidate_epoch(known, index, nodes).expect("an epoch")).collect();
                for (index, &epoch) in epochs.iter().enumerate() {
                    assert!(epoch > known && u64::from(epoch) <= u64::from(known) + nodes as u64, "{epoch} {known}");
                    assert_eq!(epoch_owner(epoch, nodes), index, "epoch {epoch} of {nodes} nodes");
                }
                let mut distinct = epochs.clone();
                distinct.sort_unstable();
                distinct.dedup();
                assert_eq!(distinct.len(), nodes, "two candidates never ask for the same epoch: {epochs:?}");
            }
        }
        assert_eq!(candidate_epoch(u32::MAX, 0, 3), None);
        assert_eq!(candidate_epoch(u32::MAX - 1, 0, 1), Some(u32::MAX));
    }

    /// The case that made this rule: two promotions forced in the same epoch on both sides
    /// of a partition (each hears from nobody) took e + 1 both, and neither fenced the
    /// other when they met, each an acknowledging primary of e + 1.
    #[test]
    fn promotions_forced_apart_from_the_same_epoch_take_different_epochs_and_the_higher_fences() {
        let (nodes, known) = (3, 4);
        let first = candidate_epoch(known, 1, nodes).expect("an epoch");
        let second = candidate_epoch(known, 2, nodes).expect("an epoch");
        assert_ne!(first, second);
        let (lower, higher) = (first.min(second), first.max(second));
        // Each forces with its own promise only.
        let (lone, _) = Election::start(lower, at(1, 9), nodes, 0);
        assert_eq!(lone.force().0.epoch, lower);
        // When they meet, the lower is told of the higher (and is fenced), never the reverse.
        assert_eq!(
            on_prepare(higher, at(higher, 12), lower, false),
            Prepared::Refuse(Message::NewerEpoch { epoch: higher })
        );
        assert!(matches!(on_prepare(lower, at(lower, 12), higher, false), Prepared::Promise { .. }));
    }

    #[test]
    fn acceptors_promise_only_higher_epochs() {
        assert_eq!(
            on_prepare(3, at(3, 9), 4, false),
            Prepared::Promise { persist_epoch: 4, reply: Message::Promise { epoch: 4, position: at(3, 9) } }
        );
        assert_eq!(on_prepare(4, at(3, 9), 4, false), Prepared::Refuse(Message::NewerEpoch { epoch: 4 }));
    }

    #[test]
    fn a_recovering_acceptor_promises_nothing() {
        let refused = Prepared::Refuse(Message::Refused { reason: RECOVERING_REFUSAL.into() });
        assert_eq!(on_prepare(3, at(3, 9), 4, true), refused);
        assert_eq!(on_prepare(4, at(3, 9), 4, true), refused);
    }

    #[test]
    fn the_candidate_waits_for_n_minus_k_and_takes_the_longest_log_in_the_highest_epoch() {
        // N = 3, replicated:1: the candidate and one more.
        let (mut election, prepare) = Election::start(5, at(3, 10), 3, 1);
        assert_eq!(prepare, Message::Prepare { epoch: 5 });
        assert_eq!(election.decision(), None);
        // A longer log of an older epoch loses to a shorter one of a newer epoch.
        election.on_message("b", &Message::Promise { epoch: 5, position: at(2, 50) }).unwrap();
        assert_eq!(election.decision(), Some(Decision { epoch: 5, source: None, target: at(3, 10) }));
        election.on_message("c", &Message::Promise { epoch: 5, position: at(3, 12) }).unwrap();
        assert_eq!(election.decision(), Some(Decision { epoch: 5, source: Some("c".into()), target: at(3, 12) }));
    }

    #[test]
    fn a_candidate_with_more_records_of_an_older_epoch_than_the_decided_log_must_not_serve() {
        // The candidate holds 70 records ending in epoch 1; a promiser holds 66 ending in
        // epoch 2 (a primary of epoch 2 took 60 of epoch 1 and acknowledged 61..=66). The
        // rule picks the promiser's log; the candidate's records 61..=70 are not it.
        let (mut election, _) = Election::start(3, at(1, 70), 3, 1);
        election.on_message("b", &Message::Promise { epoch: 3, position: at(2, 66) }).unwrap();
        let decision = election.decision().unwrap();
        assert_eq!((decision.source.as_deref(), decision.target), (Some("b"), at(2, 66)));
        assert_eq!(
            decision.check_own(at(1, 70)),
            Err(ElectionError::Diverged { own: 70, own_epoch: 1, target: 66, target_epoch: 2 })
        );
        assert!(decision.check_own(at(1, 66)).is_err(), "as long, but of an older epoch: diverged too");
        assert_eq!(decision.check_own(at(1, 60)), Ok(()), "shorter: fetch 61..=66 (the fetch checks the chain)");
        let own = Decision { epoch: 3, source: None, target: at(1, 70) };
        assert_eq!(own.check_own(at(1, 70)), Ok(()), "its own log is the decided one");
    }

    #[test]
    fn too_few_promises_refuse_unless_forced_and_a_newer_epoch_ends_the_election() {
        // N = 3, replicated:0 would need all three.
        let (mut election, _) = Election::start(2, at(1, 4), 3, 0);
        election.on_message("b", &Message::Promise { epoch: 2, position: at(1, 3) }).unwrap();
        assert_eq!(election.decision(), None);
        assert_eq!(election.refuse(), ElectionError::NotEnoughPromises { epoch: 2, promised: 2, needed: 3 });
        let (decision, missing) = election.force();
        assert_eq!((decision.source, missing), (None, 1));
        assert_eq!(
            election.on_message("c", &Message::NewerEpoch { epoch: 2 }),
            Err(ElectionError::Superseded { epoch: 2 })
        );
        assert_eq!(election.on_message("c", &Message::Promise { epoch: 1, position: at(1, 9) }), Ok(()));
        assert_eq!(election.promised(), 2, "a promise for another epoch does not count");
    }
}
