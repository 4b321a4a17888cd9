//! `tally drill`: three failovers in a row pass every check, and bad arguments are refused
//! before anything starts.

mod common;

use std::process::Command;

use common::{TALLY, TempDir};

fn drill(args: &[&str]) -> std::process::Output {
    Command::new(TALLY).arg("drill").args(args).output().expect("tally drill runs")
}

#[test]
fn drill_with_three_rounds_passes_every_check() {
    let dir = TempDir::new("drill");
    let json = dir.path().join("drill.json");
    let root = dir.path().join("root");
    let output = drill(&[
        "--rounds",
        "3",
        "--seed",
        "7",
        "--transfers-per-round",
        "2000",
        "--data-root",
        &root.to_string_lossy(),
        "--json",
        &json.to_string_lossy(),
    ]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    if !output.status.success() {
        // Keep the nodes' data and logs for the investigation.
        let kept = dir.path().to_path_buf();
        std::mem::forget(dir);
        panic!("the drill failed (data and logs kept in {}):\n{stdout}\n{stderr}", kept.display());
    }
    assert!(stdout.contains("PASSED"), "the summary gives the verdict:\n{stdout}");

    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).expect("the JSON report is written")).expect("valid JSON");
    assert_eq!(report["passed"], true);
    assert_eq!(report["seed"], "7");
    let rounds = report["rounds"].as_array().expect("rounds");
    assert_eq!(rounds.len(), 3);
    let mut epochs = Vec::new();
    for round in rounds {
        assert_eq!(round["passed"], true, "{round}");
        assert_eq!(round["lost"], 0, "{round}");
        assert_eq!(round["applied_twice"], 0, "{round}");
        assert!(round["rto_ms"].as_f64().is_some(), "{round}");
        assert!(round["promote_to_ack_ms"].as_f64().is_some(), "{round}");
        assert!(round["probe_id"].as_str().is_some(), "every round's probe transfer was acknowledged: {round}");
        assert!(round["acknowledged"].as_u64().is_some_and(|acknowledged| acknowledged > 0), "{round}");
        assert_ne!(round["killed"], round["promoted"]);
        epochs.push(round["epoch"].as_u64().expect("the promotion printed its epoch"));
    }
    assert!(epochs.windows(2).all(|pair| pair[0] < pair[1]), "each promotion starts a higher epoch: {epochs:?}");
    assert_ne!(rounds[1]["killed"], rounds[0]["killed"], "round 2 kills the node round 1 promoted");
    assert_eq!(rounds[1]["killed"], rounds[0]["promoted"]);
}

#[test]
fn drill_refuses_bad_arguments_before_starting_anything() {
    for args in [
        &["--rounds", "0"][..],
        &["--durability", "replicated:3"],
        &["--durability", "quick"],
        &["--transfers-per-round", "5"],
        &["--seed", "-1"],
    ] {
        let output = drill(args);
        assert_eq!(output.status.code(), Some(2), "{args:?} is refused with exit 2");
        assert!(!output.stderr.is_empty(), "{args:?} gets a message");
    }
}

#[test]
fn drill_refuses_a_data_root_that_is_not_empty_and_leaves_it_untouched() {
    let dir = TempDir::new("drill-root");
    let kept = dir.path().join("precious");
    std::fs::write(&kept, "operator data").expect("written");
    let output = drill(&["--rounds", "1", "--data-root", &dir.path().to_string_lossy()]);
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("not empty"));
    assert_eq!(std::fs::read_to_string(&kept).expect("still there"), "operator data");
    assert_eq!(std::fs::read_dir(dir.path()).expect("readable").count(), 1, "nothing was added");
}
