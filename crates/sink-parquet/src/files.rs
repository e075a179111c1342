//! What errlake owns in a destination: the names it gives its data files, and how it tells
//! its own objects from another tool's, so that it never deletes a file it did not write.

/// Every data file errlake writes is named `errlake-<tag>.zstd.parquet`, directly in its
/// table's folder.
const DATA_FILE_PREFIX: &str = "errlake-";
const DATA_FILE_SUFFIX: &str = ".zstd.parquet";

/// The name of a new data file; `tag` carries the load id and a token that make it unique.
pub(crate) fn data_file_name(tag: &str) -> String {
    format!("{DATA_FILE_PREFIX}{tag}{DATA_FILE_SUFFIX}")
}

/// Whether `name`, a path within a table's folder, is a data file errlake wrote: its own
/// name pattern, directly in the folder (never in a subfolder, where errlake writes nothing).
/// Files of lakes written before the pattern (`part-<unix seconds>.<micros>-<8 hex>-…`, a
/// pipeline load id) count too; a name any other tool gives (dlt's `<load id>.<file id>`,
/// Spark's `part-00000-<uuid>-c000`) does not.
pub fn is_own_data_file(name: &str) -> bool {
    if name.contains('/') {
        return false;
    }
    let Some(stem) = name.strip_suffix(DATA_FILE_SUFFIX) else {
        return false;
    };
    if stem
        .strip_prefix(DATA_FILE_PREFIX)
        .is_some_and(|t| !t.is_empty())
    {
        return true;
    }
    stem.strip_prefix("part-").is_some_and(is_legacy_tag)
}

/// `<unix seconds>.<6 digits>-<8 hex>-<more>`: the load id errlake's pipeline used, then the rest.
fn is_legacy_tag(tag: &str) -> bool {
    let mut parts = tag.splitn(3, '-');
    let (Some(time), Some(random), Some(rest)) = (parts.next(), parts.next(), parts.next()) else {
        return false;
    };
    let Some((secs, micros)) = time.split_once('.') else {
        return false;
    };
    !secs.is_empty()
        && secs.bytes().all(|b| b.is_ascii_digit())
        && micros.len() == 6
        && micros.bytes().all(|b| b.is_ascii_digit())
        && random.len() == 8
        && random.bytes().all(|b| b.is_ascii_hexdigit())
        && !rest.is_empty()
}

/// Whether an object of the destination (its path relative to the destination) is
/// errlake's: a data file of its own name in a table folder, a run report, or the Delta log
/// of a table whose commits errlake made (`own_logs` names those folders).
pub(crate) fn is_own_object(relative: &str, own_logs: &dyn Fn(&str) -> bool) -> bool {
    let Some((folder, rest)) = relative.split_once('/') else {
        return false;
    };
    if folder == crate::LOADS_FOLDER {
        return !rest.contains('/') && rest.ends_with(".json");
    }
    is_own_data_file(rest) || (rest.starts_with("_delta_log/") && own_logs(folder))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_names_are_told_from_other_tools_names() {
        for own in [
            data_file_name("1795752326.572064-4695e7b6-0a1b2c3d-00001").as_str(),
            "errlake-l-rw-00003.zstd.parquet",
            "part-1795752326.572064-4695e7b6-0a1b2c3d-00001.zstd.parquet",
            "part-1795752326.572064-4695e7b6-rw-00001-dedup.zstd.parquet",
        ] {
            assert!(is_own_data_file(own), "{own}");
        }
        for foreign in [
            "part-0001.parquet",
            "2023/part-0002.parquet",
            "old.parquet",
            "1700000000.123456.abcdef.parquet",
            "part-00000-7b1c6f2e-1d2b-4c7e-9f1a-0e8d2c3b4a5f-c000.zstd.parquet",
            "part-00000-7b1c6f2e-1d2b-4c7e-9f1a-0e8d2c3b4a5f-c000.snappy.parquet",
            "sub/errlake-x.zstd.parquet",
            "errlake-.zstd.parquet",
            "errlake-x.parquet",
        ] {
            assert!(!is_own_data_file(foreign), "{foreign}");
        }
    }

    #[test]
    fn only_logs_of_own_tables_and_run_reports_are_own_objects() {
        let own_logs = |folder: &str| folder == "events";
        assert!(is_own_object(
            "events/_delta_log/00000000000000000000.json",
            &own_logs
        ));
        assert!(is_own_object("_errlake_loads/1.2-abc.json", &own_logs));
        assert!(is_own_object(
            "errors/errlake-a-00001.zstd.parquet",
            &own_logs
        ));
        assert!(!is_own_object(
            "errors/_delta_log/00000000000000000000.json",
            &own_logs
        ));
        assert!(!is_own_object("events/part-0001.parquet", &own_logs));
        assert!(!is_own_object("notes.txt", &own_logs));
        assert!(!is_own_object("archive/2023.parquet", &own_logs));
    }
}
