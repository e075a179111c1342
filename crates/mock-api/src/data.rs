//! Deterministic Bugsnag-shaped records: organizations, projects, saved searches, errors and
//! full events, from a seed and a revision.

use serde_json::{Value, json};

/// The size of the data set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataSize {
    /// Organizations.
    pub organizations: usize,
    /// Projects per organization.
    pub projects_per_org: usize,
    /// Saved searches per project.
    pub saved_searches_per_project: usize,
    /// Errors per project (revision 0).
    pub errors_per_project: usize,
    /// Events per project (revision 0).
    pub events_per_project: usize,
}

/// A 64-bit mix of the seed and a record's coordinates.
fn mix(seed: u64, parts: &[u64]) -> u64 {
    let mut h = seed ^ 0x9E37_79B9_7F4A_7C15;
    for p in parts {
        h ^= p
            .wrapping_add(0x9E37_79B9_7F4A_7C15)
            .wrapping_add(h << 6)
            .wrapping_add(h >> 2);
        h = h.wrapping_mul(0xBF58_476D_1CE4_E5B9);
        h ^= h >> 31;
    }
    h
}

/// A 24-hex id, like Bugsnag's ObjectIds.
pub fn object_id(seed: u64, kind: u64, parts: &[u64]) -> String {
    let mut all = vec![kind];
    all.extend_from_slice(parts);
    format!("{:08x}{:016x}", mix(seed, &[kind]) as u32, mix(seed, &all))
}

/// How many records of a base count exist at `revision`: each revision adds 5%, at least one.
pub fn count_at(base: usize, revision: u32) -> usize {
    if base == 0 {
        return 0;
    }
    base + (revision as usize) * (base / 20).max(1)
}

/// Whether record `idx` changed at `revision` (one in ten per revision).
fn changed(idx: usize, revision: u32) -> bool {
    revision > 0 && idx % 10 == (revision as usize) % 10
}

/// The revision at which record `k` (of `base` at revision 0) last changed, as seen at
/// `revision`: a change of this revision, else the revision that added it, else 0.
fn changed_at(k: usize, base: usize, revision: u32) -> u32 {
    if changed(k, revision) {
        return revision;
    }
    if k < base {
        return 0;
    }
    let step = (base / 20).max(1);
    ((k - base) / step + 1) as u32
}

/// The incremental cursor of record `k` (errors' `last_seen`, events' `received_at`) as
/// milliseconds since the epoch: records of revision 0 one minute apart in index order,
/// each later revision's added and changed records after everything before them, as an
/// API's newest records are.
pub fn cursor_millis(seed: u64, parts: &[u64], k: usize, base: usize, revision: u32) -> i64 {
    let jitter = (mix(seed, parts) % 60_000) as i64;
    match changed_at(k, base, revision) {
        0 => 1_700_000_000_000 + k as i64 * 60_000 + jitter,
        r => 1_800_000_000_000 + i64::from(r) * 86_400_000 + jitter,
    }
}

/// Milliseconds since the epoch as Bugsnag writes times (`2017-12-12T10:58:55.000Z`).
pub fn format_millis(millis: i64) -> String {
    match chrono::DateTime::from_timestamp_millis(millis) {
        Some(t) => iso_millis(t, millis.rem_euclid(1000) as u64),
        None => String::new(),
    }
}

fn timestamp(seed: u64, parts: &[u64], revision: u32) -> String {
    let base =
        1_700_000_000i64 + (mix(seed, parts) % 30_000_000) as i64 + i64::from(revision) * 86_400;
    let millis = mix(seed, &[parts[0], 7]) % 1000;
    match chrono::DateTime::from_timestamp(base, 0) {
        Some(t) => iso_millis(t, millis),
        None => String::new(),
    }
}

/// `t` to the second and `millis` as `%Y-%m-%dT%H:%M:%S.mmmZ`, written digit by digit:
/// chrono's formatter was a fifth of the mock's time, which it takes from the pipeline it
/// serves on the same cores.
fn iso_millis(t: chrono::DateTime<chrono::Utc>, millis: u64) -> String {
    use chrono::{Datelike, Timelike};
    let mut text = *b"0000-00-00T00:00:00.000Z";
    for (n, digits) in [
        (t.year() as u64, 0..4),
        (u64::from(t.month()), 5..7),
        (u64::from(t.day()), 8..10),
        (u64::from(t.hour()), 11..13),
        (u64::from(t.minute()), 14..16),
        (u64::from(t.second()), 17..19),
        (millis, 20..23),
    ] {
        let mut n = n;
        for digit in text[digits].iter_mut().rev() {
            *digit = b'0' + (n % 10) as u8;
            n /= 10;
        }
    }
    text.iter().map(|&b| char::from(b)).collect()
}

const NAMES: &[&str] = &[
    "Acme",
    "Globex",
    "Initech",
    "Umbrella",
    "Hooli",
    "Vandelay",
    "Ünïcorn Lab",
    "北京工作室",
    "Stark 🚀",
];
const CLASSES: &[&str] = &[
    "NullPointerException",
    "TypeError",
    "RuntimeError",
    "IllegalStateException",
    "ОшибкаСети",
    "TimeoutError",
];
const METHODS: &[&str] = &[
    "onCreate",
    "handleRequest",
    "render",
    "fetchUser",
    "parseJson",
    "main",
    "block (2 levels) in <main>",
];
const FILES: &[&str] = &[
    "app/src/main/java/com/acme/MainActivity.java",
    "src/components/App.tsx",
    "lib/worker.rb",
    "server/handlers.go",
];
const CRUMBS: &[&str] = &["navigation", "request", "log", "user", "state", "process"];

/// Organization `i`.
pub fn organization(seed: u64, i: usize, base_url: &str) -> Value {
    let id = object_id(seed, 1, &[i as u64]);
    let name = format!("{} {i}", NAMES[i % NAMES.len()]);
    json!({
        "id": id,
        "name": name,
        "slug": format!("org-{i}"),
        "creator": {"id": object_id(seed, 9, &[i as u64]), "name": "Ada Lovelace", "email": format!("ada+{i}@example.com")},
        "collaborators_url": format!("{base_url}/organizations/{id}/collaborators"),
        "projects_url": format!("{base_url}/organizations/{id}/projects"),
        "created_at": timestamp(seed, &[1, i as u64], 0),
        "updated_at": timestamp(seed, &[2, i as u64], 0),
        "auto_upgrade": i.is_multiple_of(2),
        "upgrade_url": format!("{base_url}/settings/org-{i}/plans-billing?plansBilling%5Bstep%5D=collaborators-and-events"),
        "can_start_pro_trial": false,
        "pro_trial_ends_at": null,
        "pro_trial_feature": false,
        "managed_by_platform_services": false,
        "billing_emails": [format!("billing+{i}@example.com")],
        "api_key": null,
    })
}

/// Project `j` of organization `i`.
pub fn project(seed: u64, i: usize, j: usize, revision: u32, base_url: &str) -> Value {
    let id = object_id(seed, 2, &[i as u64, j as u64]);
    let renamed = changed(j, revision) || (revision > 0 && j.is_multiple_of(3));
    let name = if renamed {
        format!("project {i}-{j} (renamed r{revision})")
    } else {
        format!("project {i}-{j}")
    };
    json!({
        "id": id,
        "organization_id": object_id(seed, 1, &[i as u64]),
        "slug": format!("project-{i}-{j}"),
        "name": name,
        "api_key": format!("{:032x}", mix(seed, &[3, i as u64, j as u64]) as u128),
        "type": (["android", "js", "rails", "go"][j % 4]),
        "is_full_view": true,
        "release_stages": ["production", "staging"],
        "language": if j.is_multiple_of(3) { Value::Null } else { json!("java") },
        "created_at": timestamp(seed, &[4, i as u64, j as u64], 0),
        "updated_at": timestamp(seed, &[5, i as u64, j as u64], if renamed { revision } else { 0 }),
        "errors_url": format!("{base_url}/projects/{id}/errors"),
        "events_url": format!("{base_url}/projects/{id}/events"),
        "url": format!("{base_url}/projects/{id}"),
        "html_url": format!("https://app.example.com/org-{i}/project-{i}-{j}"),
        "open_error_count": (mix(seed, &[6, j as u64]) % 500) as i64,
        "collaborators_count": 2,
        "global_grouping": [],
        "location_grouping": [],
        "discarded_app_versions": [],
        "discarded_errors": [],
        "custom_event_fields_used": 0,
        "resolve_on_deploy": false,
    })
}

/// Saved search `k` of a project.
pub fn saved_search(seed: u64, project_id: &str, k: usize) -> Value {
    json!({
        "id": object_id(seed, 3, &[hash_str(project_id), k as u64]),
        "project_id": project_id,
        "name": format!("search {k}"),
        "filters": {"event.since": [{"type": "eq", "value": "7d"}], "error.status": [{"type": "eq", "value": "open"}]},
        "sort": (["last_seen", "first_seen", "users"][k % 3]),
        "shared": k.is_multiple_of(2),
        "is_default": k == 0,
        "created_at": "2021-07-08T14:26:55+00:00",
    })
}

/// Error `k` of a project that had `base` errors at revision 0.
pub fn error(
    seed: u64,
    project_id: &str,
    k: usize,
    base: usize,
    revision: u32,
    base_url: &str,
) -> Value {
    let p = hash_str(project_id);
    let id = object_id(seed, 4, &[p, k as u64]);
    let rev = if changed(k, revision) { revision } else { 0 };
    let class = CLASSES[k % CLASSES.len()];
    json!({
        "id": id,
        "project_id": project_id,
        "error_class": class,
        "message": format!("{class} at step {k}"),
        "context": format!("{} line {}", FILES[k % FILES.len()], 10 + k % 90),
        "severity": (["error", "warning", "info"][k % 3]),
        "original_severity": "error",
        "overridden_severity": null,
        "events": (mix(seed, &[7, p, k as u64]) % 10_000) as i64 + i64::from(rev) * 10,
        "users": (mix(seed, &[8, p, k as u64]) % 300) as i64,
        "first_seen": timestamp(seed, &[9, p, k as u64], 0),
        "last_seen": format_millis(cursor_millis(seed, &[10, p, k as u64], k, base, revision)),
        "status": if rev > 0 { "fixed" } else { "open" },
        "created_issue": {},
        "reopen_rules": null,
        "assigned_collaborator_id": null,
        "comment_count": (k % 5) as i64,
        "release_stages": ["production"],
        "grouping_reason": "frame-inner",
        "grouping_fields": {"file": FILES[k % FILES.len()], "lineNumber": 10 + k % 90, "errorClass": class},
        "url": format!("{base_url}/projects/{project_id}/errors/{id}"),
        "project_url": format!("{base_url}/projects/{project_id}"),
    })
}

/// Event `k` of a project that had `base` events at revision 0: a full report (about 4 KB)
/// with exceptions, stack frames, breadcrumbs, metaData, user, device and app.
pub fn event(
    seed: u64,
    project_id: &str,
    n_errors: usize,
    (k, base): (usize, usize),
    revision: u32,
    base_url: &str,
) -> Value {
    let mut text = String::new();
    write_event(
        &mut text,
        seed,
        project_id,
        n_errors,
        (k, base),
        revision,
        base_url,
    );
    serde_json::from_str(&text).expect("the mock writes valid JSON")
}

/// Appends event `k` of a project as JSON text to `out`: what [`event`] returns, written
/// directly, so that serving events costs the mock little next to the pipeline it feeds.
pub fn write_event(
    out: &mut String,
    seed: u64,
    project_id: &str,
    n_errors: usize,
    (k, n_base): (usize, usize),
    revision: u32,
    base_url: &str,
) {
    use std::fmt::Write;
    let p = hash_str(project_id);
    let id = object_id(seed, 5, &[p, k as u64]);
    let rev = if changed(k, revision) { revision } else { 0 };
    let mut rng = fastrand::Rng::with_seed(mix(seed, &[11, p, k as u64]));
    let error_k = if n_errors == 0 { 0 } else { k % n_errors };
    let class = CLASSES[error_k % CLASSES.len()];
    let frames = stack_frames(&mut rng, k);
    let crumbs = breadcrumbs(&mut rng, seed, p, k, rev);
    let base = Quoted(base_url);
    let project = Quoted(project_id);
    let _ = write!(
        out,
        concat!(
            "{{\"id\":\"{id}\",\"url\":\"{base}/projects/{project}/events/{id}\",",
            "\"project_url\":\"{base}/projects/{project}\",\"is_full_report\":true,",
            "\"error_id\":\"{error_id}\",\"received_at\":{received_at},",
            "\"exceptions\":[{{\"errorClass\":{class},",
            "\"message\":\"{class_text}: cannot read property 'profile' of undefined (event {k})\",",
            "\"type\":\"android\",\"stacktrace\":[{frames}]}}],\"threads\":[],"
        ),
        id = id,
        base = Inner(&base),
        project = Inner(&project),
        error_id = object_id(seed, 4, &[p, error_k as u64]),
        received_at = Quoted(&format_millis(cursor_millis(
            seed,
            &[13, p, k as u64],
            k,
            n_base,
            revision
        ))),
        class = Quoted(class),
        class_text = Inner(&Quoted(class)),
        k = k,
        frames = frames,
    );
    write_event_app(out, &mut rng, k);
    write_event_device(out, &mut rng, (p, k, error_k, rev), &crumbs);
}

/// The `metaData`, `request` and `app` parts of event `k` (see [`write_event`]).
fn write_event_app(out: &mut String, rng: &mut fastrand::Rng, k: usize) {
    use std::fmt::Write;
    let _ = write!(
        out,
        concat!(
            "\"metaData\":{{\"app\":{{\"memoryUsage\":{memory},\"activeScreen\":\"MainActivity\"}},",
            "\"custom\":{{\"cart.items\":{items},\"A/B variant\":\"{variant}\",\"\":\"empty key\",",
            "\"trace id\":\"{trace:016x}\"}}}},\"customDiagnostics\":{{}},",
            "\"request\":{{\"url\":\"https://shop.example.com/item/{k}\",\"httpMethod\":\"GET\",\"clientIp\":\"203.0.113.7\"}},",
            "\"app\":{{\"releaseStage\":\"production\",\"version\":\"4.{v1}.{v2}\",\"versionCode\":{code},",
            "\"type\":\"android\",\"duration\":{duration}}},"
        ),
        memory = rng.u64(10_000_000..900_000_000),
        items = rng.u32(0..12),
        variant = ["a", "b"][k % 2],
        trace = rng.u64(..),
        k = k,
        v1 = k % 7,
        v2 = k % 3,
        code = 400 + (k % 30) as i64,
        duration = rng.u32(10..100_000),
    );
}

/// The `device`, `user`, breadcrumbs and closing parts of event `k` of project hash `p`,
/// error `error_k`, at data revision `rev` (see [`write_event`]).
fn write_event_device(
    out: &mut String,
    rng: &mut fastrand::Rng,
    (p, k, error_k, rev): (u64, usize, usize, u32),
    crumbs: &str,
) {
    use std::fmt::Write;
    let _ = write!(
        out,
        concat!(
            "\"device\":{{\"hostname\":\"host-{host}\",\"osName\":\"android\",\"osVersion\":\"{os}.0\",",
            "\"manufacturer\":\"{manufacturer}\",\"model\":\"{model}\",\"totalMemory\":8589934592,",
            "\"freeDisk\":{free_disk},\"orientation\":\"portrait\",\"jailbroken\":false,\"locale\":\"de_DE\"}},",
            "\"user\":{{\"id\":\"user-{user}\",\"email\":\"user{user}@example.com\",\"name\":\"Jürgen Müller\"}},",
            "\"breadcrumbs\":[{crumbs}],",
            "\"feature_flags\":[{{\"featureFlag\":\"new-checkout\",\"variant\":\"{flag}\"}}],",
            "\"context\":{context},\"severity\":\"{severity}\",\"unhandled\":{unhandled},",
            "\"derived\":{{\"deploy\":{deploy}}}}}"
        ),
        host = k % 50,
        os = 9 + k % 5,
        manufacturer = ["Google", "Samsung", "Xiaomi"][k % 3],
        model = ["Pixel 8", "Galaxy S24", "Mi 13"][k % 3],
        free_disk = rng.u64(1_000_000_000..60_000_000_000),
        user = k % 997,
        crumbs = crumbs,
        flag = ["on", "off"][k % 2],
        deploy = deploy(p, k),
        context = Quoted(&format!(
            "{} line {}",
            FILES[error_k % FILES.len()],
            10 + error_k % 90
        )),
        severity = if rev > 0 {
            "info"
        } else {
            ["error", "warning"][k % 2]
        },
        unhandled = k.is_multiple_of(4),
    );
}

/// Event `k`'s `derived.deploy` (of project hash `p`) as JSON: null in every event of a
/// third of the projects, a number in the others, so that the column's type must come from
/// its first value, whichever project lands first.
fn deploy(p: u64, k: usize) -> String {
    if p.is_multiple_of(3) {
        "null".to_owned()
    } else {
        (7000 + k % 40).to_string()
    }
}

/// The stack frames of event `k`'s exception as JSON objects, comma-separated.
fn stack_frames(rng: &mut fastrand::Rng, k: usize) -> String {
    use std::fmt::Write;
    let n_frames = 6 + rng.usize(0..6);
    let mut frames = String::with_capacity(n_frames * 256);
    for f in 0..n_frames {
        if f > 0 {
            frames.push(',');
        }
        frames.push_str("{\"column_number\":");
        if f % 3 == 0 {
            frames.push_str("null");
        } else {
            let _ = write!(frames, "{}", rng.u32(1..120));
        }
        let _ = write!(
            frames,
            ",\"in_project\":{},\"line_number\":{},\"method\":{},\"file\":{},\"code\":{{\"41\":\"  let user = fetchUser(id);\",\"42\":\"  render(user.profile);\",\"43\":\"}}\"}}}}",
            f < 2,
            rng.u32(1..2000),
            Quoted(METHODS[(k + f) % METHODS.len()]),
            Quoted(FILES[(k + f) % FILES.len()]),
        );
    }
    frames
}

/// The breadcrumbs of event `k` (of project hash `p`) as JSON objects, comma-separated.
fn breadcrumbs(rng: &mut fastrand::Rng, seed: u64, p: u64, k: usize, rev: u32) -> String {
    use std::fmt::Write;
    // Revision changes drop the last breadcrumb: removed list elements must disappear.
    let n_crumbs = 5 + rng.usize(0..4) - usize::from(rev > 0);
    let mut crumbs = String::with_capacity(n_crumbs * 160);
    for b in 0..n_crumbs {
        if b > 0 {
            crumbs.push(',');
        }
        let _ = write!(
            crumbs,
            "{{\"timestamp\":{},\"name\":\"{} {b}\",\"type\":{},\"metaData\":{{\"from\":\"/home\",\"to\":\"/item/{b}\",\"status\":200}}}}",
            Quoted(&timestamp(seed, &[12, p, k as u64, b as u64], 0)),
            CRUMBS[b % CRUMBS.len()],
            Quoted(CRUMBS[(b + k) % CRUMBS.len()]),
        );
    }
    crumbs
}

/// A string as a JSON string literal, quotes included.
struct Quoted<'a>(&'a str);

impl std::fmt::Display for Quoted<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("\"")?;
        Inner(self).fmt(f)?;
        f.write_str("\"")
    }
}

/// A string's JSON escaping without the quotes, to splice into a literal.
struct Inner<'a, 'b>(&'a Quoted<'b>);

impl std::fmt::Display for Inner<'_, '_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = self.0.0;
        // Nearly every string of the mock has nothing to escape: written whole, without
        // the walk over its characters (which was a seventh of the mock's time).
        if !s.bytes().any(|b| b < 0x20 || b == b'"' || b == b'\\') {
            return f.write_str(s);
        }
        let mut start = 0;
        for (i, c) in s.char_indices() {
            let escaped = match c {
                '"' => "\\\"",
                '\\' => "\\\\",
                '\n' => "\\n",
                '\r' => "\\r",
                '\t' => "\\t",
                c if (c as u32) < 0x20 => {
                    f.write_str(&s[start..i])?;
                    write!(f, "\\u{:04x}", c as u32)?;
                    start = i + c.len_utf8();
                    continue;
                }
                _ => continue,
            };
            f.write_str(&s[start..i])?;
            f.write_str(escaped)?;
            start = i + c.len_utf8();
        }
        f.write_str(&s[start..])
    }
}

/// A stable 64-bit hash of an id string.
pub fn hash_str(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    })
}

#[cfg(test)]
mod timestamp_tests {
    #[test]
    fn timestamps_read_as_chrono_writes_them() {
        for k in 0..2000u64 {
            let text = super::timestamp(7, &[k, 3], (k % 5) as u32);
            let parsed = chrono::DateTime::parse_from_rfc3339(&text).unwrap();
            assert_eq!(
                parsed.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string(),
                text,
                "{k}"
            );
        }
    }

    #[test]
    fn millis_are_written_as_chrono_writes_them() {
        let mut millis = -86_400_123i64;
        while millis < 4_000_000_000_000 {
            let chrono = chrono::DateTime::from_timestamp_millis(millis)
                .unwrap()
                .format("%Y-%m-%dT%H:%M:%S%.3fZ")
                .to_string();
            assert_eq!(super::format_millis(millis), chrono, "{millis}");
            millis += 7_777_777_777;
        }
    }
}
