//! podsim's filter against the profile it mirrors: the Rust tables equal the JSON, and the filter
//! the kernel actually runs answers every known syscall the way the profile says.

use std::collections::BTreeMap;
use std::path::PathBuf;

use podsim::profile::{self, Op};
use serde_json::Value;

use super::support::{parse_map, podsim, require_root, run};

const PROFILE: &str = "shared/k8s/runtime-default-containerd-amd64-nocaps.json";

/// The containerd no-caps profile, from the `../shared` checkout beside the repository.
fn load_profile() -> Option<Value> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../..")
        .join(PROFILE);
    let Ok(text) = std::fs::read_to_string(&path) else {
        eprintln!("skipped: ../shared/k8s not present ({})", path.display());
        return None;
    };
    Some(serde_json::from_str(&text).expect("profile is JSON"))
}

fn entries(profile: &Value) -> &Vec<Value> {
    profile["syscalls"].as_array().expect("syscalls array")
}

fn names(entry: &Value) -> impl Iterator<Item = &str> {
    entry["names"]
        .as_array()
        .expect("names")
        .iter()
        .map(|n| n.as_str().expect("name"))
}

/// What the profile does with `name` called with all-zero arguments, as `podsim verdicts` reports
/// it: ENOSYS when the call gets past the filter (or is answered ENOSYS), EPERM when refused.
fn expected_with_zero_args(profile: &Value, name: &str) -> &'static str {
    for entry in entries(profile) {
        if !names(entry).any(|n| n == name) {
            continue;
        }
        assert!(
            entry.get("includes").is_none(),
            "no-caps profile has includes"
        );
        match entry["action"].as_str() {
            Some("SCMP_ACT_ERRNO") => {
                return match entry["errnoRet"].as_i64() {
                    Some(38) => "ENOSYS",
                    _ => "EPERM",
                };
            }
            Some("SCMP_ACT_ALLOW") => {
                let args = entry.get("args").and_then(Value::as_array);
                let holds_at_zero = args.is_none_or(|args| {
                    args.iter().all(|arg| {
                        let value = arg["value"].as_u64().expect("value");
                        let two = arg["valueTwo"].as_u64().unwrap_or(0);
                        match arg["op"].as_str().expect("op") {
                            "SCMP_CMP_EQ" => value == 0,
                            "SCMP_CMP_LT" => 0 < value,
                            "SCMP_CMP_GT" => false,
                            "SCMP_CMP_MASKED_EQ" => two == 0,
                            op => panic!("unexpected op {op}"),
                        }
                    })
                });
                if holds_at_zero {
                    return "ENOSYS";
                }
            }
            other => panic!("unexpected action {other:?}"),
        }
    }
    assert_eq!(profile["defaultAction"], "SCMP_ACT_ERRNO");
    "EPERM"
}

fn compare_with_profile(profile: &Value, verdicts: &BTreeMap<String, String>) {
    let known: Vec<&str> = podsim::syscalls::all()
        .map(|(name, _)| name)
        .filter(|name| !podsim::seccomp::UNFILTERED.contains(name))
        .collect();
    let missing: Vec<&&str> = known
        .iter()
        .filter(|n| !verdicts.contains_key(**n))
        .collect();
    assert!(missing.is_empty(), "no verdict for {missing:?}");
    let wrong: Vec<String> = known
        .iter()
        .map(|name| {
            (
                name,
                expected_with_zero_args(profile, name),
                &verdicts[*name],
            )
        })
        .filter(|(_, want, got)| want != got)
        .map(|(name, want, got)| format!("{name}: profile {want}, podsim {got}"))
        .collect();
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    let refused = verdicts.values().filter(|v| *v == "EPERM").count();
    eprintln!(
        "{} syscalls agree with the profile ({refused} refused)",
        known.len()
    );
}

#[test]
fn rust_allowlist_equals_the_profile_json() {
    let Some(profile) = load_profile() else {
        return;
    };
    let mut json: Vec<&str> = entries(&profile)
        .iter()
        .filter(|e| e["action"] == "SCMP_ACT_ALLOW" && e.get("args").is_none())
        .flat_map(names)
        .collect();
    json.sort_unstable();
    json.dedup();
    let mut rust = profile::ALLOW_ALWAYS.to_vec();
    rust.sort_unstable();
    assert_eq!(rust, json);
}

#[test]
fn rust_argument_rules_equal_the_profile_json_except_clone_newtime() {
    let Some(profile) = load_profile() else {
        return;
    };
    let mut json: BTreeMap<&str, Vec<(u64, &str, u64, u64)>> = BTreeMap::new();
    for entry in entries(&profile).iter().filter(|e| e.get("args").is_some()) {
        assert_eq!(entry["action"], "SCMP_ACT_ALLOW");
        let [arg] = entry["args"].as_array().expect("args").as_slice() else {
            panic!("one condition per entry expected: {entry}");
        };
        for name in names(entry) {
            json.entry(name).or_default().push((
                arg["index"].as_u64().expect("index"),
                arg["op"].as_str().expect("op"),
                arg["value"].as_u64().expect("value"),
                arg["valueTwo"].as_u64().unwrap_or(0),
            ));
        }
    }
    let mut rust: BTreeMap<&str, Vec<(u64, &str, u64, u64)>> = BTreeMap::new();
    for (name, cmps) in profile::ALLOW_IF {
        for cmp in *cmps {
            let row = match cmp.op {
                Op::Eq => (u64::from(cmp.arg), "SCMP_CMP_EQ", cmp.value, 0),
                Op::Lt => (u64::from(cmp.arg), "SCMP_CMP_LT", cmp.value, 0),
                Op::Gt => (u64::from(cmp.arg), "SCMP_CMP_GT", cmp.value, 0),
                // The one deliberate difference: podsim's clone mask adds CLONE_NEWTIME.
                Op::MaskedEq(mask) => {
                    assert_eq!(
                        mask,
                        profile::CLONE_NAMESPACE_FLAGS | libc::CLONE_NEWTIME as u64
                    );
                    let profile_mask = profile::CLONE_NAMESPACE_FLAGS;
                    (
                        u64::from(cmp.arg),
                        "SCMP_CMP_MASKED_EQ",
                        profile_mask,
                        cmp.value,
                    )
                }
            };
            rust.entry(name).or_default().push(row);
        }
    }
    assert_eq!(rust, json);
}

#[test]
fn rust_errno_overrides_equal_the_profile_json() {
    let Some(profile) = load_profile() else {
        return;
    };
    let json: Vec<(&str, i64)> = entries(&profile)
        .iter()
        .filter(|e| e["action"] == "SCMP_ACT_ERRNO")
        .flat_map(|e| names(e).map(|n| (n, e["errnoRet"].as_i64().expect("errnoRet"))))
        .collect();
    let rust: Vec<(&str, i64)> = profile::ERRNO
        .iter()
        .map(|(n, e)| (*n, i64::from(*e)))
        .collect();
    assert_eq!(rust, json);
}

#[test]
fn installed_filter_agrees_with_the_profile_for_every_known_syscall() {
    // Needs no root: `--install-filter` sets no_new_privs and installs only the filter.
    let Some(profile) = load_profile() else {
        return;
    };
    let verdicts = parse_map(&run(&["verdicts", "--install-filter", "--json"]));
    compare_with_profile(&profile, &verdicts);
}

#[test]
fn filter_agrees_with_the_profile_for_every_known_syscall_under_podsim() {
    require_root!();
    let Some(profile) = load_profile() else {
        return;
    };
    let verdicts = parse_map(&run(&["--", podsim(), "verdicts", "--json"]));
    compare_with_profile(&profile, &verdicts);
}

#[test]
fn every_known_syscall_gets_past_an_absent_filter() {
    // The control for the two tests above: with no filter in the way the method reports ENOSYS
    // (skipped, never run) for every syscall, so an EPERM above comes from podsim's filter.
    let verdicts = parse_map(&run(&["verdicts", "--json"]));
    let refused: Vec<&String> = verdicts
        .iter()
        .filter(|(_, v)| *v != "ENOSYS")
        .map(|(k, _)| k)
        .collect();
    assert!(refused.is_empty(), "refused without a filter: {refused:?}");
    assert!(verdicts.len() > 300, "only {} syscalls", verdicts.len());
}
