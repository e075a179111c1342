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
    mix_all(seed, parts.iter().copied())
}

/// [`mix`] over parts given one by one (an object id mixes its kind before its parts,
/// without a vector of them).
fn mix_all(seed: u64, parts: impl IntoIterator<Item = u64>) -> u64 {
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
    ObjectId::new(seed, kind, parts).as_str().to_owned()
}

/// [`object_id`]'s digits on the stack, for the event writer to copy where it needs them.
struct ObjectId([u8; 24]);

impl ObjectId {
    fn new(seed: u64, kind: u64, parts: &[u64]) -> Self {
        let mut digits = [0u8; 24];
        hex_into(&mut digits[..8], u64::from(mix(seed, &[kind]) as u32));
        hex_into(
            &mut digits[8..],
            mix_all(seed, std::iter::once(kind).chain(parts.iter().copied())),
        );
        ObjectId(digits)
    }

    fn as_str(&self) -> &str {
        std::str::from_utf8(&self.0).unwrap_or_default()
    }
}

/// `value` as lowercase hex digits filling `out` (zero-padded, as `{:0N$x}` writes it when
/// the value fits).
fn hex_into(out: &mut [u8], mut value: u64) {
    for digit in out.iter_mut().rev() {
        *digit = b"0123456789abcdef"[(value & 0xf) as usize];
        value >>= 4;
    }
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
    let mut text = String::with_capacity(24);
    push_millis(&mut text, millis);
    text
}

/// Appends [`format_millis`]'s text (nothing for a time chrono cannot hold).
fn push_millis(out: &mut String, millis: i64) {
    if let Some(t) = chrono::DateTime::from_timestamp_millis(millis) {
        push_iso_millis(out, t, millis.rem_euclid(1000) as u64);
    }
}

fn timestamp(seed: u64, parts: &[u64], revision: u32) -> String {
    let mut text = String::with_capacity(24);
    push_timestamp(&mut text, seed, parts, revision);
    text
}

/// Appends [`timestamp`]'s text.
fn push_timestamp(out: &mut String, seed: u64, parts: &[u64], revision: u32) {
    let base =
        1_700_000_000i64 + (mix(seed, parts) % 30_000_000) as i64 + i64::from(revision) * 86_400;
    let millis = mix(seed, &[parts[0], 7]) % 1000;
    if let Some(t) = chrono::DateTime::from_timestamp(base, 0) {
        push_iso_millis(out, t, millis);
    }
}

/// `t` to the second and `millis` as `%Y-%m-%dT%H:%M:%S.mmmZ`, written digit by digit:
/// chrono's formatter was a fifth of the mock's time, which it takes from the pipeline it
/// serves on the same cores.
fn push_iso_millis(out: &mut String, t: chrono::DateTime<chrono::Utc>, millis: u64) {
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
    out.push_str(std::str::from_utf8(&text).unwrap_or_default());
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
///
/// The text is pushed piece by piece (literals, [`push_int`], [`push_quoted`]) rather than
/// through `write!`: the formatting machinery (`core::fmt::write`, padding, `Display` of
/// each argument) was two fifths of the mock's time. The random draws keep their order
/// (frames, then the breadcrumb count, then the app's and the device's numbers), so the
/// bytes are the same.
pub fn write_event(
    out: &mut String,
    seed: u64,
    project_id: &str,
    n_errors: usize,
    (k, n_base): (usize, usize),
    revision: u32,
    base_url: &str,
) {
    let p = hash_str(project_id);
    let id = ObjectId::new(seed, 5, &[p, k as u64]);
    let rev = if changed(k, revision) { revision } else { 0 };
    let mut rng = fastrand::Rng::with_seed(mix(seed, &[11, p, k as u64]));
    let error_k = if n_errors == 0 { 0 } else { k % n_errors };
    let class = CLASSES[error_k % CLASSES.len()];
    out.push_str("{\"id\":\"");
    out.push_str(id.as_str());
    out.push_str("\",\"url\":\"");
    push_escaped(out, base_url);
    out.push_str("/projects/");
    push_escaped(out, project_id);
    out.push_str("/events/");
    out.push_str(id.as_str());
    out.push_str("\",\"project_url\":\"");
    push_escaped(out, base_url);
    out.push_str("/projects/");
    push_escaped(out, project_id);
    out.push_str("\",\"is_full_report\":true,\"error_id\":\"");
    out.push_str(ObjectId::new(seed, 4, &[p, error_k as u64]).as_str());
    out.push_str("\",\"received_at\":\"");
    push_millis(
        out,
        cursor_millis(seed, &[13, p, k as u64], k, n_base, revision),
    );
    out.push_str("\",\"exceptions\":[{\"errorClass\":");
    push_quoted(out, class);
    out.push_str(",\"message\":\"");
    push_escaped(out, class);
    out.push_str(": cannot read property 'profile' of undefined (event ");
    push_int(out, k);
    out.push_str(")\",\"type\":\"android\",\"stacktrace\":[");
    push_stack_frames(out, &mut rng, k);
    out.push_str("]}],\"threads\":[],");
    // Revision changes drop the last breadcrumb: removed list elements must disappear.
    let n_crumbs = 5 + rng.usize(0..4) - usize::from(rev > 0);
    write_event_app(out, &mut rng, k);
    write_event_device(out, &mut rng, k);
    push_breadcrumbs(out, (seed, p, k), n_crumbs);
    out.push_str("],\"feature_flags\":[{\"featureFlag\":\"new-checkout\",\"variant\":\"");
    out.push_str(["on", "off"][k % 2]);
    out.push_str("\"}],\"context\":\"");
    push_escaped(out, FILES[error_k % FILES.len()]);
    out.push_str(" line ");
    push_int(out, 10 + error_k % 90);
    out.push_str("\",\"severity\":\"");
    out.push_str(if rev > 0 {
        "info"
    } else {
        ["error", "warning"][k % 2]
    });
    out.push_str("\",\"unhandled\":");
    out.push_str(if k.is_multiple_of(4) { "true" } else { "false" });
    out.push_str(",\"derived\":{\"deploy\":");
    // Null in every event of a third of the projects, a number in the others, so that the
    // column's type must come from its first value, whichever project lands first.
    if p.is_multiple_of(3) {
        out.push_str("null");
    } else {
        push_int(out, 7000 + k % 40);
    }
    out.push_str("}}");
}

/// The `metaData`, `request` and `app` parts of event `k` (see [`write_event`]).
fn write_event_app(out: &mut String, rng: &mut fastrand::Rng, k: usize) {
    let memory = rng.u64(10_000_000..900_000_000);
    let items = rng.u32(0..12);
    let trace = rng.u64(..);
    let duration = rng.u32(10..100_000);
    out.push_str("\"metaData\":{\"app\":{\"memoryUsage\":");
    push_int(out, memory);
    out.push_str(",\"activeScreen\":\"MainActivity\"},\"custom\":{\"cart.items\":");
    push_int(out, items);
    out.push_str(",\"A/B variant\":\"");
    out.push_str(["a", "b"][k % 2]);
    out.push_str("\",\"\":\"empty key\",\"trace id\":\"");
    push_hex::<16>(out, trace);
    out.push_str(concat!(
        "\"}},\"customDiagnostics\":{},",
        "\"request\":{\"url\":\"https://shop.example.com/item/"
    ));
    push_int(out, k);
    out.push_str(concat!(
        "\",\"httpMethod\":\"GET\",\"clientIp\":\"203.0.113.7\"},",
        "\"app\":{\"releaseStage\":\"production\",\"version\":\"4."
    ));
    push_int(out, k % 7);
    out.push('.');
    push_int(out, k % 3);
    out.push_str("\",\"versionCode\":");
    push_int(out, 400 + k % 30);
    out.push_str(",\"type\":\"android\",\"duration\":");
    push_int(out, duration);
    out.push_str("},");
}

/// The `device` and `user` parts of event `k`, up to the opening of its breadcrumbs (see
/// [`write_event`]).
fn write_event_device(out: &mut String, rng: &mut fastrand::Rng, k: usize) {
    let free_disk = rng.u64(1_000_000_000..60_000_000_000);
    out.push_str("\"device\":{\"hostname\":\"host-");
    push_int(out, k % 50);
    out.push_str("\",\"osName\":\"android\",\"osVersion\":\"");
    push_int(out, 9 + k % 5);
    out.push_str(".0\",\"manufacturer\":\"");
    out.push_str(["Google", "Samsung", "Xiaomi"][k % 3]);
    out.push_str("\",\"model\":\"");
    out.push_str(["Pixel 8", "Galaxy S24", "Mi 13"][k % 3]);
    out.push_str("\",\"totalMemory\":8589934592,\"freeDisk\":");
    push_int(out, free_disk);
    out.push_str(concat!(
        ",\"orientation\":\"portrait\",\"jailbroken\":false,\"locale\":\"de_DE\"},",
        "\"user\":{\"id\":\"user-"
    ));
    push_int(out, k % 997);
    out.push_str("\",\"email\":\"user");
    push_int(out, k % 997);
    out.push_str("@example.com\",\"name\":\"Jürgen Müller\"},\"breadcrumbs\":[");
}

/// The stack frames of event `k`'s exception as JSON objects, comma-separated.
fn push_stack_frames(out: &mut String, rng: &mut fastrand::Rng, k: usize) {
    let n_frames = 6 + rng.usize(0..6);
    for f in 0..n_frames {
        if f > 0 {
            out.push(',');
        }
        out.push_str("{\"column_number\":");
        if f % 3 == 0 {
            out.push_str("null");
        } else {
            push_int(out, rng.u32(1..120));
        }
        out.push_str(",\"in_project\":");
        out.push_str(if f < 2 { "true" } else { "false" });
        out.push_str(",\"line_number\":");
        push_int(out, rng.u32(1..2000));
        out.push_str(",\"method\":");
        push_quoted(out, METHODS[(k + f) % METHODS.len()]);
        out.push_str(",\"file\":");
        push_quoted(out, FILES[(k + f) % FILES.len()]);
        out.push_str(concat!(
            ",\"code\":{\"41\":\"  let user = fetchUser(id);\",",
            "\"42\":\"  render(user.profile);\",\"43\":\"}\"}}"
        ));
    }
}

/// The `n_crumbs` breadcrumbs of event `k` of project hash `p` as JSON objects,
/// comma-separated.
fn push_breadcrumbs(out: &mut String, (seed, p, k): (u64, u64, usize), n_crumbs: usize) {
    for b in 0..n_crumbs {
        if b > 0 {
            out.push(',');
        }
        out.push_str("{\"timestamp\":\"");
        push_timestamp(out, seed, &[12, p, k as u64, b as u64], 0);
        out.push_str("\",\"name\":\"");
        out.push_str(CRUMBS[b % CRUMBS.len()]);
        out.push(' ');
        push_int(out, b);
        out.push_str("\",\"type\":");
        push_quoted(out, CRUMBS[(b + k) % CRUMBS.len()]);
        out.push_str(",\"metaData\":{\"from\":\"/home\",\"to\":\"/item/");
        push_int(out, b);
        out.push_str("\",\"status\":200}}");
    }
}

/// `value`'s low `4 * N` bits as `N` lowercase hex digits ([`hex_into`]).
fn push_hex<const N: usize>(out: &mut String, value: u64) {
    let mut digits = [0u8; N];
    hex_into(&mut digits, value);
    out.push_str(std::str::from_utf8(&digits).unwrap_or_default());
}

/// An integer's decimal digits.
fn push_int(out: &mut String, n: impl itoa::Integer) {
    out.push_str(itoa::Buffer::new().format(n));
}

/// A string as a JSON string literal, quotes included.
fn push_quoted(out: &mut String, s: &str) {
    out.push('"');
    push_escaped(out, s);
    out.push('"');
}

/// A string's JSON escaping without the quotes, to splice into a literal.
fn push_escaped(out: &mut String, s: &str) {
    // Nearly every string of the mock has nothing to escape: written whole, without the
    // walk over its characters (which was a seventh of the mock's time).
    if !s.bytes().any(|b| b < 0x20 || b == b'"' || b == b'\\') {
        out.push_str(s);
        return;
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
                out.push_str(&s[start..i]);
                out.push_str("\\u00");
                push_hex::<2>(out, u64::from(c));
                start = i + c.len_utf8();
                continue;
            }
            _ => continue,
        };
        out.push_str(&s[start..i]);
        out.push_str(escaped);
        start = i + c.len_utf8();
    }
    out.push_str(&s[start..]);
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

    /// The events' text is pinned: the pipeline's benches and tests compare runs over
    /// these bytes, and rewriting the writer (from `write!` to direct pushes) kept them.
    #[test]
    fn events_are_the_bytes_they_were() {
        let mut text = String::new();
        for revision in [0, 1, 3] {
            for k in 0..300 {
                super::write_event(
                    &mut text,
                    7,
                    "5f0c0ffee0ddba11",
                    40,
                    (k, 250),
                    revision,
                    "http://127.0.0.1:1",
                );
                text.push('\n');
            }
        }
        for line in text.lines().take(20) {
            serde_json::from_str::<serde_json::Value>(line).expect("an event is JSON");
        }
        assert_eq!(
            (text.len(), super::hash_str(&text)),
            (3_489_408, 13_488_721_801_389_467_174),
            "the mock's events changed"
        );
    }

    #[test]
    fn strings_are_escaped_as_json_reads_them() {
        let raw = "a\"b\\c\nd\re\tf\u{1}g\u{1f}h é";
        let mut text = String::new();
        super::push_quoted(&mut text, raw);
        assert_eq!(text, r#""a\"b\\c\nd\re\tf\u0001g\u001fh é""#);
        assert_eq!(serde_json::from_str::<String>(&text).unwrap(), raw);
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
