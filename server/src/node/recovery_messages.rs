//! What start-up says about the journal's recovery. Anything that may have lost an
//! acknowledged input is a WARNING, said in full: an operator must be able to act on it
//! (compare with a replica, re-submit) without reading the code.

use tally_journal::{RecoveryReport, SET_ASIDE_SUFFIX};

pub fn print(report: &RecoveryReport, snapshot_sequence: u64) {
    if report.manifest_created {
        crate::errln!("tally: the journal had no manifest; created one from the segments found");
    }
    if report.manifest_slots_damaged > 0 {
        crate::errln!(
            "tally: WARNING: {} of the 2 journal manifest slots were damaged; the other was used and both are \
             rewritten as the journal runs",
            report.manifest_slots_damaged
        );
    }
    if report.mark_slots_damaged > 0 {
        crate::errln!(
            "tally: WARNING: {} durable-mark slot(s) in the journal segments were damaged; the other slot of each \
             pair was used",
            report.mark_slots_damaged
        );
    }
    if report.manifest_snapshot_sequence > snapshot_sequence {
        crate::errln!(
            "tally: WARNING: the journal's manifest records a snapshot at sequence {}, but the newest valid \
             snapshot found covers {snapshot_sequence}: that snapshot is missing or damaged; replaying the \
             journal instead",
            report.manifest_snapshot_sequence
        );
    }
    if let Some(damage) = &report.damage_covered_by_snapshot {
        crate::errln!(
            "tally: WARNING: the journal is damaged ({damage}), but the snapshot at sequence {snapshot_sequence} \
             covers every damaged record: starting from the snapshot; set aside, not deleted: {}",
            report.set_aside.iter().map(|name| format!("{name}{SET_ASIDE_SUFFIX}")).collect::<Vec<_>>().join(", ")
        );
    }
    let Some(torn) = &report.torn_tail else { return };
    let Some(reason) = torn.reason else {
        crate::errln!(
            "tally: journal recovery zeroed {} stray bytes after the last record in {} (no record lost)",
            torn.bytes_discarded,
            torn.segment
        );
        return;
    };
    let range = match torn.last_intact_sequence_cut {
        Some(last) => format!(
            "{} records, sequences {} to {last}",
            last.saturating_sub(torn.first_sequence_cut) + 1,
            torn.first_sequence_cut
        ),
        None => format!("the record at sequence {} and any after it", torn.first_sequence_cut),
    };
    crate::errln!(
        "tally: WARNING: journal recovery CUT {range} in {} at offset {} ({reason}). They lie above the durable \
         mark recorded on disk ({}), which lags one flush, so they MAY HAVE BEEN ACKNOWLEDGED to clients. On one \
         node this cannot be told from a write torn by a power loss; compare with a replica or the clients' \
         records before relying on the ledger.",
        torn.segment,
        torn.offset,
        report.recorded_durable_mark
    );
}
